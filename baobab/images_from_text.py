"""Text-to-image runs: a DalleBart run, the VQGAN run its data names, and the caption tokenizer.

``baobab generate RUN --prompt "..." --num-images 16 --out grid.png`` on a
``task=text_to_image`` run is ``generate_grid(load_run(RUN), ...)``. The DalleBart run's
``data.vqgan_run`` names the VQGAN that made its image tokens; both are read
read-only, newest checkpoint first. ``digit_accuracy`` is the measure of
``configs/dalle_mnist.py``: images generated from captions of each digit, classified
by a trained MNIST classifier run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from baobab import models, nn
from baobab.data import CaptionTokenizer
from baobab.data._captions import caption
from baobab.errors import ConfigError
from baobab.experiment import ExperimentConfig
from baobab.runs import load_run, restore_model

__all__ = ["TextToImage", "load_text_to_image", "generate_grid", "digit_accuracy"]


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
    vqgan_config = load_run(config.data.vqgan_run)
    vqgan, _ = restore_model(vqgan_config)
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
    side = classifier.data.pad_to or 28 if classifier.data.kind == "mnist" else None
    if side is None:
        raise ConfigError(f"the classifier run {classifier.trainer.workdir} has data.kind = {classifier.data.kind!r}; "
                          f"digit_accuracy needs an MNIST classifier run (configs/mnist_cnn.py)")
    classify = jax.jit(lambda m, x: jnp.argmax(m(x), axis=-1))
    correct = np.zeros(10)
    for digit in range(10):
        prompts = [caption(t, digit) for t in phrasings]
        images = t2i(prompts, seed=seed + digit, num_images=num_images, temperature=temperature, top_k=top_k,
                     condition_scale=condition_scale).images
        predicted = np.asarray(classify(net, _center_crop(images, side)))
        correct[digit] = float(np.mean(predicted == digit))
    return {"accuracy": float(correct.mean()), "per_digit": correct.tolist()}
