"""Llama (Touvron et al. 2023; Llama 3, 2024): a decoder-only transformer with RoPE, in one file.

Token embedding, ``num_layers`` pre-norm blocks (RMSNorm, causal grouped-query
self-attention with rotary position embeddings, RMSNorm, SwiGLU MLP; no biases by
default), a final RMSNorm and the unembedding, tied or not. Decoding uses an
explicit KV cache: ``init_cache`` and ``model.decode(ids, cache) -> (logits, cache)``;
see ``models.generate`` for sampling.

Parameter paths copy Hugging Face ``LlamaForCausalLM`` (``models.hf.llama_names(config)``
is the import table). Linear weights are stored ``(in, out)``, the transpose of HF's:

===================================================  =========================================
Hugging Face                                         baobab
===================================================  =========================================
``model.embed_tokens.weight`` (V, D)                 same
``model.layers.{i}.self_attn.q_proj.weight`` (out, in)  ``model.layers[i].self_attn.q_proj.weight`` (in, out)
``... .k_proj``, ``v_proj``, ``o_proj``              same pattern (``k``/``v``: ``kv_heads * head_dim``)
``model.layers.{i}.mlp.gate_proj/up_proj/down_proj``  same pattern
``model.layers.{i}.input_layernorm.weight``          ``model.layers[i].input_layernorm.weight``
``model.layers.{i}.post_attention_layernorm.weight``  same pattern
``model.layers.{i}.self_attn.q_norm/k_norm.weight``  same pattern, ``(head_dim,)``; only with ``qk_norm``
``model.norm.weight``                                same
``lm_head.weight`` (V, D)                            ``lm_head.weight`` (D, V); absent when tied
===================================================  =========================================

With ``scan_layers=True`` the layers are one ``nn.Stacked`` and the paths read
``model.layers.layer.self_attn.q_proj.weight`` with a leading ``(num_layers,)`` axis;
the importer stacks ``layers.0 ... layers.{L-1}`` along axis 0 (``models.hf.load_hf``).

Mistral, Qwen2 and Qwen3 are this architecture with options (``sliding_window``,
``qkv_bias``, ``qk_norm``); their configs, each with its own ``kind`` and HF names, are in
``llama_variants.py``.

RoPE pairs dimension ``i`` with ``i + head_dim / 2`` (HF's "rotate half" layout, which
HF checkpoints are already permuted for), via ``nn.RotaryEmbedding``; ``rope_scaling``
supports HF's ``"linear"`` and ``"llama3"`` rope types.

>>> import jax, jax.numpy as jnp
>>> from baobab.models import Llama, LlamaConfig
>>> config = LlamaConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
...                      intermediate_size=64, rope_scaling=None)
>>> model = Llama(config, key=jax.random.key(0))
>>> ids = jnp.zeros((2, 8), jnp.int32)  # (B, T)
>>> model(ids).shape  # (B, T, V)
(2, 8, 100)
>>> logits, cache = model.decode(ids, model.init_cache(2, 16))  # prefill
>>> model.init_cache(2, 16)[0].k.shape  # (B, max_len, kv_heads, head_dim), per layer
(2, 16, 2, 8)
"""

from __future__ import annotations

from typing import ClassVar, Literal

import einops
import jax
import jax.numpy as jnp
import pydantic

from baobab import nn
from baobab.config import Config

from ._decoder import apply_layers, check_token_inputs, decode_layers, decode_positions, layer_caches

__all__ = ["RopeScalingConfig", "LlamaConfig", "Llama", "LlamaDecoderLayer"]

ACTIVATIONS = {"silu": jax.nn.silu, "gelu_tanh": jax.nn.gelu}


class RopeScalingConfig(Config):
    """How RoPE frequencies are stretched (HF ``rope_scaling`` / ``rope_parameters``).

    ``"linear"``: every frequency divided by ``factor``. ``"llama3"``: Llama 3.1's
    smooth band scheme with ``low_freq_factor``, ``high_freq_factor`` and
    ``original_max_len`` [original_max_position_embeddings]. See ``nn.RopeScaling``.
    """

    kind: Literal["linear", "llama3"] = "llama3"
    factor: float = pydantic.Field(8.0, gt=0.0)
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_len: int = pydantic.Field(8192, gt=0)


