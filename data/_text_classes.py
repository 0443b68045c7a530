"""Labelled texts for classification: sources of ``{"text": str, "label": int32}`` and fixed-length encoding.

Sources (each a ``grain.MapDataset``):

* ``python_docstrings(split, packages)``: a real, offline text-classification task.
  Every docstring (its first paragraph, at least 4 words) of the standard-library
  packages in ``packages``, labelled with the package it comes from, e.g. *"Create
  a TCP server ..."* -> ``asyncio``. Texts that occur in more than one package are
  dropped; one text in five (by a hash of the text, so the split is stable) is the
  ``"test"`` split.
* ``jsonl_texts(path, classes=None)``: one JSON object per line with ``"text"`` and
  ``"label"`` (a class name or an int index).

``EncodeText(tokenizer_json, length)`` turns ``example["text"]`` into ``input_ids``
and ``attention_mask`` of exactly ``length`` tokens (the tokenizer's special tokens
included; longer texts are cut, shorter ones padded with its pad id), which is what
``models.Bert`` takes. ``count_truncated`` says how many texts it would cut.

>>> from baobab import data
>>> train = data.python_docstrings("train", packages=("json", "logging"))
>>> example = train[0]
>>> sorted(example), example["label"].dtype.name
(['label', 'text'], 'int32')
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import sysconfig
import zlib
from pathlib import Path
from typing import Any, Sequence

import grain
import numpy as np

from baobab.errors import ConfigError, MissingFileError

from ._errors import DataError
from ._records import Example
from ._tokenize import _load_tokenizer, _text, tokenizer_key

__all__ = ["python_docstrings", "jsonl_texts", "EncodeText", "count_truncated", "DOCSTRING_PACKAGES"]

#: The default classes of ``python_docstrings``: eight standard-library packages.
DOCSTRING_PACKAGES = ("asyncio", "email", "http", "importlib", "logging", "multiprocessing", "unittest", "xml")
_SKIP_DIRS = {"test", "tests", "idle_test"}
_EVAL_EVERY = 5


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []  # e.g. lib2to3's deliberately broken fixtures; never in the chosen packages' code
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                first = " ".join(doc.strip().split("\n\n")[0].split())
                if len(first.split()) >= 4:
                    out.append(first)
    return out


@functools.lru_cache(maxsize=4)
def _docstring_corpus(packages: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    missing = [p for p in packages if not (stdlib / p).is_dir()]
    if missing:
        raise DataError(f"python_docstrings: the packages {missing} are not in this Python's standard library "
                        f"({stdlib}); choose others (any folder there, e.g. {list(DOCSTRING_PACKAGES)}).")
    if len(set(packages)) != len(packages) or len(packages) < 2:
        raise DataError(f"python_docstrings: packages must be at least 2 distinct names, got {list(packages)}.")
    found: dict[str, set[int]] = {}
    for label, package in enumerate(packages):
        for path in sorted((stdlib / package).rglob("*.py")):
            if _SKIP_DIRS.isdisjoint(path.relative_to(stdlib).parts[1:-1]):
                for text in _docstrings(path):
                    found.setdefault(text, set()).add(label)
    return tuple(sorted((text, labels.pop()) for text, labels in found.items() if len(labels) == 1))


def _split(rows: Sequence[tuple[str, int]], split: str) -> list[Example]:
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}.")
    held_out = split == "test"
    return [{"text": text, "label": np.int32(label)} for text, label in rows
            if (zlib.crc32(text.encode("utf-8")) % _EVAL_EVERY == 0) == held_out]


def python_docstrings(split: str = "train", packages: Sequence[str] = DOCSTRING_PACKAGES) -> grain.MapDataset:
    """Docstrings of standard-library ``packages``; ``label`` is the package's index in ``packages``."""
    return grain.MapDataset.source(_split(_docstring_corpus(tuple(packages)), split))


