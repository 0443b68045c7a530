"""Non-finite losses and gradients: found on the device, named on the host.

Inside the step, ``first_nonfinite_leaf(grads)`` is the index (in tree order) of
the first floating leaf holding a NaN or Inf, or -1. The step then keeps the old
model and optimizer state instead of applying the update, so a bad step never
poisons the state. On the host, ``leaf_paths(model)`` turns the index back into
a path such as ``blocks[3].attn.q.weight`` for ``NonFiniteError``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["NonFiniteError", "first_nonfinite_leaf", "leaf_paths"]


class NonFiniteError(FloatingPointError):
    """A training step produced a NaN/Inf loss or gradient.

    Attributes: ``step`` (1-based count of the step that failed), ``path`` (the first
    parameter whose gradient was non-finite, or None if only the loss was),
    ``last_checkpoint`` (the step of the last good checkpoint, or None).
    """

    def __init__(self, message: str, *, step: int, path: str | None, last_checkpoint: int | None):
        super().__init__(message)
        self.step = step
        self.path = path
        self.last_checkpoint = last_checkpoint


def first_nonfinite_leaf(tree: Any) -> jax.Array:
    """int32 index of the first floating leaf of ``tree`` with a NaN/Inf, or -1."""
    leaves = [x for x in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.asarray(-1, jnp.int32)
    finite = jnp.stack([
        jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.asarray(True)
        for x in leaves
    ])  # (num_leaves,)
    return jnp.where(jnp.all(finite), -1, jnp.argmin(finite)).astype(jnp.int32)


def leaf_paths(tree: Any) -> list[str]:
    """Paths of ``tree``'s leaves in tree order: ``blocks[3].attn.q.weight``."""
    return [jax.tree_util.keystr(path).lstrip(".")
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
