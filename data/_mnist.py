"""The embedded default dataset: 5,000 real MNIST digits, shipped in the package.

``data/embedded/mnist/`` holds them as a prepared folder (ArrayRecord + metadata,
1.69 MiB): 4,000 train and 1,000 test digits, stratified (400 / 100 per class).
Source, licence and the exact recipe are in its ``README.md``. Nothing is
downloaded, so the default training run works offline.

>>> from baobab import data
>>> train = data.mnist("train")
>>> len(train), train[0]["image"].shape, train[0]["image"].dtype, train[0]["label"].dtype
(4000, (28, 28, 1), dtype('uint8'), dtype('int32'))
"""

from __future__ import annotations

from pathlib import Path

import grain

from baobab.errors import UnknownKeyError

from ._prepared import load_prepared

__all__ = ["MNIST_DIR", "mnist"]

#: Folder of the embedded MNIST subset (a prepared dataset folder).
MNIST_DIR = Path(__file__).resolve().parent / "embedded" / "mnist"


def mnist(split: str = "train") -> grain.MapDataset:
    """Embedded MNIST: ``{"image": (28, 28, 1) uint8, "label": () int32}``; split "train" or "test"."""
    if split not in ("train", "test"):
        raise UnknownKeyError(f"the embedded MNIST has splits 'train' (4,000) and 'test' (1,000), not {split!r}.")
    return load_prepared(MNIST_DIR, split)
