"""TPU pods from any machine: the chip table, compile-only topologies, and step FLOPs.

``libtpu`` (the ``tpu`` extra: ``pip install -e '.[tpu]'``) can describe a TPU slice
it is not running on. ``topology("v5p:4x4x4")`` gives that slice's devices (one per
chip, each with its ``process_index``, i.e. its host), and a mesh over them lets
``jax.jit(step).lower(...).compile()`` compile the real program for the pod on this
machine. ``baobab plan --topology`` (``baobab.planner.plan``) builds on this.

What a compile proves: the program compiles for that slice, every sharding is
valid, and XLA's buffer assignment fits the chip's HBM (the TPU compiler refuses a
program that does not). What only a real pod shows: speed, ICI/DCN behaviour,
host input throughput and runtime memory fragmentation.

Chip facts live in one table, ``CHIPS``. HBM is per chip (the issue's figures);
peak bf16 FLOP/s per chip are Google Cloud's published figures.

>>> from baobab import tpu
>>> chip, shape = tpu.parse_topology("v5p:4x4x4")
>>> chip.generation, shape, chip.hbm_bytes // 2**30, chip.accelerator_type(shape)
('v5p', (4, 4, 4), 95, 'v5p-128')
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import math
import os
import re
import sys
import tempfile
from typing import Any, Iterator

from baobab.errors import ConfigError

__all__ = ["Chip", "CHIPS", "Topology", "parse_topology", "topology", "libtpu_available", "quiet_libtpu",
           "matmul_flops", "compiler_out_of_memory", "TopologyError"]

GiB = 2**30


class TopologyError(ConfigError):
    """A TPU topology name, or the libtpu needed to compile for it, is wrong or missing."""


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation. ``megacore`` chips (v4, v5p) have two TensorCores run as one device."""

    generation: str  # as written in topology names: "v5p"
    hbm_bytes: int  # per chip
    peak_bf16_flops: float  # per chip, dense bf16
    chip_config: str  # libtpu chip config: "megacore" makes one device per chip
    gcloud_prefix: str  # accelerator types: v5p-128, v5litepod-16, v6e-64
    cores_per_chip: int  # what gcloud's accelerator type counts (TensorCores for v4/v5p)

    def accelerator_type(self, shape: tuple[int, ...]) -> str:
        """The ``gcloud --accelerator-type`` of a slice of this shape."""
        return f"{self.gcloud_prefix}-{math.prod(shape) * self.cores_per_chip}"


#: The one table of TPU chip facts: generation -> Chip.
CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 32 * GiB, 275e12, "megacore", "v4", 2),
    "v5e": Chip("v5e", 16 * GiB, 197e12, "default", "v5litepod", 1),
    "v5p": Chip("v5p", 95 * GiB, 459e12, "megacore", "v5p", 2),
    "v6e": Chip("v6e", 32 * GiB, 918e12, "default", "v6e", 1),
}

EXAMPLES = "v5p:2x2x2, v5p:4x4x4, v5e:4x4, v6e:8x8, v4:4x4x8"
_NAME = re.compile(r"^(v\d+[a-z]*):(\d+(?:x\d+){1,2})$")
LIBTPU_MISSING = ("compiling for a TPU topology needs libtpu, which this environment lacks; install the tpu "
                  "extra: pip install -e '.[tpu]' (jax[tpu] at the installed jax's version)")


def parse_topology(name: str) -> tuple[Chip, tuple[int, ...]]:
    """``"v5p:4x4x4"`` -> ``(CHIPS["v5p"], (4, 4, 4))``; an unknown name lists the valid ones."""
    match = _NAME.match(name.strip()) if isinstance(name, str) else None
    if match is None or match.group(1) not in CHIPS:
        raise TopologyError(f"unknown TPU topology {name!r}: write GENERATION:SHAPE with GENERATION one of "
                            f"{', '.join(CHIPS)} and SHAPE its chips per dimension, e.g. {EXAMPLES}")
    shape = tuple(int(s) for s in match.group(2).split("x"))
    if min(shape) < 1:
        raise TopologyError(f"TPU topology {name!r}: every dimension must be at least 1, e.g. {EXAMPLES}")
    return CHIPS[match.group(1)], shape


def libtpu_available() -> bool:
    """Whether libtpu (the ``tpu`` extra) is installed."""
    return importlib.util.find_spec("libtpu") is not None


@dataclasses.dataclass(frozen=True)
class Topology:
    """A TPU slice described by libtpu: its chip, shape and compile-only devices."""

    name: str
    chip: Chip
    shape: tuple[int, ...]
    devices: tuple[Any, ...]  # one jax device per chip, in libtpu's order

    @property
    def num_chips(self) -> int:
        return len(self.devices)

    @property
    def num_hosts(self) -> int:
        return len({d.process_index for d in self.devices})

    @property
    def accelerator_type(self) -> str:
        return self.chip.accelerator_type(self.shape)


_NOISE = ("TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE", "Logging before InitGoogle", "Source Location Trace",
          "libtpu_init_utils", "could not determine TPU", "Failed to find host bounds")


