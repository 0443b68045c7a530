"""Gemma 3 (Gemma Team 2025), the text model: local and global attention layers, in one file.

Token embedding scaled by ``sqrt(hidden_size)``, ``num_layers`` blocks, a final norm and
the tied unembedding, optionally soft-capped. Each block is ``h = x + norm(attn(norm(x)))``,
then ``h + norm(mlp(norm(h)))`` (norms before *and* after both sub-blocks). Attention is
grouped-query with an RMSNorm on each query and key head before RoPE, logits scaled by
``query_pre_attn_scalar ** -0.5``. Layers alternate between *local* ones (a sliding
window of ``sliding_window`` tokens, RoPE base ``rope_local_theta``) and *global* ones
(all earlier tokens, base ``rope_theta``, optional ``rope_scaling``): by default five
local layers, then one global. The MLP is GeGLU (tanh GELU). Every RMSNorm scales by
``1 + weight`` (weights start at zero), computed in float32.

Parameter paths copy Hugging Face ``Gemma3ForCausalLM`` (``models.hf.gemma3_names(config)``
is the import table). Linear weights are stored ``(in, out)``, the transpose of HF's:

=========================================================  ===========================================
Hugging Face                                               baobab
=========================================================  ===========================================
``model.embed_tokens.weight`` (V, D)                       same (unscaled; the forward multiplies)
``model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`` (out, in)  ``model.layers[i].self_attn.q_proj.weight`` (in, out)
``model.layers.{i}.self_attn.q_norm.weight``, ``k_norm``   same pattern, ``(head_dim,)``
``model.layers.{i}.input_layernorm.weight``                ``model.layers[i].input_layernorm.weight``
``... .post_attention_layernorm``, ``pre_feedforward_layernorm``, ``post_feedforward_layernorm``  same pattern
``model.layers.{i}.mlp.gate_proj/up_proj/down_proj``       same pattern
``model.norm.weight``                                      same
``lm_head.weight`` (V, D)                                  ``lm_head.weight`` (D, V); absent when tied
=========================================================  ===========================================

With ``scan_layers=True`` the layers are one ``nn.Stacked`` (paths ``model.layers.layer...``);
the stacked layers differ only in being local or global, which the scan passes in per
layer and ``lax.cond`` picks (so both kinds of attention are compiled once).

>>> import jax, jax.numpy as jnp
>>> from baobab.models import Gemma3, Gemma3Config
>>> config = Gemma3Config(vocab_size=100, max_len=64, hidden_size=32, num_layers=3, num_heads=4,
...                       num_kv_heads=2, head_dim=8, intermediate_size=64, sliding_window=4,
...                       layer_types=("sliding_attention", "sliding_attention", "full_attention"))
>>> model = Gemma3(config, key=jax.random.key(0))
>>> ids = jnp.zeros((2, 8), jnp.int32)  # (B, T)
>>> model(ids).shape  # (B, T, V)
(2, 8, 100)
>>> logits, cache = model.decode(ids, model.init_cache(2, 16))  # prefill
>>> [layer.sliding for layer in model.model.layers]
[True, True, False]
"""

from __future__ import annotations

from typing import Callable

import einops
import jax
import jax.numpy as jnp

from baobab import nn

from ._decoder import apply_layers, check_token_inputs, decode_layers, decode_positions, layer_caches
from .gemma3_config import Gemma3Config

__all__ = ["Gemma3", "Gemma3DecoderLayer", "Gemma3RMSNorm"]

def _linear(d_in: int, d_out: int, axes: tuple[str, str], *, key: jax.Array, use_bias: bool) -> nn.Linear:
    """A ``Linear`` with HF Gemma's init: weights ``N(0, 0.02)``, zero bias."""
    return nn.Linear(d_in, d_out, key=key, axes=axes, use_bias=use_bias,
                     weight_init=jax.nn.initializers.normal(0.02), bias_init=jax.nn.initializers.zeros)


def _pick(sliding: bool | jax.Array, local: Callable, full: Callable):
    """``local()`` or ``full()``: ``sliding`` is a bool (tuple layers) or traced (``lax.cond``, in a scan)."""
    if isinstance(sliding, bool):
        return local() if sliding else full()
    return jax.lax.cond(sliding, local, full)


class Gemma3RMSNorm(nn.Module):
    """Gemma's RMSNorm over the last axis: ``x / rms(x) * (1 + weight)`` in float32, ``weight`` zeros.

    >>> import jax.numpy as jnp
    >>> Gemma3RMSNorm(4, eps=1e-6)(jnp.array([[2.0, -2.0, 2.0, -2.0]])).round(4).tolist()
    [[1.0, -1.0, 1.0, -1.0]]
    """

    weight: jax.Array  # (features,)
    eps: float = nn.static()

    def __init__(self, features: int, *, eps: float):
        self.weight = nn.param(jnp.zeros((features,), jnp.float32), ("norm",))
        self.eps = float(eps)

    def __call__(self, x: jax.Array) -> jax.Array:
        nn.check_dim(x, -1, self.weight.shape[0], "features")
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + self.weight.astype(jnp.float32))).astype(x.dtype)


