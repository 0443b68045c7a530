"""Text to image, DALL·E Mini's way: a DalleBart samples VQGAN codes, the VQGAN decodes them.

``generate_images(dalle, vqgan, text_ids, text_mask, key=...)`` is one jitted function:

1. the prompts (and, for guidance, the empty prompt) are encoded **once**, and each
   decoder layer's cross-attention keys and values are computed once
   (``dalle.init_cache``);
2. ``lax.scan`` runs ``image_len`` decoder steps with the self-attention KV cache,
   starting from ``start_token`` (``config.decoder_start_token_id``; min-dalle uses 16383);
3. each step's logits are **super-conditioned** (classifier-free guidance):
   ``uncond + condition_scale * (cond - uncond)``, where ``uncond`` are the logits of
   the same image given the empty prompt; ``condition_scale=1`` skips the empty prompt
   (plain conditional sampling, half the work);
4. tokens past the codebook (the start token, padding rows) are never sampled; then
   temperature, top-k and top-p as in ``models.sample_logits``, with the key of step
   ``i`` = ``fold_in(key, i)``, so a fixed key gives the same images;
5. ``vqgan.decode_code`` turns the ``(B, image_len)`` codes into images, clipped to
   ``[0, 1]``.

Both models follow the encoder-decoder contract of ``models.dalle_bart``:
``encode(ids, mask)``, ``init_cache(states, mask)`` and ``decode(ids, cache) -> (logits,
cache)``. ``image_grid`` tiles images into one ``uint8`` picture for a PNG.

>>> import jax, jax.numpy as jnp
>>> from baobab.models import DalleBart, DalleBartConfig, VQGAN, VQGANConfig, generate_images
>>> dalle = DalleBart(DalleBartConfig(text_vocab_size=20, image_vocab_size=16, max_text_len=6, image_len=16,
...                   d_model=16, encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2,
...                   encoder_ffn=24, decoder_ffn=24, decoder_start_token_id=16), key=jax.random.key(0))
>>> vqgan = VQGAN(VQGANConfig(resolution=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
...               z_channels=8, embed_dim=8, n_embed=16, in_channels=1, out_channels=1), key=jax.random.key(1))
>>> ids, mask = jnp.array([[0, 5, 7, 2, 1, 1]]), jnp.array([[1, 1, 1, 1, 0, 0]], bool)
>>> empty, empty_mask = jnp.array([[0, 2, 1, 1, 1, 1]]), jnp.array([[1, 1, 0, 0, 0, 0]], bool)
>>> out = generate_images(dalle, vqgan, ids, mask, key=jax.random.key(2), num_images=3, top_k=8,
...                       condition_scale=3.0, empty_ids=empty, empty_mask=empty_mask)
>>> out.codes.shape, out.images.shape  # (prompts * num_images, image_len), (B, H, W, C)
((3, 16), (3, 8, 8, 1))
>>> image_grid(out.images, columns=3).shape
(8, 24, 1)
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from baobab.errors import ConfigError

from .generate import sample_logits

__all__ = ["generate_images", "sample_image_codes", "GeneratedImages", "image_grid", "check_pair"]


class GeneratedImages(NamedTuple):
    """``codes`` (B, image_len) int32 VQGAN codes; ``images`` (B, H, W, C) float32 in [0, 1]."""

    codes: jax.Array
    images: jax.Array


def check_pair(dalle: Any, vqgan: Any) -> None:
    """Refuse a DalleBart whose image tokens are not this VQGAN's codes, naming both keys."""
    d, v = dalle.config, vqgan.config
    problems = []
    if d.image_vocab_size != v.n_embed:
        problems.append(f"the DalleBart's image_vocab_size={d.image_vocab_size} but the VQGAN's codebook has "
                        f"n_embed={v.n_embed} codes")
    side = v.latent_size
    if d.image_len != side * side:
        problems.append(f"the DalleBart makes image_len={d.image_len} tokens but the VQGAN's latent grid is "
                        f"{side}x{side} = {side * side} (resolution {v.resolution}, "
                        f"{len(v.ch_mult) - 1} downsamplings)")
    if problems:
        raise ConfigError("; ".join(problems) + ": train the DalleBart on codes of this VQGAN (same n_embed and "
                          "latent grid).")


def _guided(logits: jax.Array, condition_scale: float) -> jax.Array:
    """(2B, V) logits, [cond; uncond] -> (B, V) ``uncond + scale * (cond - uncond)``."""
    cond, uncond = jnp.split(logits.astype(jnp.float32), 2, axis=0)
    return uncond + condition_scale * (cond - uncond)


@functools.partial(jax.jit, static_argnames=("num_images", "temperature", "top_k", "top_p", "condition_scale",
                                             "start_token", "guide"))
