"""BART (Lewis et al. 2019): a post-norm transformer encoder-decoder, in one file.

A shared token embedding feeds both stacks. Each adds learned positions (looked up at
``position + 2``: BART's offset, so the tables have ``max_len + 2`` rows), normalises
(``layernorm_embedding``), then runs its layers. An encoder layer is self-attention
with the padding mask, add & LayerNorm, a GELU MLP (``fc1``, ``fc2``), add & LayerNorm.
A decoder layer adds causal self-attention, then cross-attention over the encoder
states, then the MLP, each followed by add & LayerNorm. Every projection has a bias.
The logits are the decoder states times the shared embedding (tied) plus
``final_logits_bias``. There is no final LayerNorm on either stack (mBART has one).

The encoder-decoder contract (``models.seq2seq.generate_seq2seq`` needs only this):

* ``model.encode(input_ids (B, S), attention_mask (B, S)) -> encoder_states (B, S, D)``;
  ``attention_mask`` is True (or 1) on real tokens.
* ``model.init_cache(encoder_states, attention_mask, *, max_len) -> cache``: the
  cross-attention keys and values of every decoder layer, computed once here, the
  encoder mask, and an empty self-attention ``nn.KVCache`` of ``max_len`` positions.
* ``model.decode(decoder_ids (B, T), cache) -> (logits (B, T, V), cache)``: the next
  ``T`` decoder tokens after the cached ones (a prefill, then one token at a time).
* ``model(input_ids, attention_mask, decoder_input_ids) -> logits (B, T, V)``:
  teacher forcing, the whole decoder sequence at once.

``model.decoder_hidden(encoder_states, attention_mask, decoder_input_ids)`` gives
``BartModel``'s last decoder hidden states ``(B, T, D)``, before the head.

Parameter paths copy Hugging Face ``BartForConditionalGeneration`` (``models.hf.bart_names``
is the import table). Linear weights are stored ``(in, out)``, the transpose of HF's:

====================================================  ===============================================
Hugging Face                                          baobab
====================================================  ===============================================
``model.shared.weight`` (V, D)                        same
``model.encoder.embed_positions.weight`` (L+2, D)     same (also ``model.decoder.``)
``model.encoder.layernorm_embedding``                 same (also ``model.decoder.``)
``model.encoder.layers.{i}.self_attn.q_proj``         ``model.encoder.layers[i].self_attn.q_proj``;
                                                      also ``k_proj``, ``v_proj``, ``out_proj``
``model.encoder.layers.{i}.self_attn_layer_norm``     same pattern; also ``fc1``, ``fc2``,
                                                      ``final_layer_norm``
``model.decoder.layers.{i}.encoder_attn.q_proj``      same pattern; also ``encoder_attn_layer_norm``
``final_logits_bias`` (1, V)                          same (``nn.state``: a buffer, not trained)
``lm_head.weight``                                    absent: tied to ``model.shared.weight``
``model.{encoder,decoder}.embed_tokens.weight``       absent: tied to ``model.shared.weight``
====================================================  ===============================================

With ``scan_layers=True`` each stack is one ``nn.Stacked`` (paths
``model.encoder.layers.layer.fc1.weight`` with a leading ``(layers,)`` axis); the
importer stacks ``layers.0 ... layers.{L-1}`` itself (``models.hf.load_hf``).

>>> import jax, jax.numpy as jnp
>>> from baobab.models import Bart, BartConfig
>>> config = BartConfig(vocab_size=50, max_len=16, hidden_size=32, encoder_layers=2, decoder_layers=1,
...                     encoder_heads=4, decoder_heads=2, encoder_ffn_size=64, decoder_ffn_size=48)
>>> model = Bart(config, key=jax.random.key(0))
>>> ids = jnp.array([[5, 6, 7, 2], [8, 9, 2, 1]])  # (B, S), right-padded with pad id 1
>>> mask = ids != 1  # (B, S)
>>> model(ids, mask, jnp.array([[2, 5, 6], [2, 8, 9]])).shape  # teacher forcing: (B, T, V)
(2, 3, 50)
>>> states = model.encode(ids, mask)  # (B, S, D)
>>> cache = model.init_cache(states, mask, max_len=8)
>>> logits, cache = model.decode(jnp.array([[2], [2]]), cache)  # the start token
>>> logits.shape
(2, 1, 50)
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

from ._decoder import apply_layers, decode_layers

__all__ = ["BartConfig", "Bart", "BartCache", "shift_tokens_right", "POSITION_OFFSET"]

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # HF "gelu" (erf), BART's
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # HF "gelu_new"
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}
#: BART looks its learned positions up at ``position + 2`` (a fairseq legacy of padding_idx=1).
POSITION_OFFSET = 2
NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which every BART LayerNorm uses


class BartConfig(Config):
    """BART. The defaults are ``facebook/bart-large`` (406M parameters).

    Hugging Face ``BartConfig`` names in brackets: ``vocab_size``, ``max_len``
    [max_position_embeddings], ``hidden_size`` [d_model], ``encoder_layers``,
    ``decoder_layers``, ``encoder_heads`` [encoder_attention_heads], ``decoder_heads``
    [decoder_attention_heads], ``encoder_ffn_size`` [encoder_ffn_dim], ``decoder_ffn_size``
    [decoder_ffn_dim], ``activation`` [activation_function: "gelu" is exact, "gelu_new" is
    "gelu_tanh"], ``dropout``, ``attention_dropout``, ``activation_dropout``, ``init_std``,
    ``scale_embedding``, ``pad_token_id``, ``bos_token_id``, ``eos_token_id``,
    ``decoder_start_token_id``. The embeddings are always tied (``tie_word_embeddings``);
    layerdrop and the generation settings (``forced_bos_token_id``, ``forced_eos_token_id``,
    beams, ``no_repeat_ngram_size``) are not modelled.

    ``scan_layers`` stores each stack's layers stacked and runs them with ``lax.scan``;
    ``remat`` (needs ``scan_layers``) recomputes each layer in the backward pass.
    """

    kind: Literal["bart"] = "bart"
    tasks: ClassVar[tuple[str, ...]] = ()  # no baobab.tasks runs an encoder-decoder yet
    vocab_size: int = pydantic.Field(50265, gt=0, description="shared encoder/decoder vocabulary")
    max_len: int = pydantic.Field(1024, gt=0, description="learned positions per stack (tables hold max_len + 2)")
    hidden_size: int = pydantic.Field(1024, gt=0, description="model width D (HF d_model)")
    encoder_layers: int = pydantic.Field(12, gt=0, description="number of encoder layers")
    decoder_layers: int = pydantic.Field(12, gt=0, description="number of decoder layers")
    encoder_heads: int = pydantic.Field(16, gt=0, description="attention heads of the encoder layers")
    decoder_heads: int = pydantic.Field(16, gt=0, description="attention heads of the decoder (self and cross)")
    encoder_ffn_size: int = pydantic.Field(4096, gt=0, description="hidden width of the encoder MLPs")
    decoder_ffn_size: int = pydantic.Field(4096, gt=0, description="hidden width of the decoder MLPs")
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = pydantic.Field(
        "gelu", description="MLP activation; gelu is the exact (erf) one")
    dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0, description="on embeddings and residual branches")
    attention_dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0, description="on attention probabilities")
    activation_dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0, description="after the MLP activation")
    init_std: float = pydantic.Field(0.02, gt=0.0, description="std of the normal init of weights and embeddings")
    scale_embedding: bool = pydantic.Field(False, description="multiply token embeddings by sqrt(hidden_size)")
    pad_token_id: int | None = pydantic.Field(1, ge=0, description="padding id (shift_tokens_right fills with it)")
    bos_token_id: int | None = pydantic.Field(0, ge=0, description="beginning-of-sequence id (of the tokenizer)")
    eos_token_id: int | None = pydantic.Field(2, ge=0, description="end-of-sequence id: generation stops a row")
    decoder_start_token_id: int | None = pydantic.Field(2, ge=0, description="first decoder token in generation")
    scan_layers: bool = pydantic.Field(False, description="store each stack as one nn.Stacked, run by lax.scan")
    remat: str | None = pydantic.Field(None, description="with scan_layers: 'full' or a jax.checkpoint_policies name")

    @pydantic.model_validator(mode="after")
    def _fits(self) -> "BartConfig":
        for stack, heads in (("encoder", self.encoder_heads), ("decoder", self.decoder_heads)):
            if self.hidden_size % heads:
                raise ValueError(f"{stack}_heads={heads} does not divide hidden_size={self.hidden_size}.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and value >= self.vocab_size:
                raise ValueError(f"{name}={value} is not below vocab_size={self.vocab_size}.")
        if self.remat is not None and not self.scan_layers:
            raise ValueError("remat needs scan_layers=True (it wraps the scanned layer).")
        return self


def shift_tokens_right(ids: jax.Array, pad_token_id: int, decoder_start_token_id: int) -> jax.Array:
    """Decoder inputs for teacher forcing on targets ``ids`` ``(B, T)``: ``[start, ids[:, :-1]]``.

    Label padding ``-100`` becomes ``pad_token_id``, as in Hugging Face.

    >>> import jax.numpy as jnp
    >>> shift_tokens_right(jnp.array([[5, 6, 2, -100]]), 1, 2).tolist()
    [[2, 5, 6, 2]]
    """
    ids = jnp.asarray(ids)
    start = jnp.full((ids.shape[0], 1), decoder_start_token_id, ids.dtype)
    shifted = jnp.concatenate([start, ids[:, :-1]], axis=1)  # (B, T)
    return jnp.where(shifted == -100, pad_token_id, shifted)


def _linear(d_in: int, d_out: int, axes: tuple[str, str], *, key: jax.Array, std: float) -> nn.Linear:
    """A ``Linear`` with HF BART's init: weights ``N(0, init_std)``, zero bias."""
    return nn.Linear(d_in, d_out, key=key, axes=axes, weight_init=jax.nn.initializers.normal(std),
                     bias_init=jax.nn.initializers.zeros)


