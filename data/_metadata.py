"""``metadata.json``: what a prepared dataset folder holds (features, splits, counts).

A prepared folder looks like::

    my_data/
      metadata.json
      train-00000-of-00002.array_record
      train-00001-of-00002.array_record
      test-00000-of-00001.array_record

and ``metadata.json`` like::

    {"format": "baobab.data/1",
     "features": {"image": {"kind": "array", "dtype": "uint8", "shape": [28, 28, 1]},
                  "label": {"kind": "array", "dtype": "int32", "shape": []},
                  "text":  {"kind": "str"}},
     "splits": {"train": {"num_examples": 4000, "shards": ["train-00000-of-00002.array_record", ...]}},
     "info": {...free-form: source, licence, label names...}}

``shape`` uses ``null`` for a dimension that varies between examples. Readers check
every record against ``features``, so a wrong shape is reported with its file and index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from baobab.errors import MissingFileError

from ._errors import DataError

__all__ = ["FORMAT", "METADATA_FILE", "read_metadata", "write_metadata", "feature_spec",
           "merge_specs", "check_features"]

FORMAT = "baobab.data/1"
METADATA_FILE = "metadata.json"
Spec = dict[str, Any]


def feature_spec(value: Any) -> Spec:
    """The metadata entry for one feature value: kind, and dtype/shape for arrays."""
    if isinstance(value, str):
        return {"kind": "str"}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"kind": "bytes"}
    array = np.asarray(value)
    return {"kind": "array", "dtype": array.dtype.name, "shape": list(array.shape)}


def merge_specs(old: Spec, new: Spec, key: str) -> Spec:
    """Join two specs of one feature: differing dimensions become ``None`` (variable)."""
    if old["kind"] != new["kind"] or old.get("dtype") != new.get("dtype") or \
            len(old.get("shape", ())) != len(new.get("shape", ())):
        raise DataError(f"feature {key!r} changes between examples: {old} then {new}. Every example "
                        f"must have the same kinds, dtypes and ranks; convert them before preparing.")
    if old["kind"] != "array":
        return old
    shape = [a if a == b else None for a, b in zip(old["shape"], new["shape"], strict=True)]
    return {**old, "shape": shape}


def check_features(example: Mapping[str, Any], features: Mapping[str, Spec], where: str) -> None:
    """Raise ``DataError`` naming ``where`` and the key if ``example`` disagrees with ``features``."""
    if len(example) != len(features) or any(k not in features for k in example):
        raise DataError(f"{where}: has features {sorted(example)}, metadata says {sorted(features)}. "
                        f"The file does not belong to this dataset; re-prepare it.")
    for key, spec in features.items():
        value = example[key]
        if spec["kind"] == "array" and isinstance(value, np.ndarray) and value.dtype == spec["dtype"] \
                and value.ndim == len(spec["shape"]):
            if all(w is None or w == s for s, w in zip(value.shape, spec["shape"])):
                continue  # the common case, checked cheaply
            raise DataError(f"{where}: feature {key!r} has shape {value.shape}, metadata says "
                            f"{tuple(spec['shape'])} (None = any). Re-prepare the dataset or fix the writer.")
        got = feature_spec(value)
        if got["kind"] != spec["kind"] or got.get("dtype") != spec.get("dtype"):
            raise DataError(f"{where}: feature {key!r} is {got}, metadata says {spec}. Re-prepare the "
                            f"dataset, or fix metadata.json if the files are right.")
        if spec["kind"] == "array" and len(got["shape"]) != len(spec["shape"]):
            raise DataError(f"{where}: feature {key!r} has shape {tuple(got['shape'])}, metadata says "
                            f"{tuple(spec['shape'])} (None = any). Re-prepare the dataset or fix the writer.")


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """Load and check ``directory/metadata.json``."""
    path = Path(directory) / METADATA_FILE
    if not Path(directory).is_dir():
        raise MissingFileError(f"dataset folder {str(directory)!r} does not exist. Create it with "
                                f"`baobab data prepare ... --out {directory}`.")
    if not path.is_file():
        raise MissingFileError(f"{path} is missing: {directory!r} is not a prepared dataset. Create it "
                                f"with `baobab data prepare ... --out {directory}`.")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err}); re-prepare the dataset.") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: format is {meta.get('format') if isinstance(meta, dict) else meta!r:.60}, "
                        f"expected {FORMAT!r}. It was written by another tool or version.")
    return meta


def write_metadata(directory: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write ``metadata.json`` (sorted keys, indented, so diffs read well)."""
    path = Path(directory) / METADATA_FILE
    path.write_text(json.dumps({"format": FORMAT, **meta}, indent=1, sort_keys=True) + "\n")
    return path