class LlamaConfig(Config):
    """Llama. The defaults are Llama 3.2 1B (1.24B parameters, tied embeddings).

    Hugging Face ``LlamaConfig`` names in brackets: ``vocab_size``, ``max_len``
    [max_position_embeddings], ``hidden_size``, ``num_layers`` [num_hidden_layers],
    ``num_heads`` [num_attention_heads], ``num_kv_heads`` [num_key_value_heads; None =
    num_heads], ``head_dim`` [None = hidden_size // num_heads], ``intermediate_size``,
    ``norm_eps`` [rms_norm_eps], ``rope_theta``, ``rope_scaling`` [rope_scaling /
    rope_parameters], ``attention_bias``, ``mlp_bias``, ``tie_embeddings``
    [tie_word_embeddings], ``activation`` [hidden_act: "silu"].

    Options of the Llama family (``MistralConfig``, ``Qwen2Config``, ``Qwen3Config`` in
    ``llama_variants.py`` set them): ``attention_bias`` puts biases on all four
    projections (HF ``attention_bias``), ``qkv_bias`` on ``q``/``k``/``v`` only (Qwen2's
    fixed layout; ``o_proj`` keeps none); ``qk_norm`` RMS-normalises each query and key
    head over ``head_dim`` before RoPE (Qwen3's ``q_norm``/``k_norm``); ``sliding_window``
    lets each query see only the ``sliding_window`` most recent positions, itself
    included (Mistral [sliding_window]; None = all).

    ``max_len`` adds no parameters: it bounds ``init_cache`` and ``generate``.
    ``scan_layers`` and ``remat`` are as in ``GPT2Config``. There is no dropout
    (Llama has none; HF's ``attention_dropout`` is 0).
    """

    kind: Literal["llama"] = "llama"
    tasks: ClassVar[tuple[str, ...]] = ("language_model",)  # the baobab.tasks it can run
    vocab_size: int = pydantic.Field(128256, gt=0)
    max_len: int = pydantic.Field(131072, gt=0)
    hidden_size: int = pydantic.Field(2048, gt=0)
    num_layers: int = pydantic.Field(16, gt=0)
    num_heads: int = pydantic.Field(32, gt=0)
    num_kv_heads: int | None = pydantic.Field(8, gt=0)
    head_dim: int | None = pydantic.Field(None, gt=0)
    intermediate_size: int = pydantic.Field(8192, gt=0)
    activation: Literal["silu", "gelu_tanh"] = "silu"
    norm_eps: float = pydantic.Field(1e-5, gt=0.0)
    rope_theta: float = pydantic.Field(500000.0, gt=0.0)
    rope_scaling: RopeScalingConfig | None = RopeScalingConfig(kind="llama3", factor=32.0)
    attention_bias: bool = False
    mlp_bias: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = pydantic.Field(None, gt=0)
    tie_embeddings: bool = True
    scan_layers: bool = False
    remat: str | None = None

    @pydantic.model_validator(mode="after")
    def _fits(self) -> "LlamaConfig":
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}; "
                             f"set head_dim explicitly.")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_kv_heads={self.kv_heads} does not divide num_heads={self.num_heads}.")
        if self.dims_per_head % 2:
            raise ValueError(f"head_dim={self.dims_per_head} must be even for rotary embeddings.")
        if self.remat is not None and not self.scan_layers:
            raise ValueError("remat needs scan_layers=True (it wraps the scanned layer).")
        return self

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def dims_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads


def _linear(d_in: int, d_out: int, axes: tuple[str, str], *, key: jax.Array, use_bias: bool) -> nn.Linear:
    """A ``Linear`` with HF Llama's init: weights ``N(0, 0.02)``, zero bias."""
    return nn.Linear(d_in, d_out, key=key, axes=axes, use_bias=use_bias,
                     weight_init=jax.nn.initializers.normal(0.02), bias_init=jax.nn.initializers.zeros)


