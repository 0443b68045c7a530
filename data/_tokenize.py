"""Text -> token ids: byte-level, or a real tokenizer from a ``tokenizer.json``.

``ByteTokenize`` maps UTF-8 bytes to ids ``0..255`` (vocabulary 256, plus an
optional end-of-document id). ``Tokenize`` loads any Hugging Face ``tokenizer.json``
(BPE, WordPiece, Unigram) through the ``tokenizers`` library. Both read
``example[key]`` (a str) and add ``example[out]``, a 1-D int32 array.

>>> from baobab import data
>>> data.ByteTokenize(eos_id=256)({"text": "hé"})["tokens"].tolist()
[104, 195, 169, 256]
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import grain
import numpy as np

from baobab.errors import MissingFileError

from ._errors import DataError
from ._records import Example

__all__ = ["ByteTokenize", "Tokenize"]


def _text(example: Example, key: str, name: str) -> str:
    if key not in example:
        raise DataError(f"{name}: the example has no feature {key!r} (it has {sorted(example)}).")
    text = example[key]
    if isinstance(text, np.ndarray) and text.dtype.kind == "U" and text.ndim == 0:
        text = str(text)
    if not isinstance(text, str):
        raise DataError(f"{name}: feature {key!r} must be a str, got {type(text).__name__}.")
    return text


@dataclasses.dataclass(frozen=True)
class ByteTokenize(grain.transforms.Map):
    """UTF-8 bytes as token ids (int32, ``0..255``); ``eos_id`` (e.g. 256) is appended if set."""

    key: str = "text"
    out: str = "tokens"
    eos_id: int | None = None

    @property
    def vocab_size(self) -> int:
        return 256 if self.eos_id is None else max(256, self.eos_id + 1)

    def map(self, example: Example) -> Example:
        ids = np.frombuffer(_text(example, self.key, "ByteTokenize").encode("utf-8"), np.uint8).astype(np.int32)
        if self.eos_id is not None:
            ids = np.append(ids, np.int32(self.eos_id))
        return {**example, self.out: ids}

    __call__ = map


@functools.lru_cache(maxsize=8)
def _load_tokenizer(path: str, mtime_ns: int) -> Any:
    del mtime_ns  # part of the cache key: an edited file is reloaded
    from tokenizers import Tokenizer  # lazy: only real-tokenizer pipelines need it

    try:
        return Tokenizer.from_file(path)
    except Exception as err:  # tokenizers raises a bare Exception on a bad file
        raise DataError(f"{path}: not a valid tokenizer.json ({err}). Save one with "
                        f"tokenizers.Tokenizer.save(path).") from err


def tokenizer_key(path: str | Path) -> tuple[str, int]:
    """``(resolved path, mtime)`` of a ``tokenizer.json``: the cache key of its loaded tokenizer."""
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"tokenizer file {str(path)!r} does not exist. Pass the path of a tokenizer.json "
                                f"(a Hugging Face model folder has one; tokenizers.Tokenizer.save writes one).")
    return str(file.resolve()), file.stat().st_mtime_ns


@dataclasses.dataclass(frozen=True)
class Tokenize(grain.transforms.Map):
    """Token ids (int32) from a ``tokenizer.json`` (``tokenizers`` library).

    ``add_special_tokens`` adds the tokenizer's own specials (e.g. ``[CLS] ... [SEP]``);
    ``eos_id`` appends an id. The tokenizer loads once per process, lazily, so the
    transform pickles cheaply into worker processes.
    """

    path: str | Path
    key: str = "text"
    out: str = "tokens"
    add_special_tokens: bool = False
    eos_id: int | None = None
    _cache_key: tuple[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cache_key", tokenizer_key(self.path))
        self.tokenizer  # load now, so a bad file fails here rather than inside a pipeline

    @property
    def tokenizer(self) -> Any:
        return _load_tokenizer(*self._cache_key)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def map(self, example: Example) -> Example:
        text = _text(example, self.key, "Tokenize")
        ids = self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens).ids
        if self.eos_id is not None:
            ids = [*ids, self.eos_id]
        return {**example, self.out: np.asarray(ids, np.int32)}

    __call__ = map