class Gemma3Attention(nn.Module):
    """Causal grouped-query attention with q/k norms, local or global: ``(B, T, D) -> (B, T, D)``."""

    q_proj: nn.Linear  # (D, H * Dh)
    k_proj: nn.Linear  # (D, K * Dh)
    v_proj: nn.Linear  # (D, K * Dh)
    o_proj: nn.Linear  # (H * Dh, D)
    q_norm: Gemma3RMSNorm  # (Dh,)
    k_norm: Gemma3RMSNorm  # (Dh,)
    rotary_local: nn.RotaryEmbedding
    rotary_global: nn.RotaryEmbedding
    num_heads: int = nn.static()
    num_kv_heads: int = nn.static()
    window: int = nn.static()
    scale: float = nn.static()
    softcap: float | None = nn.static()

    def __init__(self, config: Gemma3Config, *, key: jax.Array):
        D, H, K, Dh = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        self.num_heads, self.num_kv_heads, self.window = H, K, config.sliding_window
        self.scale, self.softcap = config.query_pre_attn_scalar ** -0.5, config.attn_softcap
        bias = config.attention_bias
        self.q_proj = _linear(D, H * Dh, ("embed", "heads"), key=nn.subkey(key, "q_proj"), use_bias=bias)
        self.k_proj = _linear(D, K * Dh, ("embed", "kv_heads"), key=nn.subkey(key, "k_proj"), use_bias=bias)
        self.v_proj = _linear(D, K * Dh, ("embed", "kv_heads"), key=nn.subkey(key, "v_proj"), use_bias=bias)
        self.o_proj = _linear(H * Dh, D, ("heads", "embed"), key=nn.subkey(key, "o_proj"), use_bias=bias)
        self.q_norm = Gemma3RMSNorm(Dh, eps=config.norm_eps)
        self.k_norm = Gemma3RMSNorm(Dh, eps=config.norm_eps)
        s = config.rope_scaling
        scaling = None if s is None else nn.RopeScaling(s.kind, s.factor, s.low_freq_factor,
                                                        s.high_freq_factor, s.original_max_len)
        self.rotary_local = nn.RotaryEmbedding(Dh, base=config.rope_local_theta)
        self.rotary_global = nn.RotaryEmbedding(Dh, base=config.rope_theta, scaling=scaling)

    def _qkv(self, x: jax.Array, positions: jax.Array, sliding) -> tuple[jax.Array, jax.Array, jax.Array]:
        q = einops.rearrange(self.q_proj(x), "b t (h d) -> b t h d", h=self.num_heads)  # (B, T, H, Dh)
        k = einops.rearrange(self.k_proj(x), "b t (k d) -> b t k d", k=self.num_kv_heads)  # (B, T, K, Dh)
        v = einops.rearrange(self.v_proj(x), "b t (k d) -> b t k d", k=self.num_kv_heads)  # (B, T, K, Dh)
        q, k = self.q_norm(q), self.k_norm(k)  # per head, over head_dim
        q, k = _pick(sliding, lambda: (self.rotary_local(q, positions), self.rotary_local(k, positions)),
                     lambda: (self.rotary_global(q, positions), self.rotary_global(k, positions)))
        return q, k, v

    def _out(self, out: jax.Array) -> jax.Array:
        return self.o_proj(einops.rearrange(out, "b t h d -> b t (h d)"))  # (B, T, D)

    def __call__(self, x: jax.Array, *, sliding, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        positions = jnp.arange(x.shape[1]) if positions is None else positions  # (T,) or (B, T)
        q, k, v = self._qkv(x, positions, sliding)

        def attend(window):
            return nn.attention(q, k, v, causal=True, segment_ids=segment_ids, window=window, scale=self.scale,
                                softcap=self.softcap)  # (B, T, H, Dh)

        return self._out(_pick(sliding, lambda: attend(self.window), lambda: attend(None)))

    def decode(self, x: jax.Array, cache: nn.KVCache, *, positions: jax.Array,
               sliding) -> tuple[jax.Array, nn.KVCache]:
        """New tokens ``x`` ``(B, T, D)`` at ``positions`` ``(B, T)`` (-1: padding) after the cached
        ones: ``(y, new cache)``. A local layer's window is a mask on the cached positions."""
        q, k, v = self._qkv(x, jnp.maximum(positions, 0), sliding)  # padding (-1) is never attended to

        def attend(window):
            return cache.attend(q, k, v, positions=positions, window=window, scale=self.scale, softcap=self.softcap)

        out, new_cache = _pick(sliding, lambda: attend(self.window), lambda: attend(None))  # (B, T, H, Dh)
        return self._out(out), new_cache


class Gemma3MLP(nn.Module):
    """GeGLU: ``down_proj(gelu_tanh(gate_proj(x)) * up_proj(x))``, ``(B, T, D) -> (B, T, D)``."""

    gate_proj: nn.Linear
    up_proj: nn.Linear
    down_proj: nn.Linear

    def __init__(self, config: Gemma3Config, *, key: jax.Array):
        D, M = config.hidden_size, config.intermediate_size
        self.gate_proj = _linear(D, M, ("embed", "mlp"), key=nn.subkey(key, "gate_proj"), use_bias=False)
        self.up_proj = _linear(D, M, ("embed", "mlp"), key=nn.subkey(key, "up_proj"), use_bias=False)
        self.down_proj = _linear(M, D, ("mlp", "embed"), key=nn.subkey(key, "down_proj"), use_bias=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.gelu(self.gate_proj(x), approximate=True) * self.up_proj(x))  # (B, T, D)


class Gemma3DecoderLayer(nn.Module):
    """``h = x + norm(attn(norm(x)))``, then ``h + norm(mlp(norm(h)))``: ``(B, T, D) -> (B, T, D)``.

    ``sliding`` (static) says whether the layer is local; stacked layers hold ``None`` and
    are told per call (``sliding=`` a traced bool, from the scan).
    """

    input_layernorm: Gemma3RMSNorm
    self_attn: Gemma3Attention
    post_attention_layernorm: Gemma3RMSNorm
    pre_feedforward_layernorm: Gemma3RMSNorm
    mlp: Gemma3MLP
    post_feedforward_layernorm: Gemma3RMSNorm
    sliding: bool | None = nn.static(default=None)

    def __init__(self, config: Gemma3Config, *, key: jax.Array, sliding: bool | None):
        norm = lambda: Gemma3RMSNorm(config.hidden_size, eps=config.norm_eps)  # noqa: E731
        self.sliding = sliding
        self.input_layernorm = norm()
        self.self_attn = Gemma3Attention(config, key=nn.subkey(key, "self_attn"))
        self.post_attention_layernorm = norm()
        self.pre_feedforward_layernorm = norm()
        self.mlp = Gemma3MLP(config, key=nn.subkey(key, "mlp"))
        self.post_feedforward_layernorm = norm()

    def _mlp(self, h: jax.Array) -> jax.Array:
        return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))  # (B, T, D)

    def __call__(self, x: jax.Array, *, sliding=None, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, key: jax.Array | None = None) -> jax.Array:
        del key  # no dropout in Gemma 3
        sliding = self.sliding if sliding is None else sliding
        a = self.self_attn(self.input_layernorm(x), sliding=sliding, segment_ids=segment_ids, positions=positions)
        return self._mlp(x + self.post_attention_layernorm(a))

    def decode(self, x: jax.Array, cache: nn.KVCache, *, positions: jax.Array,
               sliding=None) -> tuple[jax.Array, nn.KVCache]:
        sliding = self.sliding if sliding is None else sliding
        a, cache = self.self_attn.decode(self.input_layernorm(x), cache, positions=positions, sliding=sliding)
        return self._mlp(x + self.post_attention_layernorm(a)), cache


