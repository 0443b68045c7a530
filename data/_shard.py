"""Process sharding by whole local batches, so a global batch does not depend on the process count.

``ShardByBatch(stream, index=p, count=n, rows=b)``: for global batch ``k``, process
``p`` of ``n`` reads positions ``(k*n + p)*b + [0, b)`` of the stream. Its local
batch ``k`` is then rows ``[p*b, (p+1)*b)`` of global batch ``k``, which
``jax.make_array_from_process_local_data`` assembles (process 0's rows first) into
positions ``[k*B, (k+1)*B)`` in order: the batch one process holding all the devices
loads, row for row. (Striding, ``stream[p::n]``, gives the same examples per global
batch but interleaved: row order would depend on the process count.) A trailing
partial global batch is dropped, as ``batch(drop_remainder=True)`` would.

>>> import grain
>>> from baobab.data._shard import ShardByBatch
>>> stream = grain.MapDataset.range(10)
>>> [list(ShardByBatch(stream, index=p, count=2, rows=2)) for p in range(2)]
[[0, 1, 4, 5], [2, 3, 6, 7]]
"""

from __future__ import annotations

from typing import Any, Sequence

import grain

__all__ = ["ShardByBatch"]


class ShardByBatch(grain.MapDataset):
    """Process ``index`` of ``count``'s blocks of ``rows`` consecutive positions (see the module docstring)."""

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, *, index: int, count: int, rows: int):
        super().__init__(parent)
        if not 0 <= index < count or rows < 1:
            raise ValueError(f"ShardByBatch needs 0 <= index < count and rows >= 1, got index={index}, "
                             f"count={count}, rows={rows}.")
        self._index, self._count, self._rows = index, count, rows
        self._length = len(parent) // (count * rows) * rows

    def __len__(self) -> int:
        return self._length

    def _position(self, index: int) -> int:
        batch, row = divmod(index, self._rows)
        return (batch * self._count + self._index) * self._rows + row

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._position(index)]

    def _getitems(self, indices: Sequence[int]) -> Any:
        return self._parent._getitems([self._position(i) for i in indices])  # pylint: disable=protected-access

    def __str__(self) -> str:
        return f"ShardByBatch(index={self._index}, count={self._count}, rows={self._rows})"
