"""``nn.summary``: a readable table of a model's arrays."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from jax.sharding import Mesh

from ._module import PARAM, Module
from ._sharding import logical_to_mesh
from ._tree import iter_arrays

__all__ = ["summary"]


def _fmt_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def summary(model: Module, *, mesh: Mesh | None = None, rules: Mapping[str, Any] | None = None) -> str:
    """A table of the model, as a string: path, shape, dtype, parameter count, logical
    axes, and, given a ``mesh`` and ``rules``, each array's ``PartitionSpec``.

    >>> import jax
    >>> from baobab import nn
    >>> print(nn.summary(nn.Linear(4, 2, key=jax.random.key(0))))
    Linear
    path    shape   dtype    params  axes
    ------  ------  -------  ------  ------------
    weight  (4, 2)  float32  8       (embed, mlp)
    bias    (2,)    float32  2       (mlp,)
    total: 10 parameters (10), 10 trainable, 0 state values, 0.00 MiB
    """
    if (mesh is None) != (rules is None):
        raise ValueError("nn.summary: give both mesh= and rules= to show shardings, or neither.")
    header = ["path", "shape", "dtype", "params", "axes"] + (["sharding"] if mesh is not None else [])
    rows = []
    total = trainable = state = nbytes = 0
    for path, x, meta in iter_arrays(model):
        n = int(np.prod(x.shape))
        nbytes += n * np.dtype(x.dtype).itemsize
        if meta.kind == PARAM:
            total += n
            trainable += 0 if meta.frozen else n
            count = f"{n:,}" + (" (frozen)" if meta.frozen else "")
        else:
            state += n
            count = f"{n:,} (state)"
        axes = "(" + ", ".join(str(a) for a in meta.axes) + ("," if len(meta.axes) == 1 else "") + ")"
        row = [path, str(tuple(x.shape)), np.dtype(x.dtype).name, count, axes]
        if mesh is not None:
            row.append(str(logical_to_mesh(meta.axes, rules, mesh, tuple(x.shape), where=path)))
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    out = [type(model).__name__, line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append(
        f"total: {total:,} parameters ({_fmt_count(total)}), {trainable:,} trainable, "
        f"{state:,} state values, {nbytes / 2**20:.2f} MiB"
    )
    return "\n".join(out)

