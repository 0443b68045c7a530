"""VQGAN (Esser et al. 2021, taming-transformers), channels-last, as DALL·E Mini uses it.

An encoder maps images to a grid of ``embed_dim`` vectors, a vector quantiser snaps
each to its nearest codebook entry, and a decoder maps the quantised grid back to
images. The defaults are dalle-mini's ``vqgan_imagenet_f16_16384``: 256x256 images,
a 16x downsampling (``len(ch_mult) - 1`` halvings) to 16x16 codes, 16384 codes of
256 dimensions. Other sizes come from ``ch_mult`` (one entry per level) and ``n_embed``.

Parameter paths copy vqgan-jax / taming's names, so importing either is a one-to-one
copy (``models.vqgan_io`` has the tables)::

    encoder.conv_in                           decoder.conv_in
    encoder.down[i].block[j].norm1/conv1/...  decoder.mid.block_1/attn_1/block_2
    encoder.down[i].attn[j].norm/q/k/v/...    decoder.up[i].block[j]   (up[0] is full size)
    encoder.down[i].downsample.conv           decoder.up[i].attn[j], decoder.up[i].upsample.conv
    encoder.mid.block_1/attn_1/block_2        decoder.norm_out/conv_out
    encoder.norm_out/conv_out
    quant_conv   quantize.embedding   post_quant_conv

The value range of the images is the caller's: the model only learns to reproduce
what it is given. dalle-mini's checkpoint works on [0, 1] (its decoder output is
clipped to [0, 1]); taming's own checkpoints use [-1, 1].

>>> import jax, jax.numpy as jnp
>>> from baobab.models import VQGAN, VQGANConfig
>>> config = VQGANConfig(resolution=16, in_channels=1, out_channels=1, ch=32, ch_mult=(1, 2),
...                      num_res_blocks=1, attn_resolutions=(8,), z_channels=8, embed_dim=4, n_embed=16)
>>> model = VQGAN(config, key=jax.random.key(0))
>>> images = jnp.zeros((2, 16, 16, 1))  # (B, H, W, C)
>>> reconstruction, codes, losses = model(images)
>>> reconstruction.shape, codes.shape, codes.dtype, sorted(losses)
((2, 16, 16, 1), (2, 64), dtype('int32'), ['codebook', 'commitment'])
>>> model.decode_code(codes.reshape(2, 8, 8)).shape
(2, 16, 16, 1)
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import pydantic

from baobab import nn
from baobab.config import Config

__all__ = ["VQGANConfig", "VQGAN", "ResnetBlock", "AttnBlock", "Encoder", "Decoder", "VectorQuantizer"]

GROUPS = 32  # taming's GroupNorm(num_groups=32) everywhere


class VQGANConfig(Config):
    """A taming-transformers VQGAN; the defaults are dalle-mini's ``vqgan_imagenet_f16_16384``.

    Level ``i`` of the encoder has ``ch * ch_mult[i]`` channels; every level but the last
    halves the image, so codes are ``resolution / 2**(len(ch_mult) - 1)`` on a side.
    Attention blocks sit at the levels whose side is in ``attn_resolutions`` (and always in
    the middle). Every channel count must be a multiple of 32 (GroupNorm's groups).
    """

    kind: Literal["vqgan"] = "vqgan"
    tasks: ClassVar[tuple[str, ...]] = ("image_autoencoder",)  # the baobab.tasks it can run
    resolution: int = pydantic.Field(256, gt=0, description="side of the training images; sets where attention sits")
    in_channels: int = pydantic.Field(3, gt=0, description="channels of the input images")
    out_channels: int = pydantic.Field(3, gt=0, description="channels of the reconstructed images")
    ch: int = pydantic.Field(128, gt=0, description="base channel count, multiplied per level by ch_mult")
    ch_mult: tuple[pydantic.PositiveInt, ...] = pydantic.Field(
        (1, 1, 2, 2, 4), min_length=1, description="channel multiplier per level; len - 1 halvings (f16: 5 levels)")
    num_res_blocks: int = pydantic.Field(2, gt=0, description="ResnetBlocks per encoder level (decoder: one more)")
    attn_resolutions: tuple[pydantic.PositiveInt, ...] = pydantic.Field(
        (16,), description="image sides at which levels get attention blocks")
    z_channels: int = pydantic.Field(256, gt=0, description="channels of the encoder output / decoder input")
    embed_dim: int = pydantic.Field(256, gt=0, description="dimension of each codebook vector")
    n_embed: int = pydantic.Field(16384, gt=0, description="number of codebook vectors (codes)")
    dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0, description="drop rate inside each ResnetBlock")
    norm_groups: int = pydantic.Field(
        GROUPS, gt=0, description="GroupNorm groups: 32 as taming; every channel count must divide by it")
    norm_eps: float = pydantic.Field(
        1e-6, gt=0.0, description="GroupNorm eps: 1e-6 as taming/vqgan-jax, 1e-5 to match min-dalle")
    beta: float = pydantic.Field(0.25, ge=0.0, description="weight of the second quantisation loss term")
    legacy_loss: bool = pydantic.Field(
        True, description="taming's default: beta weighs the codebook term; False: beta weighs the commitment term")

    @pydantic.model_validator(mode="after")
    def _fits(self) -> "VQGANConfig":
        halvings = len(self.ch_mult) - 1
        if self.resolution % 2 ** halvings:
            raise ValueError(f"resolution={self.resolution} must be divisible by 2**(len(ch_mult) - 1) = "
                             f"{2 ** halvings}: each level but the last halves the image.")
        bad = sorted({self.ch * m for m in self.ch_mult if (self.ch * m) % self.norm_groups})
        if bad:
            raise ValueError(f"channel counts {bad} (ch={self.ch} times ch_mult={self.ch_mult}) are not multiples "
                             f"of norm_groups={self.norm_groups}, GroupNorm's group count; pick ch as a multiple of "
                             f"it (or lower norm_groups).")
        return self

    @property
    def latent_size(self) -> int:
        """Side of the code grid: ``resolution / 2**(len(ch_mult) - 1)``."""
        return self.resolution // 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int, eps: float, groups: int = GROUPS) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=eps)


def _keys(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    """``n`` dropout keys from ``key`` (``None`` stays ``None``: no dropout, or evaluation)."""
    return [None] * n if key is None else list(jax.random.split(key, n))


class ResnetBlock(nn.Module):
    """``x + conv2(drop(swish(norm2(conv1(swish(norm1(x)))))))``: ``(B, H, W, C_in) -> (B, H, W, C_out)``.

    The residual goes through ``nin_shortcut`` (1x1 conv) when ``C_in != C_out``.
    """

    norm1: nn.GroupNorm
    conv1: nn.Conv
    norm2: nn.GroupNorm
    dropout: nn.Dropout
    conv2: nn.Conv
    nin_shortcut: nn.Conv | None

    def __init__(self, c_in: int, c_out: int, *, dropout: float, eps: float, key: jax.Array, groups: int = GROUPS):
        self.norm1 = _norm(c_in, eps, groups)
        self.conv1 = nn.Conv(c_in, c_out, (3, 3), padding=1, key=nn.subkey(key, "conv1"))
        self.norm2 = _norm(c_out, eps, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv(c_out, c_out, (3, 3), padding=1, key=nn.subkey(key, "conv2"))
        self.nin_shortcut = None if c_in == c_out else nn.Conv(c_in, c_out, (1, 1), key=nn.subkey(key, "nin_shortcut"))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        h = self.conv1(jax.nn.swish(self.norm1(x)))  # (B, H, W, C_out)
        h = self.conv2(self.dropout(jax.nn.swish(self.norm2(h)), key=key))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``H * W`` positions, plus the residual: ``(B, H, W, C)``.

    ``q``, ``k``, ``v`` and ``proj_out`` are 1x1 convolutions; the scale is ``C ** -0.5``.
    """

    norm: nn.GroupNorm
    q: nn.Conv
    k: nn.Conv
    v: nn.Conv
    proj_out: nn.Conv

    def __init__(self, channels: int, *, eps: float, key: jax.Array, groups: int = GROUPS):
        self.norm = _norm(channels, eps, groups)
        for name in ("q", "k", "v", "proj_out"):
            setattr(self, name, nn.Conv(channels, channels, (1, 1), key=nn.subkey(key, name)))

    def __call__(self, x: jax.Array) -> jax.Array:
        B, H, W, C = x.shape
        h = self.norm(x)
        q, k, v = (f(h).reshape(B, H * W, 1, C) for f in (self.q, self.k, self.v))  # (B, HW, 1 head, C)
        h = nn.attention(q, k, v).reshape(B, H, W, C)
        return x + self.proj_out(h)


class _Resample(nn.Module):
    """``conv``: the one parameterised layer of a Downsample / Upsample (named as taming's)."""

    conv: nn.Conv
    up: bool = nn.static()

    def __init__(self, channels: int, *, up: bool, key: jax.Array):
        self.up = up
        # Down: pad bottom/right by one, then a stride-2 VALID 3x3 conv (taming's asymmetric padding).
        padding, stride = (1, 1) if up else (((0, 1), (0, 1)), 2)
        self.conv = nn.Conv(channels, channels, (3, 3), stride=stride, padding=padding, key=nn.subkey(key, "conv"))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.up:  # nearest-neighbour x2: (B, H, W, C) -> (B, 2H, 2W, C)
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)  # down: (B, H, W, C) -> (B, H/2, W/2, C)


class Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (one per block, or none),
    then ``downsample`` (encoder) or ``upsample`` (decoder), or neither at the last level."""

    block: tuple[ResnetBlock, ...]
    attn: tuple[AttnBlock, ...]
    downsample: _Resample | None
    upsample: _Resample | None

    def __init__(self, c_in: int, c_out: int, n_blocks: int, *, attention: bool, resample: str | None,
                 config: VQGANConfig, key: jax.Array):
        eps = config.norm_eps
        self.block = tuple(ResnetBlock(c_in if j == 0 else c_out, c_out, dropout=config.dropout, eps=eps,
                                       groups=config.norm_groups, key=nn.subkey(key, f"block[{j}]"))
                           for j in range(n_blocks))
        self.attn = tuple(AttnBlock(c_out, eps=eps, groups=config.norm_groups, key=nn.subkey(key, f"attn[{j}]"))
                          for j in range(n_blocks)) if attention else ()
        self.downsample = _Resample(c_out, up=False, key=nn.subkey(key, "downsample")) if resample == "down" else None
        self.upsample = _Resample(c_out, up=True, key=nn.subkey(key, "upsample")) if resample == "up" else None

    def __call__(self, h: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        for j, (block, k) in enumerate(zip(self.block, _keys(key, len(self.block)), strict=True)):
            h = block(h, key=k)
            if self.attn:
                h = self.attn[j](h)
        for resample in (self.downsample, self.upsample):
            if resample is not None:
                h = resample(h)
        return h


class Mid(nn.Module):
    """``block_1``, ``attn_1``, ``block_2`` at the lowest resolution."""

    block_1: ResnetBlock
    attn_1: AttnBlock
    block_2: ResnetBlock

    def __init__(self, channels: int, *, config: VQGANConfig, key: jax.Array):
        kw = dict(dropout=config.dropout, eps=config.norm_eps, groups=config.norm_groups)
        self.block_1 = ResnetBlock(channels, channels, **kw, key=nn.subkey(key, "block_1"))
        self.attn_1 = AttnBlock(channels, eps=config.norm_eps, groups=config.norm_groups, key=nn.subkey(key, "attn_1"))
        self.block_2 = ResnetBlock(channels, channels, **kw, key=nn.subkey(key, "block_2"))

    def __call__(self, h: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        k1, k2 = _keys(key, 2)
        return self.block_2(self.attn_1(self.block_1(h, key=k1)), key=k2)


class Encoder(nn.Module):
    """``(B, H, W, in_channels) -> (B, H/f, W/f, z_channels)`` with ``f = 2**(len(ch_mult) - 1)``."""

    conv_in: nn.Conv
    down: tuple[Level, ...]
    mid: Mid
    norm_out: nn.GroupNorm
    conv_out: nn.Conv

    def __init__(self, config: VQGANConfig, *, key: jax.Array):
        c = config
        self.conv_in = nn.Conv(c.in_channels, c.ch, (3, 3), padding=1, key=nn.subkey(key, "conv_in"))
        levels, side, mults = [], c.resolution, (1, *c.ch_mult)
        for i, mult in enumerate(c.ch_mult):
            last = i == len(c.ch_mult) - 1
            levels.append(Level(c.ch * mults[i], c.ch * mult, c.num_res_blocks, attention=side in c.attn_resolutions,
                                resample=None if last else "down", config=c, key=nn.subkey(key, f"down[{i}]")))
            side = side if last else side // 2
        self.down = tuple(levels)
        top = c.ch * c.ch_mult[-1]
        self.mid = Mid(top, config=c, key=nn.subkey(key, "mid"))
        self.norm_out = _norm(top, c.norm_eps, c.norm_groups)
        self.conv_out = nn.Conv(top, c.z_channels, (3, 3), padding=1, key=nn.subkey(key, "conv_out"))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        *keys, kmid = _keys(key, len(self.down) + 1)
        h = self.conv_in(x)  # (B, H, W, ch)
        for i, (level, k) in enumerate(zip(self.down, keys, strict=True)):
            with jax.named_scope(f"down_{i}"):
                h = level(h, key=k)  # halves H and W except at the last level
        h = self.mid(h, key=kmid)  # (B, h, w, ch * ch_mult[-1])
        return self.conv_out(jax.nn.swish(self.norm_out(h)))  # (B, h, w, z_channels)


class Decoder(nn.Module):
    """``(B, h, w, z_channels) -> (B, h*f, w*f, out_channels)``; ``up`` runs from ``up[-1]`` down to ``up[0]``."""

    conv_in: nn.Conv
    mid: Mid
    up: tuple[Level, ...]
    norm_out: nn.GroupNorm
    conv_out: nn.Conv

    def __init__(self, config: VQGANConfig, *, key: jax.Array):
        c = config
        top = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv(c.z_channels, top, (3, 3), padding=1, key=nn.subkey(key, "conv_in"))
        self.mid = Mid(top, config=c, key=nn.subkey(key, "mid"))
        levels, side, c_in = {}, c.latent_size, top
        for i in reversed(range(len(c.ch_mult))):
            c_out = c.ch * c.ch_mult[i]
            levels[i] = Level(c_in, c_out, c.num_res_blocks + 1, attention=side in c.attn_resolutions,
                              resample="up" if i else None, config=c, key=nn.subkey(key, f"up[{i}]"))
            c_in, side = c_out, side * 2 if i else side
        self.up = tuple(levels[i] for i in range(len(c.ch_mult)))
        self.norm_out = _norm(c_in, c.norm_eps, c.norm_groups)
        self.conv_out = nn.Conv(c_in, c.out_channels, (3, 3), padding=1, key=nn.subkey(key, "conv_out"))

    def __call__(self, z: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        kmid, *keys = _keys(key, len(self.up) + 1)
        h = self.mid(self.conv_in(z), key=kmid)  # (B, h, w, ch * ch_mult[-1])
        for i in reversed(range(len(self.up))):
            with jax.named_scope(f"up_{i}"):
                h = self.up[i](h, key=keys[i])  # doubles H and W except at level 0
        return self.conv_out(jax.nn.swish(self.norm_out(h)))  # (B, H, W, out_channels)


class VectorQuantizer(nn.Module):
    """Nearest-codebook-vector quantisation with taming's losses; ``embedding`` is ``(n_embed, embed_dim)``.

    ``z (B, h, w, D) -> (z_q (B, h, w, D), codes (B, h*w) int32, losses)``. ``z_q`` carries
    straight-through gradients (``z + stop_gradient(e[codes] - z)``): its gradient with
    respect to ``z`` is the identity. ``losses`` holds the two weighted terms whose sum is
    taming's quantisation loss: ``commitment = w_c * mean((sg(e) - z)**2)`` (trains the
    encoder) and ``codebook = w_b * mean((e - sg(z))**2)`` (trains the codebook), with
    ``(w_c, w_b) = (1, beta)`` in taming's default ``legacy`` form, else ``(beta, 1)``.
    """

    embedding: nn.Embedding
    beta: float = nn.static()
    legacy: bool = nn.static()

    def __init__(self, n_embed: int, embed_dim: int, *, beta: float, legacy: bool, key: jax.Array):
        self.beta, self.legacy = beta, legacy
        init = jax.nn.initializers.uniform(2.0 / n_embed)  # taming: U(-1/n, 1/n)
        self.embedding = nn.Embedding(n_embed, embed_dim, key=key, axes=("vocab", "embed"),
                                      weight_init=lambda k, s, d: init(k, s, d) - 1.0 / n_embed)

    def codes(self, z: jax.Array) -> jax.Array:
        """``(B, h, w, D) -> (B, h*w)`` int32: the index of each vector's nearest codebook entry."""
        e = self.embedding.weight  # (n_embed, D)
        flat = z.reshape(z.shape[0], -1, z.shape[-1])  # (B, h*w, D)
        d = (jnp.sum(flat ** 2, -1, keepdims=True) + jnp.sum(e ** 2, -1)
             - 2 * jnp.einsum("bnd,kd->bnk", flat, e))  # (B, h*w, n_embed) squared distances
        return jnp.argmin(d, axis=-1).astype(jnp.int32)

    def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        if z.ndim != 4 or z.shape[-1] != self.embedding.weight.shape[1]:
            raise nn.ShapeError(f"VQGAN.quantize expects z (B, h, w, {self.embedding.weight.shape[1]}) (embed_dim "
                                f"channels last, as encode returns), got shape {tuple(z.shape)}.")
        codes = self.codes(z)  # (B, h*w)
        e = self.embedding(codes).reshape(z.shape)  # (B, h, w, D)
        sg = jax.lax.stop_gradient
        commitment, codebook = jnp.mean((sg(e) - z) ** 2), jnp.mean((e - sg(z)) ** 2)
        w_commit, w_book = (1.0, self.beta) if self.legacy else (self.beta, 1.0)
        z_q = z + sg(e - z)  # straight-through
        return z_q, codes, {"commitment": w_commit * commitment, "codebook": w_book * codebook}


