"""GPT-2 (Radford et al. 2019): a decoder-only transformer with learned positions, in one file.

Token and position embeddings, ``num_layers`` pre-norm blocks (LayerNorm, causal
self-attention, LayerNorm, GELU MLP, all with biases), a final LayerNorm, and the
unembedding tied to the token embedding. Attention is ``nn.attention``. Packed rows
take ``segment_ids=`` and ``positions=``. Decoding uses an explicit KV cache:
``init_cache`` and ``model.decode(ids, cache) -> (logits, cache)``; see
``models.generate`` for sampling.

Parameter paths copy Hugging Face ``GPT2LMHeadModel`` (``models.hf.gpt2_names(config)``
is the import table). GPT-2 stores its projections as ``Conv1D`` with weights
``(in, out)``, which is ``nn.Linear``'s layout, so every tensor copies unchanged:

================================================  ==========================================
Hugging Face                                      baobab
================================================  ==========================================
``transformer.wte.weight`` (V, D)                 same
``transformer.wpe.weight`` (max_len, D)           same
``transformer.h.{i}.ln_1.weight``                 ``transformer.h[i].ln_1.weight``
``transformer.h.{i}.attn.c_attn.weight`` (D, 3D)  ``transformer.h[i].attn.c_attn.weight``, fused q|k|v
``transformer.h.{i}.attn.c_proj``                 ``transformer.h[i].attn.c_proj``
``transformer.h.{i}.mlp.c_fc`` / ``mlp.c_proj``   ``transformer.h[i].mlp.c_fc`` / ``mlp.c_proj``
``transformer.ln_f``                              same
``lm_head.weight`` (V, D)                         absent when tied (the default); else (D, V)
================================================  ==========================================

With ``scan_layers=True`` the blocks are one ``nn.Stacked`` and the paths read
``transformer.h.layer.ln_1.weight`` with a leading ``(num_layers,)`` axis; the
importer stacks ``h.0 ... h.{L-1}`` along axis 0 (``models.hf.load_hf`` does it).

``c_attn`` stays fused, as in the checkpoint, so the import is a copy. Its logical
axes are ``("embed", "heads")``: under tensor parallelism the fused ``3D`` axis is split
evenly, which does not fall on the q/k/v boundaries, so XLA inserts a reshard after
the projection. Llama (separate ``q_proj``/``k_proj``/``v_proj``) is the better fit
for tensor-parallel training.

>>> import jax, jax.numpy as jnp
>>> from baobab.models import GPT2, GPT2Config
>>> model = GPT2(GPT2Config(vocab_size=100, max_len=32, hidden_size=32, num_layers=2, num_heads=4),
...              key=jax.random.key(0))
>>> ids = jnp.zeros((2, 8), jnp.int32)  # (B, T)
>>> model(ids).shape  # (B, T, V)
(2, 8, 100)
>>> logits, cache = model.decode(ids, model.init_cache(2, 16))  # prefill
>>> logits, cache = model.decode(ids[:, :1], cache)  # one more token, at position 8
>>> logits.shape
(2, 1, 100)
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar, Literal

import einops
import jax
import jax.numpy as jnp
import pydantic

from baobab import nn
from baobab.config import Config

from ._decoder import apply_layers, check_token_inputs, decode_layers, decode_positions, layer_caches

__all__ = ["GPT2Config", "GPT2", "GPT2Block"]

ACTIVATIONS = {
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # HF "gelu_new" (GPT-2's)
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


class GPT2Config(Config):
    """GPT-2. The defaults are GPT-2 small (124M parameters).

    Hugging Face ``GPT2Config`` names in brackets: ``vocab_size``, ``max_len``
    [n_positions], ``hidden_size`` [n_embd], ``num_layers`` [n_layer], ``num_heads``
    [n_head], ``intermediate_size`` [n_inner; None = 4 * hidden_size], ``activation``
    [activation_function: "gelu_new" is "gelu_tanh"], ``norm_eps`` [layer_norm_epsilon],
    ``dropout`` [embd_pdrop = resid_pdrop], ``attention_dropout`` [attn_pdrop],
    ``tie_embeddings`` [tie_word_embeddings].

    ``scan_layers`` stores the blocks stacked and runs them with ``lax.scan`` (compile
    time flat in depth); ``remat`` (needs ``scan_layers``) recomputes each block in the
    backward pass: ``"full"`` or a ``jax.checkpoint_policies`` name.
    """

    kind: Literal["gpt2"] = "gpt2"
    tasks: ClassVar[tuple[str, ...]] = ("language_model",)  # the baobab.tasks it can run
    vocab_size: int = pydantic.Field(50257, gt=0)
    max_len: int = pydantic.Field(1024, gt=0, description="number of learned positions")
    hidden_size: int = pydantic.Field(768, gt=0)
    num_layers: int = pydantic.Field(12, gt=0)
    num_heads: int = pydantic.Field(12, gt=0)
    intermediate_size: int | None = pydantic.Field(None, gt=0, description="None: 4 * hidden_size")
    activation: Literal["gelu_tanh", "gelu", "relu", "silu"] = "gelu_tanh"
    norm_eps: float = pydantic.Field(1e-5, gt=0.0)
    dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    attention_dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    tie_embeddings: bool = True
    scan_layers: bool = False
    remat: str | None = None

    @pydantic.model_validator(mode="after")
    def _fits(self) -> "GPT2Config":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}.")
        if self.remat is not None and not self.scan_layers:
            raise ValueError("remat needs scan_layers=True (it wraps the scanned block).")
        return self

    @property
    def mlp_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size


def _linear(d_in: int, d_out: int, axes: tuple[str, str], *, key: jax.Array, std: float = 0.02,
            use_bias: bool = True) -> nn.Linear:
    """A ``Linear`` with GPT-2's init: weights ``N(0, std)``, zero bias."""
    return nn.Linear(d_in, d_out, key=key, axes=axes, use_bias=use_bias,
                     weight_init=jax.nn.initializers.normal(std), bias_init=jax.nn.initializers.zeros)


