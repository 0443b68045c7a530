"""Input checks that name the module, its path, and what was expected.

Layers call these at the top of ``__call__``. They run at trace time only (shapes
are static under ``jit``), so they cost nothing in a compiled step.
"""

from __future__ import annotations

from typing import Any

from baobab.errors import ShapeMismatchError

from ._context import where

__all__ = ["check_dim", "check_ndim", "ShapeError"]


class ShapeError(ShapeMismatchError):
    """A module received an input of the wrong shape (a ``baobab.errors.ShapeMismatchError``)."""


def check_ndim(x: Any, allowed: int | tuple[int, ...], what: str = "input") -> None:
    """Raise ``ShapeError`` unless ``x.ndim`` is in ``allowed``."""
    allowed_t = (allowed,) if isinstance(allowed, int) else tuple(allowed)
    if x.ndim not in allowed_t:
        want = " or ".join(str(a) for a in allowed_t)
        raise ShapeError(f"{where()}: expected {what} with {want} dimensions, got shape {tuple(x.shape)}.")


def check_dim(x: Any, axis: int, expected: int, what: str, name: str = "input") -> None:
    """Raise ``ShapeError`` unless ``x.shape[axis] == expected``; ``what`` names the setting.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> lin = nn.Linear(64, 10, key=jax.random.key(0))
    >>> try:
    ...     lin(jnp.ones((32, 65)))
    ... except nn.ShapeError as e:
    ...     print(str(e).splitlines()[0])
    Linear (the root module): expected input with last dimension 64 (in_features), got shape (32, 65).
    """
    size = x.shape[axis] if -x.ndim <= axis < x.ndim else None
    if size != expected:
        position = "last dimension" if axis == -1 else f"dimension {axis}"
        raise ShapeError(
            f"{where()}: expected {name} with {position} {expected} ({what}), got shape {tuple(x.shape)}."
        )
