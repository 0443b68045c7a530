"""``Dropout``: inverted dropout in training mode, the identity in evaluation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._context import where
from ._module import Module, static

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    ``rate`` is the probability of **dropping** an element (as ``torch.nn.Dropout(p)``),
    never the keep probability; ``0 <= rate < 1``.

    Shapes: ``(...) -> (...)``, same dtype. Like ``BatchNorm`` it follows its
    ``training`` field, which ``nn.train_mode(model)`` / ``nn.eval_mode(model)`` set:

    * ``training=True`` (the default, as in PyTorch): ``dropout(x, key=k)`` drops.
      Called without a key it raises, rather than silently not dropping; pass the
      key down from the model's ``__call__(..., key=)``. ``rate=0`` needs no key.
    * ``training=False``: the identity, whatever the key.

    Under ``jax.vmap`` pass one key per example (``jax.random.split``), or every
    example gets the same mask.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> drop = nn.Dropout(0.5)
    >>> sorted(set(drop(jnp.ones(1000), key=jax.random.key(0)).tolist()))
    [0.0, 2.0]
    >>> nn.eval_mode(drop)(jnp.ones(4), key=jax.random.key(0)).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    rate: float = static()
    training: bool = static(default=True)

    def __init__(self, rate: float, *, training: bool = True):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            hint = (" rate=1 would drop every element; to cut a path use a mask or remove the layer."
                    if rate == 1 else "")
            raise ValueError(
                f"Dropout: rate is the probability of dropping an element and must be a number "
                f"with 0 <= rate < 1, got {rate!r}.{hint} (It is not the keep probability: "
                f"keep 90% with rate=0.1.)"
            )
        self.rate = float(rate)
        self.training = bool(training)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        if not self.training or self.rate == 0.0:
            return x
        if key is None:
            raise ValueError(
                f"{where()} (rate={self.rate}) is in training mode but was called without a "
                f"key. Pass one to the model, e.g. model(x, key=jax.random.key(step)), and down "
                f"to this layer as dropout(x, key=...); to evaluate, use model = nn.eval_mode(model), "
                f"which makes dropout the identity."
            )
        keep = jax.random.bernoulli(key, 1.0 - self.rate, x.shape)  # (...) bool
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))