class LlamaAttention(nn.Module):
    """Causal grouped-query self-attention with RoPE: ``(B, T, D) -> (B, T, D)``.

    ``num_heads`` query heads share ``num_kv_heads`` key/value heads in groups. With
    ``qk_norm`` each head of ``q`` and ``k`` is RMS-normalised (``q_norm``/``k_norm``,
    weights ``(head_dim,)``) before RoPE; ``window`` (static) is the sliding window.
    """

    q_proj: nn.Linear  # (D, H * Dh)
    k_proj: nn.Linear  # (D, K * Dh)
    v_proj: nn.Linear  # (D, K * Dh)
    o_proj: nn.Linear  # (H * Dh, D)
    q_norm: nn.RMSNorm | None  # (Dh,), Qwen3
    k_norm: nn.RMSNorm | None  # (Dh,), Qwen3
    rotary: nn.RotaryEmbedding
    num_heads: int = nn.static()
    num_kv_heads: int = nn.static()
    window: int | None = nn.static(default=None)

    def __init__(self, config: LlamaConfig, *, key: jax.Array):
        D, H, K, Dh = config.hidden_size, config.num_heads, config.kv_heads, config.dims_per_head
        self.num_heads, self.num_kv_heads, self.window = H, K, config.sliding_window
        qkv_bias, o_bias = config.attention_bias or config.qkv_bias, config.attention_bias
        self.q_proj = _linear(D, H * Dh, ("embed", "heads"), key=nn.subkey(key, "q_proj"), use_bias=qkv_bias)
        self.k_proj = _linear(D, K * Dh, ("embed", "kv_heads"), key=nn.subkey(key, "k_proj"), use_bias=qkv_bias)
        self.v_proj = _linear(D, K * Dh, ("embed", "kv_heads"), key=nn.subkey(key, "v_proj"), use_bias=qkv_bias)
        self.o_proj = _linear(H * Dh, D, ("heads", "embed"), key=nn.subkey(key, "o_proj"), use_bias=o_bias)
        self.q_norm = nn.RMSNorm(Dh, eps=config.norm_eps) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(Dh, eps=config.norm_eps) if config.qk_norm else None
        s = config.rope_scaling
        scaling = None if s is None else nn.RopeScaling(s.kind, s.factor, s.low_freq_factor,
                                                        s.high_freq_factor, s.original_max_len)
        self.rotary = nn.RotaryEmbedding(Dh, base=config.rope_theta, scaling=scaling)

    def _qkv(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        q = einops.rearrange(self.q_proj(x), "b t (h d) -> b t h d", h=self.num_heads)  # (B, T, H, Dh)
        k = einops.rearrange(self.k_proj(x), "b t (k d) -> b t k d", k=self.num_kv_heads)  # (B, T, K, Dh)
        v = einops.rearrange(self.v_proj(x), "b t (k d) -> b t k d", k=self.num_kv_heads)  # (B, T, K, Dh)
        if self.q_norm is not None:  # per head, over head_dim
            q, k = self.q_norm(q), self.k_norm(k)
        return self.rotary(q, positions), self.rotary(k, positions), v

    def _out(self, out: jax.Array) -> jax.Array:
        return self.o_proj(einops.rearrange(out, "b t h d -> b t (h d)"))  # (B, T, D)

    def __call__(self, x: jax.Array, *, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        positions = jnp.arange(x.shape[1]) if positions is None else positions  # (T,) or (B, T)
        q, k, v = self._qkv(x, positions)
        # the window counts tokens of the row: within a packed document that is positions
        out = nn.attention(q, k, v, causal=True, segment_ids=segment_ids, window=self.window)  # (B, T, H, Dh)
        return self._out(out)  # GQA by head groups

    def decode(self, x: jax.Array, cache: nn.KVCache, *, positions: jax.Array) -> tuple[jax.Array, nn.KVCache]:
        """New tokens ``x`` ``(B, T, D)`` at ``positions`` ``(B, T)`` after the cached ones: ``(y, new cache)``."""
        q, k, v = self._qkv(x, jnp.maximum(positions, 0))  # padding (-1) is never attended to
        out, cache = cache.attend(q, k, v, positions=positions, window=self.window)  # (B, T, H, Dh)
        return self._out(out), cache


class LlamaMLP(nn.Module):
    """SwiGLU: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, ``(B, T, D) -> (B, T, D)``."""

    gate_proj: nn.Linear
    up_proj: nn.Linear
    down_proj: nn.Linear
    activation: str = nn.static()

    def __init__(self, config: LlamaConfig, *, key: jax.Array):
        D, M, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.activation = config.activation
        self.gate_proj = _linear(D, M, ("embed", "mlp"), key=nn.subkey(key, "gate_proj"), use_bias=bias)
        self.up_proj = _linear(D, M, ("embed", "mlp"), key=nn.subkey(key, "up_proj"), use_bias=bias)
        self.down_proj = _linear(M, D, ("mlp", "embed"), key=nn.subkey(key, "down_proj"), use_bias=bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = ACTIVATIONS[self.activation](self.gate_proj(x)) * self.up_proj(x)  # (B, T, M)
        return self.down_proj(h)  # (B, T, D)


class LlamaDecoderLayer(nn.Module):
    """``x + attn(norm(x))``, then ``h + mlp(norm(h))``: ``(B, T, D) -> (B, T, D)``."""

    input_layernorm: nn.RMSNorm
    self_attn: LlamaAttention
    post_attention_layernorm: nn.RMSNorm
    mlp: LlamaMLP

    def __init__(self, config: LlamaConfig, *, key: jax.Array):
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.self_attn = LlamaAttention(config, key=nn.subkey(key, "self_attn"))
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = LlamaMLP(config, key=nn.subkey(key, "mlp"))

    def __call__(self, x: jax.Array, *, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, key: jax.Array | None = None) -> jax.Array:
        del key  # no dropout in Llama
        h = x + self.self_attn(self.input_layernorm(x), segment_ids=segment_ids, positions=positions)  # (B, T, D)
        return h + self.mlp(self.post_attention_layernorm(h))  # (B, T, D)

    def decode(self, x: jax.Array, cache: nn.KVCache, *, positions: jax.Array) -> tuple[jax.Array, nn.KVCache]:
        a, cache = self.self_attn.decode(self.input_layernorm(x), cache, positions=positions)
        h = x + a  # (B, T, D)
        return h + self.mlp(self.post_attention_layernorm(h)), cache


class LlamaModel(nn.Module):
    """Embedding, layers and the final norm: ids ``(B, T)`` -> hidden ``(B, T, D)``."""

    embed_tokens: nn.Embedding
    layers: tuple[LlamaDecoderLayer, ...] | nn.Stacked
    norm: nn.RMSNorm

    def __init__(self, config: LlamaConfig, *, key: jax.Array):
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, key=nn.subkey(key, "embed_tokens"),
                                         weight_init=jax.nn.initializers.normal(0.02))
        if config.scan_layers:
            self.layers = nn.Stacked(lambda k: LlamaDecoderLayer(config, key=k), config.num_layers,
                                     key=nn.subkey(key, "layers"), remat=config.remat)
        else:
            self.layers = tuple(LlamaDecoderLayer(config, key=nn.subkey(key, f"layers[{i}]"))
                                for i in range(config.num_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)

    def __call__(self, ids: jax.Array, *, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        x = apply_layers(self.layers, self.embed_tokens(ids), segment_ids=segment_ids, positions=positions)
        return self.norm(x)  # (B, T, D)

    def decode(self, ids: jax.Array, cache, *, positions: jax.Array) -> tuple[jax.Array, object]:
        x, cache = decode_layers(self.layers, self.embed_tokens(ids), cache, positions=positions)
        return self.norm(x), cache


class Llama(nn.Module):
    """Token ids ``(B, T)`` -> next-token logits ``(B, T, vocab_size)``.

    * ``model(ids, segment_ids=None, positions=None)``: causal logits over the whole
      sequence (positions ``0 .. T-1`` by default). Packed rows pass ``segment_ids`` and
      ``positions`` ``(B, T)``, which keep documents apart and restart RoPE per document.
    * ``model.decode(ids, cache)``: the new tokens at positions ``cache index ...`` with a
      cache from ``init_cache``; returns ``(logits, new_cache)``.
    """

    model: LlamaModel
    lm_head: nn.Linear | None
    config: LlamaConfig = nn.static()

    def __init__(self, config: LlamaConfig, *, key: jax.Array):
        self.config = config
        self.model = LlamaModel(config, key=nn.subkey(key, "model"))
        self.lm_head = None
        if not config.tie_embeddings:
            self.lm_head = _linear(config.hidden_size, config.vocab_size, ("embed", "vocab"),
                                   key=nn.subkey(key, "lm_head"), use_bias=False)

    def init_cache(self, batch: int, max_len: int | None = None, *, dtype=jnp.float32, rolling: bool = False):
        """An empty KV cache for ``batch`` sequences of up to ``max_len`` (default ``config.max_len``) tokens.

        A tuple of ``nn.KVCache`` (one per layer), or with ``scan_layers`` one
        ``nn.Stacked`` of them (arrays ``(num_layers, B, max_len, kv_heads, head_dim)``).
        ``rolling=True`` keeps the most recent ``max_len`` tokens instead, so decoding
        goes on past ``max_len`` with attention over that sliding window (with a
        ``sliding_window`` model, a rolling cache of that length loses nothing).
        """
        c = self.config
        max_len = c.max_len if max_len is None else max_len
        if max_len > c.max_len:
            raise ValueError(f"init_cache: max_len={max_len} exceeds the model's max_len={c.max_len}; a "
                             f"rolling cache (rolling=True) of max_len decodes past it.")
        one = nn.KVCache(batch, max_len, c.kv_heads, c.dims_per_head, dtype=dtype, rolling=rolling)
        return layer_caches(one, c.num_layers, c.scan_layers)

    def _logits(self, h: jax.Array) -> jax.Array:
        return self.model.embed_tokens.attend(h) if self.lm_head is None else self.lm_head(h)  # (B, T, V)

    def __call__(self, ids: jax.Array, *, segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
                 key: jax.Array | None = None) -> jax.Array:
        del key  # no dropout in Llama; accepted so every model takes key=
        ids = check_token_inputs("Llama", ids, segment_ids, positions)
        return self._logits(self.model(ids, segment_ids=segment_ids, positions=positions))

    def decode(self, ids: jax.Array, cache, *, positions: jax.Array | None = None) -> tuple[jax.Array, object]:
        """Logits ``(B, T, V)`` of new tokens ``ids`` after the cached ones, and the new cache.

        ``positions`` ``(B, T)``: the tokens' positions (default: the cache's next ones); -1
        marks padding, e.g. of left-padded prompts.
        """
        ids = check_token_inputs("Llama", ids, None, None)
        positions = decode_positions("Llama", ids, cache, positions)
        h, cache = self.model.decode(ids, cache, positions=positions)
        return self._logits(h), cache
