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

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from baobab.nn import DEFAULT_RULES, logical_to_mesh

__all__ = ["batch_sharding", "global_batch"]


def batch_sharding(mesh: Mesh, ndim: int, rules: Mapping[str, Any] | None = None,
                   global_rows: int | None = None) -> NamedSharding:
    """The ``NamedSharding`` of a global batch feature with ``ndim`` dims (batch first)."""
    rules = DEFAULT_RULES if rules is None else rules
    axes = ("batch",) + (None,) * (ndim - 1)
    shape = None if global_rows is None else (global_rows,) + (1,) * (ndim - 1)
    spec = logical_to_mesh(axes, rules, mesh, shape=shape, where="global batch")
    return NamedSharding(mesh, spec)


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
        sharding = batch_sharding(mesh, value.ndim, rules, global_rows=rows)
        out[key] = jax.make_array_from_process_local_data(sharding, value, (rows,) + value.shape[1:])
    return out
