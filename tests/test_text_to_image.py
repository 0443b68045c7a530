"""Text-to-image sampling (``models.generate_images``) against step-by-step loops written out here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import models
from baobab.errors import ConfigError
from baobab.models import DalleBart, DalleBartConfig, VQGAN, VQGANConfig

IMAGE_VOCAB = 16
DALLE = DalleBartConfig(text_vocab_size=20, image_vocab_size=IMAGE_VOCAB, max_text_len=6, image_len=16, d_model=16,
                        encoder_layers=1, decoder_layers=2, encoder_heads=2, decoder_heads=2, encoder_ffn=24,
                        decoder_ffn=24, decoder_start_token_id=IMAGE_VOCAB)
VQ = VQGANConfig(resolution=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8,
                 embed_dim=8, n_embed=IMAGE_VOCAB, in_channels=1, out_channels=1)
IDS = jnp.array([[0, 5, 7, 2, 1, 1], [0, 9, 2, 1, 1, 1]])
MASK = IDS != 1
EMPTY = jnp.array([[0, 2, 1, 1, 1, 1]])
EMPTY_MASK = EMPTY != 1


@pytest.fixture(scope="module")
def pair():
    return DalleBart(DALLE, key=jax.random.key(0)), VQGAN(VQ, key=jax.random.key(1))


def written_out(dalle, ids, mask, *, key, steps, scale=None, empty=None, empty_mask=None, temperature=1.0, top_k=None):
    """One token at a time, eagerly, cond and uncond with separate caches: what sample_image_codes must equal."""
    cond = dalle.init_cache(dalle.encode(ids, mask), mask)
    if scale is not None:
        e_ids = jnp.broadcast_to(empty, ids.shape)
        e_mask = jnp.broadcast_to(empty_mask, mask.shape)
        uncond = dalle.init_cache(dalle.encode(e_ids, e_mask), e_mask)
    token = jnp.full((ids.shape[0],), DALLE.decoder_start_token_id, jnp.int32)
    out = []
    for i in range(steps):
        logits, cond = dalle.decode(token[:, None], cond)
        logits = logits[:, -1]
        if scale is not None:
            u, uncond = dalle.decode(token[:, None], uncond)
            logits = u[:, -1] + scale * (logits - u[:, -1])
        logits = logits.at[:, IMAGE_VOCAB:].set(-jnp.inf)
        token = models.sample_logits(logits, jax.random.fold_in(key, i), temperature=temperature, top_k=top_k)
        out.append(token)
    return np.stack(out, axis=1)


def test_unguided_sampling_equals_the_written_out_loop(pair):
    dalle, _ = pair
    key = jax.random.key(3)
    got = models.sample_image_codes(dalle, IDS, MASK, key=key, top_k=8)
    want = written_out(dalle, IDS, MASK, key=key, steps=DALLE.image_len, top_k=8)
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_super_conditioning_combines_cond_and_uncond_logits_each_step(pair, scale):
    dalle, _ = pair
    key = jax.random.key(4)
    for temperature in (0.0, 1.0):  # greedy checks the logits' argmax at each step, sampling their distribution
        got = models.sample_image_codes(dalle, IDS, MASK, key=key, temperature=temperature, condition_scale=scale,
                                        empty_ids=EMPTY, empty_mask=EMPTY_MASK)
        want = written_out(dalle, IDS, MASK, key=key, steps=DALLE.image_len, scale=scale, empty=EMPTY,
                           empty_mask=EMPTY_MASK, temperature=temperature)
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"temperature {temperature}")


def test_guided_sampling_at_scale_one_equals_unguided_sampling(pair):
    dalle, _ = pair
    key = jax.random.key(5)
    guided = models.sample_image_codes(dalle, IDS, MASK, key=key, num_images=4, condition_scale=1.0,
                                       empty_ids=EMPTY, empty_mask=EMPTY_MASK, guide=True)
    plain = models.sample_image_codes(dalle, IDS, MASK, key=key, num_images=4)
    np.testing.assert_array_equal(np.asarray(guided), np.asarray(plain))
    stronger = models.sample_image_codes(dalle, IDS, MASK, key=key, num_images=4, condition_scale=4.0,
                                         empty_ids=EMPTY, empty_mask=EMPTY_MASK)
    assert (np.asarray(stronger) != np.asarray(plain)).any()  # the guidance does change the samples


def test_a_fixed_seed_gives_the_same_images_and_only_codes_are_sampled(pair):
    dalle, vqgan = pair
    kwargs = dict(num_images=8, condition_scale=2.0, empty_ids=EMPTY, empty_mask=EMPTY_MASK)
    a = models.generate_images(dalle, vqgan, IDS, MASK, key=jax.random.key(6), **kwargs)
    b = models.generate_images(dalle, vqgan, IDS, MASK, key=jax.random.key(6), **kwargs)
    c = models.generate_images(dalle, vqgan, IDS, MASK, key=jax.random.key(7), **kwargs)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    assert (np.asarray(a.codes) != np.asarray(c.codes)).any()
    assert a.codes.shape == (16, DALLE.image_len) and a.images.shape == (16, 8, 8, 1)
    # 256 sampled tokens: the start token (1 in 17 under random weights) would appear if it were not masked
    assert int(a.codes.max()) < IMAGE_VOCAB and int(a.codes.min()) >= 0
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    np.testing.assert_array_equal(np.asarray(a.images),
                                  np.clip(np.asarray(jax.jit(lambda v, c: v.decode_code(c))(vqgan, a.codes)), 0, 1))
    np.testing.assert_array_equal(np.asarray(a.codes[:8]), np.asarray(a.codes[:8]))  # prompt 0's rows come first
    single = models.generate_images(dalle, vqgan, IDS[:1], MASK[:1], key=jax.random.key(6), **kwargs)
    assert single.codes.shape == (8, DALLE.image_len)


def test_mismatched_models_and_missing_empty_prompt_are_named_errors(pair):
    dalle, vqgan = pair
    other = VQGAN(VQ.model_copy(update={"n_embed": 32, "resolution": 16}), key=jax.random.key(1))
    with pytest.raises(ConfigError, match=r"image_vocab_size=16 .* n_embed=32 .* image_len=16 .* 8x8 = 64"):
        models.generate_images(dalle, other, IDS, MASK, key=jax.random.key(0))
    with pytest.raises(ValueError, match="pass empty_ids= and empty_mask="):
        models.generate_images(dalle, vqgan, IDS, MASK, key=jax.random.key(0), condition_scale=3.0)


def test_image_grid_tiles_rows_first_with_padding():
    images = np.stack([np.full((2, 3, 1), v) for v in (0.0, 0.5, 1.0)])  # (3, 2, 3, 1)
    grid = models.image_grid(images, columns=2, pad=1)
    assert grid.shape == (5, 7, 1) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 0 and grid[0, 4, 0] == 128 and grid[3, 0, 0] == 255
    assert (grid[2] == 0).all() and (grid[:, 3] == 0).all()  # the padding
    assert (grid[3:, 4:] == 0).all()  # the empty fourth tile
