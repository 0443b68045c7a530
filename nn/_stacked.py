"""Stacked layers: N identical layers as one module, applied with ``lax.scan``.

``nn.Stacked(make_layer, num_layers, key=key)`` calls ``make_layer(key)`` under
``jax.vmap`` over ``num_layers`` keys, so every array gains a leading ``layers``
dimension (and the logical axis ``"layers"``). Calling it runs the layers in order
with ``jax.lax.scan``: one layer is traced and compiled once, whatever the depth,
which is what keeps compile time flat for deep models. An optional remat policy
wraps the scanned body in ``jax.checkpoint``.

State updates of the inner layers (BatchNorm statistics) are returned from the
scan body and merged back, so ``nn.stateful_call`` works through a stack.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from . import _context
from ._core import construct
from ._module import STATE, Module, static
from ._state import merge_state
from ._tree import iter_arrays, map_arrays

__all__ = ["Stacked"]


def _remat_policy(remat: Any) -> Callable | None:
    if remat in (None, False):
        return None
    if remat is True or remat == "full":
        return jax.checkpoint_policies.nothing_saveable
    if isinstance(remat, str):
        policy = getattr(jax.checkpoint_policies, remat, None)
        if policy is None:
            names = sorted(n for n in dir(jax.checkpoint_policies) if not n.startswith("_"))
            raise ValueError(f"Unknown remat policy {remat!r}; use 'full', None or one of {names}.")
        return policy
    if callable(remat):
        return remat
    raise TypeError(f"remat must be None, 'full', a jax.checkpoint_policies name or a policy, got {remat!r}.")


def _state_leaves(layer: Module) -> list[Any]:
    return [x for _, x, meta in iter_arrays(layer) if meta.kind == STATE]


def _with_state_leaves(layer: Module, leaves: list[Any]) -> Module:
    it = iter(leaves)

    def take(path: str, x: Any, meta: Any) -> Any:
        return next(it).astype(x.dtype) if meta.kind == STATE else x

    return map_arrays(take, layer)


class Stacked(Module):
    """``num_layers`` copies of one layer, stored stacked and applied with ``lax.scan``.

    Each layer is called as ``layer(x, *args, **kwargs)`` and must return an array
    shaped like ``x``. When ``key`` is given, each layer gets its own ``key=``.

    Shapes: every array of ``layer`` has a leading dimension of size ``num_layers``.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> stack = nn.Stacked(lambda k: nn.Linear(8, 8, key=k), 4, key=jax.random.key(0))
    >>> stack.layer.weight.shape, stack(jnp.ones((2, 8))).shape
    ((4, 8, 8), (2, 8))
    """

    layer: Module
    num_layers: int = static()
    remat: Any = static(default=None)
    unroll: int = static(default=1)

    _baobab_leading_axes = {"layer": ("layers",)}

    def __init__(self, make_layer: Callable[[jax.Array], Module], num_layers: int, *,
                 key: jax.Array, remat: Any = None, unroll: int = 1):
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"Stacked: num_layers must be a positive int, got {num_layers!r}.")
        _remat_policy(remat)  # validate early
        self.num_layers = num_layers
        self.remat = remat
        self.unroll = unroll
        self.layer = jax.vmap(make_layer)(jax.random.split(key, num_layers))

    @classmethod
    def from_layers(cls, layers: tuple[Module, ...] | list[Module], *, remat: Any = None,
                    unroll: int = 1) -> "Stacked":
        """Stack existing identical layers (same class, config and shapes)."""
        layers = tuple(layers)
        if not layers:
            raise ValueError("Stacked.from_layers needs at least one layer.")
        structures = {jax.tree.structure(l) for l in layers}
        if len(structures) != 1:
            raise ValueError("Stacked.from_layers: the layers differ in class or configuration.")
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
        return construct(cls, layer=stacked, num_layers=len(layers), remat=remat, unroll=unroll)

    def unstacked(self) -> tuple[Module, ...]:
        """The layers as a tuple of separate modules (the unrolled model)."""
        return tuple(jax.tree.map(lambda a, i=i: a[i], self.layer) for i in range(self.num_layers))

    def __call__(self, x: jax.Array, *args: Any, key: jax.Array | None = None, **kwargs: Any) -> jax.Array:
        collecting = _context.is_collecting()
        state_seen: list[bool] = []

        def same_dtype(out, carry):  # a layer's precision policy may return another dtype
            return jax.tree.map(lambda o, c: o.astype(c.dtype), out, carry)

        def body(carry, xs):
            layer, layer_key = xs
            _context.name_child(layer, "layer")
            kw = dict(kwargs) if layer_key is None else {**kwargs, "key": layer_key}
            if not collecting:
                return same_dtype(layer(carry, *args, **kw), carry), ()
            with _context.collecting() as updates:
                out = same_dtype(layer(carry, *args, **kw), carry)
            if not updates:
                return out, ()
            state_seen.append(True)
            return out, _state_leaves(merge_state(layer, updates))

        policy = _remat_policy(self.remat)
        if policy is not None:
            body = jax.checkpoint(body, policy=policy)
        keys = None if key is None else jax.random.split(key, self.num_layers)
        out, new_state = jax.lax.scan(body, x, (self.layer, keys), unroll=self.unroll)
        if state_seen:
            original = _context.resolve_running(self)
            _context.record(original, {"layer": _with_state_leaves(original.layer, new_state)})
        return out