def jsonl_texts(path: str | Path, classes: Sequence[str] | None = None) -> tuple[grain.MapDataset, tuple[str, ...]]:
    """``(dataset, class names)`` from a JSON-lines file of ``{"text": ..., "label": ...}``.

    ``label`` is a class name or an int index. With ``classes`` given (e.g. the train
    file's, for its eval file) names map to those indices and anything else is an
    error; without, the classes are the sorted names found (or ``0..max`` for ints).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"text classification file {str(path)!r} does not exist; pass a .jsonl file with "
                                f"one {{\"text\": ..., \"label\": ...}} object per line.")
    rows: list[tuple[str, Any, int]] = []  # (text, label, line number)
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not valid UTF-8 at byte {err.start} of the line; save the "
                                f"file as UTF-8.") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as err:
                reason = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
                raise DataError(f"{path}:{number}: not valid JSON ({reason}); each line must be one "
                                f"{{\"text\": ..., \"label\": ...}} object.") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or "label" not in obj:
                raise DataError(f"{path}:{number}: expected an object with a str \"text\" and a \"label\", got "
                                f"{line.strip()[:80]!r}.")
            label = obj["label"]
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise DataError(f"{path}:{number}: \"label\" must be a class name or an int, got {label!r}.")
            rows.append((obj["text"], label, number))
    if not rows:
        raise DataError(f"{path}: no examples in this file.")
    names = {label for _, label, _ in rows if isinstance(label, str)}
    if names and len(names) != len({label for _, label, _ in rows}):
        raise DataError(f"{path}: labels mix class names and int indices; use one kind.")
    if classes is None:
        classes = tuple(sorted(names)) if names else tuple(str(i) for i in range(max(lb for _, lb, _ in rows) + 1))
    classes = tuple(classes)
    index = {name: i for i, name in enumerate(classes)}
    examples = []
    for k, (text, label, number) in enumerate(rows, 1):
        i = index.get(label) if isinstance(label, str) else label
        if i is None or not 0 <= i < len(classes):
            raise DataError(f"{path}:{number}: example {k} has label {label!r}, which is not one of the "
                            f"{len(classes)} classes {list(classes)[:10]}.")
        examples.append({"text": text, "label": np.int32(i)})
    return grain.MapDataset.source(examples), classes


@functools.lru_cache(maxsize=8)
def _fixed_tokenizer(path: str, mtime_ns: int, length: int) -> tuple[Any, int]:
    """A copy of the tokenizer that truncates to ``length`` (and does not pad), and its pad id."""
    from tokenizers import Tokenizer

    base = _load_tokenizer(path, mtime_ns)
    padding = base.padding or {}
    pad_id = padding.get("pad_id")
    if pad_id is None:
        pad_id = base.token_to_id("[PAD]") if base.token_to_id("[PAD]") is not None else 0
    tokenizer = Tokenizer.from_str(base.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=length)
    return tokenizer, int(pad_id)


@dataclasses.dataclass(frozen=True)
class EncodeText(grain.transforms.Map):
    """``example[key]`` (str) -> ``input_ids`` and ``attention_mask``, both ``(length,)`` int32.

    Special tokens (``[CLS] ... [SEP]`` for BERT) are added, texts longer than
    ``length`` are cut (the tokenizer keeps its closing special token), shorter ones
    are padded with the tokenizer's pad id and mask 0. The text feature is dropped.
    """

    path: str | Path
    length: int
    key: str = "text"
    _cache_key: tuple[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.length < 2:
            raise ConfigError(f"EncodeText: length must be >= 2 (room for the special tokens), got {self.length}.")
        object.__setattr__(self, "_cache_key", tokenizer_key(self.path))
        self.tokenizer  # load now: a bad file fails here, not inside a pipeline

    @property
    def tokenizer(self) -> Any:
        return _fixed_tokenizer(*self._cache_key, self.length)[0]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def map(self, example: Example) -> Example:
        tokenizer, pad_id = _fixed_tokenizer(*self._cache_key, self.length)
        ids = tokenizer.encode(_text(example, self.key, "EncodeText")).ids
        out = {k: v for k, v in example.items() if k != self.key}
        out["input_ids"] = np.full(self.length, pad_id, np.int32)
        out["input_ids"][:len(ids)] = ids
        out["attention_mask"] = (np.arange(self.length) < len(ids)).astype(np.int32)
        return out

    __call__ = map


def count_truncated(texts: Sequence[str], tokenizer_json: str | Path, length: int) -> int:
    """How many of ``texts`` have more than ``length`` tokens (special tokens included)."""
    tokenizer = _load_tokenizer(*tokenizer_key(tokenizer_json))
    probe = type(tokenizer).from_str(tokenizer.to_str())
    probe.no_padding()
    probe.no_truncation()
    return sum(len(e.ids) > length for e in probe.encode_batch(list(texts)))
