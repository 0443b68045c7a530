"""The image_autoencoder and text_to_image tasks against losses written out by hand, and their config checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from baobab import data as bdata
from baobab.errors import ConfigError
from baobab.experiment import ExperimentConfig, check_fits
from baobab.models import DalleBart, DalleBartConfig, VQGAN, VQGANConfig
from baobab.tasks import TASKS

VQ = VQGANConfig(resolution=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8,
                 embed_dim=8, n_embed=16, in_channels=1, out_channels=1)
DALLE = DalleBartConfig(text_vocab_size=20, image_vocab_size=16, max_text_len=6, image_len=16, d_model=16,
                        encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2, encoder_ffn=24,
                        decoder_ffn=24, decoder_start_token_id=16)


def test_the_autoencoder_loss_is_pixel_mse_plus_the_quantiser_terms():
    model = VQGAN(VQ, key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
    loss, metrics = TASKS["image_autoencoder"].loss(model, {"image": images}, None)
    reconstruction, codes, terms = model(images)
    mse = float(np.mean((np.asarray(reconstruction) - np.asarray(images)) ** 2))
    assert float(loss) == pytest.approx(mse + float(terms["codebook"]) + float(terms["commitment"]), rel=1e-5)
    assert float(metrics["mse"]) == pytest.approx(mse, rel=1e-5)
    assert float(metrics["codes_used"]) == len(np.unique(np.asarray(codes))) / VQ.n_embed
    per_example = TASKS["image_autoencoder"].eval(model, {"image": images})
    want = np.mean((np.asarray(reconstruction) - np.asarray(images)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(per_example["mse"]), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(per_example["psnr"]), -10 * np.log10(want), rtol=1e-5)


def test_the_text_to_image_loss_is_cross_entropy_on_the_codes_shifted_behind_the_start_token():
    model = DalleBart(DALLE, key=jax.random.key(0))
    ids = jnp.array([[0, 5, 7, 2, 1, 1], [0, 9, 2, 1, 1, 1]])
    codes = jax.random.randint(jax.random.key(2), (2, 16), 0, 16)
    batch = {"text_ids": ids, "text_mask": ids != 1, "image_codes": codes}
    loss, metrics = TASKS["text_to_image"].loss(model, batch, None)
    inputs = jnp.concatenate([jnp.full((2, 1), 16), codes[:, :-1]], axis=1)
    logits = model(ids, ids != 1, inputs)
    want = optax.softmax_cross_entropy_with_integer_labels(logits, codes).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    assert float(metrics["accuracy"]) == pytest.approx(float((jnp.argmax(logits, -1) == codes).mean()))


def test_models_that_do_not_fit_the_data_are_refused_by_key():
    info = bdata.DataInfo("text_to_image", vocab_size=40, seq_len=12, image_vocab_size=128, image_len=64)
    config = ExperimentConfig(task="text_to_image", model=DALLE, data=bdata.CaptionedMnistData())
    with pytest.raises(ConfigError) as err:
        check_fits(config, info)
    for fix in ("model.image_vocab_size=128", "model.image_len=64", "model.text_vocab_size=40",
                "model.max_text_len=12"):
        assert fix in str(err.value)
    vq = ExperimentConfig(task="image_autoencoder", model=VQ.model_copy(update={"in_channels": 3}),
                          data=bdata.MnistData(pad_to=30))
    with pytest.raises(ConfigError, match=r"model.in_channels=1 model.out_channels=1.*downsampling factor 2"):
        check_fits(vq, bdata.DataInfo("classification", num_classes=10, image_shape=(30, 31, 1)))
    with pytest.raises(ConfigError, match="feeds classification, not task=text_to_image"):
        check_fits(ExperimentConfig(task="text_to_image", model=DALLE, data=bdata.MnistData()),
                   bdata.DataInfo("classification", num_classes=10, image_shape=(28, 28, 1)))


def test_mnist_pads_to_the_vqgan_resolution_centred():
    padded = bdata.CenterPad((32, 32))({"image": np.full((28, 28, 1), 7, np.uint8)})["image"]
    assert padded.shape == (32, 32, 1) and padded[:2].max() == 0 and padded[-2:].max() == 0
    assert (padded[2:30, 2:30] == 7).all()
    assert bdata.data_info(bdata.MnistData(pad_to=32)).image_shape == (32, 32, 1)
    with pytest.raises(bdata.DataError, match="larger than"):
        bdata.CenterPad((20, 20))({"image": padded})
