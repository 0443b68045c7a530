"""``Sequential``: layers applied in order; ``Lambda``: a plain function as a layer."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax

from ._keys import subkey
from ._module import Module, static

__all__ = ["Sequential", "Lambda"]


class Lambda(Module):
    """A function of the input, such as ``jax.nn.relu``, as a module with no arrays.

    ``fn`` is static configuration, so it must be hashable and is part of what ``jit``
    caches on: prefer a named function (``jax.nn.gelu``, a ``def``) over a ``lambda``
    written anew at each construction, which would retrace. Shapes: as ``fn``.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> nn.Lambda(jax.nn.relu)(jnp.array([-1.0, 2.0])).tolist()
    [0.0, 2.0]
    """

    fn: Callable = static()

    def __init__(self, fn: Callable[..., Any]):
        if isinstance(fn, Module):
            raise TypeError(f"Lambda: {type(fn).__name__} is already a module; use it directly.")
        if not callable(fn):
            raise TypeError(f"Lambda needs a function, got {type(fn).__name__} {fn!r}.")
        self.fn = fn

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return self.fn(x, *args, **kwargs)


@functools.lru_cache(maxsize=None)
def _takes_key(cls: type) -> bool:
    """Whether ``cls.__call__`` has a parameter named ``key`` (``**kwargs`` does not count)."""
    p = inspect.signature(cls.__call__).parameters.get("key")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _not_a_module(i: int, layer: Any) -> TypeError:
    if isinstance(layer, (list, tuple)):
        fix = "pass the layers as separate arguments: nn.Sequential(*layers)."
    elif callable(layer):
        name = getattr(layer, "__name__", type(layer).__name__)
        fix = f"wrap a plain function in nn.Lambda, e.g. nn.Lambda({name})."
    else:
        fix = "every layer must be an nn.Module."
    return TypeError(f"Sequential: layer {i} is {type(layer).__name__} {layer!r:.60}, not an nn.Module; {fix}")


class Sequential(Module):
    """Apply ``layers`` in order: ``layers[-1](...layers[1](layers[0](x)))``.

    Every layer is an ``nn.Module``; wrap plain functions in ``nn.Lambda``. Called
    with ``key=``, each layer whose ``__call__`` has a ``key`` parameter (dropout, a
    stochastic block) gets its own ``nn.subkey(key, "layers[i]")``; the others, and
    every layer when ``key`` is ``None``, are called with the input only.

    Shapes: ``x -> layers[-1](...)``. ``seq[i]`` is a layer, ``seq[a:b]`` a
    ``Sequential``, ``len(seq)`` the number of layers.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> k = jax.random.key(0)
    >>> mlp = nn.Sequential(nn.Linear(4, 8, key=nn.subkey(k, "fc1")), nn.Lambda(jax.nn.relu),
    ...                     nn.Linear(8, 2, key=nn.subkey(k, "fc2")))
    >>> mlp(jnp.ones((3, 4))).shape, len(mlp)
    ((3, 2), 3)
    """

    layers: tuple[Module, ...]

    def __init__(self, *layers: Module):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise _not_a_module(i, layer)
        self.layers = tuple(layers)

    def __call__(self, x: Any, *, key: jax.Array | None = None) -> Any:
        for i, layer in enumerate(self.layers):
            if key is not None and _takes_key(type(layer)):
                x = layer(x, key=subkey(key, f"layers[{i}]"))
            else:
                x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]