def _split(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


def _padding_mask(mask: jax.Array) -> jax.Array:
    """Key padding mask ``(B, S)`` -> the ``(B, 1, 1, S)`` boolean ``nn.attention`` takes."""
    return jnp.asarray(mask).astype(bool)[:, None, None, :]


# ----------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------


class BartAttention(nn.Module):
    """Multi-head attention with HF's projection names: ``(B, T, D) -> (B, T, D)``.

    Self-attention (``context=None``) or cross-attention over ``context`` ``(B, S, D)``.
    The attention itself is ``nn.attention`` (or ``nn.KVCache.attend`` when decoding).
    """

    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    out_proj: nn.Linear
    num_heads: int = nn.static()
    attention_dropout: float = nn.static(default=0.0)
    training: bool = nn.static(default=True)

    def __init__(self, config: BartConfig, num_heads: int, *, key: jax.Array):
        D, std = config.hidden_size, config.init_std
        self.num_heads = num_heads
        self.attention_dropout = config.attention_dropout
        self.training = True
        self.q_proj = _linear(D, D, ("embed", "heads"), key=nn.subkey(key, "q_proj"), std=std)
        self.k_proj = _linear(D, D, ("embed", "kv_heads"), key=nn.subkey(key, "k_proj"), std=std)
        self.v_proj = _linear(D, D, ("embed", "kv_heads"), key=nn.subkey(key, "v_proj"), std=std)
        self.out_proj = _linear(D, D, ("heads", "embed"), key=nn.subkey(key, "out_proj"), std=std)

    def _heads(self, x: jax.Array) -> jax.Array:
        return einops.rearrange(x, "b t (h d) -> b t h d", h=self.num_heads)  # (B, T, H, Dh)

    def _out(self, out: jax.Array) -> jax.Array:
        return self.out_proj(einops.rearrange(out, "b t h d -> b t (h d)"))  # (B, T, D)

    def keys_values(self, context: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values ``(B, S, H, Dh)`` of ``context`` ``(B, S, D)``, for a cross-attention cache."""
        return self._heads(self.k_proj(context)), self._heads(self.v_proj(context))

    def __call__(self, x: jax.Array, context: jax.Array | None = None, *, mask: jax.Array | None = None,
                 causal: bool = False, key: jax.Array | None = None) -> jax.Array:
        k, v = self.keys_values(x if context is None else context)  # (B, S, H, Dh)
        rate = self.attention_dropout if self.training else 0.0
        out = nn.attention(self._heads(self.q_proj(x)), k, v, causal=causal, mask=mask, dropout_rate=rate,
                           key=key)  # (B, T, H, Dh)
        return self._out(out)

    def attend_cached(self, x: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array) -> jax.Array:
        """Cross-attention of ``x`` ``(B, T, D)`` over precomputed keys/values ``(B, S, H, Dh)``."""
        return self._out(nn.attention(self._heads(self.q_proj(x)), k.astype(x.dtype), v.astype(x.dtype),
                                      mask=mask))

    def decode(self, x: jax.Array, cache: nn.KVCache, *, positions: jax.Array) -> tuple[jax.Array, nn.KVCache]:
        """Causal self-attention of new tokens ``x`` ``(B, T, D)`` after the cached ones."""
        q, k, v = self._heads(self.q_proj(x)), *self.keys_values(x)
        out, cache = cache.attend(q, k, v, positions=positions)  # (B, T, H, Dh)
        return self._out(out), cache


def _mlp(layer, x: jax.Array, key: jax.Array | None) -> jax.Array:
    """``fc2(dropout(act(fc1(x))))`` of a layer: ``(B, T, D) -> (B, T, D)`` (HF keeps fc1/fc2 on the layer)."""
    h = ACTIVATIONS[layer.activation](layer.fc1(x))  # (B, T, F)
    return layer.fc2(layer.activation_drop(h, key=key))  # (B, T, D)


class BartEncoderLayer(nn.Module):
    """``h = LN(x + attn(x))``, then ``LN(h + mlp(h))``: ``(B, S, D) -> (B, S, D)``, post-norm."""

    self_attn: BartAttention
    self_attn_layer_norm: nn.LayerNorm
    fc1: nn.Linear
    fc2: nn.Linear
    final_layer_norm: nn.LayerNorm
    drop: nn.Dropout
    activation_drop: nn.Dropout
    activation: str = nn.static()

    def __init__(self, config: BartConfig, *, key: jax.Array):
        D, F, std = config.hidden_size, config.encoder_ffn_size, config.init_std
        self.activation = config.activation
        self.self_attn = BartAttention(config, config.encoder_heads, key=nn.subkey(key, "self_attn"))
        self.self_attn_layer_norm = nn.LayerNorm(D, eps=NORM_EPS)
        self.fc1 = _linear(D, F, ("embed", "mlp"), key=nn.subkey(key, "fc1"), std=std)
        self.fc2 = _linear(F, D, ("mlp", "embed"), key=nn.subkey(key, "fc2"), std=std)
        self.final_layer_norm = nn.LayerNorm(D, eps=NORM_EPS)
        self.drop = nn.Dropout(config.dropout)
        self.activation_drop = nn.Dropout(config.activation_dropout)

    def __call__(self, x: jax.Array, *, mask: jax.Array, key: jax.Array | None = None) -> jax.Array:
        k_attn, k1, k_act, k2 = _split(key, 4)
        h = self.self_attn_layer_norm(x + self.drop(self.self_attn(x, mask=mask, key=k_attn), key=k1))  # (B, S, D)
        return self.final_layer_norm(h + self.drop(_mlp(self, h, k_act), key=k2))  # (B, S, D)


class BartLayerCache(nn.Module):
    """One decoder layer's decoding state: its self-attention ``nn.KVCache`` and the
    cross-attention keys/values ``(B, S, heads, head_dim)`` of the encoder states."""

    self_attn: nn.KVCache
    cross_k: jax.Array
    cross_v: jax.Array

    def __init__(self, self_attn: nn.KVCache, cross_k: jax.Array, cross_v: jax.Array):
        axes = ("batch", "length", "kv_heads", "head_dim")
        self.self_attn = self_attn
        self.cross_k = nn.state(cross_k, axes)
        self.cross_v = nn.state(cross_v, axes)


class BartDecoderLayer(nn.Module):
    """Post-norm causal self-attention, cross-attention over the encoder states, then the MLP:
    ``(B, T, D) -> (B, T, D)``."""

    self_attn: BartAttention
    self_attn_layer_norm: nn.LayerNorm
    encoder_attn: BartAttention
    encoder_attn_layer_norm: nn.LayerNorm
    fc1: nn.Linear
    fc2: nn.Linear
    final_layer_norm: nn.LayerNorm
    drop: nn.Dropout
    activation_drop: nn.Dropout
    activation: str = nn.static()

    def __init__(self, config: BartConfig, *, key: jax.Array):
        D, F, std = config.hidden_size, config.decoder_ffn_size, config.init_std
        self.activation = config.activation
        self.self_attn = BartAttention(config, config.decoder_heads, key=nn.subkey(key, "self_attn"))
        self.self_attn_layer_norm = nn.LayerNorm(D, eps=NORM_EPS)
        self.encoder_attn = BartAttention(config, config.decoder_heads, key=nn.subkey(key, "encoder_attn"))
        self.encoder_attn_layer_norm = nn.LayerNorm(D, eps=NORM_EPS)
        self.fc1 = _linear(D, F, ("embed", "mlp"), key=nn.subkey(key, "fc1"), std=std)
        self.fc2 = _linear(F, D, ("mlp", "embed"), key=nn.subkey(key, "fc2"), std=std)
        self.final_layer_norm = nn.LayerNorm(D, eps=NORM_EPS)
        self.drop = nn.Dropout(config.dropout)
        self.activation_drop = nn.Dropout(config.activation_dropout)

    def __call__(self, x: jax.Array, *, encoder_states: jax.Array, encoder_mask: jax.Array,
                 key: jax.Array | None = None) -> jax.Array:
        k_sa, k1, k_ca, k2, k_act, k3 = _split(key, 6)
        h = self.self_attn_layer_norm(x + self.drop(self.self_attn(x, causal=True, key=k_sa), key=k1))  # (B, T, D)
        a = self.encoder_attn(h, encoder_states, mask=encoder_mask, key=k_ca)  # (B, T, D)
        h = self.encoder_attn_layer_norm(h + self.drop(a, key=k2))
        return self.final_layer_norm(h + self.drop(_mlp(self, h, k_act), key=k3))  # (B, T, D)

    def decode(self, x: jax.Array, cache: BartLayerCache, *, positions: jax.Array,
               encoder_mask: jax.Array) -> tuple[jax.Array, BartLayerCache]:
        a, self_cache = self.self_attn.decode(x, cache.self_attn, positions=positions)
        h = self.self_attn_layer_norm(x + a)  # (B, T, D)
        h = self.encoder_attn_layer_norm(
            h + self.encoder_attn.attend_cached(h, cache.cross_k, cache.cross_v, mask=encoder_mask))
        h = self.final_layer_norm(h + _mlp(self, h, None))  # (B, T, D)
        return h, nn.replace(cache, self_attn=self_cache)


# ----------------------------------------------------------------------------------------
# Stacks
# ----------------------------------------------------------------------------------------


def _layers(config: BartConfig, make, num_layers: int, key: jax.Array):
    if config.scan_layers:
        return nn.Stacked(lambda k: make(config, key=k), num_layers, key=nn.subkey(key, "layers"),
                          remat=config.remat)
    return tuple(make(config, key=nn.subkey(key, f"layers[{i}]")) for i in range(num_layers))


class BartStack(nn.Module):
    """What encoder and decoder share: learned positions (offset 2), ``layernorm_embedding``, the layers."""

    embed_positions: nn.LearnedPositionalEmbedding
    layernorm_embedding: nn.LayerNorm
    drop: nn.Dropout
    layers: tuple[nn.Module, ...] | nn.Stacked

    def __init__(self, config: BartConfig, make_layer, num_layers: int, *, key: jax.Array):
        D = config.hidden_size
        self.embed_positions = nn.LearnedPositionalEmbedding(
            config.max_len + POSITION_OFFSET, D, key=nn.subkey(key, "embed_positions"),
            weight_init=jax.nn.initializers.normal(config.init_std))
        self.layernorm_embedding = nn.LayerNorm(D, eps=NORM_EPS)
        self.drop = nn.Dropout(config.dropout)
        self.layers = _layers(config, make_layer, num_layers, key)

    def embed(self, tokens: jax.Array, positions: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Token embeddings ``(B, T, D)`` plus positions ``(T,)`` or ``(B, T)``, normalised."""
        x = tokens + self.embed_positions(positions + POSITION_OFFSET)  # (B, T, D)
        return self.drop(self.layernorm_embedding(x), key=key)


class BartModel(nn.Module):
    """The shared embedding and the two stacks (HF ``BartModel``, without its forward)."""

    shared: nn.Embedding
    encoder: BartStack
    decoder: BartStack

    def __init__(self, config: BartConfig, *, key: jax.Array):
        self.shared = nn.Embedding(config.vocab_size, config.hidden_size, key=nn.subkey(key, "shared"),
                                   weight_init=jax.nn.initializers.normal(config.init_std))
        self.encoder = BartStack(config, BartEncoderLayer, config.encoder_layers, key=nn.subkey(key, "encoder"))
        self.decoder = BartStack(config, BartDecoderLayer, config.decoder_layers, key=nn.subkey(key, "decoder"))


class BartCache(nn.Module):
    """Decoding state: one ``BartLayerCache`` per decoder layer (an ``nn.Stacked`` of them with
    ``scan_layers``) and the encoder's padding mask ``(B, S)``. Built by ``Bart.init_cache``."""

    layers: tuple[BartLayerCache, ...] | nn.Stacked
    encoder_mask: jax.Array

    def __init__(self, layers, encoder_mask: jax.Array):
        self.layers = layers
        self.encoder_mask = nn.state(encoder_mask, ("batch", "length"))

    @property
    def index(self) -> jax.Array:
        """The number of decoder tokens already in the cache."""
        if isinstance(self.layers, nn.Stacked):
            return self.layers.layer.self_attn.index[0]
        return self.layers[0].self_attn.index


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------


def _check_ids(what: str, ids, max_len: int) -> jax.Array:
    ids = jnp.asarray(ids)
    if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise nn.ShapeError(f"Bart: {what} must be integer token ids (B, T), got {ids.dtype}{list(ids.shape)}. "
                            f"A single sequence needs ids[None].")
    if ids.shape[1] > max_len:
        raise nn.ShapeError(f"Bart: {what} has {ids.shape[1]} tokens but the model has max_len={max_len} "
                            f"learned positions.")
    return ids


def _check_mask(mask, ids: jax.Array) -> jax.Array:
    mask = jnp.asarray(mask)
    if mask.shape != ids.shape:
        raise nn.ShapeError(f"Bart: attention_mask must be shaped like input_ids {tuple(ids.shape)} (True or 1 on "
                            f"real tokens), got {mask.dtype}{list(mask.shape)}.")
    return mask.astype(bool)


class Bart(nn.Module):
    """BART with its language-model head (HF ``BartForConditionalGeneration``).

    * ``model(input_ids, attention_mask, decoder_input_ids, *, key=None)``: teacher-forced
      logits ``(B, T, vocab_size)``; ``input_ids``, ``attention_mask`` ``(B, S)`` (True or 1
      on real tokens), ``decoder_input_ids`` ``(B, T)`` (``shift_tokens_right`` of the
      targets). With dropout in training mode pass ``key=`` (``nn.eval_mode`` turns it off).
    * ``encode``, ``init_cache``, ``decode``: the encoder-decoder contract of the module
      docstring, used by ``models.seq2seq.generate_seq2seq``.
    """

    model: BartModel
    final_logits_bias: jax.Array
    config: BartConfig = nn.static()

    def __init__(self, config: BartConfig, *, key: jax.Array):
        self.config = config
        self.model = BartModel(config, key=nn.subkey(key, "model"))
        self.final_logits_bias = nn.state(jnp.zeros((1, config.vocab_size)), (None, "vocab"))

    def _tokens(self, ids: jax.Array) -> jax.Array:
        x = self.model.shared(ids)  # (B, T, D)
        return x * math.sqrt(self.config.hidden_size) if self.config.scale_embedding else x

    def _logits(self, h: jax.Array) -> jax.Array:
        return self.model.shared.attend(h) + self.final_logits_bias.astype(h.dtype)  # (B, T, V)

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Encoder states ``(B, S, D)`` of ``input_ids`` ``(B, S)``; ``attention_mask`` ``(B, S)``
        is True (or 1) on real tokens. Padded positions get states too (they see the real tokens)."""
        ids = _check_ids("input_ids", input_ids, self.config.max_len)
        mask = _check_mask(attention_mask, ids)
        k_embed, k_layers = _split(key, 2)
        enc = self.model.encoder
        x = enc.embed(self._tokens(ids), jnp.arange(ids.shape[1]), key=k_embed)  # (B, S, D)
        return apply_layers(enc.layers, x, mask=_padding_mask(mask), key=k_layers)  # (B, S, D)

    def decoder_hidden(self, encoder_states: jax.Array, attention_mask: jax.Array, decoder_input_ids: jax.Array,
                       *, key: jax.Array | None = None) -> jax.Array:
        """The decoder's last hidden states ``(B, T, D)`` (HF ``BartModel``'s output), teacher-forced."""
        ids = _check_ids("decoder_input_ids", decoder_input_ids, self.config.max_len)
        self._check_states(encoder_states, attention_mask)
        k_embed, k_layers = _split(key, 2)
        dec = self.model.decoder
        x = dec.embed(self._tokens(ids), jnp.arange(ids.shape[1]), key=k_embed)  # (B, T, D)
        return apply_layers(dec.layers, x, encoder_states=encoder_states,
                            encoder_mask=_padding_mask(attention_mask), key=k_layers)  # (B, T, D)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, decoder_input_ids: jax.Array, *,
                 key: jax.Array | None = None) -> jax.Array:
        k_enc, k_dec = _split(key, 2)
        states = self.encode(input_ids, attention_mask, key=k_enc)  # (B, S, D)
        return self._logits(self.decoder_hidden(states, attention_mask, decoder_input_ids, key=k_dec))

    def _check_states(self, encoder_states: jax.Array, attention_mask: jax.Array) -> None:
        mask_shape = tuple(jnp.shape(attention_mask))
        if len(mask_shape) != 2 or tuple(jnp.shape(encoder_states)) != (*mask_shape, self.config.hidden_size):
            raise nn.ShapeError(
                f"Bart: encoder_states {tuple(jnp.shape(encoder_states))} and attention_mask "
                f"{mask_shape} do not fit: expected (B, S, {self.config.hidden_size}) and "
                f"(B, S), from model.encode(input_ids, attention_mask).")

    def init_cache(self, encoder_states: jax.Array, attention_mask: jax.Array, *, max_len: int,
                   dtype=jnp.float32) -> BartCache:
        """The decoding state for ``max_len`` decoder tokens after encoding a batch.

        Each decoder layer's cross-attention keys/values ``(B, S, heads, head_dim)`` are
        computed here, once; its self-attention cache starts empty.
        """
        c = self.config
        if not isinstance(max_len, int) or not 0 < max_len <= c.max_len:
            raise ValueError(f"Bart.init_cache: max_len={max_len!r} must be an int in [1, {c.max_len}] "
                             f"(the decoder's learned positions).")
        self._check_states(encoder_states, attention_mask)
        B = encoder_states.shape[0]
        empty = nn.KVCache(B, max_len, c.decoder_heads, c.hidden_size // c.decoder_heads, dtype=dtype)
        layers = self.model.decoder.layers

        def cross(layer):
            k, v = layer.encoder_attn.keys_values(encoder_states)  # (B, S, H, Dh)
            return k.astype(dtype), v.astype(dtype)

        if isinstance(layers, nn.Stacked):
            ks, vs = jax.lax.map(cross, layers.layer)  # (L, B, S, H, Dh)
            stacked = nn.Stacked.from_layers([BartLayerCache(empty, ks[0], vs[0])] * layers.num_layers)
            caches = nn.replace(stacked, layer=nn.replace(stacked.layer, cross_k=ks, cross_v=vs))
        else:
            caches = tuple(BartLayerCache(empty, *cross(layer)) for layer in layers)
        return BartCache(caches, jnp.asarray(attention_mask).astype(bool))

    def decode(self, decoder_ids: jax.Array, cache: BartCache) -> tuple[jax.Array, BartCache]:
        """Logits ``(B, T, V)`` of the decoder tokens ``decoder_ids`` ``(B, T)`` after the cached
        ones, and the new cache. A prefill followed by one-token steps gives the teacher-forced
        logits. Past the cache's ``max_len`` the logits are NaN (``nn.KVCache``)."""
        ids = jnp.asarray(decoder_ids)
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise nn.ShapeError(f"Bart.decode: decoder_ids must be integer token ids (B, T), got "
                                f"{ids.dtype}{list(ids.shape)}.")
        B, T = ids.shape
        positions = jnp.broadcast_to(cache.index + jnp.arange(T, dtype=jnp.int32), (B, T))  # (B, T)
        dec = self.model.decoder
        x = dec.embed(self._tokens(ids), positions)  # (B, T, D)
        kwargs = dict(positions=positions, encoder_mask=_padding_mask(cache.encoder_mask))
        x, layers = decode_layers(dec.layers, x, cache.layers, **kwargs)
        return self._logits(x), nn.replace(cache, layers=layers)