def _checkpointed(body: Callable, remat: str | None) -> Callable:
    """``body`` under ``jax.checkpoint`` with the policy ``remat`` names (as ``nn.Stacked``'s)."""
    if remat is None:
        return body
    policy = (jax.checkpoint_policies.nothing_saveable if remat == "full"
              else getattr(jax.checkpoint_policies, remat))
    return jax.checkpoint(body, policy=policy)


class Gemma3Model(nn.Module):
    """Scaled embedding, layers and the final norm: ids ``(B, T)`` -> hidden ``(B, T, D)``."""

    embed_tokens: nn.Embedding
    layers: tuple[Gemma3DecoderLayer, ...] | nn.Stacked
    norm: Gemma3RMSNorm
    sliding: tuple[bool, ...] = nn.static()  # per layer: local or global
    embed_scale: float = nn.static()

    def __init__(self, config: Gemma3Config, *, key: jax.Array):
        self.sliding, self.embed_scale = config.sliding_layers, config.hidden_size ** 0.5
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, key=nn.subkey(key, "embed_tokens"),
                                         weight_init=jax.nn.initializers.normal(0.02))
        if config.scan_layers:
            self.layers = nn.Stacked(lambda k: Gemma3DecoderLayer(config, key=k, sliding=None), config.num_layers,
                                     key=nn.subkey(key, "layers"), remat=config.remat)
        else:
            self.layers = tuple(Gemma3DecoderLayer(config, key=nn.subkey(key, f"layers[{i}]"), sliding=s)
                                for i, s in enumerate(self.sliding))
        self.norm = Gemma3RMSNorm(config.hidden_size, eps=config.norm_eps)

    def _embed(self, ids: jax.Array) -> jax.Array:
        x = self.embed_tokens(ids)  # (B, T, D)
        return x * jnp.asarray(self.embed_scale, x.dtype)

    def __call__(self, ids: jax.Array, *, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        x = self._embed(ids)
        if not isinstance(self.layers, nn.Stacked):
            return self.norm(apply_layers(self.layers, x, segment_ids=segment_ids, positions=positions))

        def body(h, xs):  # one stacked layer, told whether it is local
            layer, sliding = xs
            return layer(h, sliding=sliding, segment_ids=segment_ids, positions=positions), None

        body = _checkpointed(body, self.layers.remat)
        x, _ = jax.lax.scan(body, x, (self.layers.layer, jnp.asarray(self.sliding)))
        return self.norm(x)  # (B, T, D)

    def decode(self, ids: jax.Array, cache, *, positions: jax.Array) -> tuple[jax.Array, object]:
        x = self._embed(ids)
        if not isinstance(self.layers, nn.Stacked):
            x, cache = decode_layers(self.layers, x, cache, positions=positions)
            return self.norm(x), cache

        def body(h, xs):
            layer, layer_cache, sliding = xs
            return layer.decode(h, layer_cache, positions=positions, sliding=sliding)

        x, new = jax.lax.scan(body, x, (self.layers.layer, cache.layer, jnp.asarray(self.sliding)))
        return self.norm(x), nn.replace(cache, layer=new)


class Gemma3(nn.Module):
    """Token ids ``(B, T)`` -> next-token logits ``(B, T, vocab_size)``, as ``Llama``.

    ``model(ids, segment_ids=None, positions=None)`` and ``model.decode(ids, cache, positions=None)
    -> (logits, new_cache)``. With ``final_softcap`` the logits are
    ``final_softcap * tanh(logits / final_softcap)``.
    """

    model: Gemma3Model
    lm_head: nn.Linear | None
    config: Gemma3Config = nn.static()

    def __init__(self, config: Gemma3Config, *, key: jax.Array):
        self.config = config
        self.model = Gemma3Model(config, key=nn.subkey(key, "model"))
        self.lm_head = None
        if not config.tie_embeddings:
            self.lm_head = _linear(config.hidden_size, config.vocab_size, ("embed", "vocab"),
                                   key=nn.subkey(key, "lm_head"), use_bias=False)

    def init_cache(self, batch: int, max_len: int | None = None, *, dtype=jnp.float32, rolling: bool = False):
        """An empty KV cache for ``batch`` sequences of up to ``max_len`` (default ``config.max_len``)
        tokens: one ``nn.KVCache`` per layer, or with ``scan_layers`` one ``nn.Stacked`` of them.
        ``rolling=True`` keeps the most recent ``max_len`` instead (as ``Llama.init_cache``): past
        ``max_len`` the global layers see a sliding window of that many tokens."""
        c = self.config
        max_len = c.max_len if max_len is None else max_len
        if max_len > c.max_len:
            raise ValueError(f"init_cache: max_len={max_len} exceeds the model's max_len={c.max_len}; a "
                             f"rolling cache (rolling=True) of max_len decodes past it.")
        one = nn.KVCache(batch, max_len, c.num_kv_heads, c.head_dim, dtype=dtype, rolling=rolling)
        return layer_caches(one, c.num_layers, c.scan_layers)

    def _logits(self, h: jax.Array) -> jax.Array:
        logits = self.model.embed_tokens.attend(h) if self.lm_head is None else self.lm_head(h)  # (B, T, V)
        cap = self.config.final_softcap
        return logits if cap is None else cap * jnp.tanh(logits / cap)

    def __call__(self, ids: jax.Array, *, segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
                 key: jax.Array | None = None) -> jax.Array:
        del key  # no dropout in Gemma 3; accepted so every model takes key=
        ids = check_token_inputs("Gemma3", ids, segment_ids, positions)
        return self._logits(self.model(ids, segment_ids=segment_ids, positions=positions))

    def decode(self, ids: jax.Array, cache, *, positions: jax.Array | None = None) -> tuple[jax.Array, object]:
        """Logits ``(B, T, V)`` of new tokens ``ids`` after the cached ones, and the new cache.

        ``positions`` ``(B, T)``: the tokens' positions (default: the cache's next ones); -1
        marks padding, e.g. of left-padded prompts.
        """
        ids = check_token_inputs("Gemma3", ids, None, None)
        positions = decode_positions("Gemma3", ids, cache, positions)
        h, cache = self.model.decode(ids, cache, positions=positions)
        return self._logits(h), cache
