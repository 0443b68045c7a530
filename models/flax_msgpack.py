"""Flax ``flax_model.msgpack`` files, read and written with plain ``msgpack`` (no flax, no pickle).

DALL·E Mini's released weights (``dalle-mini/dalle-mini``, ``dalle-mega``,
``vqgan_imagenet_f16_16384``) are Flax parameter trees serialised by
``flax.serialization.to_bytes``. The format is simple and has no code in it:

* nested msgpack maps, one per module, keyed by name;
* each array is a msgpack extension of type 1 whose payload is itself msgpack of
  ``(shape, dtype name, row-major bytes)`` (type 3 is the same for a numpy scalar);
* an array over 1 GiB is stored as a map ``{"__msgpack_chunked_array__": True,
  "shape": {"0": ..}, "chunks": {"0": <flat array>, ..}}`` to be concatenated.

``read_flax_msgpack`` returns the leaves flattened to ``/``-joined paths
(``model/encoder/embed_tokens/embedding``), which is how the import tables name
them. ``write_flax_msgpack`` writes the same format (tests use it to build files in
a real checkpoint's layout from random weights).

>>> import numpy as np, pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "flax_model.msgpack"
>>> write_flax_msgpack(path, {"lm_head/kernel": np.ones((2, 3), np.float16)})
>>> {k: (v.shape, str(v.dtype)) for k, v in read_flax_msgpack(path).items()}
{'lm_head/kernel': ((2, 3), 'float16')}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import msgpack
import numpy as np

from baobab.errors import CheckpointError, MissingFileError

__all__ = ["read_flax_msgpack", "write_flax_msgpack", "MAX_CHUNK_BYTES"]

MAX_CHUNK_BYTES = 2**30  # flax's limit per stored array; bigger ones are chunked
_NDARRAY, _NPSCALAR = 1, 3
_CHUNKED = "__msgpack_chunked_array__"


def _dtype(name: bytes | str) -> np.dtype:
    name = name.decode() if isinstance(name, bytes) else name
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _array_from_ext(code: int, data: bytes) -> Any:
    if code not in (_NDARRAY, _NPSCALAR):
        raise ValueError(f"msgpack extension type {code} is not an array (flax writes type 1 or 3)")
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    array = np.frombuffer(buffer, dtype=_dtype(dtype_name)).reshape(shape)
    return array if code == _NDARRAY else array[()]


def _flatten(tree: Mapping, prefix: str, out: dict[str, np.ndarray], path: Path) -> None:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and _CHUNKED in value:
            shape = tuple(int(value["shape"][str(i)]) for i in range(len(value["shape"])))
            chunks = [value["chunks"][str(i)] for i in range(len(value["chunks"]))]
            out[name] = np.concatenate(chunks).reshape(shape)
        elif isinstance(value, Mapping):
            _flatten(value, f"{name}/", out, path)
        elif isinstance(value, np.ndarray | np.generic):
            out[name] = np.asarray(value)
        else:
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not an array: this is not a "
                                  f"Flax parameter file.")


def read_flax_msgpack(path: str | Path) -> dict[str, np.ndarray]:
    """Every array in a Flax msgpack file, by ``/``-joined path, in its stored dtype (read-only views)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file (expected a Flax `flax_model.msgpack`).")
    try:
        tree = msgpack.unpackb(path.read_bytes(), ext_hook=_array_from_ext, raw=False, strict_map_key=False)
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException) as err:
        raise CheckpointError(f"{path}: not a readable Flax msgpack file ({type(err).__name__}: {err}); "
                              f"the file may be truncated or not msgpack at all.") from None
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{path}: the file holds a {type(tree).__name__}, not a Flax parameter tree (a map).")
    out: dict[str, np.ndarray] = {}
    _flatten(tree, "", out, path)
    return out


def _nest(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{name!r}: {part!r} is both an array and a folder")
        node[leaf] = value
    return tree


def _to_ext(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        payload = msgpack.packb((list(value.shape), value.dtype.name, np.ascontiguousarray(value).tobytes()),
                                use_bin_type=True)
        return msgpack.ExtType(_NDARRAY, payload)
    return value


def _chunked(tree: Any, max_bytes: int) -> Any:
    if isinstance(tree, dict):
        return {k: _chunked(v, max_bytes) for k, v in tree.items()}
    array = np.asarray(tree)
    if array.nbytes <= max_bytes:
        return array
    size = max(1, max_bytes // array.dtype.itemsize)
    flat = array.reshape(-1)
    return {_CHUNKED: True, "shape": {str(i): n for i, n in enumerate(array.shape)},
            "chunks": {str(j): flat[i:i + size] for j, i in enumerate(range(0, flat.size, size))}}


def write_flax_msgpack(path: str | Path, params: Mapping[str, Any], *, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> None:
    """Write ``params`` (a nested dict, or a flat ``/``-joined one) as flax ``to_bytes`` would.

    Arrays larger than ``max_chunk_bytes`` are stored chunked, as flax does above 1 GiB.
    """
    flat = all(not isinstance(v, Mapping) for v in params.values())
    tree = _nest({k: np.asarray(v) for k, v in params.items()}) if flat else params
    Path(path).write_bytes(msgpack.packb(_chunked(tree, max_chunk_bytes), default=_to_ext, use_bin_type=True))
