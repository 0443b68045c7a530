"""Declaring a module's fields: ``nn.param``, ``nn.state``, ``nn.static`` and ``ArrayMeta``.

This file depends on nothing else in ``baobab.nn``. ``_module.py`` states the rules
these declarations take part in; ``_core.py`` enforces them at construction.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["ArrayMeta", "PARAM", "STATE", "Tagged", "is_array", "param", "state", "static"]

PARAM = "param"
STATE = "state"


class ArrayMeta(NamedTuple):
    """Metadata of one array field: its kind, logical axes and frozen flag.

    Read it with ``nn.array_meta(module, "weight")``; ``nn.iter_arrays`` yields it
    for every array of a model.

    >>> from baobab import nn
    >>> nn.ArrayMeta("param", ("embed", "mlp"))
    ArrayMeta(kind='param', axes=('embed', 'mlp'), frozen=False)
    """

    kind: str  # "param" (trainable) or "state" (not trained, e.g. running stats)
    axes: tuple[str | None, ...]
    frozen: bool = False


class Tagged:
    """An array wrapped with its metadata, only while ``__init__`` (or ``nn.replace``) runs."""

    __slots__ = ("value", "meta")

    def __init__(self, value: Any, meta: ArrayMeta):
        self.value = value
        self.meta = meta


def is_array(x: Any) -> bool:
    """True for the values a module may hold as leaves (tracers included).

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> nn.is_array(jnp.zeros(2)), nn.is_array(2.0)
    (True, False)
    """
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def _check_axes(axes: Any, where: str) -> tuple[str | None, ...]:
    if isinstance(axes, str) or not isinstance(axes, (tuple, list)):
        raise TypeError(
            f"{where}: logical axes must be a tuple of names, e.g. ('embed', 'mlp'), "
            f"got {axes!r}. For a vector write ('embed',), with the trailing comma."
        )
    for a in axes:
        if a is not None and not isinstance(a, str):
            raise TypeError(f"{where}: each logical axis is a str or None, got {a!r} in {axes!r}.")
    return tuple(axes)


def param(value: Any, axes: tuple[str | None, ...]) -> Any:
    """Mark ``value`` as a trainable parameter with logical ``axes``, inside ``__init__``.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> class Bias(nn.Module):
    ...     b: jnp.ndarray
    ...     def __init__(self, n):
    ...         self.b = nn.param(jnp.zeros(n), ("embed",))
    >>> Bias(4).b.shape
    (4,)
    """
    return Tagged(value, ArrayMeta(PARAM, _check_axes(axes, "nn.param")))


def state(value: Any, axes: tuple[str | None, ...]) -> Any:
    """Mark ``value`` as non-trainable state (e.g. running statistics), inside ``__init__``.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> class Count(nn.Module):
    ...     n: jnp.ndarray
    ...     def __init__(self):
    ...         self.n = nn.state(jnp.zeros(()), ())
    >>> nn.array_meta(Count(), "n").kind
    'state'
    """
    return Tagged(value, ArrayMeta(STATE, _check_axes(axes, "nn.state")))


def static(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """Declare a static (configuration) field: hashable, part of the tree structure.

    >>> from baobab import nn
    >>> class Cfg(nn.Module):
    ...     width: int = nn.static(default=8)
    >>> Cfg().width
    8
    """
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["static"] = True
    return dataclasses.field(default=default, metadata=metadata, **kwargs)