@contextlib.contextmanager
def quiet_libtpu() -> Iterator[None]:
    """Hide libtpu's start-up complaints about TPU worker hostnames on a host without TPUs.

    They are written by C++ straight to file descriptor 2, so this swaps fd 2 for a
    temporary file and writes back every other line when the block ends.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if line.strip() and not any(n in line for n in _NOISE) and not line.startswith("learning/")]
            if kept:
                sys.stderr.write("".join(kept))


def topology(name: str) -> Topology:
    """The compile-only devices of a TPU slice, from libtpu, on whatever machine this is.

    Raises ``TopologyError`` (a ``ValueError``) for an unknown name, a shape libtpu
    refuses, or a missing libtpu. Ordinary runs in the same process keep their own
    backend (CPU here); only this call loads libtpu.
    """
    chip, shape = parse_topology(name)
    if not libtpu_available():
        raise TopologyError(LIBTPU_MISSING)
    return _describe(f"{chip.generation}:" + "x".join(map(str, shape)))


@functools.lru_cache(maxsize=None)
def _describe(name: str) -> Topology:
    # libtpu holds /tmp/libtpu_lockfile for the life of a process that loaded it; a
    # compile-only client touches no chip, so several may share a host.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    import jax
    from jax.experimental import topologies

    chip, shape = parse_topology(name)
    try:
        with quiet_libtpu():
            desc = topologies.get_topology_desc(platform="tpu", topology_name=name, chip_config_name=chip.chip_config)
    except jax.errors.JaxRuntimeError as err:
        reason = str(err).strip().splitlines()[0]
        raise TopologyError(f"TPU topology {name!r} was refused by libtpu ({reason}); each dimension must be a "
                            f"multiple of a host's chips (2x2), e.g. {EXAMPLES}") from None
    return Topology(name=name, chip=chip, shape=shape, devices=tuple(desc.devices))


_SIZE = r"([\d.]+)\s*([KMGT]i?)?B?"
_UNITS = {None: 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _bytes(number: str, unit: str | None) -> int:
    return int(float(number) * _UNITS[unit[0] if unit else None])


def compiler_out_of_memory(message: str) -> tuple[int, int] | None:
    """``(needed, available)`` bytes from the TPU compiler's out-of-HBM error, else None.

    >>> compiler_out_of_memory("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required "
    ...                        "for HLO temporaries (19.90G) exceeds available HBM (15.75G).")
    (21367462297, 16911433728)
    """
    if "RESOURCE_EXHAUSTED" not in message and "memory" not in message.lower():
        return None
    patterns = (rf"\({_SIZE}\) exceeds available HBM \({_SIZE}\)", rf"Used {_SIZE} of {_SIZE} hbm")
    for pattern in patterns:
        m = re.search(pattern, message)
        if m:
            return _bytes(m.group(1), m.group(2)), _bytes(m.group(3), m.group(4))
    return None


# ----------------------------------------------------------------------------------------
# FLOPs from the program itself
# ----------------------------------------------------------------------------------------


def matmul_flops(jaxpr: Any, platform: str | None = None) -> float:
    """Multiply-add FLOPs (2 per MAC) of every matmul and convolution in a jaxpr, global.

    ``platform`` (``"tpu"``, ``"cpu"``, ...) picks the branch of each
    ``lax.platform_dependent`` that a program compiled for it runs (``nn.attention``
    has one per platform); None counts the costliest branch. A Pallas kernel counts
    its body once per grid step, which includes blocks the kernel skips at run time
    (splash attention's masked blocks), as the hand-written FLOP models do.

    Loops count as often as they run (``scan`` by its length), which XLA's
    ``cost_analysis()`` does not: it counts a loop body once, so a model whose layers
    are scanned looks ``num_layers`` times cheaper there. Rematerialised forward passes
    inside the backward pass are counted, since the hardware runs them. Elementwise
    work is left out (it is small next to the matmuls of a transformer).
    """
    from jax.extend import core

    jaxpr = jaxpr.jaxpr if isinstance(jaxpr, core.ClosedJaxpr) else jaxpr
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / rhs[out_feature_dim]
        subs = [matmul_flops(sub, platform) for sub in core.jaxprs_in_params(eqn.params)]
        if not subs:
            continue
        branch_platforms = eqn.params.get("branches_platforms") if name == "cond" else None
        if branch_platforms and platform is not None and len(branch_platforms) == len(subs):
            chosen = [i for i, p in enumerate(branch_platforms) if p is not None and platform in p]
            chosen = chosen or [i for i, p in enumerate(branch_platforms) if p is None]
            total += subs[chosen[0]] if chosen else max(subs)
        elif name == "pallas_call":
            total += math.prod(eqn.params["grid_mapping"].grid) * sum(subs)
        elif name == "cond":
            total += max(subs)
        elif name == "scan":
            total += eqn.params["length"] * sum(subs)
        else:  # while loops (trip count unknown: once), jit, remat, custom_vjp, ...
            total += sum(subs)
    return total
