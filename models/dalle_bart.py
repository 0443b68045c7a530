"""DalleBart (DALL·E Mini / Mega, Dayma et al. 2021): text ids -> VQGAN image-token logits, in one file.

A BART-shaped encoder-decoder with the NormFormer layout of the released models: the
encoder reads the text prompt (``max_text_len`` positions, no BART offset), the
decoder predicts ``image_len`` VQGAN codes one at a time, cross-attending to the
encoder. Each layer is::

    h = h + LN1(SelfAttn(LN0(h)))                    # LN0 bias-only, LN1 scale + bias
    h = h + LN3(CrossAttn(LN2(h), encoder_states))   # decoder only
    h = h + fc2(LN_mid(gelu(fc0(LN_in(h))) * fc1(LN_in(h))))   # GLU; both LNs bias-only

then a bias-only ``final_ln`` on each side and an unbiased ``lm_head`` over
``image_vocab_size + 1`` tokens (the +1 is the start token, ``decoder_start_token_id``).
GELU is the exact erf one. Attention is ``nn.attention``; decoding uses ``nn.KVCache``
for the self-attention and keys/values of the encoder states computed once, in
``init_cache``.

The encoder-decoder contract (shared with ``models.bart``)::

    encoder_states = model.encode(text_ids, text_mask)          # (B, S) int, (B, S) bool -> (B, S, D)
    cache = model.init_cache(encoder_states, text_mask)         # cross k/v once; empty self-attn cache
    logits, cache = model.decode(image_ids, cache)              # (B, T) -> (B, T, image_vocab_size + 1)
    logits = model(text_ids, text_mask, image_ids)              # teacher forced, (B, T, V + 1)

Parameter paths follow min-dalle's state-dict names (``models.dalle_bart_io`` maps
dalle-mini's Flax tree onto them). Linear weights are stored ``(in, out)``, which is
Flax's kernel layout and the transpose of torch's. Under ``encoder.`` and ``decoder.``
(``{L}`` is ``model/{side}/layers/FlaxBart{Encoder,Decoder}Layers``, scanned, or
``.../FlaxBart{Encoder,Decoder}Layer_{i}``, unscanned):

==========================================  ========================  ========================================
baobab                                      min-dalle                 dalle-mini Flax
==========================================  ========================  ========================================
``embed_tokens.weight`` (V, D)              same                      ``model/{side}/embed_tokens/embedding``
``embed_positions.weight`` (S or 256, D)    same                      ``.../embed_positions/embedding``
``layernorm_embedding.{weight,bias}``       same                      ``.../layernorm_embedding/{scale,bias}``
``layers[i].pre_self_attn_layer_norm``      same, as ``layers.{i}``   ``{L}/LayerNorm_0/bias`` (no scale)
``layers[i].self_attn.q_proj.weight``       transposed                ``{L}/FlaxBartAttention_0/q_proj/kernel``
``... k_proj``, ``v_proj``, ``out_proj``    transposed                same pattern
``layers[i].self_attn_layer_norm``          same                      ``{L}/LayerNorm_1/{scale,bias}``
``layers[i].pre_encoder_attn_layer_norm``   same (decoder)            ``{L}/LayerNorm_2/bias``
``layers[i].encoder_attn.*``                transposed (decoder)      ``{L}/FlaxBartAttention_1/*``
``layers[i].encoder_attn_layer_norm``       same (decoder)            ``{L}/LayerNorm_3/{scale,bias}``
``layers[i].glu.ln0`` / ``ln1`` (bias)      same                      ``{L}/GLU_0/LayerNorm_0`` / ``_1``
``layers[i].glu.fc0``, ``fc1`` (D, F)       transposed                ``{L}/GLU_0/Dense_0``, ``Dense_1``
``layers[i].glu.fc2`` (F, D)                transposed                ``{L}/GLU_0/Dense_2``
``final_ln.bias``                           same                      ``model/{side}/final_ln/bias``
``lm_head.weight`` (D, V_img + 1), root     decoder's, transposed     ``lm_head/kernel``
==========================================  ========================  ========================================

With ``use_glu=False`` the feed-forward is ``ffn`` with ``ln0``, ``fc0``, ``ln1``, ``fc1``
(Flax ``FFN_0/{LayerNorm_0, Dense_0, LayerNorm_1, Dense_1}``). With ``use_bias`` every
projection and Dense also has a bias. ``ln_type="rmsnorm"`` makes every norm an
``nn.RMSNorm`` (no bias; a bias-only one then has no parameter at all). With
``scan_layers=True`` the layers are one ``nn.Stacked`` and the paths read
``encoder.layers.layer.self_attn.q_proj.weight`` with a leading ``(layers,)`` axis.

Only the released variant is implemented: ``ln_positions`` ``"normformer"`` (and the
plain pre-norm ``"preln"``), no head scale, no cosine attention, no Swin relative
positions, no DeepNet scaling, no ALiBi, ``sinkhorn_iters=1``. Building a model with
another value raises ``NotImplementedError`` naming the option. There is no dropout
(the released configs have none).

>>> import jax, jax.numpy as jnp
>>> from baobab.models import DalleBart, DalleBartConfig
>>> config = DalleBartConfig(text_vocab_size=50, image_vocab_size=32, max_text_len=8, image_len=16,
...                          d_model=32, encoder_layers=2, decoder_layers=2, encoder_heads=4,
...                          decoder_heads=4, encoder_ffn=48, decoder_ffn=48, decoder_start_token_id=32)
>>> model = DalleBart(config, key=jax.random.key(0))
>>> text = jnp.array([[0, 7, 9, 2, 1, 1, 1, 1]])  # (B, S): <s> ... </s> then padding (id 1)
>>> mask = text != config.text_pad_token_id
>>> states = model.encode(text, mask)  # (B, S, D)
>>> cache = model.init_cache(states, mask)
>>> bos = jnp.full((1, 1), config.decoder_start_token_id)
>>> logits, cache = model.decode(bos, cache)  # one step
>>> logits.shape  # (B, T, image_vocab_size + 1)
(1, 1, 33)
>>> model(text, mask, jnp.zeros((1, 16), jnp.int32)).shape  # teacher forced
(1, 16, 33)
"""

