"""``models.flax_msgpack`` against flax's own serialisation: files flax wrote read back exactly, and ours load in flax."""

from __future__ import annotations

import flax.serialization
import numpy as np
import pytest

from baobab.errors import CheckpointError, MissingFileError
from baobab.models import flax_msgpack

TREE = {
    "model": {"encoder": {"layers": {"FlaxBartEncoderLayers": {"kernel": np.arange(60, dtype=np.float16).reshape(3, 4, 5)}},
                          "embed_tokens": {"embedding": np.linspace(0, 1, 100, dtype=np.float32).reshape(25, 4)}}},
    "lm_head": {"kernel": np.full((2, 3), 7, np.int32)},
}
FLAT = {"model/encoder/layers/FlaxBartEncoderLayers/kernel": TREE["model"]["encoder"]["layers"]["FlaxBartEncoderLayers"]["kernel"],
        "model/encoder/embed_tokens/embedding": TREE["model"]["encoder"]["embed_tokens"]["embedding"],
        "lm_head/kernel": TREE["lm_head"]["kernel"]}


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("chunk_bytes", [flax.serialization.MAX_CHUNK_SIZE, 64])  # 64: the embedding is chunked
def test_a_file_flax_wrote_reads_back_exactly_chunked_arrays_included(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(flax.serialization, "MAX_CHUNK_SIZE", chunk_bytes)
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(TREE))
    assert_same(flax_msgpack.read_flax_msgpack(path), FLAT)


def test_our_file_loads_in_flax_and_in_our_reader(tmp_path):
    path = tmp_path / "flax_model.msgpack"
    flax_msgpack.write_flax_msgpack(path, FLAT, max_chunk_bytes=64)
    theirs = flax.serialization.msgpack_restore(path.read_bytes())
    np.testing.assert_array_equal(theirs["model"]["encoder"]["embed_tokens"]["embedding"],
                                  TREE["model"]["encoder"]["embed_tokens"]["embedding"])
    np.testing.assert_array_equal(theirs["lm_head"]["kernel"], TREE["lm_head"]["kernel"])
    assert_same(flax_msgpack.read_flax_msgpack(path), FLAT)


def test_damaged_or_foreign_files_are_named_errors(tmp_path):
    good = flax.serialization.msgpack_serialize(TREE)
    cases = {"truncated.msgpack": good[:-10], "text.msgpack": b"\x93not msgpack", "list.msgpack": b"\x92\x01\x02",
             "string_leaf.msgpack": flax.serialization.msgpack_serialize({"a": {"b": "text"}})}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=name):
            flax_msgpack.read_flax_msgpack(tmp_path / name)
    with pytest.raises(MissingFileError, match="missing.msgpack"):
        flax_msgpack.read_flax_msgpack(tmp_path / "missing.msgpack")
