"""Text-to-image runs: images to VQGAN codes, a DalleBart run with its VQGAN, and the caption tokenizer.

* ``baobab data encode-images VQGAN_RUN`` is ``encode_images``: the digits of the VQGAN
  run's data, as its codes, in a prepared folder (``VQGAN_RUN/mnist_codes``) that
  ``data.CaptionedMnistData(codes=...)`` reads. The folder's metadata names the run.
* ``baobab generate RUN --prompt "..." --num-images 16 --out grid.png`` on a
  ``task=text_to_image`` run is ``generate_grid(load_run(RUN), ...)``: the DalleBart of
  RUN samples codes, and the VQGAN run its codes came from decodes them. Both runs are
  read read-only, newest checkpoint first.
* ``digit_accuracy`` is the measure of ``configs/dalle_mnist.py``: images generated from
  captions of each digit, classified by a trained MNIST classifier run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from baobab import data as bdata
from baobab import models, nn
from baobab.data import CaptionTokenizer
from baobab.data._captions import caption
from baobab.errors import ConfigError
from baobab.experiment import ExperimentConfig
from baobab.runs import load_run, restore_model

__all__ = ["encode_images", "TextToImage", "load_text_to_image", "generate_grid", "digit_accuracy"]

CODES_FOLDER = "mnist_codes"  # default output of encode_images, inside the VQGAN run


def encode_images(vqgan_run: str | Path, out: str | Path | None = None, *, batch_size: int = 500) -> Path:
    """Encode the train and test digits of a VQGAN run's MNIST data into a prepared folder of codes.

    Each row is ``{"image_codes": (h*w,) int32, "label": () int32}``; the digits are padded
    and scaled as the VQGAN's training data was. ``info`` records ``n_embed``,
    ``latent_size`` and the run's absolute path (``vqgan_run``).
    """
    config = load_run(vqgan_run)
    if config.model.kind != "vqgan":
        raise ConfigError(f"{vqgan_run} is a {config.model.kind!r} run, not a VQGAN run: give a run of "
                          f"configs/vqgan_mnist.py (or another model.kind=vqgan run)")
    if config.data.kind != "mnist":
        raise NotImplementedError(f"encode-images reads the VQGAN run's data, and only data.kind = 'mnist' is "
                                  f"supported so far (this run has {config.data.kind!r})")
    out = Path(out) if out is not None else Path(config.trainer.workdir) / CODES_FOLDER
    model, _ = restore_model(config)
    model = nn.eval_mode(model)
    side = config.model.resolution
    encode = jax.jit(lambda m, x: m.quantize.codes(m.encode(x)))
    pad, norm = bdata.CenterPad((side, side)), bdata.Normalize()
    info = {"n_embed": config.model.n_embed, "latent_size": config.model.latent_size,
            "vqgan_run": str(Path(config.trainer.workdir).resolve()), "source": "embedded MNIST"}
    for split in ("train", "test"):
        source = bdata.mnist(split)
        images = np.stack([norm(pad(source[i]))["image"] for i in range(len(source))])  # (N, side, side, 1)
        codes = np.concatenate([np.asarray(encode(model, images[i:i + batch_size]))
                                for i in range(0, len(images), batch_size)])
        rows = ({"image_codes": codes[i].astype(np.int32), "label": np.int32(source[i]["label"])}
                for i in range(len(source)))
        bdata.write_split(out, split, rows, num_examples=len(source), info=info)
    return out


@dataclass(frozen=True)
class TextToImage:
    """The restored pieces of a text-to-image run; ``__call__`` samples images for prompts."""

    dalle: Any
    vqgan: Any
    tokenizer: CaptionTokenizer
    text_len: int

    def __call__(self, prompts: Sequence[str], *, seed: int = 0, num_images: int = 1, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 condition_scale: float = 1.0) -> models.GeneratedImages:
        """``num_images`` images per prompt: codes ``(P * num_images, image_len)``, images ``(B, H, W, C)``."""
        ids, mask = self.tokenizer.encode(list(prompts), length=self.text_len)
        empty_ids, empty_mask = self.tokenizer.empty(length=self.text_len)
        return models.generate_images(self.dalle, self.vqgan, ids, mask, key=jax.random.key(seed),
                                      num_images=num_images, temperature=temperature, top_k=top_k, top_p=top_p,
                                      condition_scale=condition_scale, empty_ids=empty_ids, empty_mask=empty_mask)


def load_text_to_image(config: ExperimentConfig) -> TextToImage:
    """The newest DalleBart of a ``task=text_to_image`` run, with its data's VQGAN run and tokenizer."""
    if config.task != "text_to_image":
        raise ConfigError(f"{config.trainer.workdir} is a task={config.task} run; image generation needs a "
                          f"task=text_to_image run (e.g. configs/dalle_mnist.py)")
    dalle, _ = restore_model(config)
    run = bdata.read_metadata(config.data.codes)["info"].get("vqgan_run")
    if not run or not Path(run).is_dir():
        raise ConfigError(f"data.codes = {config.data.codes!r} names the VQGAN run {run!r}, which is not there: "
                          f"generation decodes with it. Put the run back, or re-encode with `baobab data "
                          f"encode-images VQGAN_RUN --out {config.data.codes}`")
    vqgan, _ = restore_model(load_run(run))
    dalle, vqgan = nn.eval_mode(dalle), nn.eval_mode(vqgan)
    models.check_pair(dalle, vqgan)
    return TextToImage(dalle, vqgan, CaptionTokenizer.from_templates(config.data.phrasings), config.data.text_len)


