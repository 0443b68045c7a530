"""Meshes, strategy rule tables, and putting host batches onto the mesh.

A ``MeshSpec`` gives the sizes of the three mesh axes baobab's rules use:
``data`` (replicas), ``fsdp`` (parameter and optimizer-state shards, ZeRO-3 style)
and ``tensor`` (tensor-parallel shards), with ``-1`` meaning "all the devices the
other axes leave". Every mesh has all three axes, so one rule table fits all of
them: an axis of size 1 splits nothing.

Data parallelism is ``jit`` over the ``data`` axis: the batch is sharded along
``data`` (and ``fsdp``), parameters are replicated across ``data``, and XLA inserts
the gradient all-reduce. This is what ``jax.pmap`` users want; ``pmap`` is not used.

Strategies are rule tables (``STRATEGY_RULES``), not code paths. With
``nn.DEFAULT_RULES`` the mesh shape alone picks the strategy: ``data=8`` is data
parallel, ``fsdp=8`` is FSDP, ``tensor=2`` adds tensor parallelism.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from baobab import nn

__all__ = ["MeshSpec", "make_mesh", "STRATEGY_RULES", "batch_sharding", "put_batch", "local_rows"]

AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """Sizes of the ``data``, ``fsdp`` and ``tensor`` mesh axes; ``-1`` is "the rest".

    >>> from baobab import train
    >>> train.MeshSpec(data=2, fsdp=-1).resolve(8)
    (2, 4, 1)
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """The concrete ``(data, fsdp, tensor)`` sizes for ``num_devices`` devices."""
        sizes = (self.data, self.fsdp, self.tensor)
        for name, size in zip(AXES, sizes, strict=True):
            if not isinstance(size, int) or (size < 1 and size != -1):
                raise ValueError(f"MeshSpec.{name} must be a positive int or -1, got {size!r}.")
        rest = [i for i, s in enumerate(sizes) if s == -1]
        if len(rest) > 1:
            raise ValueError(f"MeshSpec{sizes}: at most one axis may be -1 (the rest).")
        fixed = math.prod(s for s in sizes if s != -1)
        if rest:
            if num_devices % fixed:
                raise ValueError(
                    f"MeshSpec{sizes}: {num_devices} devices do not divide by the fixed axes' "
                    f"product {fixed}.")
            sizes = tuple(num_devices // fixed if s == -1 else s for s in sizes)
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"MeshSpec(data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}) needs "
                f"{math.prod(sizes)} devices, but {num_devices} are available. Use -1 for one "
                f"axis to take the rest.")
        return sizes  # type: ignore[return-value]


def make_mesh(spec: MeshSpec = MeshSpec(), *, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all), with Auto axes.

    ``AxisType.Auto`` keeps classic GSPMD propagation: shardings are set at the
    step's inputs and outputs and XLA propagates them inside.

    >>> import jax
    >>> from baobab import train
    >>> mesh = train.make_mesh(train.MeshSpec(), devices=jax.devices()[:1])
    >>> dict(mesh.shape)
    {'data': 1, 'fsdp': 1, 'tensor': 1}
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = spec.resolve(len(devices))
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


def _batch_spec(ndim: int, rules: Mapping[str, Any], mesh: Mesh) -> PartitionSpec:
    axes = ("batch",) + (None,) * (ndim - 1)
    return nn.logical_to_mesh(axes, rules, mesh, where="batch")


def batch_sharding(ndim: int, *, mesh: Mesh, rules: Mapping[str, Any]) -> NamedSharding:
    """The sharding of a batch leaf with ``ndim`` dims: dim 0 along the ``"batch"`` rule."""
    return NamedSharding(mesh, _batch_spec(max(ndim, 1), rules, mesh))


def _check_divisible(x: Any, sharding: NamedSharding, name: str) -> None:
    spec = sharding.spec[0] if len(sharding.spec) else None
    axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
    size = math.prod(sharding.mesh.shape[a] for a in axes)
    rows = x.shape[0] * (jax.process_count() if not isinstance(x, jax.Array) else 1)
    if rows % size:
        raise ValueError(
            f"batch[{name!r}] has {rows} rows (global), which do not divide by the {size} "
            f"batch shards (mesh axes {axes}). Make the global batch a multiple of {size}.")


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
        if isinstance(x, jax.Array):
            sharding = batch_sharding(x.ndim, mesh=mesh, rules=rules)
            _check_divisible(x, sharding, name)
            out[name] = x if x.sharding == sharding else jax.device_put(x, sharding)
            continue
        x = np.asarray(x)
        sharding = batch_sharding(x.ndim, mesh=mesh, rules=rules)
        if x.ndim == 0:
            raise ValueError(f"batch[{name!r}] is a scalar; every batch leaf needs a leading batch dim.")
        _check_divisible(x, sharding, name)
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
