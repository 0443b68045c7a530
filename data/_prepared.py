"""A prepared dataset folder: ArrayRecord shards per split plus ``metadata.json``.

``write_split`` writes one split (sharded, metadata updated); ``load_prepared``
reads one back as a ``grain.MapDataset`` whose records are checked against the
metadata. The folder layout and JSON fields are documented in ``_metadata.py``.

>>> import tempfile, numpy as np
>>> from baobab import data
>>> folder = tempfile.mkdtemp()
>>> examples = [{"x": np.full(2, i, np.float32), "y": i % 3} for i in range(10)]
>>> _ = data.write_split(folder, "train", examples, num_shards=2)
>>> ds = data.load_prepared(folder, split="train")
>>> len(ds), ds[7]["x"].tolist(), int(ds[7]["y"])
(10, [7.0, 7.0], 1)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import grain
from array_record.python import array_record_module

from baobab.errors import ConfigError, UnknownKeyError

from ._array_record import WRITER_OPTIONS, ArrayRecordSource
from ._errors import DataError
from ._records import encode_example
from ._metadata import METADATA_FILE, feature_spec, merge_specs, read_metadata, write_metadata

__all__ = ["load_prepared", "write_split", "shard_name"]


def shard_name(split: str, shard: int, num_shards: int) -> str:
    """``train-00001-of-00004.array_record``."""
    return f"{split}-{shard:05d}-of-{num_shards:05d}.array_record"


def load_prepared(directory: str | Path, split: str = "train", *, skip_corrupt: bool = False) -> grain.MapDataset:
    """Read ``split`` of a prepared folder as a ``grain.MapDataset`` of example dicts.

    ``skip_corrupt=True`` drops unreadable records, logging each one; to also get the list,
    build ``ArrayRecordSource(paths, features=..., skip_corrupt=True)`` and read ``.skipped``.
    """
    meta = read_metadata(directory)
    splits = meta.get("splits", {})
    if split not in splits:
        raise UnknownKeyError(f"{directory}: no split {split!r}; {METADATA_FILE} lists {sorted(splits)}.")
    info = splits[split]
    source = ArrayRecordSource([Path(directory) / s for s in info["shards"]], features=meta["features"],
                               skip_corrupt=skip_corrupt)
    if len(source) != info["num_examples"]:
        raise DataError(f"{directory}: split {split!r} shards hold {len(source)} records but {METADATA_FILE} "
                        f"says {info['num_examples']}. A shard is missing or was replaced; re-prepare.")
    return grain.MapDataset.source(source)


def _staging_folder(directory: Path) -> Path:
    """A new hidden folder beside ``directory`` (in its nearest existing parent), on the same file system."""
    parent = directory.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=parent))


def _write_shards(folder: Path, names: list[str], split: str, examples: Iterable[Mapping[str, Any]],
                  num_examples: int | None) -> tuple[dict[str, Any], int]:
    """Write ``examples`` into the shards ``names`` in ``folder``; their features and count."""
    writers = [array_record_module.ArrayRecordWriter(str(folder / n), WRITER_OPTIONS) for n in names]
    features: dict[str, Any] = {}
    count = 0
    try:
        for count, example in enumerate(examples, start=1):
            if features and set(example) != set(features):
                raise DataError(f"example {count - 1} of split {split!r} has features {sorted(example)}, "
                                f"example 0 has {sorted(features)}. Every example needs the same keys.")
            for key, value in example.items():
                spec = feature_spec(value)
                features[key] = merge_specs(features[key], spec, key) if key in features else spec
            shard = 0 if len(names) == 1 else min((count - 1) * len(names) // num_examples, len(names) - 1)
            writers[shard].write(encode_example(example))
    finally:
        for writer in writers:
            writer.close()
    if num_examples is not None and count != num_examples:
        raise DataError(f"split {split!r}: num_examples={num_examples} but {count} examples came.")
    if not count:
        raise DataError(f"split {split!r} has no examples: nothing was written.")
    return features, count


def write_split(directory: str | Path, split: str, examples: Iterable[Mapping[str, Any]], *,
                num_shards: int = 1, num_examples: int | None = None,
                info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``examples`` as ``num_shards`` ArrayRecord files and record them in ``metadata.json``.

    Nothing in ``directory`` changes unless every example is good: the shards are written
    beside it first and moved in at the end (a bad example leaves the folder as it was,
    or absent). ``examples`` is consumed once, streaming (wrap it in ``tqdm`` for progress). Shards
    are contiguous, so the dataset keeps the order of ``examples``; with more than one
    shard the count must be known (``len(examples)`` or ``num_examples``). Other splits
    already in the folder are kept (their features must agree). Returns the metadata.
    """
    directory = Path(directory)
    try:
        meta = read_metadata(directory)
    except FileNotFoundError:
        meta = {"features": {}, "splits": {}, "info": {}}
    if num_examples is None and hasattr(examples, "__len__"):
        num_examples = len(examples)
    if num_shards < 1 or (num_shards > 1 and num_examples is None):
        raise ConfigError(f"num_shards={num_shards}: give a positive count, and num_examples when sharding "
                         f"a stream without len().")
    names = [shard_name(split, i, num_shards) for i in range(num_shards)]
    staging = _staging_folder(directory)  # shards are written here and moved in only once all examples are good
    try:
        features, count = _write_shards(staging, names, split, examples, num_examples)
        if meta["features"]:
            if set(meta["features"]) != set(features):
                raise DataError(f"split {split!r} has features {sorted(features)}, but the folder's other "
                                f"splits have {sorted(meta['features'])}. Use another --out folder.")
            features = {k: merge_specs(meta["features"][k], v, k) for k, v in features.items()}
        directory.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.move(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in set(meta["splits"].get(split, {}).get("shards", [])) - set(names):
        (directory / old).unlink(missing_ok=True)
    meta["features"] = features
    meta["splits"][split] = {"num_examples": count, "shards": names}
    meta["info"] = {**meta.get("info", {}), **(info or {})}
    meta.pop("format", None)
    write_metadata(directory, meta)
    return read_metadata(directory)
