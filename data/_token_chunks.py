"""A tokenised corpus cut into fixed-length rows that can be shuffled one by one.

``TokenChunks(documents, length)`` concatenates token arrays and cuts the result into
rows of ``length`` tokens. Row ``i`` is tokens ``[i * length, (i + 1) * length)``, with
``tokens_segment_ids`` (1, 2, ... per document in the row) and ``tokens_positions``
(0-based within the document's part in the row, so positions restart at every document
and every row, as ``data.Pack`` does). Because rows are random-access, a loader shuffles
*rows*, not documents: one batch draws from places all over the corpus, even when the
corpus is one large file. (Packing a stream of shuffled documents instead fills a batch
with consecutive chunks of the same document.)

``pad_last=True`` keeps the final partial row, padded with token 0 and segment id 0, so
an eval pass covers every token; training drops it (fewer than ``length`` tokens).

>>> import numpy as np
>>> from baobab import data
>>> rows = data.TokenChunks([np.arange(1, 6), np.arange(1, 4)], length=3, pad_last=True)
>>> len(rows), rows[1]["tokens"].tolist(), rows[1]["tokens_segment_ids"].tolist(), rows[1]["tokens_positions"].tolist()
(3, [4, 5, 1], [1, 1, 2], [0, 1, 0])
>>> rows[2]["tokens"].tolist(), rows[2]["tokens_segment_ids"].tolist()
([2, 3, 0], [1, 1, 0])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from baobab.errors import ConfigError

from ._errors import DataError
from ._records import Example

__all__ = ["TokenChunks"]


def _storage_dtype(max_id: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.int32):
        if max_id <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise DataError(f"token id {max_id} does not fit in int32.")


class TokenChunks:
    """Random-access rows ``{key, key_segment_ids, key_positions}``, each ``(length,)`` int32.

    Args:
      documents: 1-D integer token arrays, one per document, in corpus order.
      length: tokens per row (an LM's ``seq_len + 1``: inputs ``[:-1]``, targets ``[1:]``).
      key: the feature name of the tokens (segment ids and positions get its prefix).
      pad_last: keep the final partial row, padded (see the module docstring).

    Tokens are stored in the smallest unsigned dtype that holds them (bytes: 1 byte each).
    """

    def __init__(self, documents: Sequence[np.ndarray], length: int, *, key: str = "tokens",
                 pad_last: bool = False):
        if length < 1:
            raise ConfigError(f"TokenChunks: length must be positive, got {length}.")
        docs = [np.asarray(d) for d in documents]
        for i, doc in enumerate(docs):
            if doc.ndim != 1 or doc.dtype.kind not in "iu":
                raise DataError(f"TokenChunks: document {i} must be a 1-D integer token array, got "
                                f"{doc.dtype} of shape {doc.shape}.")
            if doc.size and doc.min() < 0:
                raise DataError(f"TokenChunks: document {i} has a negative token id {doc.min()}.")
        docs = [d for d in docs if d.size]
        if not docs:
            raise DataError("TokenChunks: every document is empty: there is nothing to train on.")
        self.length, self.key, self.pad_last = length, key, pad_last
        self._tokens = np.concatenate(docs).astype(_storage_dtype(max(int(d.max()) for d in docs)))
        self._starts = np.cumsum([0] + [d.size for d in docs[:-1]])  # first token of each document
        self.num_documents = len(docs)

    @property
    def num_tokens(self) -> int:
        return int(self._tokens.size)

    def __len__(self) -> int:
        full, rest = divmod(self.num_tokens, self.length)
        return full + int(self.pad_last and rest > 0)

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < len(self):
            raise IndexError(f"TokenChunks: row {index} out of range (0..{len(self) - 1}).")
        begin = index * self.length
        end = min(begin + self.length, self.num_tokens)
        span = np.arange(begin, end)
        doc = np.searchsorted(self._starts, span, side="right") - 1  # document of each token
        segment = doc - doc[0] + 1
        positions = span - np.maximum(self._starts[doc], begin)
        pad = self.length - span.size  # only the last row of a pad_last corpus is short
        row = {self.key: self._tokens[begin:end], f"{self.key}_segment_ids": segment,
               f"{self.key}_positions": positions}
        return {k: np.pad(v.astype(np.int32), (0, pad)) for k, v in row.items()}

    def __repr__(self) -> str:
        return (f"TokenChunks({self.num_documents} documents, {self.num_tokens} tokens, {len(self)} rows of "
                f"{self.length})")
