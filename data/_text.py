"""Text corpora: one or many UTF-8 files, split into documents ``{"text": str}``.

``unit`` chooses what a document is: a whole ``"file"`` (read lazily, so large
corpora cost nothing up front), a ``"paragraph"`` (blank-line separated) or a
``"line"`` (both read every file once to index the documents). Tokenise with
``data.ByteTokenize`` or ``data.Tokenize`` and pack with ``data.Pack``.

``stdlib_text_files()`` lists the running Python's own standard-library sources: a
real, licence-clean (PSF) text corpus that every Python install carries, used by the
tests and the benchmark.

>>> from baobab import data
>>> files = data.stdlib_text_files(limit=3)
>>> ds = data.text_corpus(files)
>>> len(ds), isinstance(ds[0]["text"], str)
(3, True)
"""

from __future__ import annotations

import re
import sysconfig
from pathlib import Path
from typing import Sequence

import grain

from baobab.errors import ConfigError, MissingFileError

from ._errors import DataError
from ._records import Example

__all__ = ["TextSource", "text_corpus", "stdlib_text_files"]

_UNITS = ("file", "paragraph", "line")


def _read_text(path: Path, errors: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise MissingFileError(f"text file {str(path)!r} does not exist.") from err
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 at byte {err.start} ({raw[err.start:err.start + 8]!r}). "
                        f"Convert the file to UTF-8, or pass errors='replace'.") from err


class TextSource:
    """Random-access source of documents ``{"text": str}`` from text files."""

    def __init__(self, paths: str | Path | Sequence[str | Path], *, unit: str = "file", errors: str = "strict"):
        if unit not in _UNITS:
            raise ConfigError(f"unit must be one of {_UNITS}, got {unit!r}.")
        items = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self.paths = [Path(p) for p in items]
        if not self.paths:
            raise DataError("text_corpus got no files: the corpus is empty. Pass one or more paths.")
        for path in self.paths:
            if not path.is_file():
                raise MissingFileError(f"text file {str(path)!r} does not exist (or is a folder). "
                                        f"Pass files, e.g. sorted(Path(folder).glob('*.txt')).")
        self.unit, self.errors = unit, errors
        self._documents: list[str] | None = None
        if unit != "file":
            pattern = r"\n\s*\n" if unit == "paragraph" else r"\n"
            self._documents = [d for p in self.paths for d in re.split(pattern, _read_text(p, errors))
                               if d.strip()]
            if not self._documents:
                raise DataError(f"text corpus of {len(self.paths)} files has no non-blank {unit}s: it is empty.")

    def __len__(self) -> int:
        return len(self.paths) if self._documents is None else len(self._documents)

    def __getitem__(self, index: int) -> Example:
        if self._documents is not None:
            return {"text": self._documents[index]}
        return {"text": _read_text(self.paths[index], self.errors)}

    def __repr__(self) -> str:
        return f"TextSource({len(self.paths)} files, {len(self)} {self.unit}s)"


def text_corpus(paths: str | Path | Sequence[str | Path], *, unit: str = "file",
                errors: str = "strict") -> grain.MapDataset:
    """A ``grain.MapDataset`` of ``{"text": str}`` documents (see ``TextSource``)."""
    return grain.MapDataset.source(TextSource(paths, unit=unit, errors=errors))


def stdlib_text_files(limit: int | None = None) -> list[Path]:
    """The ``.py`` files of this Python's standard library (sorted; tests and site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    if not files:
        raise MissingFileError(f"no standard-library sources under {root}; this Python ships without them.")
    return files[:limit]
