"""Sequence packing for language-model training, with grain's packing datasets.

``Pack(length=L)`` turns a stream of variable-length token arrays into rows of
exactly ``L`` tokens plus, for each packed key ``k``, ``k_segment_ids`` (1, 2, ...
per document in the row, 0 for padding) and ``k_positions`` (0-based position
within its document). Attention masks are ``segment_ids[:, None] == segment_ids[None]``.

``method="concat"`` (default) uses ``grain.experimental.ConcatThenSplitIterDataset``:
documents are concatenated and cut into rows, so nothing is padded but a long
document continues in the next row (a new segment there, positions restarting).
``method="first_fit"`` uses ``FirstFitPackIterDataset``: documents stay whole
(those longer than ``L`` are truncated), rows are padded with 0.

>>> import grain, numpy as np
>>> from baobab import data
>>> docs = grain.MapDataset.source([{"tokens": np.arange(1, n + 1, dtype=np.int32)} for n in (3, 4, 2)])
>>> row = next(iter(data.Pack(length=6)(docs.to_iter_dataset())))
>>> row["tokens"].tolist(), row["tokens_segment_ids"].tolist(), row["tokens_positions"].tolist()
([1, 2, 3, 1, 2, 3], [1, 1, 1, 2, 2, 2], [0, 1, 2, 0, 1, 2])
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import grain

from baobab.errors import ConfigError

from ._errors import DataError
from ._records import Example

__all__ = ["Pack"]

_METHODS = ("concat", "first_fit")


@dataclasses.dataclass(frozen=True)
class _Truncate(grain.transforms.Map):
    keys: tuple[str, ...]
    length: int

    def map(self, example: Example) -> Example:
        return {**example, **{k: example[k][:self.length] for k in self.keys}}


@dataclasses.dataclass(frozen=True)
class _KeepKeys(grain.transforms.Map):
    keys: tuple[str, ...]

    def map(self, example: Example) -> Example:
        missing = [k for k in self.keys if k not in example]
        if missing:
            raise DataError(f"Pack: the example has no feature(s) {missing} (it has {sorted(example)}). "
                            f"Tokenise first, e.g. data.ByteTokenize(), or pass keys=...")
        for k in self.keys:
            if getattr(example[k], "ndim", None) != 1:
                raise DataError(f"Pack: feature {k!r} must be a 1-D token array, got "
                                f"{getattr(example[k], 'shape', type(example[k]).__name__)}.")
        return {k: example[k] for k in self.keys}


@dataclasses.dataclass(frozen=True)
class Pack:
    """Pack ``keys`` into rows of ``length`` tokens (see the module docstring).

    Other features are dropped (they cannot be packed). Call it on an
    ``IterDataset``, or pass it as ``train_loader(..., pack=Pack(...))``.

    Packed rows depend on the process count: with ``n`` processes, process ``p`` packs
    documents ``p, p + n, p + 2n, ...`` of the shuffled stream into its own rows (the
    packed stream of shard ``p``), and global batch ``k`` is each process's ``k``-th
    ``B / n`` rows, process 0's first. The documents and tokens seen differ from a
    1-process run with the same devices; to keep rows independent of the process count,
    cut a tokenised corpus into rows before loading (``data.TokenChunks``, as ``TextData`` does).
    """

    length: int
    keys: Sequence[str] = ("tokens",)
    method: str = "concat"
    num_packing_bins: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ConfigError(f"Pack: method must be one of {_METHODS}, got {self.method!r}.")
        if self.length < 1:
            raise ConfigError(f"Pack: length must be positive, got {self.length}.")
        object.__setattr__(self, "keys", tuple(self.keys))

    def __call__(self, ds: grain.IterDataset) -> grain.IterDataset:
        if not isinstance(ds, grain.IterDataset):
            raise TypeError(f"Pack works on a grain.IterDataset (got {type(ds).__name__}); call "
                            f".to_iter_dataset() on a MapDataset first.")
        ds = ds.map(_KeepKeys(self.keys))
        lengths = {k: self.length for k in self.keys}
        if self.method == "concat":
            return grain.experimental.ConcatThenSplitIterDataset(ds, length_struct=lengths)
        ds = ds.map(_Truncate(self.keys, self.length))
        return grain.experimental.FirstFitPackIterDataset(
            ds, length_struct=lengths, num_packing_bins=self.num_packing_bins, seed=self.seed)
