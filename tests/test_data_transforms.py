"""Each transform on its own, and inside a grain dataset (deterministic, seeded)."""

import io

import grain
import numpy as np
import pytest
from PIL import Image

from baobab import data


def _image(h=6, w=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _encoded(array, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format=fmt)
    return buf.getvalue()


def _grain(examples, *transforms, seed=0):
    """Apply transforms through a grain MapDataset (random ones via grain's seeded RNG)."""
    ds = data.apply_transforms(grain.MapDataset.source(examples).seed(seed), transforms)
    return [ds[i] for i in range(len(ds))]


# -- images ----------------------------------------------------------------------------------------
def test_decode_image_png_is_lossless_and_jpeg_close():
    image = _image()
    assert np.array_equal(data.DecodeImage()({"image": _encoded(image)})["image"], image)
    jpeg = data.DecodeImage()({"image": _encoded(image, "JPEG")})["image"]
    assert jpeg.shape == image.shape and jpeg.dtype == np.uint8
    grey = data.DecodeImage(mode="L")({"image": _encoded(image)})["image"]
    assert grey.shape == (6, 8, 1)


def test_decode_inside_grain():
    out = _grain([{"image": _encoded(_image(seed=i)), "label": i} for i in range(3)], data.DecodeImage())
    assert all(np.array_equal(o["image"], _image(seed=i)) for i, o in enumerate(out))


def test_resize_matches_pillow_bilinear():
    image = _image(10, 12, 3)
    out = data.Resize((5, 6))({"image": image})["image"]
    want = np.asarray(Image.fromarray(image).resize((6, 5), Image.Resampling.BILINEAR))
    assert out.shape == (5, 6, 3) and np.array_equal(out, want)
    assert data.Resize((7, 3))({"image": _image(4, 4, 1)})["image"].shape == (7, 3, 1)
    assert _grain([{"image": image}], data.Resize((5, 6)))[0]["image"].shape == (5, 6, 3)


def test_random_crop_is_a_window_of_the_padded_image():
    image = _image(6, 8, 2)
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    for seed in range(30):  # the window drawn by the same rng calls, cut from the padded image
        out = data.RandomCrop((5, 7), padding=2)({"image": image}, np.random.default_rng(seed))["image"]
        rng = np.random.default_rng(seed)
        top, left = int(rng.integers(10 - 5 + 1)), int(rng.integers(12 - 7 + 1))
        assert np.array_equal(out, padded[top:top + 5, left:left + 7])
    assert data.RandomCrop((3, 3))({"image": image}, np.random.default_rng(0))["image"].shape == (3, 3, 2)


def test_random_flip_flips_with_probability_p():
    image = _image()
    assert np.array_equal(data.RandomFlip(p=1.0)({"image": image}, np.random.default_rng(0))["image"],
                          image[:, ::-1])
    assert np.array_equal(data.RandomFlip(p=1.0, vertical=True)({"image": image}, np.random.default_rng(0))
                          ["image"], image[::-1])
    assert data.RandomFlip(p=0.0)({"image": image}, np.random.default_rng(0))["image"] is image
    flips = [not np.array_equal(o["image"], image) for o in _grain([{"image": image}] * 400, data.RandomFlip())]
    assert 150 < sum(flips) < 250


def test_random_transforms_in_grain_are_deterministic_per_seed_and_vary_per_element():
    examples = [{"image": _image(8, 8, 1, seed=0)} for _ in range(16)]
    tf = [data.RandomCrop((8, 8), padding=3), data.RandomFlip()]
    first, again, other = _grain(examples, *tf), _grain(examples, *tf), _grain(examples, *tf, seed=1)
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, again, strict=True))
    assert len({o["image"].tobytes() for o in first}) > 8                       # elements differ
    assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(first, other, strict=True))


def test_normalize_per_channel():
    image = np.full((2, 2, 3), 255, np.uint8)
    out = data.Normalize(mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 2.0))({"image": image})["image"]
    assert out.dtype == np.float32 and out[0, 0].tolist() == [1.0, 1.0, 0.0]
    assert _grain([{"image": image}], data.Normalize())[0]["image"].max() == 1.0
    with pytest.raises(data.DataError, match="3 channels"):
        data.Normalize(mean=(0.1, 0.2))({"image": image})


