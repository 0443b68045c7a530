"""Each source: numpy dicts, ArrayRecord files and prepared folders, TFDS without
TensorFlow, image folders, text corpora, and the embedded MNIST."""

import io

import grain
import numpy as np
import pytest
from PIL import Image

from baobab import data


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


# -- numpy dicts --------------------------------------------------------------------------
def test_from_arrays_indexes_every_feature_and_works_in_grain():
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    ds = data.from_arrays({"x": x, "y": np.arange(6) % 2, "name": np.array(list("abcdef"))})
    assert len(ds) == 6 and isinstance(ds, grain.MapDataset)
    np.testing.assert_array_equal(ds[2]["x"], x[2])
    assert str(ds[5]["name"]) == "f"
    assert ds.batch(3)[1]["y"].tolist() == [1, 0, 1]  # an ordinary grain dataset


def test_npz_loads_without_pickle(tmp_path):
    np.savez(tmp_path / "ok.npz", a=np.arange(3))
    assert data.load_npz(tmp_path / "ok.npz")["a"].tolist() == [0, 1, 2]
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(data.DataError, match="without pickle"):
        data.load_npz(tmp_path / "obj.npz")


# -- ArrayRecord ----------------------------------------------------------------------------
def test_array_record_files_read_back_in_order_across_files(tmp_path):
    first = [{"i": np.int64(i), "v": np.full(i + 1, i, np.int16)} for i in range(5)]
    second = [{"i": np.int64(i), "v": np.full(i + 1, i, np.int16)} for i in range(5, 8)]
    assert data.write_array_record(tmp_path / "a.array_record", first) == 5
    data.write_array_record(tmp_path / "b.array_record", second)
    source = data.ArrayRecordSource([tmp_path / "a.array_record", tmp_path / "b.array_record"])
    assert len(source) == 8
    assert [int(source[i]["i"]) for i in range(8)] == list(range(8))
    assert source[6]["v"].tolist() == [6] * 7
    with pytest.raises(IndexError):
        source[8]


def test_array_record_source_pickles_for_worker_processes(tmp_path):
    import pickle  # the *test* checks picklability of the source object; records never use pickle

    data.write_array_record(tmp_path / "a.array_record", [{"x": np.arange(3)}])
    source = data.ArrayRecordSource(tmp_path / "a.array_record")
    source[0]
    clone = pickle.loads(pickle.dumps(source))
    assert clone[0]["x"].tolist() == [0, 1, 2]


def test_prepared_folder_round_trip_with_shards_and_two_splits(tmp_path):
    train = [{"x": np.full(3, i, np.float32), "y": np.int32(i % 4), "t": f"doc {i}"} for i in range(11)]
    data.write_split(tmp_path, "train", train, num_shards=3, info={"note": "toy"})
    meta = data.write_split(tmp_path, "test", train[:2])
    assert meta["splits"]["train"]["num_examples"] == 11
    assert len(meta["splits"]["train"]["shards"]) == 3 and meta["info"]["note"] == "toy"
    assert meta["features"]["x"] == {"kind": "array", "dtype": "float32", "shape": [3]}
    assert meta["features"]["t"] == {"kind": "str"}
    ds = data.load_prepared(tmp_path, "train")
    assert [int(ds[i]["y"]) for i in range(11)] == [i % 4 for i in range(11)]  # order kept across shards
    assert ds[10]["t"] == "doc 10" and len(data.load_prepared(tmp_path, "test")) == 2


def test_variable_length_features_are_recorded_as_none(tmp_path):
    meta = data.write_split(tmp_path, "train", [{"tokens": np.arange(n, dtype=np.int32)} for n in (3, 5, 4)])
    assert meta["features"]["tokens"]["shape"] == [None]
    assert data.load_prepared(tmp_path, "train")[1]["tokens"].tolist() == [0, 1, 2, 3, 4]


# -- TFDS without TensorFlow -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A small TFDS GeneratorBasedBuilder prepared offline as ArrayRecord."""
    import tensorflow_datasets as tfds

    class BaobabTinyDigits(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=3),
                "x": tfds.features.Tensor(shape=(2,), dtype=np.float32)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12), "test": self._generate_examples(4)}

        def _generate_examples(self, n):
            for i in range(n):
                image = np.full((8, 8), i * 10, np.uint8)
                yield i, {"image": _png(image), "label": i % 3, "x": np.array([i, -i], np.float32)}

    root = tmp_path_factory.mktemp("tfds")
    builder = BaobabTinyDigits(data_dir=str(root), file_format="array_record")
    builder.download_and_prepare()
    return root, builder.data_dir


