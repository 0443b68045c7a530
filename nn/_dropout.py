"""``Dropout``: inverted dropout, driven by an explicit key."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._module import Module, static

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    ``rate`` is the probability of **dropping** an element (as ``torch.nn.Dropout(p)``),
    never the keep probability; ``0 <= rate < 1``.

    Shapes: ``(...) -> (...)``, same dtype. The call is stochastic only when given
    a key: ``dropout(x, key=k)`` drops, ``dropout(x)`` (``key=None``) is the
    identity. Evaluation is "pass no key"; there is no ``training`` flag. Under
    ``jax.vmap`` pass one key per example (``jax.random.split``), or every example
    gets the same mask.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> drop = nn.Dropout(0.5)
    >>> drop(jnp.ones(4)).tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> sorted(set(drop(jnp.ones(1000), key=jax.random.key(0)).tolist()))
    [0.0, 2.0]
    """

    rate: float = static()

    def __init__(self, rate: float):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            hint = (" rate=1 would drop every element; to cut a path use a mask or remove the layer."
                    if rate == 1 else "")
            raise ValueError(
                f"Dropout: rate is the probability of dropping an element and must be a number "
                f"with 0 <= rate < 1, got {rate!r}.{hint} (It is not the keep probability: "
                f"keep 90% with rate=0.1.)"
            )
        self.rate = float(rate)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        if key is None or self.rate == 0.0:
            return x
        keep = jax.random.bernoulli(key, 1.0 - self.rate, x.shape)  # (...) bool
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))