from __future__ import annotations

import functools
from typing import ClassVar, Literal

import einops
import jax
import jax.numpy as jnp
import pydantic

from baobab import nn
from baobab.config import Config

from ._decoder import apply_layers, decode_layers

__all__ = ["DalleBartConfig", "DalleBart", "DalleBartCache", "DalleBartLayerCache"]

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # transformers' Flax "gelu": exact erf
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}

#: ``ln_positions`` values that are implemented.
LN_POSITIONS = ("normformer", "preln")


def _field(default, description: str, **kwargs):
    return pydantic.Field(default, description=description, **kwargs)


class DalleBartConfig(Config):
    """DalleBart. The defaults are DALL·E Mini as released (``DalleBartConfig.mini()``).

    dalle-mini ``DalleBartConfig`` names in brackets where they differ. ``mini()`` and
    ``mega()`` give the released sizes. Options other than the released NormFormer
    layout are kept so a config describes any dalle-mini checkpoint, but
    ``DalleBart(config)`` raises ``NotImplementedError`` for the ones not implemented
    (the field descriptions say which).
    """

    kind: Literal["dalle_bart"] = "dalle_bart"
    tasks: ClassVar[tuple[str, ...]] = ("text_to_image",)  # the baobab.tasks it can run
    text_vocab_size: int = _field(50264, "text BPE vocabulary: rows of the encoder embedding "
                                  "[encoder_vocab_size]", gt=0)
    image_vocab_size: int = _field(16384, "VQGAN codebook size; the decoder embedding and lm_head have "
                                   "image_vocab_size + 1 rows (the start token)", gt=0)
    max_text_len: int = _field(64, "encoder positions [max_text_length]", gt=0)
    image_len: int = _field(256, "decoder positions, image tokens per image [image_length]", gt=0)
    d_model: int = _field(1024, "model width", gt=0)
    encoder_layers: int = _field(12, "encoder layers", gt=0)
    decoder_layers: int = _field(12, "decoder layers", gt=0)
    encoder_heads: int = _field(16, "encoder attention heads [encoder_attention_heads]", gt=0)
    decoder_heads: int = _field(16, "decoder attention heads [decoder_attention_heads]", gt=0)
    encoder_ffn: int = _field(2730, "hidden width of the encoder GLU/FFN [encoder_ffn_dim]", gt=0)
    decoder_ffn: int = _field(2730, "hidden width of the decoder GLU/FFN [decoder_ffn_dim]", gt=0)
    activation: Literal["gelu", "gelu_new", "relu", "silu", "swish", "smelu"] = _field(
        "gelu", "feed-forward activation [activation_function]: 'gelu' is the exact erf GELU; "
        "'smelu' is not implemented")
    norm_eps: float = _field(1e-5, "epsilon of every norm", gt=0.0)
    init_std: float = _field(0.02, "std of the normal init of every kernel and embedding (mega: 0.01)", gt=0.0)
    ln_type: Literal["layernorm", "rmsnorm"] = _field("layernorm", "norm kind of every norm")
    ln_positions: Literal["normformer", "swinv2", "cogview", "postln", "deepnet", "preln", "subln"] = _field(
        "normformer", "where the norms sit (research notes table 1.2); implemented: normformer, preln")
    use_glu: bool = _field(True, "GLU feed-forward (fc0, fc1, fc2) instead of the 2-Dense FFN")
    use_bias: bool = _field(False, "biases on the attention projections and the feed-forward Dense layers")
    use_final_ln_encoder: bool = _field(True, "a bias-only final_ln after the last encoder layer")
    use_final_ln_decoder: bool = _field(True, "a bias-only final_ln after the last decoder layer")
    force_ln_scale: bool = _field(False, "give the norms before a Dense a scale too (normally bias only)")
    scale_embedding: bool = _field(False, "multiply token embeddings by sqrt(d_model)")
    use_head_scale: bool = _field(False, "NormFormer per-head output scale; not implemented")
    use_cosine_attention: bool = _field(False, "Swin v2 cosine attention; not implemented")
    use_absolute_position_embeddings: bool = _field(True, "learned positions; False is not implemented")
    use_swin_position_embeddings: bool = _field(False, "per-attention relative bias; not implemented")
    use_deepnet_scaling: bool = _field(False, "DeepNet residual scaling; not implemented")
    use_subln_init: bool = _field(False, "Sub-LN init gains (init only, no effect on the forward)")
    use_alibi: bool = _field(False, "ALiBi; not implemented (dalle-mini asserts it off too)")
    sinkhorn_iters: int = _field(1, "encoder Sinkhorn attention iterations; only 1 (softmax) is implemented",
                                 ge=1)
    decoder_start_token_id: int = _field(16384, "the start (BOS) image token fed first", ge=0)
    text_pad_token_id: int = _field(1, "the text padding id (the encoder mask is ids != it)", ge=0)
    scan_layers: bool = _field(False, "store the layers stacked (nn.Stacked) and run them with lax.scan "
                               "[use_scan]")
    remat: str | None = _field(None, "with scan_layers: recompute each layer in the backward pass; 'full' or a "
                               "jax.checkpoint_policies name, e.g. 'nothing_saveable' [gradient_checkpointing]")

    @pydantic.model_validator(mode="after")
    def _fits(self) -> "DalleBartConfig":
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_heads")
            if self.d_model % heads:
                raise ValueError(f"{side}_heads={heads} does not divide d_model={self.d_model}.")
        if self.remat is not None and not self.scan_layers:
            raise ValueError(f"remat={self.remat!r} needs scan_layers=True (it wraps the scanned layer); set "
                             f"model.scan_layers=True.")
        if self.decoder_start_token_id > self.image_vocab_size:
            raise ValueError(f"decoder_start_token_id={self.decoder_start_token_id} is not a row of the decoder "
                             f"embedding (image_vocab_size + 1 = {self.image_vocab_size + 1} rows).")
        return self

    @classmethod
    def mini(cls, **overrides) -> "DalleBartConfig":
        """DALL·E Mini as released (``dalle-mini/dalle-mini``): 12+12 layers, d 1024, 16 heads, GLU 2730."""
        return cls(**{**dict(text_vocab_size=50264, image_vocab_size=16384, d_model=1024, encoder_layers=12,
                             decoder_layers=12, encoder_heads=16, decoder_heads=16, encoder_ffn=2730,
                             decoder_ffn=2730), **overrides})

    @classmethod
    def mega(cls, **overrides) -> "DalleBartConfig":
        """DALL·E Mega as released (``dalle-mini/dalle-mega``): 24+24 layers, d 2048, 32 heads, GLU 4096."""
        return cls(**{**dict(text_vocab_size=50272, image_vocab_size=16415, d_model=2048, encoder_layers=24,
                             decoder_layers=24, encoder_heads=32, decoder_heads=32, encoder_ffn=4096,
                             decoder_ffn=4096, init_std=0.01), **overrides})

    def check_implemented(self) -> None:
        """Raise ``NotImplementedError`` naming the first option value this file does not implement."""
        unsupported = [
            ("ln_positions", self.ln_positions, self.ln_positions not in LN_POSITIONS),
            ("activation", self.activation, self.activation not in ACTIVATIONS),
            ("use_head_scale", self.use_head_scale, self.use_head_scale),
            ("use_cosine_attention", self.use_cosine_attention, self.use_cosine_attention),
            ("use_absolute_position_embeddings", self.use_absolute_position_embeddings,
             not self.use_absolute_position_embeddings),
            ("use_swin_position_embeddings", self.use_swin_position_embeddings, self.use_swin_position_embeddings),
            ("use_deepnet_scaling", self.use_deepnet_scaling, self.use_deepnet_scaling),
            ("use_subln_init", self.use_subln_init, self.use_subln_init),
            ("use_alibi", self.use_alibi, self.use_alibi),
            ("sinkhorn_iters", self.sinkhorn_iters, self.sinkhorn_iters != 1),
        ]
        for name, value, bad in unsupported:
            if bad:
                raise NotImplementedError(
                    f"DalleBart: {name}={value!r} is not implemented (the released DALL·E Mini/Mega use "
                    f"ln_positions='normformer', activation='gelu', sinkhorn_iters=1 and none of the other "
                    f"variants); use DalleBartConfig.mini() / .mega() or set {name} to its default.")


