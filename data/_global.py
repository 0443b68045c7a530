"""Process-local batches -> global ``jax.Array`` batches laid out on the mesh.

Each process holds ``global_batch / process_count`` rows. ``global_batch`` joins
them with ``jax.make_array_from_process_local_data`` into arrays of the global
shape, split along the ``"batch"`` logical axis (``rules["batch"]``, by default
``("data", "fsdp")``) and replicated over the other mesh axes. Features that are
not numeric (str, bytes) stay as host numpy arrays of the local rows.

>>> import jax, numpy as np
>>> from baobab import data
>>> mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
>>> batch = data.global_batch({"x": np.zeros((4, 3), np.float32)}, mesh, {"batch": "data"})
>>> batch["x"].shape, batch["x"].sharding.spec
((4, 3), P('data', None))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from baobab.nn._sharding import batch_sharding as batch_sharding  # the one definition, shared with baobab.train

__all__ = ["batch_sharding", "global_batch"]


def global_batch(local: Mapping[str, Any], mesh: Mesh, rules: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{key: (local_rows, ...)}`` on each process -> ``{key: jax.Array (global_rows, ...)}``."""
    out = {}
    count = jax.process_count()
    for key, value in local.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biufc":
            out[key] = value
            continue
        rows = value.shape[0] * count
        sharding = batch_sharding(value.ndim, mesh=mesh, rules=rules, rows=rows)
        out[key] = jax.make_array_from_process_local_data(sharding, value, (rows,) + value.shape[1:])
    return out


@dataclasses.dataclass(frozen=True)
class ToGlobal:
    """``global_batch`` as a picklable per-batch map for a grain pipeline."""

    mesh: Mesh
    rules: Mapping[str, Any] | None

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return global_batch(batch, self.mesh, self.rules)
