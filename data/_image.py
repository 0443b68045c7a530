"""Image transforms: decode, resize, random crop, flip, normalise.

Each is a small frozen dataclass acting on one feature (``key``, default ``"image"``)
of an example dict and returning a new dict; images are ``(H, W, C)`` arrays.
Deterministic ones are ``grain.transforms.Map`` (call ``t(example)``); random ones
are ``grain.transforms.RandomMap`` (call ``t(example, rng)``), so inside a grain
dataset they draw from grain's per-element seeded RNG and are reproducible.

>>> import numpy as np
>>> from baobab import data
>>> ex = {"image": np.full((4, 4, 1), 255, np.uint8)}
>>> ex = data.RandomCrop((2, 2))(ex, np.random.default_rng(0))
>>> data.Normalize(mean=0.5, std=0.5)(ex)["image"].tolist()
[[[1.0], [1.0]], [[1.0], [1.0]]]
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Sequence

import grain
import numpy as np

from ._errors import DataError
from ._records import Example

__all__ = ["decode_image", "DecodeImage", "Resize", "CenterPad", "RandomCrop", "RandomFlip", "Normalize"]


def decode_image(encoded: bytes, *, mode: str | None = None, where: str = "image") -> np.ndarray:
    """PNG/JPEG/... bytes -> ``(H, W, C)`` uint8 array (Pillow). ``mode``: "L", "RGB", ...

    A failure raises ``DataError`` naming ``where`` (a file path or record).
    """
    from PIL import Image, UnidentifiedImageError  # lazy: only image pipelines need Pillow

    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image = image.convert(mode) if mode is not None and image.mode != mode else image
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        head = bytes(encoded[:8])
        raise DataError(f"{where}: cannot decode as an image ({len(encoded)} bytes starting {head!r}): "
                        f"{err}. The file is corrupt or not an image; remove or re-encode it.") from err
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _image(example: Example, key: str, name: str) -> np.ndarray:
    if key not in example:
        raise DataError(f"{name}: the example has no feature {key!r} (it has {sorted(example)}). "
                        f"Pass key=... to name the image feature.")
    image = example[key]
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise DataError(f"{name}: feature {key!r} must be an (H, W, C) array, got {shape}. Decode it "
                        f"first with data.DecodeImage(), or add a channel axis.")
    return image


@dataclasses.dataclass(frozen=True)
class DecodeImage(grain.transforms.Map):
    """Encoded image bytes at ``key`` -> ``(H, W, C)`` uint8; ``mode`` converts ("L", "RGB")."""

    key: str = "image"
    mode: str | None = None

    def map(self, example: Example) -> Example:
        if self.key not in example:
            raise DataError(f"DecodeImage: the example has no feature {self.key!r} (it has {sorted(example)}).")
        value = example[self.key]
        if not isinstance(value, (bytes, bytearray)):
            raise DataError(f"DecodeImage: feature {self.key!r} should be encoded bytes, got "
                            f"{type(value).__name__} {getattr(value, 'shape', '')}; is it already decoded?")
        return {**example, self.key: decode_image(value, mode=self.mode, where=f"feature {self.key!r}")}

    __call__ = map


@dataclasses.dataclass(frozen=True)
class Resize(grain.transforms.Map):
    """Resize a uint8 ``(H, W, C)`` image to ``size=(height, width)`` (bilinear, Pillow)."""

    size: tuple[int, int]
    key: str = "image"

    def map(self, example: Example) -> Example:
        from PIL import Image

        image = _image(example, self.key, "Resize")
        if image.dtype != np.uint8:
            raise DataError(f"Resize: feature {self.key!r} has dtype {image.dtype}; resize uint8 images, "
                            f"i.e. put Resize before Normalize.")
        height, width = self.size
        if image.shape[:2] == (height, width):
            return example
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
        return {**example, self.key: out.reshape(height, width, image.shape[-1])}

    __call__ = map


@dataclasses.dataclass(frozen=True)
class CenterPad(grain.transforms.Map):
    """Zero-pad to ``size=(height, width)``, the image centred (an odd margin puts the extra pixel after).

    >>> import numpy as np
    >>> CenterPad((32, 32))({"image": np.ones((28, 28, 1), np.uint8)})["image"][:, :, 0].sum(axis=0)[:3].tolist()
    [0, 0, 28]
    """

    size: tuple[int, int]
    key: str = "image"

    def map(self, example: Example) -> Example:
        image = _image(example, self.key, "CenterPad")
        height, width = self.size
        rows, cols = image.shape[:2]
        if rows > height or cols > width:
            raise DataError(f"CenterPad: feature {self.key!r} is {image.shape[:2]}, larger than {self.size}; "
                            f"it only pads. Resize or crop first.")
        top, left = (height - rows) // 2, (width - cols) // 2
        out = np.zeros((height, width, *image.shape[2:]), image.dtype)
        out[top:top + rows, left:left + cols] = image
        return {**example, self.key: out}

    __call__ = map


@dataclasses.dataclass(frozen=True)
class RandomCrop(grain.transforms.RandomMap):
    """A random ``size=(height, width)`` window, after zero-padding each side by ``padding``."""

    size: tuple[int, int]
    padding: int = 0
    key: str = "image"

    def random_map(self, example: Example, rng: np.random.Generator) -> Example:
        image = _image(example, self.key, "RandomCrop")
        height, width = self.size
        p = self.padding
        rows, cols = image.shape[0] + 2 * p, image.shape[1] + 2 * p
        if rows < height or cols < width:
            raise DataError(f"RandomCrop: feature {self.key!r} is {image.shape[:2]} (after padding "
                            f"{self.padding}), smaller than the crop {self.size}. Resize first.")
        top = int(rng.integers(rows - height + 1)) - p    # window origin in unpadded coordinates
        left = int(rng.integers(cols - width + 1)) - p
        if p == 0:
            return {**example, self.key: image[top:top + height, left:left + width]}
        out = np.zeros((height, width, image.shape[2]), image.dtype)  # the zero padding, then the overlap
        y0, y1 = max(top, 0), min(top + height, image.shape[0])
        x0, x1 = max(left, 0), min(left + width, image.shape[1])
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
        return {**example, self.key: out}

    __call__ = random_map


@dataclasses.dataclass(frozen=True)
class RandomFlip(grain.transforms.RandomMap):
    """Flip left-right with probability ``p`` (``vertical=True``: up-down)."""

    p: float = 0.5
    vertical: bool = False
    key: str = "image"

    def random_map(self, example: Example, rng: np.random.Generator) -> Example:
        image = _image(example, self.key, "RandomFlip")
        if rng.random() >= self.p:
            return example
        return {**example, self.key: image[::-1] if self.vertical else image[:, ::-1]}

    __call__ = random_map


@dataclasses.dataclass(frozen=True)
class Normalize(grain.transforms.Map):
    """``(image * scale - mean) / std`` as ``dtype``; ``mean``/``std`` per channel or scalar.

    The default ``scale=1/255`` maps uint8 pixels to ``[0, 1]`` first.
    """

    mean: float | Sequence[float] = 0.0
    std: float | Sequence[float] = 1.0
    scale: float = 1.0 / 255.0
    key: str = "image"
    dtype: Any = np.float32

    def map(self, example: Example) -> Example:
        image = _image(example, self.key, "Normalize")
        mean = np.asarray(self.mean, self.dtype)
        std = np.asarray(self.std, self.dtype)
        if mean.size not in (1, image.shape[-1]) or std.size not in (1, image.shape[-1]):
            raise DataError(f"Normalize: mean/std have {mean.size}/{std.size} values for an image with "
                            f"{image.shape[-1]} channels. Give one value, or one per channel.")
        out = (image.astype(self.dtype) * np.asarray(self.scale, self.dtype) - mean) / std
        return {**example, self.key: out.astype(self.dtype, copy=False)}

    __call__ = map