# ----------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------


def _linear(d_in: int, d_out: int, axes: tuple[str, str], config: DalleBartConfig, *, key: jax.Array,
            use_bias: bool | None = None) -> nn.Linear:
    """A Dense with dalle-mini's init: kernel ``N(0, init_std)``, zero bias."""
    return nn.Linear(d_in, d_out, key=key, axes=axes, use_bias=config.use_bias if use_bias is None else use_bias,
                     weight_init=jax.nn.initializers.normal(config.init_std), bias_init=jax.nn.initializers.zeros)


def _norm(config: DalleBartConfig, size: int, *, scaled: bool) -> nn.LayerNorm | nn.RMSNorm:
    """A norm of ``ln_type``; ``scaled=False`` is dalle-mini's bias-only norm (scale iff ``force_ln_scale``)."""
    use_scale = scaled or config.force_ln_scale
    if config.ln_type == "rmsnorm":
        return nn.RMSNorm(size, eps=config.norm_eps, use_scale=use_scale)
    return nn.LayerNorm(size, eps=config.norm_eps, use_scale=use_scale)


class DalleBartAttention(nn.Module):
    """Multi-head attention without biases (by default): ``(B, T, D) -> (B, T, D)``.

    Self-attention (``context=None``) or cross-attention over ``context`` ``(B, S, D)``;
    ``mask`` is boolean, broadcastable to ``(B, 1, T, S)``. Logits are ``q k / sqrt(head_dim)``.
    """

    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    out_proj: nn.Linear
    num_heads: int = nn.static()

    def __init__(self, config: DalleBartConfig, num_heads: int, *, key: jax.Array):
        D = config.d_model
        self.num_heads = num_heads
        self.q_proj = _linear(D, D, ("embed", "heads"), config, key=nn.subkey(key, "q_proj"))
        self.k_proj = _linear(D, D, ("embed", "heads"), config, key=nn.subkey(key, "k_proj"))
        self.v_proj = _linear(D, D, ("embed", "heads"), config, key=nn.subkey(key, "v_proj"))
        self.out_proj = _linear(D, D, ("heads", "embed"), config, key=nn.subkey(key, "out_proj"))

    def _split(self, x: jax.Array) -> jax.Array:
        return einops.rearrange(x, "b t (h d) -> b t h d", h=self.num_heads)  # (B, T, H, Dh)

    def _out(self, out: jax.Array) -> jax.Array:
        return self.out_proj(einops.rearrange(out, "b t h d -> b t (h d)"))  # (B, T, D)

    def keys_values(self, context: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values of ``context`` ``(B, S, D)``: two ``(B, S, H, Dh)``."""
        return self._split(self.k_proj(context)), self._split(self.v_proj(context))

    def __call__(self, x: jax.Array, context: jax.Array | None = None, *, mask: jax.Array | None = None,
                 causal: bool = False) -> jax.Array:
        k, v = self.keys_values(x if context is None else context)
        out = nn.attention(self._split(self.q_proj(x)), k, v, causal=causal, mask=mask)  # (B, T, H, Dh)
        return self._out(out)

    def attend(self, x: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None) -> jax.Array:
        """Cross-attention of ``x`` ``(B, T, D)`` over precomputed ``k``, ``v`` ``(B, S, H, Dh)``."""
        return self._out(nn.attention(self._split(self.q_proj(x)), k, v, mask=mask))

    def decode(self, x: jax.Array, cache: nn.KVCache, *, positions: jax.Array) -> tuple[jax.Array, nn.KVCache]:
        """Causal self-attention of new tokens ``x`` ``(B, T, D)`` at ``positions`` ``(B, T)`` over the cache."""
        k, v = self.keys_values(x)
        out, cache = cache.attend(self._split(self.q_proj(x)), k, v, positions=positions)  # (B, T, H, Dh)
        return self._out(out), cache


class DalleBartGLU(nn.Module):
    """``fc2(ln1(act(fc0(x)) * fc1(x)))`` with ``x = ln0(x)``: ``(B, T, D) -> (B, T, D)`` through ``F``.

    ``ln0``/``ln1`` are bias-only (``None`` for ``ln_positions="preln"``'s ``ln1``).
    """

    ln0: nn.LayerNorm | nn.RMSNorm
    fc0: nn.Linear
    fc1: nn.Linear
    ln1: nn.LayerNorm | nn.RMSNorm | None
    fc2: nn.Linear
    activation: str = nn.static()

    def __init__(self, config: DalleBartConfig, ffn: int, *, key: jax.Array):
        D = config.d_model
        self.activation = config.activation
        self.ln0 = _norm(config, D, scaled=False)
        self.fc0 = _linear(D, ffn, ("embed", "mlp"), config, key=nn.subkey(key, "fc0"))
        self.fc1 = _linear(D, ffn, ("embed", "mlp"), config, key=nn.subkey(key, "fc1"))
        self.ln1 = _norm(config, ffn, scaled=False) if config.ln_positions == "normformer" else None
        self.fc2 = _linear(ffn, D, ("mlp", "embed"), config, key=nn.subkey(key, "fc2"))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.ln0(x)  # (B, T, D)
        h = ACTIVATIONS[self.activation](self.fc0(x)) * self.fc1(x)  # (B, T, F)
        if self.ln1 is not None:
            h = self.ln1(h)
        return self.fc2(h)  # (B, T, D)


class DalleBartFFN(nn.Module):
    """The 2-Dense feed-forward (``use_glu=False``): ``fc1(ln1(act(fc0(ln0(x)))))``, ``(B, T, D) -> (B, T, D)``."""

    ln0: nn.LayerNorm | nn.RMSNorm
    fc0: nn.Linear
    ln1: nn.LayerNorm | nn.RMSNorm | None
    fc1: nn.Linear
    activation: str = nn.static()

    def __init__(self, config: DalleBartConfig, ffn: int, *, key: jax.Array):
        D = config.d_model
        self.activation = config.activation
        self.ln0 = _norm(config, D, scaled=False)
        self.fc0 = _linear(D, ffn, ("embed", "mlp"), config, key=nn.subkey(key, "fc0"))
        self.ln1 = _norm(config, ffn, scaled=False) if config.ln_positions == "normformer" else None
        self.fc1 = _linear(ffn, D, ("mlp", "embed"), config, key=nn.subkey(key, "fc1"))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = ACTIVATIONS[self.activation](self.fc0(self.ln0(x)))  # (B, T, F)
        if self.ln1 is not None:
            h = self.ln1(h)
        return self.fc1(h)  # (B, T, D)


def _feed_forward(config: DalleBartConfig, ffn: int, key: jax.Array) -> tuple:
    """``(glu, ffn)``: one of them built, the other ``None``."""
    if config.use_glu:
        return DalleBartGLU(config, ffn, key=nn.subkey(key, "glu")), None
    return None, DalleBartFFN(config, ffn, key=nn.subkey(key, "ffn"))


def _post_norm(config: DalleBartConfig) -> nn.LayerNorm | nn.RMSNorm | None:
    """The scaled norm on an attention output before the residual add (NormFormer), or None."""
    return _norm(config, config.d_model, scaled=True) if config.ln_positions == "normformer" else None


def _maybe(norm, x: jax.Array) -> jax.Array:
    return x if norm is None else norm(x)


class DalleBartEncoderLayer(nn.Module):
    """``h + LN1(attn(LN0(h)))``, then ``h + glu(h)``: ``(B, S, D) -> (B, S, D)``; ``mask`` ``(B, 1, 1, S)``."""

    pre_self_attn_layer_norm: nn.LayerNorm | nn.RMSNorm
    self_attn: DalleBartAttention
    self_attn_layer_norm: nn.LayerNorm | nn.RMSNorm | None
    glu: DalleBartGLU | None
    ffn: DalleBartFFN | None

    def __init__(self, config: DalleBartConfig, *, key: jax.Array):
        self.pre_self_attn_layer_norm = _norm(config, config.d_model, scaled=False)
        self.self_attn = DalleBartAttention(config, config.encoder_heads, key=nn.subkey(key, "self_attn"))
        self.self_attn_layer_norm = _post_norm(config)
        self.glu, self.ffn = _feed_forward(config, config.encoder_ffn, key)

    def __call__(self, x: jax.Array, *, mask: jax.Array, key: jax.Array | None = None) -> jax.Array:
        del key  # no dropout
        h = x + _maybe(self.self_attn_layer_norm, self.self_attn(self.pre_self_attn_layer_norm(x), mask=mask))
        return h + (self.ffn if self.glu is None else self.glu)(h)  # (B, S, D)


class DalleBartDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the encoder states, then the GLU: ``(B, T, D) -> (B, T, D)``."""

    pre_self_attn_layer_norm: nn.LayerNorm | nn.RMSNorm
    self_attn: DalleBartAttention
    self_attn_layer_norm: nn.LayerNorm | nn.RMSNorm | None
    pre_encoder_attn_layer_norm: nn.LayerNorm | nn.RMSNorm
    encoder_attn: DalleBartAttention
    encoder_attn_layer_norm: nn.LayerNorm | nn.RMSNorm | None
    glu: DalleBartGLU | None
    ffn: DalleBartFFN | None

    def __init__(self, config: DalleBartConfig, *, key: jax.Array):
        D, H = config.d_model, config.decoder_heads
        self.pre_self_attn_layer_norm = _norm(config, D, scaled=False)
        self.self_attn = DalleBartAttention(config, H, key=nn.subkey(key, "self_attn"))
        self.self_attn_layer_norm = _post_norm(config)
        self.pre_encoder_attn_layer_norm = _norm(config, D, scaled=False)
        self.encoder_attn = DalleBartAttention(config, H, key=nn.subkey(key, "encoder_attn"))
        self.encoder_attn_layer_norm = _post_norm(config)
        self.glu, self.ffn = _feed_forward(config, config.decoder_ffn, key)

    def _rest(self, h: jax.Array, cross: jax.Array) -> jax.Array:
        h = h + _maybe(self.encoder_attn_layer_norm, cross)  # (B, T, D)
        return h + (self.ffn if self.glu is None else self.glu)(h)

    def __call__(self, x: jax.Array, *, context: jax.Array, mask: jax.Array,
                 key: jax.Array | None = None) -> jax.Array:
        del key  # no dropout
        h = x + _maybe(self.self_attn_layer_norm, self.self_attn(self.pre_self_attn_layer_norm(x), causal=True))
        cross = self.encoder_attn(self.pre_encoder_attn_layer_norm(h), context, mask=mask)  # (B, T, D)
        return self._rest(h, cross)

    def decode(self, x: jax.Array, cache: "DalleBartLayerCache", *, positions: jax.Array,
               mask: jax.Array) -> tuple[jax.Array, "DalleBartLayerCache"]:
        a, self_cache = self.self_attn.decode(self.pre_self_attn_layer_norm(x), cache.self_attn, positions=positions)
        h = x + _maybe(self.self_attn_layer_norm, a)  # (B, T, D)
        cross = self.encoder_attn.attend(self.pre_encoder_attn_layer_norm(h), cache.cross_k, cache.cross_v,
                                         mask=mask)
        return self._rest(h, cross), nn.replace(cache, self_attn=self_cache)


def _layers(make, n: int, config: DalleBartConfig, key: jax.Array):
    if config.scan_layers:
        return nn.Stacked(make, n, key=nn.subkey(key, "layers"), remat=config.remat)
    return tuple(make(nn.subkey(key, f"layers[{i}]")) for i in range(n))


class DalleBartEncoder(nn.Module):
    """Text ids ``(B, S)`` and mask ``(B, S)`` -> encoder states ``(B, S, D)``."""

    embed_tokens: nn.Embedding
    embed_positions: nn.Embedding
    layernorm_embedding: nn.LayerNorm | nn.RMSNorm
    layers: tuple[DalleBartEncoderLayer, ...] | nn.Stacked
    final_ln: nn.LayerNorm | nn.RMSNorm | None
    embed_scale: float = nn.static()

    def __init__(self, config: DalleBartConfig, *, key: jax.Array):
        D, init = config.d_model, jax.nn.initializers.normal(config.init_std)
        self.embed_scale = D ** 0.5 if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.text_vocab_size, D, key=nn.subkey(key, "embed_tokens"),
                                         weight_init=init)
        self.embed_positions = nn.Embedding(config.max_text_len, D, key=nn.subkey(key, "embed_positions"),
                                            axes=(None, "embed"), weight_init=init)
        self.layernorm_embedding = _norm(config, D, scaled=True)
        self.layers = _layers(lambda k: DalleBartEncoderLayer(config, key=k), config.encoder_layers,
                              config, key)
        self.final_ln = _norm(config, D, scaled=False) if config.use_final_ln_encoder else None

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        x = self.embed_tokens(ids) * self.embed_scale + self.embed_positions(jnp.arange(ids.shape[1]))  # (B, S, D)
        x = apply_layers(self.layers, self.layernorm_embedding(x), mask=mask[:, None, None, :])
        return _maybe(self.final_ln, x)  # (B, S, D)


class DalleBartDecoder(nn.Module):
    """Image ids ``(B, T)`` -> hidden ``(B, T, D)``, cross-attending to the encoder states."""

    embed_tokens: nn.Embedding
    embed_positions: nn.Embedding
    layernorm_embedding: nn.LayerNorm | nn.RMSNorm
    layers: tuple[DalleBartDecoderLayer, ...] | nn.Stacked
    final_ln: nn.LayerNorm | nn.RMSNorm | None
    embed_scale: float = nn.static()

    def __init__(self, config: DalleBartConfig, *, key: jax.Array):
        D, init = config.d_model, jax.nn.initializers.normal(config.init_std)
        self.embed_scale = D ** 0.5 if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.image_vocab_size + 1, D, key=nn.subkey(key, "embed_tokens"),
                                         weight_init=init)
        self.embed_positions = nn.Embedding(config.image_len, D, key=nn.subkey(key, "embed_positions"),
                                            axes=(None, "embed"), weight_init=init)
        self.layernorm_embedding = _norm(config, D, scaled=True)
        self.layers = _layers(lambda k: DalleBartDecoderLayer(config, key=k), config.decoder_layers,
                              config, key)
        self.final_ln = _norm(config, D, scaled=False) if config.use_final_ln_decoder else None

    def _embed(self, ids: jax.Array, positions: jax.Array) -> jax.Array:
        x = self.embed_tokens(ids) * self.embed_scale + self.embed_positions(positions)  # (B, T, D)
        return self.layernorm_embedding(x)

    def __call__(self, ids: jax.Array, context: jax.Array, mask: jax.Array) -> jax.Array:
        x = self._embed(ids, jnp.arange(ids.shape[1]))
        x = apply_layers(self.layers, x, context=context, mask=mask[:, None, None, :])
        return _maybe(self.final_ln, x)  # (B, T, D)

    def decode(self, ids: jax.Array, cache: "DalleBartCache", positions: jax.Array):
        x = self._embed(ids, jnp.maximum(positions, 0))
        x, layers = decode_layers(self.layers, x, cache.layers, positions=positions,
                                  mask=cache.text_mask[:, None, None, :])
        return _maybe(self.final_ln, x), nn.replace(cache, layers=layers)