class GPT2Attention(nn.Module):
    """Causal multi-head self-attention with a fused q|k|v projection: ``(B, T, D) -> (B, T, D)``.

    The attention itself is ``nn.attention`` (implementation per compile platform).
    """

    c_attn: nn.Linear  # (D, 3D): q, k, v side by side
    c_proj: nn.Linear  # (D, D)
    resid_dropout: nn.Dropout
    num_heads: int = nn.static()
    attention_dropout: float = nn.static(default=0.0)
    training: bool = nn.static(default=True)

    def __init__(self, config: GPT2Config, *, key: jax.Array):
        D = config.hidden_size
        self.num_heads = config.num_heads
        self.attention_dropout = config.attention_dropout
        self.training = True
        self.c_attn = _linear(D, 3 * D, ("embed", "heads"), key=nn.subkey(key, "c_attn"))
        # GPT-2 scales the init of the projections into the residual stream by 1/sqrt(2 * layers).
        self.c_proj = _linear(D, D, ("heads", "embed"), key=nn.subkey(key, "c_proj"),
                              std=0.02 / math.sqrt(2 * config.num_layers))
        self.resid_dropout = nn.Dropout(config.dropout)

    def _qkv(self, x: jax.Array) -> list[jax.Array]:
        split = functools.partial(einops.rearrange, pattern="b t (h d) -> b t h d", h=self.num_heads)
        return list(map(split, jnp.split(self.c_attn(x), 3, axis=-1)))  # (B, T, H, Dh) each

    def _out(self, out: jax.Array, key: jax.Array | None) -> jax.Array:
        return self.resid_dropout(self.c_proj(einops.rearrange(out, "b t h d -> b t (h d)")), key=key)  # (B, T, D)

    def __call__(self, x: jax.Array, *, segment_ids: jax.Array | None = None,
                 key: jax.Array | None = None) -> jax.Array:
        q, k, v = self._qkv(x)
        rate = self.attention_dropout if self.training else 0.0
        k_attn, k_out = (None, None) if key is None else jax.random.split(key)
        out = nn.attention(q, k, v, causal=True, segment_ids=segment_ids, dropout_rate=rate,
                           key=k_attn)  # (B, T, H, Dh)
        return self._out(out, k_out)

    def decode(self, x: jax.Array, cache: nn.KVCache, *, positions: jax.Array) -> tuple[jax.Array, nn.KVCache]:
        """New tokens ``x`` ``(B, T, D)`` at ``positions`` ``(B, T)`` after the cached ones: ``(y, new cache)``."""
        q, k, v = self._qkv(x)
        out, cache = cache.attend(q, k, v, positions=positions)  # (B, T, H, Dh)
        return self._out(out, None), cache


