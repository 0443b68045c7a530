"""The record format: one example (a dict of arrays, bytes and strings) as bytes.

Records are self-describing and never use pickle, so reading untrusted files can
only fail, not execute code. All integers are little-endian::

    record  := b"BBR1"  u16 n_features  feature * n_features  u32 crc32
    feature := u16 key_len  key (UTF-8)
               u8 kind      (0 = numpy array, 1 = bytes, 2 = UTF-8 str)
               u8 dtype_len dtype (ASCII numpy ``dtype.str``, e.g. "<f4", "|u1";
                               empty for bytes and str)
               u8 ndim      u32 dim * ndim   (0 for bytes and str)
               u64 nbytes   payload (C-order array bytes, raw bytes or UTF-8 text)

``crc32`` (``zlib.crc32``) covers every byte before it. Arrays may have any bool,
integer, unsigned, float or complex dtype; the byte order is part of ``dtype.str``,
so files move between machines. Python ``int``/``float``/``bool`` become 0-d
arrays (``int64``/``float64``/``bool``).

>>> import numpy as np
>>> from baobab import data
>>> raw = data.encode_example({"image": np.zeros((2, 2), np.uint8), "label": 3, "id": "a"})
>>> ex = data.decode_example(raw)
>>> ex["image"].shape, ex["image"].dtype, int(ex["label"]), ex["id"]
((2, 2), dtype('uint8'), 3, 'a')
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Mapping

import numpy as np

from ._errors import CorruptRecordError, DataError

__all__ = ["MAGIC", "encode_example", "decode_example", "Example"]

#: The first four bytes of every record.
MAGIC = b"BBR1"
Example = dict[str, Any]

_ARRAY, _BYTES, _STR = 0, 1, 2
_ALLOWED_KINDS = "biufc"  # bool, int, uint, float, complex: no object/void/datetime
_HEAD = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def _as_payload(key: str, value: Any) -> tuple[int, str, tuple[int, ...], bytes]:
    if isinstance(value, str):
        return _STR, "", (), value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _BYTES, "", (), bytes(value)
    array = np.asarray(value)
    if array.dtype.kind not in _ALLOWED_KINDS:
        raise DataError(
            f"feature {key!r} has dtype {array.dtype}, which the record format cannot store "
            f"(it holds bool/int/uint/float/complex arrays, bytes and str). Convert it, e.g. "
            f"encode text as str and images as uint8 arrays or PNG bytes."
        )
    return _ARRAY, array.dtype.str, array.shape, np.ascontiguousarray(array).tobytes()


def encode_example(example: Mapping[str, Any]) -> bytes:
    """Serialise one example (``{key: array | bytes | str | number}``) to record bytes."""
    if not isinstance(example, Mapping) or not example:
        raise DataError(f"an example must be a non-empty dict of features; got {type(example).__name__} "
                        f"{example!r:.80}.")
    parts = [MAGIC, _HEAD.pack(len(example))]
    for key, value in example.items():
        if not isinstance(key, str):
            raise DataError(f"feature keys must be str; got {key!r} ({type(key).__name__}).")
        kind, dtype, shape, payload = _as_payload(key, value)
        name = key.encode("utf-8")
        parts += [_HEAD.pack(len(name)), name, bytes([kind, len(dtype)]), dtype.encode("ascii"),
                  bytes([len(shape)]), struct.pack(f"<{len(shape)}I", *shape), _U64.pack(len(payload)), payload]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode_example(record: bytes, *, where: str = "record") -> Example:
    """Parse record bytes back into a dict; arrays come back writable, in their dtype.

    Raises ``CorruptRecordError`` naming ``where`` if the record is truncated, fails its
    checksum, or is not in this format.
    """
    view = memoryview(record)
    if len(view) < 10 or view[:4] != MAGIC:
        raise CorruptRecordError(
            f"{where}: not a baobab record (expected {len(MAGIC)}-byte magic {MAGIC!r}, got "
            f"{bytes(view[:4])!r}, {len(view)} bytes). The file was written by something else or is "
            f"corrupt; re-create it with `baobab data prepare` or `baobab.data.write_array_record`."
        )
    (stored,) = _CRC.unpack_from(view, len(view) - 4)
    if zlib.crc32(view[:-4]) != stored:
        raise CorruptRecordError(
            f"{where}: checksum mismatch ({len(view)} bytes): the record is truncated or corrupt. "
            f"Re-create the file, or pass skip_corrupt=True (data.skip_corrupt=true in a run) to skip (and "
            f"count) such records."
        )
    try:
        return _parse(view[:-4])
    except (struct.error, ValueError, TypeError, UnicodeDecodeError) as err:  # checksum passed: a writer bug
        raise CorruptRecordError(f"{where}: malformed record ({err}).") from err


def _parse(view: memoryview) -> Example:
    (count,) = _HEAD.unpack_from(view, 4)
    pos, out = 6, {}
    for _ in range(count):
        (key_len,) = _HEAD.unpack_from(view, pos)
        key = bytes(view[pos + 2:pos + 2 + key_len]).decode("utf-8")
        pos += 2 + key_len
        kind, dtype_len = view[pos], view[pos + 1]
        dtype = bytes(view[pos + 2:pos + 2 + dtype_len]).decode("ascii")
        pos += 2 + dtype_len
        ndim = view[pos]
        shape = struct.unpack_from(f"<{ndim}I", view, pos + 1)
        pos += 1 + 4 * ndim
        (nbytes,) = _U64.unpack_from(view, pos)
        payload = view[pos + 8:pos + 8 + nbytes]
        if len(payload) != nbytes:
            raise ValueError(f"feature {key!r} wants {nbytes} bytes, {len(payload)} remain")
        pos += 8 + nbytes
        if kind == _STR:
            out[key] = bytes(payload).decode("utf-8")
        elif kind == _BYTES:
            out[key] = bytes(payload)
        elif kind == _ARRAY:
            dt = np.dtype(dtype)
            if dt.kind not in _ALLOWED_KINDS:
                raise ValueError(f"feature {key!r} has disallowed dtype {dtype!r}")
            out[key] = np.frombuffer(payload, dtype=dt).reshape(shape).copy()
        else:
            raise ValueError(f"feature {key!r} has unknown kind {kind}")
    if pos != len(view):
        raise ValueError(f"{len(view) - pos} trailing bytes")
    return out
