"""Hold out part of a text corpus for evaluation: whole files, or the tail of each file.

``split_documents(files, eval_fraction, tokenize)`` tokenises every file (one document
per file) and returns ``(train_documents, eval_documents, held_out)``:

- with at least ``1 / eval_fraction`` files, every k-th file (``k = round(1 /
  eval_fraction)``, by sorted path) is held out whole (``held_out == "files"``): eval
  then measures text the model has never seen any part of;
- with fewer files (one file included), the last ``eval_fraction`` of each file's
  tokens is held out (``held_out == "tail"``), like the usual 90/10 split of a single
  corpus file.

>>> import pathlib, tempfile
>>> from baobab import data
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "one.txt").write_text("abcdefghij")
>>> train, held, how = data.split_documents([folder / "one.txt"], 0.2, data.ByteTokenize())
>>> bytes(train[0].astype("uint8")), bytes(held[0].astype("uint8")), how
(b'abcdefgh', b'ij', 'tail')
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from baobab.errors import ConfigError

from ._text import TextSource

__all__ = ["split_documents"]


def split_documents(files: Sequence[str | Path], eval_fraction: float,
                    tokenize: Callable[[dict], dict]) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """``(train token arrays, eval token arrays, "files" | "tail")``; see the module docstring."""
    if not 0.0 < eval_fraction < 1.0:
        raise ConfigError(f"data.eval_fraction = {eval_fraction}: must be between 0 and 1 (exclusive), e.g. 0.1.")
    source = TextSource(sorted(Path(f) for f in files))
    documents = [tokenize(source[i])["tokens"] for i in range(len(source))]
    every = max(2, round(1 / eval_fraction))
    if len(documents) >= every:
        held = [d for i, d in enumerate(documents) if i % every == 0]
        return [d for i, d in enumerate(documents) if i % every], held, "files"
    cuts = [len(d) - int(round(eval_fraction * len(d))) for d in documents]
    train, held = [d[:c] for d, c in zip(documents, cuts)], [d[c:] for d, c in zip(documents, cuts)]
    if not any(len(d) for d in held) or not any(len(d) for d in train):
        total = sum(len(d) for d in documents)
        raise ConfigError(f"data.files: {len(documents)} file(s) of {total} tokens in all leave nothing to "
                          f"{'evaluate' if not any(len(d) for d in held) else 'train'} on with "
                          f"data.eval_fraction = {eval_fraction}; give more text or change eval_fraction.")
    return train, held, "tail"