def test_tfds_dataset_reads_by_name_and_by_folder(tfds_dir):
    root, version_dir = tfds_dir
    ds = data.from_tfds("baobab_tiny_digits", split="train", data_dir=root)
    assert len(ds) == 12
    seen = sorted(int(ds[i]["x"][0]) for i in range(12))
    assert seen == list(range(12))
    example = ds[0]
    assert example["image"].shape == (8, 8, 1) and example["image"].dtype == np.uint8
    assert int(example["image"][0, 0, 0]) == 10 * int(example["x"][0])
    sliced = data.from_tfds(version_dir, split="test[:2]")
    assert len(sliced) == 2


def test_tfds_dataset_runs_through_a_loader(tfds_dir):
    root, _ = tfds_dir
    ds = data.from_tfds("baobab_tiny_digits", split="train", data_dir=root)
    loader = data.train_loader(ds, batch_size=4, transforms=[data.Normalize()], num_epochs=1, seed=0)
    with iter(loader) as it:
        xs = np.concatenate([b["x"][:, 0] for b in it])
    assert sorted(xs.tolist()) == list(range(12))


# -- image folders ---------------------------------------------------------------------------
@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    for label, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(3):
            rgb = np.full((6, 5, 3), 40 * label + i, np.uint8)
            suffix, fmt = (".png", "PNG") if i < 2 else (".jpg", "JPEG")
            (root / name / f"{i}{suffix}").write_bytes(_png(rgb, fmt))
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_labels_by_sorted_class_name(image_root):
    source = data.ImageFolderSource(image_root)
    assert source.classes == ["cat", "dog"] and len(source) == 6
    assert source.labels.tolist() == [0, 0, 0, 1, 1, 1]
    example = source[4]
    assert example["image"].shape == (6, 5, 3) and example["image"].dtype == np.uint8
    assert int(example["image"][0, 0, 0]) == 41 and example["label"] == 1
    grey = data.image_folder(image_root, mode="L")[0]["image"]
    assert grey.shape == (6, 5, 1)


def test_image_folder_can_keep_encoded_bytes_for_decode_transform(image_root):
    ds = data.image_folder(image_root, decode=False).map(data.DecodeImage()).map(data.Resize((4, 4)))
    assert ds[0]["image"].shape == (4, 4, 3)


# -- text corpora -----------------------------------------------------------------------------
def test_text_corpus_units(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("para one\nline two\n\npara two\n")
    b.write_text("only line\n")
    assert [e["text"] for e in data.text_corpus([a, b])] == [a.read_text(), b.read_text()]
    assert [e["text"] for e in data.text_corpus([a, b], unit="paragraph")] == \
        ["para one\nline two", "para two\n", "only line\n"]
    assert len(data.text_corpus([a, b], unit="line")) == 4


def test_stdlib_corpus_is_real_python_source():
    files = data.stdlib_text_files()
    assert len(files) > 300 and all(f.suffix == ".py" for f in files)
    assert not any("site-packages" in f.parts for f in files)
    ds = data.text_corpus(files[:20])
    assert any("def " in ds[i]["text"] for i in range(20))


# -- embedded MNIST -----------------------------------------------------------------------------
def test_embedded_mnist_is_real_stratified_and_small():
    train, test = data.mnist("train"), data.mnist("test")
    assert (len(train), len(test)) == (4000, 1000)
    labels = np.array([int(test[i]["label"]) for i in range(1000)])
    assert np.bincount(labels).tolist() == [100] * 10
    image = train[0]["image"]
    assert image.shape == (28, 28, 1) and image.dtype == np.uint8 and image.max() > 200
    size = sum(p.stat().st_size for p in data.MNIST_DIR.iterdir() if p.suffix in (".array_record", ".json"))
    assert size <= 2 * 1024 * 1024
    assert (data.MNIST_DIR / "README.md").read_text().count("CC BY-SA 3.0") >= 1
    with pytest.raises(KeyError, match="'train'"):
        data.mnist("validation")
