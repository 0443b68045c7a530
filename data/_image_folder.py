"""Image folders: ``root/<class_name>/*.png|jpg``, read with Pillow.

Class names, sorted, give the labels ``0 .. num_classes - 1``. Each example is
``{"image": (H, W, C) uint8, "label": () int32}`` (or, with ``decode=False``, the
encoded file bytes under ``"image"``). A file that fails to decode raises
``DataError`` naming it.
"""

from __future__ import annotations

from pathlib import Path

import grain
import numpy as np

from baobab.errors import MissingFileError

from ._errors import DataError
from ._image import decode_image
from ._records import Example

__all__ = ["IMAGE_SUFFIXES", "ImageFolderSource", "image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageFolderSource:
    """Random-access source over ``root/<class_name>/<image file>``.

    Attributes: ``classes`` (sorted class names), ``files`` (one per example, sorted
    by class then name), ``labels`` (int32 array).
    """

    def __init__(self, root: str | Path, *, decode: bool = True, mode: str | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingFileError(f"image folder {str(root)!r} does not exist (or is not a folder). "
                                    f"Expected root/<class_name>/*.png|jpg.")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise DataError(f"image folder {self.root} has no class sub-folders; expected "
                            f"{self.root}/<class_name>/*.png|jpg.")
        self.files: list[Path] = []
        labels = []
        for label, name in enumerate(self.classes):
            found = sorted(p for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self.files += found
            labels += [label] * len(found)
        if not self.files:
            raise DataError(f"image folder {self.root}: the class folders {self.classes[:5]} hold no "
                            f"{'/'.join(IMAGE_SUFFIXES)} files: the dataset is empty.")
        self.labels = np.asarray(labels, np.int32)
        self.decode = decode
        self.mode = mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Example:
        path = self.files[index]
        try:
            encoded = path.read_bytes()
        except OSError as err:
            raise MissingFileError(f"{path} (example {index}) cannot be read: {err}.") from err
        image = decode_image(encoded, mode=self.mode, where=str(path)) if self.decode else encoded
        return {"image": image, "label": self.labels[index]}

    def __repr__(self) -> str:
        return f"ImageFolderSource({self.root}: {len(self)} images, {len(self.classes)} classes)"


def image_folder(root: str | Path, *, decode: bool = True, mode: str | None = None) -> grain.MapDataset:
    """A ``grain.MapDataset`` over an image folder (see ``ImageFolderSource``)."""
    return grain.MapDataset.source(ImageFolderSource(root, decode=decode, mode=mode))
