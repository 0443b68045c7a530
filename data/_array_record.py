"""ArrayRecord files: the native on-disk format (one baobab record per entry).

``write_array_record`` writes examples; ``ArrayRecordSource`` reads them back with
random access (what grain's global shuffle needs), decoding each record with
``decode_example`` and, when the dataset's ``features`` are known, checking it.
Files are written with ``group_size:1`` so one record can be read without
decompressing its neighbours.

>>> import tempfile, os, numpy as np
>>> from baobab import data
>>> path = os.path.join(tempfile.mkdtemp(), "toy.array_record")
>>> data.write_array_record(path, [{"x": np.arange(3) * i} for i in range(4)])
4
>>> source = data.ArrayRecordSource(path)
>>> len(source), source[2]["x"].tolist()
(4, [0, 2, 4])
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from array_record.python import array_record_module

from baobab.errors import MissingFileError

from ._errors import CorruptRecordError, DataError
from ._records import Example, decode_example, encode_example
from ._metadata import check_features

__all__ = ["ArrayRecordSource", "write_array_record", "WRITER_OPTIONS"]

log = logging.getLogger("baobab.data")

#: ArrayRecord writer options: one record per group (fast random access), zstd.
WRITER_OPTIONS = "group_size:1"
_READER_OPTIONS = "readahead_buffer_size:0"


def write_array_record(path: str | Path, examples: Iterable[Mapping[str, Any]], *,
                       options: str = WRITER_OPTIONS) -> int:
    """Write ``examples`` (dicts of arrays/bytes/str) to one ArrayRecord file; return the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = array_record_module.ArrayRecordWriter(str(path), options)
    count = 0
    try:
        for count, example in enumerate(examples, start=1):
            writer.write(encode_example(example))
    finally:
        writer.close()
    return count


def _as_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise DataError("ArrayRecordSource got no files. Pass one or more .array_record paths.")
    out = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            raise DataError(f"{path} is a folder. Pass its .array_record files, or read a prepared "
                            f"folder with baobab.data.load_prepared({str(path)!r}, split=...).")
        if not path.is_file():
            near = sorted(p.name for p in path.parent.glob("*.array_record"))[:5] if path.parent.is_dir() else []
            hint = f" Files there: {near}." if near else ""
            raise MissingFileError(f"ArrayRecord file {str(path)!r} does not exist.{hint} Check the path, "
                                    f"or create it with `baobab data prepare`.")
        out.append(path)
    return out


def _count_records(path: Path) -> int:
    try:
        reader = array_record_module.ArrayRecordReader(str(path), _READER_OPTIONS)
        try:
            return reader.num_records()
        finally:
            reader.close()
    except RuntimeError as err:
        raise CorruptRecordError(
            f"{path}: cannot open as ArrayRecord ({err or 'no detail from the reader'}; "
            f"{path.stat().st_size} bytes). The file is truncated, corrupt or not an ArrayRecord "
            f"file; re-create it with `baobab data prepare`."
        ) from err


class ArrayRecordSource:
    """Random-access reader of baobab records from one or many ArrayRecord files.

    Args:
      paths: one path or a list; the records of all files are indexed in order.
      features: the dataset's feature specs (from ``metadata.json``); when given, each
        record is checked against them and a mismatch names the file, index and key.
      skip_corrupt: instead of raising ``CorruptRecordError``, return ``None`` for an
        unreadable record (grain drops ``None`` elements), log a warning naming it,
        and count it in ``skipped`` (per process).

    ``source[i]`` is a dict ``{key: np.ndarray | bytes | str}``.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], *,
                 features: Mapping[str, Any] | None = None, skip_corrupt: bool = False):
        self.paths = _as_paths(paths)
        self.features = dict(features) if features is not None else None
        self.skip_corrupt = skip_corrupt
        counts = [_count_records(p) for p in self.paths]
        self._ends = list(itertools.accumulate(counts))
        if not self._ends[-1]:
            raise DataError(f"the ArrayRecord files {[str(p) for p in self.paths]} hold no records: the "
                            f"dataset is empty. Check that preparing it wrote examples.")
        self.skipped: list[tuple[str, int, str]] = []
        self._readers: list[Any] = [None] * len(self.paths)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._ends[-1]

    def __repr__(self) -> str:
        return f"ArrayRecordSource({len(self.paths)} files, {len(self)} records)"

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"record index {index} is out of range for {len(self)} records.")
        file = bisect.bisect_right(self._ends, index)
        return file, index - (self._ends[file - 1] if file else 0)

    def _reader(self, file: int) -> Any:
        reader = self._readers[file]
        if reader is None:
            with self._lock:
                if self._readers[file] is None:
                    self._readers[file] = array_record_module.ArrayRecordReader(
                        str(self.paths[file]), _READER_OPTIONS, file_reader_buffer_size=32768)
                reader = self._readers[file]
        return reader

    def __getitem__(self, index: int) -> Example | None:
        file, local = self._locate(int(index))
        where = f"{self.paths[file]} record {local}"
        try:
            try:
                raw = self._reader(file).read([local])[0]
            except RuntimeError as err:
                raise CorruptRecordError(f"{where}: the ArrayRecord layer cannot read it ({err}). The "
                                         f"file is corrupt; re-create it, or pass skip_corrupt=True "
                                         f"(data.skip_corrupt=true in a run) to skip it.") from err
            example = decode_example(raw, where=where)
            if self.features is not None:
                check_features(example, self.features, where)
            return example
        except CorruptRecordError as err:
            if not self.skip_corrupt:
                raise
            with self._lock:
                self.skipped.append((str(self.paths[file]), local, str(err)))
                count = len(self.skipped)
            log.warning("skipped corrupt record (%d so far in this process): %s", count, err)
            return None

    def __getstate__(self) -> dict[str, Any]:  # picklable for worker processes: readers reopen
        state = self.__dict__.copy()
        del state["_readers"], state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._readers = [None] * len(self.paths)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the open file readers (they reopen on the next read)."""
        with self._lock:
            for reader in self._readers:
                if reader is not None:
                    reader.close()
            self._readers = [None] * len(self.paths)
