"""``KVCache``: the keys and values of past positions, for step-by-step decoding.

The cache is an explicit, immutable value, like every baobab module. Decoding
threads it through the calls::

    cache = mha.init_cache(batch, max_len, dtype=jnp.bfloat16)
    out, cache = mha(prompt, cache=cache)       # (B, T0, F): fills positions [0, T0)
    out, cache = mha(next_token, cache=cache)   # (B, 1, F): position T0, sees [0, T0]

Each call writes the new keys and values at ``index`` with
``lax.dynamic_update_slice``, advances ``index`` by the number of new positions and
returns a new cache; the old one is unchanged. Because the shapes never change,
one jitted step (or a ``lax.scan``) serves every decoding position.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import _context
from ._checks import ShapeError
from ._module import Module, replace, state

__all__ = ["KVCache"]


class KVCache(Module):
    """Keys and values of the positions seen so far, for one attention layer.

    Fields:

    * ``k``, ``v``: ``(B, max_len, kv_heads, head_dim)``, the cached keys and values
      (after rotary embedding, if the layer uses one). Slots ``>= index`` are unused.
    * ``index``: ``()`` int32, the number of positions filled, which is also the
      position of the next token.

    Build one with ``MultiHeadAttention.init_cache``. All three are ``nn.state``
    arrays with logical axes ``("batch", "length", "kv_heads", "head_dim")`` and
    ``()``, so ``nn.shardings(cache, mesh, rules)`` places a cache like a model.

    Writing past ``max_len`` cannot be detected under ``jit`` (``dynamic_update_slice``
    clamps its start); ``MultiHeadAttention`` then returns NaN outputs instead of
    silently attending to overwritten keys. Outside ``jit`` it raises.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> cache = nn.KVCache(2, 16, 4, 8)
    >>> cache = cache.append(jnp.ones((2, 3, 4, 8)), jnp.ones((2, 3, 4, 8)))
    >>> int(cache.index), cache.max_len, float(cache.k[:, 3:].sum())
    (3, 16, 0.0)
    """

    k: jax.Array
    v: jax.Array
    index: jax.Array

    def __init__(self, batch: int, max_len: int, num_kv_heads: int, head_dim: int, *,
                 dtype=jnp.float32):
        for name, value in (("batch", batch), ("max_len", max_len),
                            ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"KVCache: {name} must be a positive int, got {value!r}.")
        axes = ("batch", "length", "kv_heads", "head_dim")
        shape = (batch, max_len, num_kv_heads, head_dim)
        self.k = state(jnp.zeros(shape, dtype), axes)
        self.v = state(jnp.zeros(shape, dtype), axes)
        self.index = state(jnp.zeros((), jnp.int32), ())

    @property
    def max_len(self) -> int:
        """The number of positions the cache holds."""
        return self.k.shape[1]

    def append(self, k: jax.Array, v: jax.Array) -> "KVCache":
        """A new cache with ``k``, ``v`` ``(B, T, kv_heads, head_dim)`` written at ``index``.

        The values are cast to the cache's dtype; ``index`` advances by ``T``.

        >>> import jax.numpy as jnp
        >>> from baobab import nn
        >>> c = nn.KVCache(1, 4, 1, 2).append(jnp.ones((1, 1, 1, 2)), jnp.ones((1, 1, 1, 2)))
        >>> int(c.index), c.k[0, :, 0, 0].tolist()
        (1, [1.0, 0.0, 0.0, 0.0])
        """
        expected = (self.k.shape[0], None, self.k.shape[2], self.k.shape[3])
        for name, x in (("k", k), ("v", v)):
            if x.ndim != 4 or any(e is not None and e != s for e, s in zip(expected, x.shape)):
                raise ShapeError(
                    f"{_context.where()}: KVCache.append expected {name} of shape "
                    f"(B={expected[0]}, T, kv_heads={expected[2]}, head_dim={expected[3]}), "
                    f"got {tuple(x.shape)}."
                )
        T = k.shape[1]
        if v.shape != k.shape:
            raise ShapeError(f"{_context.where()}: KVCache.append got k {tuple(k.shape)} but v {tuple(v.shape)}.")
        if T > self.max_len:
            raise ValueError(
                f"{_context.where()}: cannot append {T} positions to a KVCache of max_len {self.max_len}."
            )
        if not isinstance(self.index, jax.core.Tracer) and int(self.index) + T > self.max_len:
            raise ValueError(
                f"{_context.where()}: KVCache overflow: {int(self.index)} positions are filled and "
                f"{T} more do not fit in max_len {self.max_len}. Make the cache longer with "
                f"init_cache(batch, max_len=...)."
            )
        zero = jnp.zeros((), self.index.dtype)
        start = (zero, self.index, zero, zero)
        new_k = lax.dynamic_update_slice(self.k, k.astype(self.k.dtype), start)  # (B, L, K, D)
        new_v = lax.dynamic_update_slice(self.v, v.astype(self.v.dtype), start)  # (B, L, K, D)
        return replace(self, k=new_k, v=new_v, index=self.index + T)