def sample_image_codes(dalle: Any, text_ids: jax.Array, text_mask: jax.Array, *, key: jax.Array,
                       num_images: int = 1, temperature: float = 1.0, top_k: int | None = None,
                       top_p: float | None = None, condition_scale: float = 1.0,
                       empty_ids: jax.Array | None = None, empty_mask: jax.Array | None = None,
                       start_token: int | None = None, guide: bool = False) -> jax.Array:
    """``(P, S)`` prompts -> ``(P * num_images, image_len)`` int32 codes (rows of a prompt together).

    ``temperature=0`` is greedy. ``condition_scale != 1`` (or ``guide=True``, which runs
    the guided computation even at scale 1) needs ``empty_ids`` / ``empty_mask``
    ``(1, S)``: the tokenised empty prompt.
    """
    config = dalle.config
    guided = guide or condition_scale != 1.0
    if guided and (empty_ids is None or empty_mask is None):
        raise ConfigError(f"condition_scale={condition_scale} guides the sampling with the empty prompt: pass "
                         f"empty_ids= and empty_mask= (the tokenised empty prompt, shape (1, text_len)), or "
                         f"condition_scale=1.0 for unguided sampling.")
    ids = jnp.repeat(jnp.asarray(text_ids), num_images, axis=0)  # (B, S)
    mask = jnp.repeat(jnp.asarray(text_mask, bool), num_images, axis=0)
    batch = ids.shape[0]
    if guided:
        ids = jnp.concatenate([ids, jnp.broadcast_to(empty_ids, ids.shape)])  # (2B, S): [cond; uncond]
        mask = jnp.concatenate([mask, jnp.broadcast_to(jnp.asarray(empty_mask, bool), mask.shape)])
    cache = dalle.init_cache(dalle.encode(ids, mask), mask)  # the prompts are encoded once
    start = config.decoder_start_token_id if start_token is None else start_token
    valid = jnp.arange(config.image_vocab_size + 1) < config.image_vocab_size  # codes only, never the start token

    def step(carry, i):
        token, cache = carry  # (B,) the previous token
        feed = jnp.concatenate([token, token]) if guided else token
        logits, cache = dalle.decode(feed[:, None], cache)  # (B or 2B, 1, V + 1)
        logits = logits[:, -1]
        logits = _guided(logits, condition_scale) if guided else logits.astype(jnp.float32)
        logits = jnp.where(valid, logits, -jnp.inf)
        token = sample_logits(logits, jax.random.fold_in(key, i), temperature=temperature, top_k=top_k, top_p=top_p)
        return (token, cache), token

    first = jnp.full((batch,), start, jnp.int32)
    _, codes = jax.lax.scan(step, (first, cache), jnp.arange(config.image_len))  # (image_len, B)
    return codes.T


def generate_images(dalle: Any, vqgan: Any, text_ids: jax.Array, text_mask: jax.Array, *, key: jax.Array,
                    num_images: int = 1, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, condition_scale: float = 1.0,
                    empty_ids: jax.Array | None = None, empty_mask: jax.Array | None = None,
                    start_token: int | None = None) -> GeneratedImages:
    """Sample ``num_images`` images per prompt: codes from ``dalle``, pixels from ``vqgan``.

    ``text_ids`` / ``text_mask`` are ``(P, S)`` (mask ``False`` on padding); see the module
    docstring for the sampling steps and ``sample_image_codes`` for the arguments.
    """
    check_pair(dalle, vqgan)
    text_ids, text_mask = jnp.asarray(text_ids), jnp.asarray(text_mask)
    if text_ids.ndim != 2 or text_ids.shape != text_mask.shape:
        raise ConfigError(f"text_ids and text_mask must both be (prompts, text_len); got {text_ids.shape} and "
                          f"{text_mask.shape}.")
    if num_images < 1:
        raise ConfigError(f"num_images must be at least 1, got {num_images}.")
    codes = dalle.config.image_vocab_size
    if top_k is not None and not 1 <= top_k <= codes:
        raise ConfigError(f"top_k={top_k}: sample from between 1 and {codes} codes (the VQGAN's codebook), or "
                          f"top_k=None for all of them.")
    guided = condition_scale != 1.0  # at scale 1 the empty prompt changes nothing: skip its half of the batch
    codes = sample_image_codes(dalle, text_ids, text_mask, key=key, num_images=num_images,
                               temperature=float(temperature), top_k=top_k, top_p=top_p,
                               condition_scale=float(condition_scale), empty_ids=empty_ids if guided else None,
                               empty_mask=empty_mask if guided else None, start_token=start_token)
    images = jax.jit(lambda v, c: jnp.clip(v.decode_code(c), 0.0, 1.0))(vqgan, codes)
    return GeneratedImages(codes, images)


def image_grid(images: Any, *, columns: int | None = None, pad: int = 0) -> np.ndarray:
    """``(N, H, W, C)`` images in [0, 1] -> one ``(rows * H, columns * W, C)`` uint8 picture.

    ``columns`` defaults to the smallest square that holds them; ``pad`` pixels of
    black separate the tiles.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"image_grid takes (N, H, W, C) images; got shape {images.shape}.")
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (h + pad) - pad, columns * (w + pad) - pad, c), np.uint8)
    pixels = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        grid[r * (h + pad):r * (h + pad) + h, k * (w + pad):k * (w + pad) + w] = pixels[i]
    return grid