# -- labels -------------------------------------------------------------------------------------------
def test_one_hot_alone_and_in_grain():
    assert data.OneHot(3)({"label": np.int64(2)})["label"].tolist() == [0, 0, 1]
    assert data.OneHot(3, dtype=np.int32)({"label": np.array([0, 1])})["label"].shape == (2, 3)
    out = _grain([{"label": np.int32(i)} for i in range(4)], data.OneHot(4))
    assert np.array_equal(np.stack([o["label"] for o in out]), np.eye(4))
    with pytest.raises(data.DataError, match="outside"):
        data.OneHot(3)({"label": np.int32(3)})


# -- text ---------------------------------------------------------------------------------------------
def test_byte_tokenize_is_utf8_and_round_trips():
    text = "naïve café ✓"
    ids = data.ByteTokenize()({"text": text})["tokens"]
    assert ids.dtype == np.int32 and bytes(ids.astype(np.uint8)).decode() == text
    out = _grain([{"text": "ab"}, {"text": "c"}], data.ByteTokenize(eos_id=256))
    assert [o["tokens"].tolist() for o in out] == [[97, 98, 256], [99, 256]]
    assert data.ByteTokenize(eos_id=256).vocab_size == 257


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory):
    """A small real byte-level BPE tokenizer, trained here on standard-library sources."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [p.read_text(errors="replace") for p in data.stdlib_text_files(limit=30)]
    tokenizer.train_from_iterator(texts, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_tokenize_with_a_real_bpe_tokenizer_json(bpe_file):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(bpe_file))
    text = "def parse(self, value):\n    return value"
    tokenize = data.Tokenize(bpe_file, eos_id=0)
    ids = tokenize({"text": text})["tokens"]
    assert ids.dtype == np.int32 and ids[:-1].tolist() == reference.encode(text).ids and ids[-1] == 0
    assert len(ids) < len(text) / 2  # merges learned: fewer tokens than bytes
    assert reference.decode(ids[:-1].tolist()) == text
    out = _grain([{"text": text}, {"text": "import os"}], tokenize)
    assert out[0]["tokens"].tolist() == ids.tolist()
    assert tokenize.vocab_size == 400


def test_tokenize_pickles_into_worker_processes(bpe_file):
    import pickle  # checks the transform object is picklable for grain workers

    tokenize = pickle.loads(pickle.dumps(data.Tokenize(bpe_file)))
    assert tokenize({"text": "import os"})["tokens"].size > 0


# -- packing ------------------------------------------------------------------------------------------
def _docs(lengths):
    return grain.MapDataset.source([{"tokens": np.arange(1, n + 1, dtype=np.int32), "id": i}
                                    for i, n in enumerate(lengths)]).to_iter_dataset()


def test_concat_packing_keeps_every_token_with_segments_and_positions():
    lengths = [3, 6, 2, 9, 1, 4]
    rows = list(data.Pack(length=5)(_docs(lengths)))
    tokens = np.concatenate([r["tokens"] for r in rows])
    assert np.array_equal(tokens[:sum(lengths)], np.concatenate([np.arange(1, n + 1) for n in lengths]))
    for row in rows:
        assert set(row) == {"tokens", "tokens_segment_ids", "tokens_positions"}
        assert row["tokens"].shape == (5,)
        seg, pos = row["tokens_segment_ids"], row["tokens_positions"]
        for s in set(seg[seg > 0].tolist()):   # positions count up within each segment
            assert np.array_equal(np.diff(pos[seg == s]), np.ones((seg == s).sum() - 1))


def test_first_fit_packing_keeps_documents_whole_and_pads():
    rows = list(data.Pack(length=8, method="first_fit", num_packing_bins=2)(_docs([3, 6, 2, 5, 12])))
    for row in rows:
        seg, tok = row["tokens_segment_ids"], row["tokens"]
        assert np.all(tok[seg == 0] == 0)
        for s in set(seg[seg > 0].tolist()):
            assert tok[seg == s][0] == 1  # every document starts at its first token
    assert sum(int((r["tokens_segment_ids"] > 0).sum()) for r in rows) == 3 + 6 + 2 + 5 + 8  # 12 truncated


def test_text_pipeline_tokenize_then_pack_in_grain():
    ds = data.text_corpus(data.stdlib_text_files(limit=5)).map(data.ByteTokenize(eos_id=256))
    rows = data.Pack(length=64)(ds.to_iter_dataset())
    row = next(iter(rows))
    assert row["tokens"].shape == (64,) and row["tokens"].max() <= 256


def test_pack_explains_a_missing_tokenisation():
    ds = grain.MapDataset.source([{"text": "abc"}]).to_iter_dataset()
    with pytest.raises(data.DataError, match="Tokenise first"):
        next(iter(data.Pack(length=4)(ds)))