def generate_grid(config: ExperimentConfig, prompt: str, out: str | Path, *, num_images: int = 16, seed: int = 0,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  condition_scale: float = 1.0, columns: int | None = None) -> Path:
    """Sample ``num_images`` images for ``prompt`` and write them as one PNG grid at ``out``."""
    from PIL import Image

    if not prompt.strip():
        raise ConfigError("--prompt is empty; describe the image, e.g. --prompt \"a handwritten seven\"")
    if num_images < 1:
        raise ConfigError(f"--num-images {num_images}: give at least 1")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out} must name a .png file")
    result = load_text_to_image(config)([prompt], seed=seed, num_images=num_images, temperature=temperature,
                                        top_k=top_k, top_p=top_p, condition_scale=condition_scale)
    grid = models.image_grid(result.images, columns=columns, pad=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(out)
    return out


def _center_crop(images: jax.Array, side: int) -> jax.Array:
    top = (images.shape[1] - side) // 2
    left = (images.shape[2] - side) // 2
    return images[:, top:top + side, left:left + side]


def digit_accuracy(config: ExperimentConfig, classifier: ExperimentConfig, phrasings: Sequence[str], *,
                   num_images: int = 16, condition_scale: float = 1.0, seed: int = 0, temperature: float = 1.0,
                   top_k: int | None = None) -> dict[str, Any]:
    """The fraction of generated images that ``classifier`` labels as the digit their caption names.

    For each digit and each template in ``phrasings``, ``num_images`` images are sampled
    from the caption (``seed`` + digit); the classifier run (e.g. ``configs/mnist_cnn.py``,
    28x28 inputs) sees their centre crop. Returns ``{"accuracy", "per_digit"}`` (fractions).
    """
    t2i = load_text_to_image(config)
    net, _ = restore_model(classifier)
    net = nn.eval_mode(net)  # dropout off, BatchNorm on its running statistics
    if classifier.data.kind != "mnist":
        raise ConfigError(f"the classifier run {classifier.trainer.workdir} has data.kind = {classifier.data.kind!r}; "
                          f"digit_accuracy needs an MNIST classifier run (configs/mnist_cnn.py)")
    side = classifier.data.pad_to or 28  # the classifier's input size
    classify = jax.jit(lambda m, x: jnp.argmax(m(x), axis=-1))
    correct = np.zeros(10)
    for digit in range(10):
        prompts = [caption(t, digit) for t in phrasings]
        images = t2i(prompts, seed=seed + digit, num_images=num_images, temperature=temperature, top_k=top_k,
                     condition_scale=condition_scale).images
        predicted = np.asarray(classify(net, _center_crop(images, side)))
        correct[digit] = float(np.mean(predicted == digit))
    return {"accuracy": float(correct.mean()), "per_digit": correct.tolist()}