# ----------------------------------------------------------------------------------------
# The cache and the model
# ----------------------------------------------------------------------------------------


class DalleBartLayerCache(nn.Module):
    """One decoder layer's cache: its self-attention ``nn.KVCache`` and the cross-attention keys/values.

    ``cross_k``, ``cross_v``: ``(B, S, heads, head_dim)``, the projected encoder states,
    computed once by ``DalleBart.init_cache``.
    """

    self_attn: nn.KVCache
    cross_k: jax.Array
    cross_v: jax.Array

    def __init__(self, self_attn: nn.KVCache, cross_k: jax.Array, cross_v: jax.Array):
        axes = ("batch", "length", "heads", "head_dim")
        self.self_attn = self_attn
        self.cross_k = nn.state(cross_k, axes)
        self.cross_v = nn.state(cross_v, axes)


class DalleBartCache(nn.Module):
    """The decoder's cache: one ``DalleBartLayerCache`` per layer (an ``nn.Stacked`` with ``scan_layers``)
    and the text mask ``(B, S)`` bool the cross-attention applies. Shapes never change while decoding."""

    layers: tuple[DalleBartLayerCache, ...] | nn.Stacked
    text_mask: jax.Array

    def __init__(self, layers, text_mask: jax.Array):
        self.layers = layers
        self.text_mask = nn.state(text_mask, ("batch", "length"))

    @property
    def index(self) -> jax.Array:
        """The number of image positions already decoded."""
        if isinstance(self.layers, nn.Stacked):
            return self.layers.layer.self_attn.index[0]
        return self.layers[0].self_attn.index


