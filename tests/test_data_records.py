"""The record format and metadata: exact round trips, no pickle, clear refusals."""

import json
import struct
import zlib

import numpy as np
import pytest

from baobab import data
from baobab.data import _metadata, _records

DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "float16", "float32", "float64", "complex64", ">i4", "<f8"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_round_trip_bit_exactly(dtype):
    rng = np.random.default_rng(0)
    value = (rng.standard_normal((3, 4, 2)) * 100).astype(dtype)
    back = data.decode_example(data.encode_example({"v": value}))["v"]
    assert back.dtype == value.dtype and back.shape == value.shape
    assert back.tobytes() == value.tobytes()
    assert back.flags.writeable


def test_scalars_bytes_str_and_empty_arrays_round_trip():
    example = {"label": 7, "weight": 0.5, "flag": True, "png": b"\x89PNG\x00\xff", "text": "héllo ✓",
               "empty": np.zeros((0, 3), np.float32), "scalar": np.int32(4), "non_contiguous": np.eye(3)[:, ::2]}
    back = data.decode_example(data.encode_example(example))
    assert back["label"].dtype == np.int64 and back["label"] == 7
    assert back["weight"].dtype == np.float64 and back["flag"].dtype == np.bool_
    assert back["png"] == example["png"] and back["text"] == example["text"]
    assert back["empty"].shape == (0, 3) and back["scalar"].dtype == np.int32
    np.testing.assert_array_equal(back["non_contiguous"], example["non_contiguous"])
    assert list(back) == list(example)


def test_the_documented_layout_is_what_is_written():
    raw = data.encode_example({"ab": np.array([1, 2], np.uint8)})
    assert raw[:4] == b"BBR1" and struct.unpack_from("<H", raw, 4) == (1,)
    assert struct.unpack_from("<H", raw, 6) == (2,) and raw[8:10] == b"ab"
    assert raw[10] == 0 and raw[11] == 3 and raw[12:15] == b"|u1"   # kind array, dtype "|u1"
    assert raw[15] == 1 and struct.unpack_from("<I", raw, 16) == (2,)  # ndim 1, dim 2
    assert struct.unpack_from("<Q", raw, 20) == (2,) and raw[28:30] == b"\x01\x02"
    assert struct.unpack_from("<I", raw, 30) == (zlib.crc32(raw[:30]),) and len(raw) == 34


@pytest.mark.parametrize("value", [np.array([object()]), np.array(["2020-01-01"], dtype="datetime64[s]"),
                                   np.zeros(2, dtype=[("a", "i4")])])
def test_object_and_structured_arrays_are_refused(value):
    with pytest.raises(data.DataError, match="cannot store"):
        data.encode_example({"bad": value})


def test_a_flipped_byte_fails_the_checksum_with_the_place():
    raw = bytearray(data.encode_example({"x": np.arange(10)}))
    raw[20] ^= 0xFF
    with pytest.raises(data.CorruptRecordError, match=r"shard\.ar record 3: checksum mismatch"):
        data.decode_example(bytes(raw), where="shard.ar record 3")


def test_truncated_and_foreign_records_are_named():
    raw = data.encode_example({"x": np.arange(10)})
    with pytest.raises(data.CorruptRecordError, match="checksum mismatch"):
        data.decode_example(raw[:-7], where="r")
    with pytest.raises(data.CorruptRecordError, match="not a baobab record"):
        data.decode_example(b"\x80\x04\x95pickle-bytes", where="r")


def test_a_record_with_a_valid_checksum_but_a_disallowed_dtype_is_refused():
    body = bytearray(data.encode_example({"x": np.arange(2, dtype=np.int64)})[:-4])
    body[body.index(b"<i8"):body.index(b"<i8") + 3] = b"|O8"
    raw = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(data.CorruptRecordError, match="disallowed dtype"):
        data.decode_example(raw)


def test_non_dict_examples_and_non_str_keys_are_refused():
    with pytest.raises(data.DataError, match="non-empty dict"):
        data.encode_example([1, 2])
    with pytest.raises(data.DataError, match="keys must be str"):
        data.encode_example({1: 2})


def test_feature_specs_merge_variable_dims_and_reject_kind_changes():
    a = _metadata.feature_spec(np.zeros((5, 3), np.int32))
    b = _metadata.feature_spec(np.zeros((7, 3), np.int32))
    assert _metadata.merge_specs(a, b, "t") == {"kind": "array", "dtype": "int32", "shape": [None, 3]}
    with pytest.raises(data.DataError, match="changes between examples"):
        _metadata.merge_specs(a, _metadata.feature_spec("text"), "t")


def test_check_features_names_the_place_and_key():
    features = {"image": {"kind": "array", "dtype": "uint8", "shape": [28, 28, 1]}}
    _metadata.check_features({"image": np.zeros((28, 28, 1), np.uint8)}, features, "f record 0")
    with pytest.raises(data.DataError, match=r"f record 9: feature 'image' has shape \(27, 28, 1\)"):
        _metadata.check_features({"image": np.zeros((27, 28, 1), np.uint8)}, features, "f record 9")
    with pytest.raises(data.DataError, match="has features"):
        _metadata.check_features({"img": np.zeros((28, 28, 1), np.uint8)}, features, "f record 9")


def test_metadata_from_another_tool_is_refused(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "other/2"}))
    with pytest.raises(data.DataError, match="expected 'baobab.data/1'"):
        data.read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(data.DataError, match="not valid JSON"):
        data.read_metadata(tmp_path)


def test_the_module_never_uses_pickle():
    source = open(_records.__file__).read()
    assert "pickle" not in source.replace("never use pickle", "")
