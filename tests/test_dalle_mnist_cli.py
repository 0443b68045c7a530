"""The text-to-image path end to end through the CLI: VQGAN run -> DalleBart run on its codes -> PNG grids.

By default the shipped configs run shortened (a few dozen steps): what is checked is the
path, that every piece stands on the next (the data encodes digits with the VQGAN run's weights,
generation reads the DalleBart run and the VQGAN run it names), and that a seed fixes
the images. ``BAOBAB_FULL_CONFIGS=1 pytest tests/test_dalle_mnist_cli.py`` runs them as
shipped (about 25 minutes on 2 cores) and also requires the figure of
``configs/dalle_mnist.py``'s docstring: at ``condition_scale=3`` at least 90 % of the
digits drawn from held-out phrasings are classified as the digit named, by a
``configs/mnist_cnn.py`` run (``scripts/dalle_mnist_accuracy.py`` measures all scales).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from baobab import train
from baobab.data import CaptionedMnistData
from baobab.images_from_text import digit_accuracy
from baobab.runs import load_run

REPO = Path(__file__).resolve().parents[1]


def baobab(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-m", "baobab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=900)


FULL = os.environ.get("BAOBAB_FULL_CONFIGS") == "1"
VQGAN_STEPS = [] if FULL else ["trainer.steps=20", "trainer.eval_every=0", "checkpoint.every=20"]
DALLE_STEPS = [] if FULL else ["trainer.steps=30", "trainer.eval_every=0", "checkpoint.every=30"]


@pytest.mark.slow
def test_vqgan_then_dalle_bart_then_a_png_grid_fixed_by_its_seed(tmp_path):
    vqgan, dalle = tmp_path / "vqgan", tmp_path / "dalle"
    done = baobab("train", str(REPO / "configs" / "vqgan_mnist.py"), f"trainer.workdir={vqgan}", *VQGAN_STEPS,
                  "logging.progress=false")
    assert done.returncode == 0, done.stderr[-3000:]
    done = baobab("data", "encode-images", str(vqgan))
    assert done.returncode == 0, done.stderr[-3000:]
    codes = vqgan / "mnist_codes"
    assert f"wrote {codes}: splits {{'test': 1000, 'train': 4000}}" in done.stdout
    done = baobab("train", str(REPO / "configs" / "dalle_mnist.py"), f"trainer.workdir={dalle}", f"data.codes={codes}",
                  *DALLE_STEPS, "logging.progress=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4000 images x 10 phrasings) for training" in done.stderr and "1000 images x 3 phrasings) held out" in done.stderr
    first = next(r for r in train.read_metrics(dalle) if "train/loss" in r)
    assert first["train/loss"] < 1.2 * np.log(128), first  # about log(codebook size) at the start: the targets are codes

    grids = {}
    for name, seed, prompt in [("a", 1, "a handwritten seven"), ("b", 1, "a handwritten seven"),
                               ("c", 2, "a handwritten seven"), ("d", 1, "the digit 2")]:
        out = tmp_path / f"{name}.png"
        done = baobab("generate", str(dalle), "--prompt", prompt, "--num-images", "4", "--out", str(out),
                      "--seed", str(seed), "--condition-scale", "3", "--top-k", "32")
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"wrote {out} (4 images for {prompt!r})" in done.stdout
        grids[name] = np.asarray(Image.open(out))
    assert grids["a"].shape == (66, 66)  # 2 x 2 tiles of 32 x 32 (one channel) with 2 pixels between them
    np.testing.assert_array_equal(grids["a"], grids["b"])  # the same seed: the same images
    assert (grids["a"] != grids["c"]).any() and (grids["a"] != grids["d"]).any()

    done = baobab("generate", str(dalle), "--prompt", "a seven", "--out", str(tmp_path / "grid.jpg"))
    assert done.returncode == 2 and "must name a .png file" in done.stderr, done.stderr[-2000:]
    done = baobab("generate", str(vqgan), "--prompt", "a seven")
    assert done.returncode == 2 and "task=image_autoencoder" in done.stderr, done.stderr[-2000:]
    if FULL:  # the figure of configs/dalle_mnist.py's docstring, on the shipped configs
        classifier = tmp_path / "cnn"
        done = baobab("train", str(REPO / "configs" / "mnist_cnn.py"), f"trainer.workdir={classifier}",
                      "logging.progress=false")
        assert done.returncode == 0, done.stderr[-3000:]
        config = load_run(dalle)
        result = digit_accuracy(config, load_run(classifier), config.data.held_out_phrasings, condition_scale=3.0)
        assert result["accuracy"] >= 0.9, result


def test_the_captioned_data_pairs_each_digit_with_each_phrasing_and_holds_some_out():
    from baobab.data._captions import CaptionedCodes, CaptionTokenizer, caption

    config = CaptionedMnistData()
    assert not set(config.phrasings) & set(config.held_out_phrasings)
    tok = CaptionTokenizer.from_templates(config.phrasings)
    codes, labels = np.arange(12, dtype=np.int32).reshape(3, 4), np.array([7, 2, 7], np.int32)
    rows = CaptionedCodes(codes, labels, config.phrasings, tok, text_len=config.text_len)
    assert len(rows) == 3 * len(config.phrasings)
    row = rows[len(config.phrasings) + 1]  # image 1 (a two), the second phrasing
    np.testing.assert_array_equal(row["image_codes"], codes[1])
    want, mask = tok.encode([caption(config.phrasings[1], 2)], length=config.text_len)
    np.testing.assert_array_equal(row["text_ids"], want[0])
    assert int(row["label"]) == 2 and row["text_mask"].dtype == bool and mask[0].sum() == row["text_mask"].sum()
    held = tok.encode(["number seven, written by hand"], length=config.text_len)[0][0]
    assert 3 not in held[:6] and tok.vocab[held[2]] == "seven"  # every word of this held-out phrasing is known
    assert tok.encode(["the numeral 7"], length=8)[0][0][2] == 3  # an unknown word is <unk>
    with pytest.raises(Exception, match="more than data.text_len = 4"):
        tok.encode(["a handwritten seven today"], length=4)
    with pytest.raises(Exception, match="names no digit"):
        caption("a handwritten digit", 3)