class GPT2MLP(nn.Module):
    """``c_proj(act(c_fc(x)))``: ``(B, T, D) -> (B, T, D)`` through ``mlp_size``."""

    c_fc: nn.Linear
    c_proj: nn.Linear
    dropout: nn.Dropout
    activation: str = nn.static()

    def __init__(self, config: GPT2Config, *, key: jax.Array):
        D, M = config.hidden_size, config.mlp_size
        self.activation = config.activation
        self.c_fc = _linear(D, M, ("embed", "mlp"), key=nn.subkey(key, "c_fc"))
        self.c_proj = _linear(M, D, ("mlp", "embed"), key=nn.subkey(key, "c_proj"),
                              std=0.02 / math.sqrt(2 * config.num_layers))
        self.dropout = nn.Dropout(config.dropout)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        h = ACTIVATIONS[self.activation](self.c_fc(x))  # (B, T, M)
        return self.dropout(self.c_proj(h), key=key)  # (B, T, D)


class GPT2Block(nn.Module):
    """``x + attn(ln_1(x))``, then ``h + mlp(ln_2(h))``: ``(B, T, D) -> (B, T, D)``."""

    ln_1: nn.LayerNorm
    attn: GPT2Attention
    ln_2: nn.LayerNorm
    mlp: GPT2MLP

    def __init__(self, config: GPT2Config, *, key: jax.Array):
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = GPT2Attention(config, key=nn.subkey(key, "attn"))
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = GPT2MLP(config, key=nn.subkey(key, "mlp"))

    def __call__(self, x: jax.Array, *, segment_ids: jax.Array | None = None,
                 key: jax.Array | None = None) -> jax.Array:
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        h = x + self.attn(self.ln_1(x), segment_ids=segment_ids, key=k1)  # (B, T, D)
        return h + self.mlp(self.ln_2(h), key=k2)  # (B, T, D)

    def decode(self, x: jax.Array, cache: nn.KVCache, *, positions: jax.Array) -> tuple[jax.Array, nn.KVCache]:
        a, cache = self.attn.decode(self.ln_1(x), cache, positions=positions)
        h = x + a  # (B, T, D)
        return h + self.mlp(self.ln_2(h)), cache


class GPT2Transformer(nn.Module):
    """Embeddings, blocks and the final norm: ids ``(B, T)`` -> hidden ``(B, T, D)``."""

    wte: nn.Embedding
    wpe: nn.LearnedPositionalEmbedding
    drop: nn.Dropout
    h: tuple[GPT2Block, ...] | nn.Stacked
    ln_f: nn.LayerNorm

    def __init__(self, config: GPT2Config, *, key: jax.Array):
        D, init = config.hidden_size, jax.nn.initializers.normal(0.02)
        self.wte = nn.Embedding(config.vocab_size, D, key=nn.subkey(key, "wte"), weight_init=init)
        self.wpe = nn.LearnedPositionalEmbedding(config.max_len, D, key=nn.subkey(key, "wpe"), weight_init=init)
        self.drop = nn.Dropout(config.dropout)
        if config.scan_layers:
            self.h = nn.Stacked(lambda k: GPT2Block(config, key=k), config.num_layers,
                                key=nn.subkey(key, "h"), remat=config.remat)
        else:
            self.h = tuple(GPT2Block(config, key=nn.subkey(key, f"h[{i}]")) for i in range(config.num_layers))
        self.ln_f = nn.LayerNorm(D, eps=config.norm_eps)

    def __call__(self, ids: jax.Array, *, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, key: jax.Array | None = None) -> jax.Array:
        positions = jnp.arange(ids.shape[1]) if positions is None else positions  # (T,) or (B, T)
        k_drop, k_blocks = (None, None) if key is None else jax.random.split(key)
        x = self.drop(self.wte(ids) + self.wpe(positions), key=k_drop)  # (B, T, D)
        x = apply_layers(self.h, x, segment_ids=segment_ids, key=k_blocks)
        return self.ln_f(x)  # (B, T, D)

    def decode(self, ids: jax.Array, cache, *, positions: jax.Array) -> tuple[jax.Array, object]:
        x = self.wte(ids) + self.wpe(jnp.maximum(positions, 0))  # (B, T, D); padding (-1) is never attended to
        x, cache = decode_layers(self.h, x, cache, positions=positions)
        return self.ln_f(x), cache


