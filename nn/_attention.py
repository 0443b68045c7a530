"""``MultiHeadAttention``: self- and cross-attention with GQA/MQA, RoPE, masks and a KV cache.

The attention itself is ``nn.attention`` (``_attention_fn.py``), whose implementation is
chosen for the platform the program is compiled for; this layer adds the projections,
head split/merge, rotary embedding, the checks of its masks and the decoding cache.
"""

from __future__ import annotations

import math

import einops
import jax
import jax.numpy as jnp

from . import _context
from ._attention_fn import IMPLEMENTATIONS, attention
from ._checks import ShapeError, check_dim, check_ndim
from ._keys import subkey
from ._kv_cache import KVCache
from ._linear import Linear, torch_linear_init
from ._module import Module, static
from ._positional import RotaryEmbedding

__all__ = ["MultiHeadAttention"]

def _uniform(bound: float):
    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _check_implementation(implementation: object) -> str | None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"MultiHeadAttention: unknown implementation {implementation!r}; use one of "
            f"{list(IMPLEMENTATIONS)} (None: chosen per compile platform, see nn.attention)."
        )
    return implementation  # type: ignore[return-value]


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"MultiHeadAttention: {name} must be a positive int, got {value!r}.")


def _as_4d_mask(mask: jax.Array, B: int, H: int, T: int, S: int) -> jax.Array:
    """Check a user mask against ``(B, H, T, S)`` / ``(B, T, S)``; return it 4-D."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"{_context.where()}: mask must be boolean (True = attend), got dtype {mask.dtype} "
            f"with shape {tuple(mask.shape)}. For a 0/1 mask write mask.astype(bool)."
        )
    if mask.ndim == 3:
        expected, names = (B, T, S), "(B, T, S)"
    elif mask.ndim == 4:
        expected, names = (B, H, T, S), "(B, heads, T, S)"
    else:
        expected, names = None, None
    if expected is None or any(m not in (1, e) for m, e in zip(mask.shape, expected)):
        want = (f"{names} = {expected}" if expected else
                f"(B, T, S) = {(B, T, S)} or (B, heads, T, S) = {(B, H, T, S)}")
        raise ShapeError(
            f"{_context.where()}: mask of shape {tuple(mask.shape)} does not broadcast to {want}; "
            f"each dimension must equal that size or 1. A key padding mask (B, S) is written "
            f"mask[:, None, :]."
        )
    return mask[:, None] if mask.ndim == 3 else mask  # (B|1, H|1, T|1, S|1)


class MultiHeadAttention(Module):
    """Multi-head attention: ``(B, T, features) -> (B, T, out_features)``.

    Projections ``q``, ``k``, ``v``, ``o`` are ``nn.Linear`` layers with logical axes
    ``("embed", "heads")``, ``("embed", "kv_heads")`` twice and ``("heads", "embed")``.
    ``num_kv_heads`` below ``num_heads`` gives grouped-query attention (1 gives
    multi-query attention); each group of ``num_heads // num_kv_heads`` query heads
    shares one key/value head. ``head_dim`` defaults to ``features // num_heads``.

    Init matches ``torch.nn.MultiheadAttention``: ``q``, ``k``, ``v`` weights are
    Glorot-uniform over the stacked ``[q; k; v]`` projection, ``U(-a, a)`` with
    ``a = sqrt(6 / (fan_in + (num_heads + 2 * num_kv_heads) * head_dim))``; ``o``'s weight
    is ``U(-1/sqrt(num_heads * head_dim), +)``; all biases are zero.

    Call arguments:

    * ``context``: ``(B, S, context_features)`` for cross-attention (keys and values
      from ``context``); ``None`` attends within ``x``.
    * ``mask``: boolean, ``True`` = attend, of shape broadcastable to ``(B, T, S)``
      (3-D) or ``(B, heads, T, S)`` (4-D).
    * ``causal``: position ``t`` attends to ``s <= t`` (top-left aligned, as in PyTorch).
    * ``segment_ids``: ``(B, T)`` integers for packed sequences; a position attends only
      to positions with the same id. Self-attention without a cache only.
    * ``positions``: ``(T,)`` or ``(B, T)`` positions for the rotary embedding; default
      ``arange(T)``, or ``cache.index + arange(T)`` when decoding. With a cache, -1
      marks a padding token (e.g. of a left-padded prompt), which is never attended to.
    * ``cache``: an ``nn.KVCache`` from ``init_cache``. The call then returns
      ``(out, new_cache)``: the new keys/values are written at ``cache.index``, and
      attention is causal over the cached real tokens (``nn.KVCache.attend``).

    * ``key``: a PRNG key for attention dropout (``dropout_rate > 0`` in training mode).

    All masks combine (logical and). A query that may attend to nothing gets the mean
    of the values (``jax.nn.dot_product_attention``'s behaviour); mask it downstream.

    ``implementation`` is ``nn.attention``'s: ``None`` picks per compile platform (the
    CPU layout on CPU, cuDNN on NVIDIA GPUs for bf16/fp16, the Pallas splash kernel on
    TPU); ``"xla"``, ``"cpu"``, ``"cudnn"`` or ``"splash"`` force one. ``dropout_rate``
    drops attention weights in training mode (``nn.eval_mode`` turns it off).

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> attn = nn.MultiHeadAttention(64, 8, num_kv_heads=2, key=jax.random.key(0),
    ...                              rotary=nn.RotaryEmbedding(8))
    >>> x = jnp.ones((2, 10, 64))  # (B, T, F)
    >>> attn(x, causal=True).shape
    (2, 10, 64)
    >>> cache = attn.init_cache(2, max_len=16)
    >>> out, cache = attn(x[:, :4], cache=cache)  # the prompt
    >>> out, cache = attn(x[:, 4:5], cache=cache)  # one new token
    >>> out.shape, int(cache.index)
    ((2, 1, 64), 5)
    """

    q: Linear
    k: Linear
    v: Linear
    o: Linear
    rotary: RotaryEmbedding | None
    features: int = static()
    num_heads: int = static()
    num_kv_heads: int = static()
    head_dim: int = static()
    out_features: int = static()
    context_features: int = static()
    implementation: str | None = static(default=None)
    dropout_rate: float = static(default=0.0)
    training: bool = static(default=True)

    def __init__(self, features: int, num_heads: int, *, key: jax.Array, num_kv_heads: int | None = None,
                 head_dim: int | None = None, use_bias: bool = True, rotary: RotaryEmbedding | None = None,
                 implementation: str | None = None, out_features: int | None = None,
                 context_features: int | None = None, dropout_rate: float = 0.0, dtype=jnp.float32):
        _positive_int("features", features)
        _positive_int("num_heads", num_heads)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        _positive_int("num_kv_heads", num_kv_heads)
        if head_dim is None:
            if features % num_heads:
                raise ValueError(
                    f"MultiHeadAttention: num_heads={num_heads} does not divide features={features}. "
                    f"Choose a divisor of {features}, or give head_dim explicitly."
                )
            head_dim = features // num_heads
        _positive_int("head_dim", head_dim)
        if num_heads % num_kv_heads:
            raise ValueError(
                f"MultiHeadAttention: num_kv_heads={num_kv_heads} does not divide num_heads={num_heads}; "
                f"each key/value head serves a whole group of query heads."
            )
        if rotary is not None:
            if not isinstance(rotary, RotaryEmbedding):
                raise TypeError(
                    f"MultiHeadAttention: rotary must be None or an nn.RotaryEmbedding, got {rotary!r}."
                )
            if rotary.head_dim != head_dim:
                raise ValueError(
                    f"MultiHeadAttention: rotary.head_dim={rotary.head_dim} but the layer's "
                    f"head_dim={head_dim}; build it as nn.RotaryEmbedding({head_dim}, ...)."
                )
        out_features = features if out_features is None else out_features
        context_features = features if context_features is None else context_features
        _positive_int("out_features", out_features)
        _positive_int("context_features", context_features)
        self.features = features
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.out_features = out_features
        self.context_features = context_features
        self.implementation = _check_implementation(implementation)
        if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) or not 0 <= dropout_rate < 1:
            raise ValueError(f"MultiHeadAttention: dropout_rate must be a number in [0, 1), got {dropout_rate!r}.")
        if dropout_rate and implementation in ("cpu", "cudnn", "splash"):
            raise NotImplementedError(
                f"MultiHeadAttention: implementation={implementation!r} has no attention dropout; "
                f"use implementation=None or 'xla' with dropout_rate={dropout_rate}."
            )
        self.dropout_rate = float(dropout_rate)
        self.training = True
        self.rotary = rotary

        stacked = (num_heads + 2 * num_kv_heads) * head_dim  # torch's in_proj_weight rows
        zeros = jax.nn.initializers.zeros
        common = dict(use_bias=use_bias, bias_init=zeros, dtype=dtype)
        self.q = Linear(features, num_heads * head_dim, key=subkey(key, "q"), axes=("embed", "heads"),
                        weight_init=_uniform(math.sqrt(6 / (features + stacked))), **common)
        kv_init = _uniform(math.sqrt(6 / (context_features + stacked)))
        self.k = Linear(context_features, num_kv_heads * head_dim, key=subkey(key, "k"),
                        axes=("embed", "kv_heads"), weight_init=kv_init, **common)
        self.v = Linear(context_features, num_kv_heads * head_dim, key=subkey(key, "v"),
                        axes=("embed", "kv_heads"), weight_init=kv_init, **common)
        self.o = Linear(num_heads * head_dim, out_features, key=subkey(key, "o"), axes=("heads", "embed"),
                        weight_init=torch_linear_init(num_heads * head_dim), **common)

    def init_cache(self, batch: int, max_len: int, *, dtype=jnp.float32, rolling: bool = False) -> KVCache:
        """An empty ``nn.KVCache`` for decoding ``batch`` sequences of up to ``max_len`` positions.

        Use the dtype the layer computes in (e.g. ``jnp.bfloat16`` under a bf16 policy),
        so the cache keeps one dtype from step to step. ``rolling=True`` keeps the last
        ``max_len`` tokens instead, for decoding past ``max_len`` (a sliding window).

        >>> import jax
        >>> from baobab import nn
        >>> attn = nn.MultiHeadAttention(32, 4, num_kv_heads=1, key=jax.random.key(0))
        >>> attn.init_cache(3, 20).k.shape  # (B, max_len, kv_heads, head_dim)
        (3, 20, 1, 8)
        """
        return KVCache(batch, max_len, self.num_kv_heads, self.head_dim, dtype=dtype, rolling=rolling)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, *, mask: jax.Array | None = None,
                 causal: bool = False, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, cache: KVCache | None = None,
                 key: jax.Array | None = None) -> jax.Array | tuple[jax.Array, KVCache]:
        check_ndim(x, 3, "input (B, T, features)")
        check_dim(x, -1, self.features, "features")
        B, T, _ = x.shape
        H, K = self.num_heads, self.num_kv_heads
        self._check_call(x, context, mask, segment_ids, positions, cache)
        source = x if context is None else context

        q = einops.rearrange(self.q(x), "b t (h d) -> b t h d", h=H)  # (B, T, H, D)
        k = einops.rearrange(self.k(source), "b s (k d) -> b s k d", k=K)  # (B, S, K, D)
        v = einops.rearrange(self.v(source), "b s (k d) -> b s k d", k=K)  # (B, S, K, D)

        if cache is not None:
            positions = cache.new_positions(T, positions)  # (B, T); -1 marks padding
        if self.rotary is not None:
            if positions is None:
                positions = jnp.arange(T)  # (T,)
            q = self.rotary(q, positions)  # (B, T, H, D)
            k = self.rotary(k, positions)  # (B, T, K, D)
        if self.training and self.dropout_rate > 0.0 and key is None:
            raise ValueError(
                f"{_context.where()} (dropout_rate={self.dropout_rate}) is in training mode but was "
                f"called without a key; pass key=, or use nn.eval_mode(model) to evaluate."
            )
        if mask is not None:
            mask = _as_4d_mask(mask, B, H, T, k.shape[1] if cache is None else cache.max_len)
        if cache is not None:  # causal over the cached real tokens (nn.KVCache.attend)
            out, cache = cache.attend(q, k, v, positions=positions, mask=mask, implementation=self.implementation)
        else:
            out = attention(q, k, v, causal=causal, mask=mask, segment_ids=segment_ids,
                            dropout_rate=self.dropout_rate if self.training else 0.0, key=key,
                            implementation=self.implementation)  # (B, T, H, D)
        out = self.o(einops.rearrange(out, "b t h d -> b t (h d)"))  # (B, T, out_features)
        return out if cache is None else (out, cache)

    def _check_call(self, x, context, mask, segment_ids, positions, cache) -> None:
        B, T, _ = x.shape
        where = _context.where()
        if context is not None:
            check_ndim(context, 3, "context (B, S, context_features)")
            check_dim(context, -1, self.context_features, "context_features", name="context")
            if context.shape[0] != B:
                raise ShapeError(f"{where}: context batch {context.shape[0]} differs from input batch {B}.")
            for what, given in (("a cache", cache is not None), ("segment_ids", segment_ids is not None),
                                ("rotary", self.rotary is not None)):
                if given:
                    raise NotImplementedError(
                        f"{where}: cross-attention (context=...) with {what} is not implemented. "
                        f"Use mask= to restrict which context positions each query sees."
                    )
        if cache is not None and segment_ids is not None:
            raise NotImplementedError(
                f"{where}: segment_ids with a cache is not implemented; decode each sequence in its own "
                f"batch row, and mark padding tokens with positions=-1 (the cache never attends to them)."
            )
        if segment_ids is not None:
            segment_ids = jnp.asarray(segment_ids)
            if segment_ids.shape != (B, T) or not jnp.issubdtype(segment_ids.dtype, jnp.integer):
                raise ShapeError(
                    f"{where}: expected integer segment_ids of shape (B, T) = {(B, T)}, got "
                    f"{segment_ids.dtype}{list(segment_ids.shape)}."
                )
        if positions is not None and self.rotary is None and cache is None:
            raise ValueError(
                f"{where}: positions are only used by a rotary embedding, and this layer has "
                f"rotary=None. Add positional embeddings to the input instead, or build the layer "
                f"with rotary=nn.RotaryEmbedding({self.head_dim})."
            )
