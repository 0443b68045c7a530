"""Every bad input gets one clear error naming the file, index or key; corrupt records
are skipped only on request, and then counted and reported."""

import json
import logging
import os
import shutil

import grain
import numpy as np
import pytest

from baobab import data
from baobab.data._metadata import METADATA_FILE


def _write(path, n=50, size=400):
    rng = np.random.default_rng(0)
    data.write_array_record(path, [{"i": np.int64(i), "v": rng.integers(0, 255, size, dtype=np.uint8)}
                                   for i in range(n)])
    return path


def _flip_record_bytes(path, offset=2000, count=40):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(count))


# -- missing files and folders --------------------------------------------------------------------------
def test_missing_array_record_file_names_it(tmp_path):
    _write(tmp_path / "a.array_record", n=2)
    with pytest.raises(FileNotFoundError, match=r"b\.array_record' does not exist\. Files there: \['a\.array_record'\]"):
        data.ArrayRecordSource(tmp_path / "b.array_record")


def test_missing_or_unprepared_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*baobab data prepare"):
        data.load_prepared(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="metadata.json is missing"):
        data.load_prepared(tmp_path)
    with pytest.raises(data.DataError, match="is a folder"):
        data.ArrayRecordSource(tmp_path)


def test_missing_split_and_missing_shard(tmp_path):
    data.write_split(tmp_path, "train", [{"x": np.zeros(2)}] * 4, num_shards=2)
    with pytest.raises(KeyError, match=r"no split 'test'.*\['train'\]"):
        data.load_prepared(tmp_path, "test")
    os.remove(tmp_path / "train-00001-of-00002.array_record")
    with pytest.raises(FileNotFoundError, match="train-00001-of-00002.array_record' does not exist"):
        data.load_prepared(tmp_path, "train")


