"""Vision Transformer (Dosovitskiy et al. 2020) with Hugging Face ``ViTModel`` names, channels-last.

Images are cut into ``patch_size`` squares by a strided convolution, a learned
``[CLS]`` token and position embeddings are added, and a stack of pre-norm encoder
layers follows. The classifier reads the final ``[CLS]`` vector.

Parameter paths copy the Hugging Face checkpoint names (``models.hf.vit_names(config)``
is the import table); only the layer index is written ``[i]`` and the layouts differ:

=====================================================  ==============================
Hugging Face (``ViTModel``; ``vit.`` prefixed in        baobab
``ViTForImageClassification``)
=====================================================  ==============================
``embeddings.cls_token`` (1, 1, D)                     same
``embeddings.position_embeddings`` (1, 1 + N, D)       same
``embeddings.patch_embeddings.projection.weight``      same name, (P, P, C, D) instead of (D, C, P, P)
``encoder.layer.{i}.attention.attention.query``        ``encoder.layer[i].attention.attention.query``
``... .attention.output.dense``, ``intermediate.dense``, ``output.dense``  ``Linear``: weight (in, out)
``... .layernorm_before``, ``layernorm_after``, ``layernorm``  same
``pooler.dense`` (``ViTModel`` only), ``classifier``    same; present per config
=====================================================  ==============================

Attention is written out here (``ViTSelfAttention``) rather than taken from
``nn.MultiHeadAttention``, whose projections are named ``q/k/v/o``: with HF's names
the import is a table, not code. There is no attention-probability dropout.

>>> import jax, jax.numpy as jnp
>>> from baobab.models import ViT, ViTConfig
>>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_layers=2, num_heads=4,
...                    intermediate_size=128, num_classes=10)
>>> model = ViT(config, key=jax.random.key(0))
>>> images = jnp.zeros((2, 32, 32, 3))  # (B, H, W, C)
>>> model(images).shape, model.encode(images).shape  # logits, and (B, 1 + 16 patches, D)
((2, 10), (2, 17, 64))
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

__all__ = ["ViTConfig", "ViT", "ViTLayer"]

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # HF "gelu" (erf)
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # HF "gelu_new" / "gelu_pytorch_tanh"
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


class ViTConfig(Config):
    """A ViT. The defaults are ViT-B/16 at 224x224 with a 1000-class head.

    Hugging Face ``ViTConfig`` names in brackets: ``hidden_size``, ``num_layers``
    [num_hidden_layers], ``num_heads`` [num_attention_heads], ``intermediate_size``,
    ``norm_eps`` [layer_norm_eps], ``activation`` [hidden_act], ``qkv_bias``,
    ``dropout`` [hidden_dropout_prob], ``in_channels`` [num_channels].
    ``num_classes=0`` drops the classifier (``ViTModel``); ``pooler`` adds ``ViTModel``'s
    ``pooler.dense`` (tanh of a dense layer on ``[CLS]``), which the classifier does not use.
    """

    kind: Literal["vit"] = "vit"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the baobab.tasks it can run
    image_size: int = pydantic.Field(224, gt=0)
    patch_size: int = pydantic.Field(16, gt=0)
    in_channels: int = pydantic.Field(3, gt=0)
    hidden_size: int = pydantic.Field(768, gt=0)
    num_layers: int = pydantic.Field(12, gt=0)
    num_heads: int = pydantic.Field(12, gt=0)
    intermediate_size: int = pydantic.Field(3072, gt=0)
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu"
    norm_eps: float = pydantic.Field(1e-12, gt=0.0)
    qkv_bias: bool = True
    dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0, description="hidden dropout (embeddings, residuals)")
    num_classes: int = pydantic.Field(1000, ge=0, description="0: no classifier, call returns hidden states")
    pooler: bool = False

    @pydantic.model_validator(mode="after")
    def _fits(self) -> "ViTConfig":
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}.")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}.")
        return self

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def _linear(d_in: int, d_out: int, axes: tuple[str, str], *, key: jax.Array, use_bias: bool = True) -> nn.Linear:
    """A ``Linear`` with HF's ViT init: weights ``N(0, 0.02)`` (truncated in HF), zero bias."""
    return nn.Linear(d_in, d_out, key=key, axes=axes, use_bias=use_bias,
                     weight_init=jax.nn.initializers.truncated_normal(0.02),
                     bias_init=jax.nn.initializers.zeros)


# ----------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------


