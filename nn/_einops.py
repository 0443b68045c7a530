"""``Rearrange`` and ``Reduce``: einops patterns as layers, for use inside ``Sequential``."""

from __future__ import annotations

from typing import Callable

import einops
import jax

from ._module import Module, static

__all__ = ["Rearrange", "Reduce"]

REDUCTIONS = ("min", "max", "sum", "mean", "prod", "any", "all")


def _lengths(layer: str, pattern: str, axes_lengths: dict[str, int]) -> tuple[tuple[str, int], ...]:
    if not isinstance(pattern, str) or "->" not in pattern:
        raise ValueError(
            f"{layer}: pattern must be an einops string with '->', e.g. 'b h w c -> b (h w) c', "
            f"got {pattern!r}."
        )
    for name, value in axes_lengths.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{layer}: axis length {name}={value!r} must be a positive int.")
    return tuple(sorted(axes_lengths.items()))  # hashable, so it can be static


class Rearrange(Module):
    """``einops.rearrange(x, pattern, **axes_lengths)`` as a module with no arrays.

    Shapes: as the pattern says. ``axes_lengths`` give sizes einops cannot infer.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> patches = nn.Rearrange("b (h p1) (w p2) c -> b (h w) (p1 p2 c)", p1=4, p2=4)
    >>> patches(jnp.ones((2, 32, 32, 3))).shape
    (2, 64, 48)
    """

    pattern: str = static()
    axes_lengths: tuple[tuple[str, int], ...] = static()

    def __init__(self, pattern: str, **axes_lengths: int):
        self.axes_lengths = _lengths("Rearrange", pattern, axes_lengths)
        self.pattern = pattern

    def __call__(self, x: jax.Array) -> jax.Array:
        return einops.rearrange(x, self.pattern, **dict(self.axes_lengths))


class Reduce(Module):
    """``einops.reduce(x, pattern, reduction, **axes_lengths)`` as a module with no arrays.

    ``reduction`` is one of ``"min" "max" "sum" "mean" "prod" "any" "all"`` or a
    function ``f(x, axes_tuple)``. Shapes: as the pattern says.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> pool = nn.Reduce("b (h 2) (w 2) c -> b h w c", "max")
    >>> pool(jnp.ones((2, 32, 32, 3))).shape
    (2, 16, 16, 3)
    """

    pattern: str = static()
    reduction: str | Callable = static()
    axes_lengths: tuple[tuple[str, int], ...] = static()

    def __init__(self, pattern: str, reduction: str | Callable, **axes_lengths: int):
        self.axes_lengths = _lengths("Reduce", pattern, axes_lengths)
        if not (reduction in REDUCTIONS if isinstance(reduction, str) else callable(reduction)):
            raise ValueError(
                f"Reduce: reduction must be one of {list(REDUCTIONS)} or a function "
                f"f(x, axes), got {reduction!r}."
            )
        self.pattern = pattern
        self.reduction = reduction

    def __call__(self, x: jax.Array) -> jax.Array:
        return einops.reduce(x, self.pattern, self.reduction, **dict(self.axes_lengths))
