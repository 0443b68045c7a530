"""Meshes, strategy rule tables, and putting host batches onto the mesh.

A ``MeshConfig`` (``train/_settings.py``, the ``mesh.*`` section of a config) gives
the sizes of the three mesh axes baobab's rules use: ``data`` (replicas), ``fsdp``
(parameter and optimizer-state shards, ZeRO-3 style) and ``tensor`` (tensor-parallel
shards), with ``-1`` meaning "all the devices the other axes leave". Every mesh has
all three axes, so one rule table fits all of them: an axis of size 1 splits nothing.

Data parallelism is ``jit`` over the ``data`` axis: the batch is sharded along
``data`` (and ``fsdp``), parameters are replicated across ``data``, and XLA inserts
the gradient all-reduce. This is what ``jax.pmap`` users want; ``pmap`` is not used.

Strategies are rule tables (``STRATEGY_RULES``), not code paths. With
``nn.DEFAULT_RULES`` the mesh shape alone picks the strategy: ``data=8`` is data
parallel, ``fsdp=8`` is FSDP, ``tensor=2`` adds tensor parallelism.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from baobab import nn
from baobab.errors import ShapeMismatchError
from baobab.nn._sharding import batch_sharding as batch_sharding  # one definition, shared with baobab.data

from ._settings import AXES, MeshConfig

__all__ = ["make_mesh", "STRATEGY_RULES", "batch_sharding", "put_batch", "local_rows"]


def make_mesh(config: MeshConfig | None = None, *, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all), with Auto axes.

    ``config`` is a ``MeshConfig`` (default: every device on ``data``). ``AxisType.Auto``
    keeps classic GSPMD propagation: shardings are set at the step's inputs and outputs
    and XLA propagates them inside.

    >>> import jax
    >>> from baobab import train
    >>> mesh = train.make_mesh(train.MeshConfig(), devices=jax.devices()[:1])
    >>> dict(mesh.shape)
    {'data': 1, 'fsdp': 1, 'tensor': 1}
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = (config or MeshConfig()).resolve(len(devices))
    auto = (jax.sharding.AxisType.Auto,) * 3
    return jax.make_mesh(sizes, AXES, axis_types=auto, devices=devices)


def _replicate_all(**overrides: Any) -> dict[str, Any]:
    rules = {name: None for name in nn.DEFAULT_RULES}
    rules["batch"] = ("data", "fsdp")
    rules.update(overrides)
    return rules


#: Rule tables by strategy name. ``"default"`` is ``nn.DEFAULT_RULES`` (FSDP over
#: ``fsdp`` and tensor parallel over ``tensor``, each a no-op at size 1).
STRATEGY_RULES: dict[str, dict[str, Any]] = {
    "default": dict(nn.DEFAULT_RULES),
    "data_parallel": _replicate_all(),
    "fsdp": _replicate_all(embed="fsdp"),
    "tensor_parallel": _replicate_all(mlp="tensor", heads="tensor", kv_heads="tensor",
                                      vocab="tensor", conv_out="tensor"),
}


def put_batch(batch: Mapping[str, Any], *, mesh: Mesh, rules: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Turn a batch into global arrays sharded along ``"batch"`` on ``mesh``.

    numpy (host-local) leaves are this process's rows of the global batch and go
    through ``jax.make_array_from_process_local_data``; ``jax.Array`` leaves are
    taken as global and resharded only if their sharding differs.

    >>> import jax, numpy as np
    >>> from baobab import nn, train
    >>> mesh = train.make_mesh(devices=jax.devices()[:1])
    >>> train.put_batch({"x": np.zeros((4, 3))}, mesh=mesh, rules=nn.DEFAULT_RULES)["x"].shape
    (4, 3)
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"A batch must be a dict of arrays such as {{'image': ..., 'label': ...}}, got "
            f"{type(batch).__name__}. Make the data iterator yield dicts.")
    out = {}
    for name, x in batch.items():
        is_global = isinstance(x, jax.Array)
        x = x if is_global else np.asarray(x)
        if x.ndim == 0:
            raise ShapeMismatchError(f"batch[{name!r}] is a scalar; every batch leaf needs a leading batch dim.")
        rows = x.shape[0] * (1 if is_global else jax.process_count())
        try:
            sharding = batch_sharding(x.ndim, mesh=mesh, rules=rules, rows=rows)
        except ShapeMismatchError as err:
            raise ShapeMismatchError(f"batch[{name!r}]: {err}") from None
        if is_global:
            out[name] = x if x.sharding == sharding else jax.device_put(x, sharding)
        else:
            out[name] = jax.make_array_from_process_local_data(sharding, x)
    return out


def local_rows(global_batch_size: int, *, mesh: Mesh, rules: Mapping[str, Any]) -> slice:
    """The rows of a global batch that this process's devices hold, as a slice.

    A data pipeline for several processes yields ``global_batch[local_rows(...)]``
    on each; on one process this is ``slice(0, global_batch_size)``.
    """
    sharding = batch_sharding(1, mesh=mesh, rules=rules)
    starts, stops = [], []
    for index in sharding.addressable_devices_indices_map((global_batch_size,)).values():
        s = index[0]
        starts.append(s.start or 0)
        stops.append(global_batch_size if s.stop is None else s.stop)
    lo, hi = min(starts), max(stops)
    covered = set()
    for a, b in zip(starts, stops, strict=True):
        covered.update(range(a, b))
    if covered != set(range(lo, hi)):
        raise ValueError(
            "This process's devices hold non-contiguous rows of the batch; order the mesh "
            "devices by process (jax.make_mesh does) or build global arrays yourself.")
    return slice(lo, hi)