class ViTPatchEmbeddings(nn.Module):
    """``(B, H, W, C) -> (B, N, D)``: a ``patch_size``-strided convolution, patches in row-major order."""

    projection: nn.Conv

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        p = config.patch_size
        self.projection = nn.Conv(config.in_channels, config.hidden_size, (p, p), stride=p,
                                  padding="VALID", key=nn.subkey(key, "projection"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return einops.rearrange(self.projection(x), "b h w d -> b (h w) d")  # (B, N, D)


class ViTEmbeddings(nn.Module):
    """``(B, H, W, C) -> (B, 1 + N, D)``: ``[CLS]`` then the patches, plus position embeddings."""

    cls_token: jax.Array  # (1, 1, D)
    position_embeddings: jax.Array  # (1, 1 + N, D)
    patch_embeddings: ViTPatchEmbeddings
    dropout: nn.Dropout

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        D, N = config.hidden_size, config.num_patches
        init = jax.nn.initializers.truncated_normal(0.02)
        self.cls_token = nn.param(init(nn.subkey(key, "cls_token"), (1, 1, D)), (None, None, "embed"))
        self.position_embeddings = nn.param(init(nn.subkey(key, "position_embeddings"), (1, 1 + N, D)),
                                            (None, "length", "embed"))
        self.patch_embeddings = ViTPatchEmbeddings(config, key=nn.subkey(key, "patch_embeddings"))
        self.dropout = nn.Dropout(config.dropout)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        patches = self.patch_embeddings(x)  # (B, N, D)
        cls = jnp.broadcast_to(self.cls_token, (x.shape[0], 1, patches.shape[-1])).astype(patches.dtype)
        h = jnp.concatenate([cls, patches], axis=1) + self.position_embeddings  # (B, 1 + N, D)
        return self.dropout(h, key=key)


# ----------------------------------------------------------------------------------------
# Encoder layer
# ----------------------------------------------------------------------------------------


class ViTSelfAttention(nn.Module):
    """Multi-head self-attention scores and mixing: ``(B, T, D) -> (B, T, D)`` before the output dense."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    num_heads: int = nn.static()

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        D = config.hidden_size
        self.num_heads = config.num_heads
        self.query = _linear(D, D, ("embed", "heads"), key=nn.subkey(key, "query"), use_bias=config.qkv_bias)
        self.key = _linear(D, D, ("embed", "heads"), key=nn.subkey(key, "key"), use_bias=config.qkv_bias)
        self.value = _linear(D, D, ("embed", "heads"), key=nn.subkey(key, "value"), use_bias=config.qkv_bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        split = functools.partial(einops.rearrange, pattern="b t (h d) -> b t h d", h=self.num_heads)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))  # (B, T, H, Dh)
        out = nn.attention(q, k, v)  # (B, T, H, Dh), softmax(q k^T / sqrt(Dh)) v
        return einops.rearrange(out, "b t h d -> b t (h d)")  # (B, T, D)


class ViTSelfOutput(nn.Module):
    """The attention's output projection (the residual is added by the layer)."""

    dense: nn.Linear
    dropout: nn.Dropout

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        D = config.hidden_size
        self.dense = _linear(D, D, ("heads", "embed"), key=nn.subkey(key, "dense"))
        self.dropout = nn.Dropout(config.dropout)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.dropout(self.dense(x), key=key)  # (B, T, D)


class ViTAttention(nn.Module):
    attention: ViTSelfAttention
    output: ViTSelfOutput

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        self.attention = ViTSelfAttention(config, key=nn.subkey(key, "attention"))
        self.output = ViTSelfOutput(config, key=nn.subkey(key, "output"))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.output(self.attention(x), key=key)  # (B, T, D)


class ViTIntermediate(nn.Module):
    dense: nn.Linear
    activation: str = nn.static()

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        self.activation = config.activation
        self.dense = _linear(config.hidden_size, config.intermediate_size, ("embed", "mlp"),
                             key=nn.subkey(key, "dense"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.activation](self.dense(x))  # (B, T, intermediate)


class ViTOutput(nn.Module):
    dense: nn.Linear
    dropout: nn.Dropout

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        self.dense = _linear(config.intermediate_size, config.hidden_size, ("mlp", "embed"),
                             key=nn.subkey(key, "dense"))
        self.dropout = nn.Dropout(config.dropout)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.dropout(self.dense(x), key=key)  # (B, T, D)


class ViTLayer(nn.Module):
    """Pre-norm encoder layer: ``x + attn(ln(x))``, then ``h + mlp(ln(h))``. ``(B, T, D) -> (B, T, D)``."""

    layernorm_before: nn.LayerNorm
    attention: ViTAttention
    layernorm_after: nn.LayerNorm
    intermediate: ViTIntermediate
    output: ViTOutput

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        D, eps = config.hidden_size, config.norm_eps
        self.layernorm_before = nn.LayerNorm(D, eps=eps)
        self.attention = ViTAttention(config, key=nn.subkey(key, "attention"))
        self.layernorm_after = nn.LayerNorm(D, eps=eps)
        self.intermediate = ViTIntermediate(config, key=nn.subkey(key, "intermediate"))
        self.output = ViTOutput(config, key=nn.subkey(key, "output"))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        h = x + self.attention(self.layernorm_before(x), key=k1)  # (B, T, D)
        return h + self.output(self.intermediate(self.layernorm_after(h)), key=k2)  # (B, T, D)


class ViTEncoder(nn.Module):
    layer: tuple[ViTLayer, ...]

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        self.layer = tuple(ViTLayer(config, key=nn.subkey(key, f"layer[{i}]")) for i in range(config.num_layers))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        keys = [None] * len(self.layer) if key is None else list(jax.random.split(key, len(self.layer)))
        for layer, layer_key in zip(self.layer, keys, strict=True):
            x = layer(x, key=layer_key)  # (B, T, D)
        return x


class ViTPooler(nn.Module):
    """``ViTModel``'s pooler: ``tanh(dense(h[:, 0]))``, ``(B, T, D) -> (B, D)``."""

    dense: nn.Linear

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        D = config.hidden_size
        self.dense = _linear(D, D, ("embed", "mlp"), key=nn.subkey(key, "dense"))

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(hidden[:, 0]))  # (B, D)


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------


class ViT(nn.Module):
    """Images ``(B, H, W, C)`` (float, channels-last) ``-> (B, num_classes)`` logits.

    * ``__call__(images)``: ``classifier(hidden[:, 0])``, the logits. With
      ``num_classes=0`` or ``head=False`` it returns the hidden states instead.
    * ``encode(images)``: the final hidden states ``(B, 1 + N, D)`` after ``layernorm``
      (HF's ``last_hidden_state``); ``[:, 0]`` is the ``[CLS]`` vector.
    * ``pool(hidden)``: the pooler output ``(B, D)`` (needs ``pooler=True``).

    ``H = W = image_size``: position embeddings are not interpolated to other sizes.
    With ``config.dropout > 0`` a call in training mode needs ``key=`` (``nn.eval_mode(model)`` turns dropout off).
    """

    embeddings: ViTEmbeddings
    encoder: ViTEncoder
    layernorm: nn.LayerNorm
    pooler: ViTPooler | None
    classifier: nn.Linear | None
    config: ViTConfig = nn.static()

    def __init__(self, config: ViTConfig, *, key: jax.Array):
        self.config = config
        self.embeddings = ViTEmbeddings(config, key=nn.subkey(key, "embeddings"))
        self.encoder = ViTEncoder(config, key=nn.subkey(key, "encoder"))
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.pooler = ViTPooler(config, key=nn.subkey(key, "pooler")) if config.pooler else None
        self.classifier = None
        if config.num_classes:
            self.classifier = _linear(config.hidden_size, config.num_classes, ("embed", "classes"),
                                      key=nn.subkey(key, "classifier"))

    def __call__(self, images: jax.Array, *, key: jax.Array | None = None, head: bool = True) -> jax.Array:
        c = self.config
        expected = (c.image_size, c.image_size, c.in_channels)
        if images.ndim != 4 or images.shape[1:] != expected or not jnp.issubdtype(images.dtype, jnp.floating):
            raise nn.ShapeError(
                f"ViT expects floating-point images (B, {', '.join(map(str, expected))}) channels-last, "
                f"got {images.dtype}{list(images.shape)}. PyTorch-layout pixel_values (B, C, H, W) need "
                f".transpose(0, 2, 3, 1); other sizes need ViTConfig(image_size=...)."
            )
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        h = self.embeddings(images, key=k1)  # (B, 1 + N, D)
        h = self.encoder(h, key=k2)  # (B, 1 + N, D)
        h = self.layernorm(h)  # (B, 1 + N, D)
        if not head or self.classifier is None:
            return h
        return self.classifier(h[:, 0])  # (B, num_classes)

    def encode(self, images: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``(B, H, W, C) -> (B, 1 + N, D)``: the final hidden states, without the classifier."""
        return self(images, key=key, head=False)

    def pool(self, hidden: jax.Array) -> jax.Array:
        """``(B, T, D) -> (B, D)``: ``ViTModel``'s ``pooler_output`` (needs ``pooler=True``)."""
        if self.pooler is None:
            raise ValueError("This ViT has no pooler; build it with ViTConfig(pooler=True).")
        return self.pooler(hidden)