def test_missing_image_folder_text_file_npz_tokenizer_and_tfds(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder .* does not exist"):
        data.image_folder(tmp_path / "images")
    with pytest.raises(FileNotFoundError, match=r"text file '.*a\.txt' does not exist"):
        data.text_corpus([tmp_path / "a.txt"])
    with pytest.raises(FileNotFoundError, match="numpy file"):
        data.load_npz(tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError, match="tokenizer file"):
        data.Tokenize(tmp_path / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match="TFDS dataset 'nothing_here' was not found"):
        data.from_tfds("nothing_here", data_dir=tmp_path)


# -- corrupted and truncated records --------------------------------------------------------------------
def test_corrupted_record_names_file_and_index(tmp_path):
    path = _write(tmp_path / "c.array_record")
    _flip_record_bytes(path)
    source = data.ArrayRecordSource(path)
    bad = []
    for i in range(len(source)):
        try:
            source[i]
        except data.CorruptRecordError as err:
            bad.append((i, str(err)))
    assert len(bad) == 1
    index, message = bad[0]
    assert f"c.array_record record {index}" in message and "skip_corrupt=True" in message


def test_corrupt_payload_with_a_valid_container_fails_our_checksum(tmp_path):
    from array_record.python import array_record_module

    good = data.encode_example({"x": np.arange(8)})
    tampered = good[:12] + bytes([good[12] ^ 1]) + good[13:]
    writer = array_record_module.ArrayRecordWriter(str(tmp_path / "t.array_record"), "group_size:1")
    for record in (good, tampered, b"not ours"):
        writer.write(record)
    writer.close()
    source = data.ArrayRecordSource(tmp_path / "t.array_record")
    assert source[0]["x"].tolist() == list(range(8))
    with pytest.raises(data.CorruptRecordError, match="record 1: checksum mismatch"):
        source[1]
    with pytest.raises(data.CorruptRecordError, match="record 2: not a baobab record"):
        source[2]


def test_truncated_file_is_named_at_open(tmp_path):
    path = _write(tmp_path / "t.array_record")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    with pytest.raises(data.CorruptRecordError, match=r"t\.array_record: cannot open as ArrayRecord.*truncated"):
        data.ArrayRecordSource(path)
    (tmp_path / "zero.array_record").write_bytes(b"")
    with pytest.raises(data.CorruptRecordError, match="zero.array_record"):
        data.ArrayRecordSource(tmp_path / "zero.array_record")


def test_skip_corrupt_counts_reports_and_keeps_the_pipeline_running(tmp_path, caplog):
    path = _write(tmp_path / "c.array_record")
    _flip_record_bytes(path)
    source = data.ArrayRecordSource(path, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="baobab.data"):
        with iter(data.train_loader(source, batch_size=7, num_epochs=1, seed=0)) as it:
            ids = np.concatenate([b["i"] for b in it])
    assert len(source.skipped) == 1
    file, index, reason = source.skipped[0]
    assert file.endswith("c.array_record") and "cannot read" in reason
    assert index not in ids.tolist() and len(ids) == 49 and len(set(ids.tolist())) == 49
    assert "skipped corrupt record (1 so far" in caplog.text and f"record {index}" in caplog.text


def test_an_eval_pass_refuses_skipped_records(tmp_path):
    path = _write(tmp_path / "c.array_record")
    _flip_record_bytes(path)
    loader = data.eval_loader(data.ArrayRecordSource(path, skip_corrupt=True), batch_size=10)
    with iter(loader) as it, pytest.raises(data.DataError, match="An eval pass needs every record"):
        list(it)


def test_prepared_count_mismatch_is_reported(tmp_path):
    data.write_split(tmp_path, "train", [{"x": np.zeros(2)}] * 4)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    meta["splits"]["train"]["num_examples"] = 5
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(data.DataError, match="hold 4 records but metadata.json says 5"):
        data.load_prepared(tmp_path)


# -- wrong feature shapes ---------------------------------------------------------------------------------
def test_record_with_a_wrong_shape_names_file_index_and_key(tmp_path):
    data.write_split(tmp_path, "train", [{"image": np.zeros((4, 4, 1), np.uint8)}] * 3)
    shard = tmp_path / "train-00000-of-00001.array_record"
    data.write_array_record(shard, [{"image": np.zeros((4, 4, 1), np.uint8)}] * 2 +
                            [{"image": np.zeros((4, 5, 1), np.uint8)}])
    ds = data.load_prepared(tmp_path)
    ds[1]
    with pytest.raises(data.DataError, match=r"record 2: feature 'image' has shape \(4, 5, 1\), metadata says \(4, 4, 1\)"):
        ds[2]


def test_mixed_shapes_in_a_batch_name_the_key_and_positions():
    ragged = grain.MapDataset.source([{"tokens": np.zeros(n)} for n in (3, 3, 5, 3)])
    with iter(data.train_loader(ragged, batch_size=4, seed=0)) as it:
        with pytest.raises(data.DataError, match=r"feature 'tokens' has different shapes within one batch: "
                                                 r"\(\d,\) at positions .*data.Pack"):
            next(it)


def test_arrays_with_disagreeing_lengths():
    with pytest.raises(data.DataError, match=r"disagree.*\{'x': 3, 'y': 4\}"):
        data.from_arrays({"x": np.zeros(3), "y": np.zeros(4)})


def test_transform_on_the_wrong_key_or_shape():
    with pytest.raises(data.DataError, match="no feature 'image'.*key="):
        data.Normalize()({"img": np.zeros((2, 2, 1))})
    with pytest.raises(data.DataError, match=r"must be an \(H, W, C\) array, got \(2, 2\)"):
        data.RandomCrop((1, 1))({"image": np.zeros((2, 2))}, np.random.default_rng(0))
    with pytest.raises(data.DataError, match="smaller than the crop"):
        data.RandomCrop((5, 5))({"image": np.zeros((2, 2, 1))}, np.random.default_rng(0))


# -- images that fail to decode ---------------------------------------------------------------------------
def test_undecodable_image_file_is_named(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    source = data.ImageFolderSource(tmp_path / "imgs")
    with pytest.raises(data.DataError, match=r"cat/broken\.png: cannot decode as an image \(78 bytes"):
        source[0]
    with pytest.raises(data.DataError, match="feature 'image': cannot decode"):
        data.DecodeImage()({"image": b"GIF89a-not-really"})
    with pytest.raises(data.DataError, match="should be encoded bytes"):
        data.DecodeImage()({"image": np.zeros((2, 2, 1), np.uint8)})


def test_prepare_refuses_a_folder_with_a_broken_image(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + bytes(20))
    with pytest.raises(data.DataError, match=r"broken\.jpg: cannot decode"):
        data.prepare_image_folder(tmp_path / "imgs", tmp_path / "out", progress=False)


# -- empty datasets ----------------------------------------------------------------------------------------
def test_empty_inputs_are_refused(tmp_path):
    with pytest.raises(data.DataError, match="empty"):
        data.from_arrays({"x": np.zeros((0, 3))})
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    with pytest.raises(data.DataError, match="hold no .png/.jpg/.jpeg files: the dataset is empty"):
        data.image_folder(tmp_path / "imgs")
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(data.DataError, match="no non-blank paragraphs"):
        data.text_corpus([tmp_path / "blank.txt"], unit="paragraph")
    with pytest.raises(data.DataError, match="no examples"):
        data.write_split(tmp_path / "out", "train", [])
    data.write_array_record(tmp_path / "e.array_record", [])
    with pytest.raises(data.DataError, match="hold no records: the dataset is empty"):
        data.ArrayRecordSource(tmp_path / "e.array_record")
    with pytest.raises(data.DataError, match="the dataset is empty"):
        data.train_loader(grain.MapDataset.source([]), batch_size=2).host_dataset()


# -- batch larger than the shard -----------------------------------------------------------------------------
def test_batch_larger_than_the_shard():
    ds = data.from_arrays({"x": np.zeros(10)})
    with pytest.raises(data.DataError, match=r"more than this process's shard of the dataset \(10 of 10"):
        iter(data.train_loader(ds, batch_size=16))
    shard = grain.sharding.ShardOptions(shard_index=1, shard_count=2, drop_remainder=True)
    with pytest.raises(data.DataError, match=r"gives 6 rows per process.*\(5 of 10 examples, process 1 of 2\)"):
        iter(data.train_loader(ds, batch_size=12, shard=shard))
    with pytest.raises(data.DataError, match="multiple of the process count"):
        iter(data.train_loader(ds, batch_size=3, shard=shard))


# -- text and tokenizer files ----------------------------------------------------------------------------------
def test_non_utf8_text_and_bad_tokenizer_json(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(data.DataError, match=r"latin1\.txt: not valid UTF-8 at byte 3.*errors='replace'"):
        data.text_corpus([tmp_path / "latin1.txt"])[0]
    assert data.text_corpus([tmp_path / "latin1.txt"], errors="replace")[0]["text"] == "caf\ufffd"
    (tmp_path / "tokenizer.json").write_text('{"model": 1}')
    with pytest.raises(data.DataError, match="not a valid tokenizer.json"):
        data.Tokenize(tmp_path / "tokenizer.json")


def test_tfds_prepared_as_tfrecord_is_refused_with_the_fix(tmp_path):
    version = tmp_path / "fake_tfrecord_ds" / "1.0.0"
    version.mkdir(parents=True)
    info = {"name": "fake_tfrecord_ds", "version": "1.0.0", "fileFormat": "tfrecord",
            "splits": [{"name": "train", "shardLengths": ["2"], "numBytes": "10",
                        "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}]}
    (version / "dataset_info.json").write_text(json.dumps(info))
    (version / "features.json").write_text(json.dumps({
        "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
        "featuresDict": {"features": {"x": {"pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
                                            "tensor": {"shape": {}, "dtype": "int64", "encoding": "none"}}}}}))
    with pytest.raises(data.DataError, match="(?s)cannot be read without TensorFlow.*file_format='array_record'"):
        data.from_tfds(str(version))
    shutil.rmtree(version)
