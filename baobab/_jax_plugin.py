"""JAX's plugin hook (the ``jax_plugins`` entry point in pyproject.toml): no TPU backend where no TPU is.

Left alone, a plain ``jax.devices()`` with ``JAX_PLATFORMS`` unset tries every backend
JAX knows, TPU included, whenever libtpu is installed (the ``tpu`` and ``test``
extras install it for ``baobab plan --topology``). On a machine without TPU chips
libtpu then prints its failed TPU-host detection to stderr::

    Failed to find host bounds for accelerator type: WARNING: could not determine TPU accelerator type, ...
    E0000 ... common_lib.cc:554] INVALID_ARGUMENT: Error: unexpected worker hostname 'WARNING: could not
    determine TPU worker hostnames or IP addresses' from env var TPU_WORKER_HOSTNAMES. ...

and JAX falls back to the CPU (jax-ml/jax#11668, still open; libtpu 0.0.42.1 and
0.0.52 alike). JAX already skips CUDA when no NVIDIA device node exists; this does
the same for TPU with JAX's own PCI check. JAX imports this module and calls
``initialize()`` once, before it first creates its backends, in any process of an
environment where baobab is installed; importing baobab never calls it.

It changes nothing when the user chose: ``JAX_PLATFORMS`` (or ``jax_platforms``) set,
or ``JAX_FORCE_TPU_INIT`` set, or TPU chips on the PCI bus. Compile-only TPU
topologies (``jax.experimental.topologies``, ``baobab.tpu``) load libtpu by another
path and are untouched. Keep this module's imports to JAX alone: every JAX process
of the environment runs it.
"""

from __future__ import annotations

import os

NO_TPU = ("no TPU chips on this machine's PCI bus, so libtpu was not started (baobab's jax plugin hook, "
          "baobab/_jax_plugin.py); set JAX_FORCE_TPU_INIT=1 to start it anyway")


def _no_tpu_here():
    raise RuntimeError(NO_TPU)


def initialize() -> None:
    """Replace JAX's TPU backend factory by one that fails quietly, if this machine has no TPU."""
    import jax
    from jax._src import hardware_utils, xla_bridge

    if jax.config.jax_platforms or "JAX_FORCE_TPU_INIT" in os.environ:
        return  # the user's choice of platforms wins, failures included
    registration = getattr(xla_bridge, "_backend_factories", {}).get("tpu")
    if registration is None or hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0:
        return
    # fail_quietly: as for JAX's own TPU factory, a failure is kept for jax.devices("tpu") and logged at INFO.
    xla_bridge.register_backend_factory("tpu", _no_tpu_here, priority=registration.priority, fail_quietly=True)
