"""``kernel_mesh``: the mesh and rules a hand-written kernel is sharded over inside ``jit``.

XLA partitions ordinary operations itself, but a Pallas (Mosaic) kernel cannot be
partitioned automatically: it must run inside ``jax.shard_map`` over a named mesh.
``nn.attention``'s TPU kernel reads the mesh from here. ``train.jit_step`` and
``baobab plan`` set it around the step they trace; a hand-written loop sets it the
same way::

    with nn.kernel_mesh(mesh, rules):
        compiled = jax.jit(step).lower(state, batch).compile()

Without it, ``jax.sharding.get_abstract_mesh()`` (``jax.set_mesh``) is used with
``nn.DEFAULT_RULES``; with neither, kernels run unsharded (right for one device).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Mapping

import jax

__all__ = ["kernel_mesh", "current_kernel_mesh"]

_CURRENT: contextvars.ContextVar[tuple[Any, Mapping[str, Any]] | None] = contextvars.ContextVar(
    "baobab_kernel_mesh", default=None)


@contextlib.contextmanager
def kernel_mesh(mesh: jax.sharding.Mesh, rules: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Within the block, kernels traced by ``nn.attention`` shard over ``mesh`` by ``rules``.

    ``rules`` (default ``nn.DEFAULT_RULES``) map the logical axes ``"batch"``,
    ``"heads"`` and ``"kv_heads"`` to mesh axes, as for parameters.

    >>> import jax
    >>> from baobab import nn
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> with nn.kernel_mesh(mesh):
    ...     nn.current_kernel_mesh()[0] is mesh
    True
    >>> nn.current_kernel_mesh() is None
    True
    """
    from ._sharding import DEFAULT_RULES

    token = _CURRENT.set((mesh, DEFAULT_RULES if rules is None else rules))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_kernel_mesh() -> tuple[Any, Mapping[str, Any]] | None:
    """``(mesh, rules)`` set by ``kernel_mesh``, else ``jax.set_mesh``'s mesh with the default rules, else None."""
    current = _CURRENT.get()
    if current is not None:
        return current
    abstract = jax.sharding.get_abstract_mesh()
    if abstract is None or abstract.empty:
        return None
    from ._sharding import DEFAULT_RULES

    return abstract, DEFAULT_RULES
