"""Several processes: ``jax.distributed.initialize`` when the environment says so.

``initialize_distributed()`` decides from the environment, in this order:

1. **Explicit coordinator**: ``JAX_COORDINATOR_ADDRESS`` (``host:port``) with
   ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
2. **SLURM**: a job step with more than one task (``SLURM_JOB_ID``,
   ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS`` > 1, ``SLURM_PROCID``, ``SLURM_LOCALID``);
   JAX's own SLURM detection fills in the rest.
3. **Cloud TPU**: a multi-host slice (``TPU_WORKER_HOSTNAMES`` or
   ``TPU_PROCESS_ADDRESSES`` naming more than one host, or
   ``MEGASCALE_COORDINATOR_ADDRESS``); JAX's TPU detection fills in the rest.

Otherwise the run is a single process and nothing happens. Call it first thing
in a program, before any JAX computation; ``train.train`` calls it too, so a
script that does nothing else before ``train`` needs no call of its own.

On CPU, cross-process collectives use gloo (``jax_cpu_collectives_implementation``).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import jax

from baobab.errors import ConfigError

__all__ = ["initialize_distributed", "distributed_environment"]

log = logging.getLogger("baobab.train")


def _several(hosts: str | None) -> bool:
    return bool(hosts) and len([h for h in hosts.split(",") if h.strip()]) > 1


def distributed_environment(env: Mapping[str, str] | None = None) -> str | None:
    """Which launcher the environment describes: ``"explicit"``, ``"slurm"``, ``"tpu"`` or None.

    >>> from baobab import train
    >>> train.distributed_environment({"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n[1-2]",
    ...     "SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})
    'slurm'
    >>> train.distributed_environment({}) is None
    True
    """
    env = os.environ if env is None else env
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "explicit"
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and int(env["SLURM_NTASKS"]) > 1:
        return "slurm"
    if (_several(env.get("TPU_WORKER_HOSTNAMES")) or _several(env.get("TPU_PROCESS_ADDRESSES"))
            or env.get("MEGASCALE_COORDINATOR_ADDRESS")):
        return "tpu"
    return None


def initialize_distributed() -> int:
    """Start ``jax.distributed`` if the environment asks for it; returns the process count."""
    kind = distributed_environment()
    if kind is None or jax.distributed.is_initialized():
        return jax.process_count()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used only by the CPU backend
    try:
        if kind == "explicit":
            missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in os.environ]
            if missing:
                raise ConfigError(
                    f"JAX_COORDINATOR_ADDRESS is set but {missing} are not: set all three, e.g. "
                    f"JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0.")
            jax.distributed.initialize(
                os.environ["JAX_COORDINATOR_ADDRESS"],
                num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                process_id=int(os.environ["JAX_PROCESS_ID"]),
            )
        else:
            jax.distributed.initialize()
    except RuntimeError as e:
        if "must be called before" in str(e):
            raise RuntimeError(
                f"The environment describes a {kind} multi-process run, but JAX was already in "
                f"use in this process. Call baobab.train.initialize_distributed() first thing, "
                f"before creating any array or model.") from e
        raise
    log.info("jax.distributed: process %d of %d (%s launcher), %d local / %d global devices.",
             jax.process_index(), jax.process_count(), kind, jax.local_device_count(),
             jax.device_count())
    return jax.process_count()