class VQGAN(nn.Module):
    """Encoder, ``quant_conv``, ``quantize``, ``post_quant_conv`` and decoder; all NHWC.

    * ``encode(images (B, H, W, in_channels)) -> z (B, h, w, embed_dim)``, before quantisation;
    * ``quantize(z) -> (z_q, codes (B, h*w) int32, losses)``: the ``VectorQuantizer`` module itself;
    * ``decode(z_q (B, h, w, embed_dim)) -> (B, H, W, out_channels)``;
    * ``decode_code(codes (B, h*w) or (B, h, w)) -> (B, H, W, out_channels)``;
    * ``__call__(images) -> (reconstruction, codes, losses)``.

    ``h = H / 2**(len(ch_mult) - 1)``; any ``H``, ``W`` divisible by that factor work.
    With ``dropout > 0`` a training call needs ``key=`` (``nn.eval_mode`` turns it off).
    """

    encoder: Encoder
    quant_conv: nn.Conv
    quantize: VectorQuantizer  # model.quantize(z) -> (z_q, codes, losses)
    post_quant_conv: nn.Conv
    decoder: Decoder
    config: VQGANConfig = nn.static()

    def __init__(self, config: VQGANConfig, *, key: jax.Array):
        c = self.config = config
        self.encoder = Encoder(c, key=nn.subkey(key, "encoder"))
        self.quant_conv = nn.Conv(c.z_channels, c.embed_dim, (1, 1), key=nn.subkey(key, "quant_conv"))
        self.quantize = VectorQuantizer(c.n_embed, c.embed_dim, beta=c.beta, legacy=c.legacy_loss,
                                         key=nn.subkey(key, "quantize"))
        self.post_quant_conv = nn.Conv(c.embed_dim, c.z_channels, (1, 1), key=nn.subkey(key, "post_quant_conv"))
        self.decoder = Decoder(c, key=nn.subkey(key, "decoder"))

    def _check_images(self, x: jax.Array) -> None:
        c, f = self.config, 2 ** (len(self.config.ch_mult) - 1)
        if (x.ndim != 4 or x.shape[-1] != c.in_channels or x.shape[1] % f or x.shape[2] % f
                or not jnp.issubdtype(x.dtype, jnp.floating)):
            raise nn.ShapeError(
                f"VQGAN.encode expects floating-point images (B, H, W, {c.in_channels}) channels-last with H and W "
                f"divisible by {f}, got {x.dtype}{list(x.shape)}. PyTorch-layout (B, C, H, W) batches need "
                f"x.transpose(0, 2, 3, 1); uint8 pixels need scaling (dalle-mini's checkpoint uses [0, 1]).")

    def encode(self, images: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``(B, H, W, in_channels) -> (B, h, w, embed_dim)``: the encoder and ``quant_conv``."""
        self._check_images(images)
        with jax.named_scope("encoder"):
            h = self.encoder(images, key=key)  # (B, h, w, z_channels)
        return self.quant_conv(h)  # (B, h, w, embed_dim)

    def decode(self, z_q: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``(B, h, w, embed_dim) -> (B, H, W, out_channels)``: ``post_quant_conv`` and the decoder."""
        nn.check_ndim(z_q, 4, "z_q (B, h, w, embed_dim)")
        nn.check_dim(z_q, -1, self.config.embed_dim, "embed_dim")
        with jax.named_scope("decoder"):
            return self.decoder(self.post_quant_conv(z_q), key=key)

    def decode_code(self, codes: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``codes (B, h*w)`` (a square grid, row-major) or ``(B, h, w)`` -> images ``(B, H, W, out_channels)``."""
        codes = jnp.asarray(codes)
        if not jnp.issubdtype(codes.dtype, jnp.integer) or codes.ndim not in (2, 3):
            raise nn.ShapeError(f"VQGAN.decode_code expects integer codes (B, h*w) or (B, h, w), got "
                                f"{codes.dtype}{list(codes.shape)}.")
        if codes.ndim == 2:
            side = math.isqrt(codes.shape[1])
            if side * side != codes.shape[1]:
                raise nn.ShapeError(f"VQGAN.decode_code: {codes.shape[1]} codes per image are not a square grid; "
                                    f"pass them as (B, h, w), e.g. codes.reshape(B, h, w).")
            codes = codes.reshape(codes.shape[0], side, side)
        z_q = self.quantize.embedding(codes)  # (B, h, w, embed_dim)
        return self.decode(z_q, key=key)

    def __call__(self, images: jax.Array, *, key: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        """``images (B, H, W, C) -> (reconstruction (B, H, W, out_channels), codes (B, h*w), losses)``."""
        k_enc, k_dec = _keys(key, 2)
        z_q, codes, losses = self.quantize(self.encode(images, key=k_enc))
        return self.decode(z_q, key=k_dec), codes, losses