def _check_text(name: str, ids, mask) -> tuple[jax.Array, jax.Array]:
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise nn.ShapeError(f"DalleBart.{name}: text_ids must be integers (B, S), got {ids.dtype}{list(ids.shape)}; "
                            f"a single prompt needs ids[None].")
    if mask.shape != ids.shape or mask.dtype != jnp.bool_:
        raise nn.ShapeError(f"DalleBart.{name}: text_mask must be boolean shaped like text_ids {tuple(ids.shape)} "
                            f"(True = token, False = padding), got {mask.dtype}{list(mask.shape)}; write "
                            f"text_mask = text_ids != config.text_pad_token_id.")
    return ids, mask


def _check_image_ids(name: str, ids, limit: int) -> jax.Array:
    ids = jnp.asarray(ids)
    if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise nn.ShapeError(f"DalleBart.{name}: image_ids must be integers (B, T), got {ids.dtype}{list(ids.shape)}.")
    if ids.shape[1] > limit:
        raise nn.ShapeError(f"DalleBart.{name}: {ids.shape[1]} image tokens but the decoder has {limit} positions "
                            f"(config.image_len, or the cache's max_len).")
    return ids


class DalleBart(nn.Module):
    """Text ids -> image-token logits: ``encode``, ``init_cache``, ``decode`` and the teacher-forced ``__call__``.

    * ``encode(text_ids (B, S) int, text_mask (B, S) bool) -> (B, S, D)``, ``S <= max_text_len``.
    * ``init_cache(encoder_states, text_mask, *, max_len=None) -> DalleBartCache``: the
      cross-attention keys/values of every decoder layer, computed once, and an empty
      self-attention cache of ``max_len`` (default ``image_len``) positions.
    * ``decode(image_ids (B, T), cache) -> (logits (B, T, image_vocab_size + 1), cache)``:
      the next ``T`` tokens at positions ``cache.index ...``. Feed ``decoder_start_token_id``
      first; the logits at position ``t`` predict image token ``t``.
    * ``model(text_ids, text_mask, image_ids) -> (B, T, image_vocab_size + 1)``: the same
      logits for all ``T`` tokens at once (``image_ids`` = start token + codes shifted right).

    Super-conditioning (``uncond + scale * (cond - uncond)``) and sampling are the caller's.
    """

    encoder: DalleBartEncoder
    decoder: DalleBartDecoder
    lm_head: nn.Linear
    config: DalleBartConfig = nn.static()

    def __init__(self, config: DalleBartConfig, *, key: jax.Array):
        config.check_implemented()
        self.config = config
        self.encoder = DalleBartEncoder(config, key=nn.subkey(key, "encoder"))
        self.decoder = DalleBartDecoder(config, key=nn.subkey(key, "decoder"))
        self.lm_head = _linear(config.d_model, config.image_vocab_size + 1, ("embed", "vocab"), config,
                               key=nn.subkey(key, "lm_head"), use_bias=False)

    def encode(self, text_ids: jax.Array, text_mask: jax.Array) -> jax.Array:
        """Encoder states ``(B, S, D)`` of ``text_ids`` ``(B, S)``; ``text_mask`` ``(B, S)`` is False on padding."""
        text_ids, text_mask = _check_text("encode", text_ids, text_mask)
        if text_ids.shape[1] > self.config.max_text_len:
            raise nn.ShapeError(f"DalleBart.encode: {text_ids.shape[1]} text tokens but the encoder has "
                                f"max_text_len={self.config.max_text_len} positions; truncate the prompt.")
        return self.encoder(text_ids, text_mask)

    def init_cache(self, encoder_states: jax.Array, text_mask: jax.Array, *,
                   max_len: int | None = None) -> DalleBartCache:
        """A decoding cache for ``encoder_states`` ``(B, S, D)`` (from ``encode``) and their ``text_mask``.

        Each decoder layer's cross-attention keys/values are projected here, once; the
        self-attention caches are empty, ``(B, max_len, heads, head_dim)`` in the
        encoder states' dtype (default ``max_len``: ``config.image_len``).
        """
        c = self.config
        encoder_states, text_mask = jnp.asarray(encoder_states), jnp.asarray(text_mask)
        if encoder_states.ndim != 3 or encoder_states.shape[-1] != c.d_model:
            raise nn.ShapeError(f"DalleBart.init_cache: encoder_states must be (B, S, d_model={c.d_model}), got "
                                f"{list(encoder_states.shape)}; pass model.encode(text_ids, text_mask).")
        if text_mask.shape != encoder_states.shape[:2] or text_mask.dtype != jnp.bool_:
            raise nn.ShapeError(f"DalleBart.init_cache: text_mask must be boolean {tuple(encoder_states.shape[:2])} "
                                f"(the mask given to encode), got {text_mask.dtype}{list(text_mask.shape)}.")
        max_len = c.image_len if max_len is None else max_len
        if not 1 <= max_len <= c.image_len:
            raise ValueError(f"DalleBart.init_cache: max_len={max_len} must be in [1, image_len={c.image_len}] "
                             f"(the decoder has image_len learned positions).")
        B, H = encoder_states.shape[0], c.decoder_heads
        empty = nn.KVCache(B, max_len, H, c.d_model // H, dtype=encoder_states.dtype)
        layers = self.decoder.layers
        per_layer = layers.unstacked() if isinstance(layers, nn.Stacked) else layers
        caches = [DalleBartLayerCache(empty, *layer.encoder_attn.keys_values(encoder_states)) for layer in per_layer]
        return DalleBartCache(nn.Stacked.from_layers(caches) if isinstance(layers, nn.Stacked) else tuple(caches),
                              text_mask)

    def decode(self, image_ids: jax.Array, cache: DalleBartCache) -> tuple[jax.Array, DalleBartCache]:
        """Logits ``(B, T, image_vocab_size + 1)`` of the next ``T`` image tokens, and the new cache.

        Past the cache's ``max_len`` the logits are NaN (``nn.KVCache``'s overflow guard).
        """
        image_ids = _check_image_ids("decode", image_ids, self.config.image_len)
        B, T = image_ids.shape
        if cache.text_mask.shape[0] != B:
            raise nn.ShapeError(f"DalleBart.decode: image_ids batch {B} differs from the cache's batch "
                                f"{cache.text_mask.shape[0]} (init_cache's encoder_states).")
        positions = jnp.broadcast_to(cache.index + jnp.arange(T, dtype=jnp.int32), (B, T))  # (B, T)
        h, cache = self.decoder.decode(image_ids, cache, positions)
        return self.lm_head(h), cache

    def __call__(self, text_ids: jax.Array, text_mask: jax.Array, image_ids: jax.Array) -> jax.Array:
        """Teacher-forced logits ``(B, T, image_vocab_size + 1)`` for ``image_ids`` ``(B, T)``, ``T <= image_len``."""
        states = self.encode(text_ids, text_mask)
        image_ids = _check_image_ids("__call__", image_ids, self.config.image_len)
        return self.lm_head(self.decoder(image_ids, states, jnp.asarray(text_mask)))