class GPT2(nn.Module):
    """Token ids ``(B, T)`` -> next-token logits ``(B, T, vocab_size)``.

    * ``model(ids, segment_ids=None, positions=None, key=None)``: causal logits over the
      whole sequence, ``T <= max_len``. Packed rows pass ``segment_ids`` and ``positions``
      ``(B, T)``: attention stays inside each document and positions restart, so each
      document's logits are those it would get alone. With ``config.dropout > 0`` a call
      in training mode needs ``key=`` (``nn.eval_mode(model)`` turns dropout off).
    * ``model.decode(ids, cache, positions=None)``: the new tokens at positions ``cache
      index ...`` (or ``positions``, -1 for padding) with a cache from ``init_cache``;
      returns ``(logits, new_cache)``. A prefill followed by one-token steps gives the
      full forward's logits. Learned positions end at ``max_len``: ``models.generate``
      goes past it by re-reading a sliding window of the last ``max_len`` tokens.
    """

    transformer: GPT2Transformer
    lm_head: nn.Linear | None
    config: GPT2Config = nn.static()

    def __init__(self, config: GPT2Config, *, key: jax.Array):
        self.config = config
        self.transformer = GPT2Transformer(config, key=nn.subkey(key, "transformer"))
        self.lm_head = None
        if not config.tie_embeddings:
            self.lm_head = _linear(config.hidden_size, config.vocab_size, ("embed", "vocab"),
                                   key=nn.subkey(key, "lm_head"), use_bias=False)

    def init_cache(self, batch: int, max_len: int | None = None, *, dtype=jnp.float32):
        """An empty KV cache for ``batch`` sequences of up to ``max_len`` (default ``config.max_len``) tokens.

        A tuple of ``nn.KVCache`` (one per block), or with ``scan_layers`` one
        ``nn.Stacked`` of them (arrays ``(num_layers, B, max_len, heads, head_dim)``).
        """
        c = self.config
        max_len = c.max_len if max_len is None else max_len
        if max_len > c.max_len:
            raise ValueError(f"init_cache: max_len={max_len} exceeds the model's {c.max_len} learned positions.")
        one = nn.KVCache(batch, max_len, c.num_heads, c.hidden_size // c.num_heads, dtype=dtype)
        return layer_caches(one, c.num_layers, c.scan_layers)

    def _logits(self, h: jax.Array) -> jax.Array:
        return self.transformer.wte.attend(h) if self.lm_head is None else self.lm_head(h)  # (B, T, V)

    def __call__(self, ids: jax.Array, *, segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
                 key: jax.Array | None = None) -> jax.Array:
        ids = check_token_inputs("GPT2", ids, segment_ids, positions)
        if ids.shape[1] > self.config.max_len:
            raise nn.ShapeError(
                f"GPT2 got {ids.shape[1]} tokens but has max_len={self.config.max_len} learned positions."
            )
        return self._logits(self.transformer(ids, segment_ids=segment_ids, positions=positions, key=key))

    def decode(self, ids: jax.Array, cache, *, positions: jax.Array | None = None) -> tuple[jax.Array, object]:
        """Logits ``(B, T, V)`` of new tokens ``ids`` after the cached ones, and the new cache.

        ``positions`` ``(B, T)``: the tokens' positions, ``< max_len`` (default: the cache's
        next ones); -1 marks padding, e.g. of left-padded prompts.
        """
        ids = check_token_inputs("GPT2", ids, None, None)
        positions = decode_positions("GPT2", ids, cache, positions)
        h, cache = self.transformer.decode(ids, cache, positions=positions)
        return self._logits(h), cache
