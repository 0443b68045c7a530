"""Converters behind ``baobab data prepare``: image folder, text corpus or ``.npz``
arrays -> ArrayRecord shards plus ``metadata.json`` (see ``_metadata.py``).

Each writes one split into ``out`` (run it again with another ``split`` to add one),
showing a ``tqdm`` progress bar unless ``progress=False``.

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from baobab import data
>>> tmp = Path(tempfile.mkdtemp())
>>> np.savez(tmp / "xy.npz", x=np.zeros((6, 2), np.float32), y=np.arange(6))
>>> meta = data.prepare_arrays(tmp / "xy.npz", tmp / "prepared", split="train", progress=False)
>>> meta["splits"]["train"]["num_examples"], meta["features"]["x"]
(6, {'dtype': 'float32', 'kind': 'array', 'shape': [2]})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from ._arrays import ArraySource, load_npz
from ._image_folder import ImageFolderSource
from ._prepared import write_split
from ._text import TextSource
from ._tokenize import ByteTokenize, Tokenize

__all__ = ["prepare_image_folder", "prepare_text", "prepare_arrays"]


def _progress(items: Iterable[Any], total: int, desc: str, progress: bool) -> Iterable[Any]:
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit="ex", disable=not progress, mininterval=0.5)


def prepare_image_folder(root: str | Path, out: str | Path, *, split: str = "train", num_shards: int = 1,
                         decode: bool = False, progress: bool = True) -> dict[str, Any]:
    """``root/<class>/*.png|jpg`` -> records ``{"image", "label"}``; classes go to ``info``.

    ``image`` keeps each file's encoded bytes (decode with ``data.DecodeImage()``), or with
    ``decode=True`` the decoded ``(H, W, C)`` uint8 array (images must then share a size
    for batching). Every file is decoded once either way, so a broken one fails here.
    """
    source = ImageFolderSource(root, decode=True)
    raw = ImageFolderSource(root, decode=False)

    def examples() -> Iterable[dict[str, Any]]:
        for i in range(len(source)):
            decoded = source[i]  # raises DataError naming a file that does not decode
            yield decoded if decode else raw[i]

    return write_split(out, split, _progress(examples(), len(source), f"{split}: images", progress),
                       num_shards=num_shards, num_examples=len(source),
                       info={"classes": source.classes, "source": str(root)})


def prepare_text(paths: Sequence[str | Path], out: str | Path, *, split: str = "train", unit: str = "file",
                 tokenizer: str | None = None, num_shards: int = 1, progress: bool = True) -> dict[str, Any]:
    """Text files -> records ``{"text": str}`` (plus ``"tokens"`` int32 with a ``tokenizer``:
    ``"bytes"`` for byte-level, or the path of a ``tokenizer.json``)."""
    source = TextSource(paths, unit=unit)
    tokenize = None if tokenizer is None else ByteTokenize() if tokenizer == "bytes" else Tokenize(tokenizer)
    examples = (source[i] if tokenize is None else tokenize(source[i]) for i in range(len(source)))
    info = {"unit": unit, "tokenizer": tokenizer, "files": len(source.paths)}
    return write_split(out, split, _progress(examples, len(source), f"{split}: documents", progress),
                       num_shards=num_shards, num_examples=len(source), info=info)


def prepare_arrays(path: str | Path, out: str | Path, *, split: str = "train", num_shards: int = 1,
                   progress: bool = True) -> dict[str, Any]:
    """A ``.npz`` of arrays with a common leading axis (loaded without pickle) -> one record per row."""
    source = ArraySource(load_npz(path), name=str(path))
    examples = (source[i] for i in range(len(source)))
    return write_split(out, split, _progress(examples, len(source), f"{split}: rows", progress),
                       num_shards=num_shards, num_examples=len(source),
                       info={"source": Path(path).name})
