"""``KVCache``: the keys and values of past positions, for step-by-step decoding.

The cache is an explicit, immutable value, like every baobab module. Decoding
threads it through the calls::

    cache = mha.init_cache(batch, max_len, dtype=jnp.bfloat16)
    out, cache = mha(prompt, cache=cache)       # (B, T0, F): fills positions [0, T0)
    out, cache = mha(next_token, cache=cache)   # (B, 1, F): position T0, sees [0, T0]

Each slot remembers the position of the token it holds (``positions``, -1 for an
empty slot or a padding token), so attention masks come from the cache itself: a
query sees the real keys at its position or before. Left-padded prompts give their
padding position -1 and are never attended to.

A *rolling* cache (``rolling=True``) writes slot ``i % max_len`` and so keeps the
``max_len`` most recent tokens: decoding goes on past ``max_len`` with attention over a
sliding window of that many tokens (RoPE models, Mistral's sliding window). A plain
cache holds positions ``[0, max_len)`` and poisons the output with NaN past it.
Shapes never change, so one jitted step (or a ``lax.scan``) serves every position.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import _context
from ._attention_fn import attention
from ._checks import ShapeError
from ._module import Module, replace, state, static

__all__ = ["KVCache"]


class KVCache(Module):
    """Keys and values of the positions seen so far, for one attention layer.

    Fields:

    * ``k``, ``v``: ``(B, max_len, kv_heads, head_dim)``, the cached keys and values
      (after rotary embedding, if the layer uses one).
    * ``positions``: ``(B, max_len)`` int32, the position of the token in each slot;
      -1 for an empty slot or a padding token.
    * ``index``: ``()`` int32, the number of tokens written (padding included): the
      slot of the next token (modulo ``max_len`` when ``rolling``).
    * ``rolling`` (static): keep the ``max_len`` most recent tokens (see the module docstring).

    Build one with ``MultiHeadAttention.init_cache`` or a zoo model's ``init_cache``. The
    arrays are ``nn.state`` with logical axes ``("batch", "length", "kv_heads",
    "head_dim")``, ``("batch", "length")`` and ``()``, so ``nn.shardings(cache, mesh,
    rules)`` places a cache like a model.

    Writing past ``max_len`` into a plain cache cannot be detected under ``jit``
    (``dynamic_update_slice`` clamps its start); ``attend`` then returns NaN instead of
    silently attending to overwritten keys. Outside ``jit`` it raises.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> cache = nn.KVCache(2, 16, 4, 8)
    >>> cache = cache.append(jnp.ones((2, 3, 4, 8)), jnp.ones((2, 3, 4, 8)))
    >>> int(cache.index), cache.max_len, float(cache.k[:, 3:].sum()), cache.positions[0, :5].tolist()
    (3, 16, 0.0, [0, 1, 2, -1, -1])
    """

    k: jax.Array
    v: jax.Array
    positions: jax.Array
    index: jax.Array
    rolling: bool = static(False)

    def __init__(self, batch: int, max_len: int, num_kv_heads: int, head_dim: int, *,
                 dtype=jnp.float32, rolling: bool = False):
        for name, value in (("batch", batch), ("max_len", max_len),
                            ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"KVCache: {name} must be a positive int, got {value!r}.")
        axes = ("batch", "length", "kv_heads", "head_dim")
        shape = (batch, max_len, num_kv_heads, head_dim)
        self.k = state(jnp.zeros(shape, dtype), axes)
        self.v = state(jnp.zeros(shape, dtype), axes)
        self.positions = state(jnp.full((batch, max_len), -1, jnp.int32), ("batch", "length"))
        self.index = state(jnp.zeros((), jnp.int32), ())
        self.rolling = bool(rolling)

    @property
    def max_len(self) -> int:
        """The number of positions the cache holds."""
        return self.k.shape[1]

    def new_positions(self, length: int, positions: jax.Array | None = None) -> jax.Array:
        """Positions ``(B, length)`` int32 of the next ``length`` tokens: ``positions`` checked, or
        ``index + arange(length)`` (every row unpadded)."""
        B = self.k.shape[0]
        if positions is None:
            return jnp.broadcast_to(self.index + jnp.arange(length, dtype=jnp.int32), (B, length))
        positions = jnp.asarray(positions)
        if positions.ndim == 1:
            positions = jnp.broadcast_to(positions, (B, positions.shape[0]))
        if positions.shape != (B, length) or not jnp.issubdtype(positions.dtype, jnp.integer):
            raise ShapeError(f"{_context.where()}: KVCache: positions must be integers (B={B}, T={length}) "
                             f"(-1 for padding), got {positions.dtype}{list(positions.shape)}.")
        return positions.astype(jnp.int32)

    def append(self, k: jax.Array, v: jax.Array, positions: jax.Array | None = None) -> "KVCache":
        """A new cache with ``k``, ``v`` ``(B, T, kv_heads, head_dim)`` written at ``index``.

        ``positions`` ``(B, T)``: the tokens' positions (-1 for padding; default
        ``index + arange(T)``). The values are cast to the cache's dtype; ``index``
        advances by ``T``. A rolling cache keeps the last ``max_len`` of them.

        >>> import jax.numpy as jnp
        >>> from baobab import nn
        >>> c = nn.KVCache(1, 4, 1, 2).append(jnp.ones((1, 1, 1, 2)), jnp.ones((1, 1, 1, 2)))
        >>> int(c.index), c.k[0, :, 0, 0].tolist()
        (1, [1.0, 0.0, 0.0, 0.0])
        >>> r = nn.KVCache(1, 4, 1, 2, rolling=True).append(jnp.ones((1, 6, 1, 2)), jnp.ones((1, 6, 1, 2)))
        >>> r.positions[0].tolist()  # slots 0..3 hold positions 4, 5, 2, 3
        [4, 5, 2, 3]
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
        positions = self.new_positions(T, positions)
        if self.rolling:
            return self._roll_in(k, v, positions)
        if T > self.max_len:
            raise ValueError(
                f"{_context.where()}: cannot append {T} positions to a KVCache of max_len {self.max_len}; "
                f"a rolling cache (rolling=True) keeps the last max_len instead."
            )
        if not isinstance(self.index, jax.core.Tracer) and int(self.index) + T > self.max_len:
            raise ValueError(
                f"{_context.where()}: KVCache overflow: {int(self.index)} positions are filled and "
                f"{T} more do not fit in max_len {self.max_len}. Make the cache longer with "
                f"init_cache(batch, max_len=...), or use a rolling cache (rolling=True)."
            )
        zero = jnp.zeros((), self.index.dtype)
        start = (zero, self.index, zero, zero)
        new_k = lax.dynamic_update_slice(self.k, k.astype(self.k.dtype), start)  # (B, L, K, D)
        new_v = lax.dynamic_update_slice(self.v, v.astype(self.v.dtype), start)  # (B, L, K, D)
        new_positions = lax.dynamic_update_slice(self.positions, positions, (zero, self.index))  # (B, L)
        return replace(self, k=new_k, v=new_v, positions=new_positions, index=self.index + T)

    def _roll_in(self, k: jax.Array, v: jax.Array, positions: jax.Array) -> "KVCache":
        T = k.shape[1]
        keep = min(T, self.max_len)  # only the newest max_len tokens survive
        slots = (self.index + (T - keep) + jnp.arange(keep)) % self.max_len  # (keep,), distinct
        new_k = self.k.at[:, slots].set(k[:, T - keep:].astype(self.k.dtype))
        new_v = self.v.at[:, slots].set(v[:, T - keep:].astype(self.v.dtype))
        new_positions = self.positions.at[:, slots].set(positions[:, T - keep:])
        return replace(self, k=new_k, v=new_v, positions=new_positions, index=self.index + T)

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, *, positions: jax.Array | None = None,
               mask: jax.Array | None = None, window: int | None = None, softcap: float | None = None,
               scale: float | None = None, implementation: str | None = None) -> tuple[jax.Array, "KVCache"]:
        """Causal attention of new queries over the cached and new keys: ``(out, new cache)``.

        ``q`` ``(B, T, H, D)``; ``k``, ``v`` ``(B, T, K, D)`` of the same new tokens, at
        ``positions`` ``(B, T)`` (-1 for padding; default ``index + arange(T)``). A query
        sees the real keys at or before its position (and within ``window`` of it, if
        set; a rolling cache limits the window to ``max_len``). ``out`` is ``(B, T, H, D)``;
        rows of padding queries are finite but meaningless. ``mask``: boolean over the
        cache slots after the write, ``(B, 1 | H, T, max_len)`` (not for a rolling cache
        fed several tokens at once). Other arguments as in ``nn.attention``.

        >>> import jax, jax.numpy as jnp
        >>> from baobab import nn
        >>> q = k = v = jax.random.normal(jax.random.key(0), (1, 5, 2, 4))
        >>> full = nn.attention(q, k, v, causal=True)
        >>> out, cache = nn.KVCache(1, 8, 2, 4).attend(q, k, v)
        >>> bool(jnp.allclose(out, full, atol=1e-6)), int(cache.index)
        (True, 5)
        """
        T = q.shape[1]
        positions = self.new_positions(T, positions)
        if self.rolling:
            window = self.max_len if window is None else min(window, self.max_len)
        if self.rolling and T > 1:  # the new tokens may overwrite keys that earlier ones still see
            if mask is not None:
                raise NotImplementedError(f"{_context.where()}: KVCache.attend: mask= with a rolling cache fed "
                                          f"{T} tokens at once is not implemented; mark padding with "
                                          f"positions=-1 instead.")
            keys = jnp.concatenate([self.k.astype(q.dtype), k.astype(q.dtype)], axis=1)  # (B, L + T, K, D)
            values = jnp.concatenate([self.v.astype(q.dtype), v.astype(q.dtype)], axis=1)
            key_positions = jnp.concatenate([self.positions, positions], axis=1)  # (B, L + T)
            new = self.append(k, v, positions)
        else:
            new = self.append(k, v, positions)
            keys, values, key_positions = new.k.astype(q.dtype), new.v.astype(q.dtype), new.positions
        out = attention(q, keys, values, causal=True, mask=mask, q_positions=positions, kv_positions=key_positions,
                        segment_ids=(positions >= 0).astype(jnp.int32),
                        kv_segment_ids=(key_positions >= 0).astype(jnp.int32), window=window, softcap=softcap,
                        scale=scale, implementation=implementation)  # (B, T, H, D)
        if not self.rolling:  # overflow cannot raise under jit: poison the output instead
            out = jnp.where(self.index + T > self.max_len, jnp.nan, out)
        return out, new
