"""Host memory for XLA:CPU: keep freed memory for reuse instead of giving it back to the OS.

XLA:CPU allocates one block for all of a step's temporary buffers on every run
(``posix_memalign``, freed when the step ends). With glibc's defaults a block that
large is a fresh ``mmap`` each time, so every page of it faults in zeroed on every
step: a 24-layer GPT step (d=256, batch 8) touched 1.06 GB of new pages, 272,000
page faults per step, and a 4-layer one (batch 16) about 400 MB. Told to keep one
heap (``M_ARENA_MAX=1``), never to ``mmap`` (``M_MMAP_MAX=0``) and never to trim
(``M_TRIM_THRESHOLD=SIZE_MAX``), glibc hands the same pages back on the next step:
no page faults after the first, and on the 2-core development machine the step
times fell 9-26 % (``benchmarks/RESULTS.md``). PyTorch's caching allocator solves
the same problem on GPUs.

The settings hold for the whole process, for threads that first allocate after
they are made, so they must be made before JAX runs anything, and they are the
process's to choose, not a library's: importing baobab changes nothing. They are
made by

* the ``baobab`` command, first thing in ``main()``;
* ``baobab.host_memory.configure()``, called by a script before its first JAX
  computation (the benchmarks do this);
* or, for any process, the environment, before Python starts::

      GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615

``configure()`` applies them only where the computation runs on the CPU: Linux with
glibc, no accelerator attached (or ``JAX_PLATFORMS=cpu``). The costs: the process keeps its
peak heap (it never shrinks, and early in a run it may grow by a few blocks), and
threads share one malloc arena (small allocations still come from per-thread caches),
which made XLA's compiles slower (a 24-layer scanned GPT: 2.35-3.6 s against
1.9-2.3 s). ``BAOBAB_HOST_MEMORY=system`` leaves glibc as it is.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from pathlib import Path

from baobab.errors import ConfigError

__all__ = ["configure", "is_applied", "has_accelerator", "runs_on_cpu", "GLIBC_TUNABLES"]

# mallopt parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_SIZE_MAX = -1  # mallopt takes an int; glibc reads the trim threshold as size_t, so -1 is SIZE_MAX

OPT_OUT = "BAOBAB_HOST_MEMORY"
#: The same settings as an environment variable, for a process that does not call ``configure``.
GLIBC_TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615"
_applied = False


def has_accelerator() -> bool:
    """A TPU (Google PCI device, /dev/accel*, /dev/vfio), NVIDIA or AMD GPU may be attached."""
    google = any(Path(p).read_text().strip() == "0x1ae0" for p in glob.glob("/sys/bus/pci/devices/*/vendor"))
    files = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")
    return google or any(os.path.exists(f) for f in files) or bool(glob.glob("/dev/accel*") + glob.glob("/dev/vfio/[0-9]*"))


def runs_on_cpu() -> bool:
    """Whether JAX will compute on the CPU: ``JAX_PLATFORMS=cpu``, or no accelerator attached."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not has_accelerator()


def configure() -> bool:
    """Make glibc reuse freed memory (one arena, no mmap, no trimming); True if this call did.

    Applied only on Linux with glibc, when ``runs_on_cpu()``, and unless the
    environment sets ``BAOBAB_HOST_MEMORY=system`` (any value other than ``system`` or
    ``reuse`` is an error naming the variable). Calling it again does nothing new.

    >>> import os, subprocess, sys
    >>> script = "from baobab import host_memory; print(host_memory.configure(), host_memory.is_applied())"
    >>> env = {**os.environ, "BAOBAB_HOST_MEMORY": "system"}
    >>> subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True).stdout
    'False False\n'
    """
    choice = os.environ.get(OPT_OUT, "reuse").strip().lower() or "reuse"
    if choice not in ("reuse", "system"):
        raise ConfigError(
            f"{OPT_OUT}={os.environ[OPT_OUT]!r} is not a choice: set {OPT_OUT}=system to keep glibc's "
            f"malloc defaults, or reuse (the default) to keep freed memory for XLA:CPU's next step.")
    if choice == "system":
        return False
    libc_version = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") and sys.platform == "linux" else None
    if not libc_version or not libc_version.startswith("glibc") or not runs_on_cpu():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    global _applied
    done = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, _SIZE_MAX)]
    _applied = _applied or all(r == 1 for r in done)
    return _applied


def is_applied() -> bool:
    """Whether ``configure`` has changed glibc's settings in this process."""
    return _applied
