"""Evaluation over an exact split: per-example metrics, padding masked out.

An eval iterator covers the split exactly once. Its last batch is padded to the
full batch size and carries a ``mask`` key (1.0 for real examples, 0.0 for
padding); batches without ``mask`` count every row. ``eval_fn(model, batch)``
returns per-example values of shape ``(B,)``; the jitted eval step sums
``value * mask`` and ``mask`` on the device, and the host divides at the end, so
every real example counts exactly once whatever the batch size.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from baobab import nn
from baobab.errors import DataError

from ._core import Batch, EvalFn
from ._mesh import put_batch

__all__ = ["make_eval_step", "evaluate"]

COUNT = "__count__"


def make_eval_step(eval_fn: EvalFn, *, mesh: Any = None, rules: Mapping[str, Any] | None = None
                   ) -> Callable[[nn.Module, Batch], dict[str, jax.Array]]:
    """Jitted ``(model, batch) -> {name: masked sum, "__count__": sum of mask}``.

    With ``mesh`` it is traced inside ``nn.kernel_mesh(mesh, rules)`` (as ``jit_step``),
    so kernels such as the TPU attention shard over the run's mesh.
    """

    def eval_step(model: nn.Module, batch: Batch) -> dict[str, jax.Array]:
        size = next(iter(batch.values())).shape[0]
        mask = batch.get("mask")
        mask = jnp.ones((size,), jnp.float32) if mask is None else mask.astype(jnp.float32)
        values = eval_fn(model, batch)
        if not isinstance(values, Mapping):
            raise TypeError(f"eval_fn must return a dict of per-example values, got {type(values).__name__}.")
        sums = {}
        for name, v in values.items():
            if getattr(v, "shape", None) != (size,):
                raise ValueError(
                    f"eval_fn's {name!r} has shape {getattr(v, 'shape', None)}; expected one value "
                    f"per example, shape ({size},). Return e.g. (logits.argmax(-1) == label) "
                    f"rather than its mean, so padded rows can be masked out.")
            sums[name] = jnp.sum(v.astype(jnp.float32) * mask)
        sums[COUNT] = jnp.sum(mask)
        return sums

    def eval_step_on_mesh(model: nn.Module, batch: Batch) -> dict[str, jax.Array]:
        if mesh is None:
            return eval_step(model, batch)
        with nn.kernel_mesh(mesh, rules):
            return eval_step(model, batch)

    return jax.jit(eval_step_on_mesh)


def evaluate(eval_step: Callable[[nn.Module, Batch], dict[str, jax.Array]], model: nn.Module,
             batches: Iterable[Batch], *, mesh: Mesh, rules: Mapping[str, Any]) -> dict[str, float]:
    """Mean of each eval metric over the real (unmasked) examples of ``batches``."""
    model = nn.eval_mode(model)
    parts = [eval_step(model, put_batch(b, mesh=mesh, rules=rules)) for b in batches]
    if not parts:
        raise DataError("The eval iterator yielded no batches.")
    totals: dict[str, float] = {}
    for part in jax.device_get(parts):
        for name, v in part.items():
            totals[name] = totals.get(name, 0.0) + float(np.asarray(v, np.float64))
    count = totals.pop(COUNT)
    if count <= 0:
        raise DataError("Every eval example was masked out (mask sums to 0).")
    return {name: total / count for name, total in totals.items()}
