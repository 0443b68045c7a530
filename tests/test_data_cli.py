"""`baobab data prepare`: image folders, text corpora and .npz arrays to ArrayRecord."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from baobab import data
from baobab.cli import main


def _png(value):
    buf = io.BytesIO()
    Image.fromarray(np.full((5, 5), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_prepare_images_two_splits(tmp_path, capsys):
    for split, n in (("train", 3), ("test", 1)):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / name / f"{i}.png").write_bytes(_png(10 * i))
        assert main(["data", "prepare", "images", str(tmp_path / split), "--out", str(tmp_path / "out"),
                     "--split", split, "--quiet"]) == 0
    assert "splits {'test': 2, 'train': 6}" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["info"]["classes"] == ["a", "b"] and meta["features"]["image"] == {"kind": "bytes"}
    ds = data.load_prepared(tmp_path / "out", "train").map(data.DecodeImage())
    assert ds[4]["image"].shape == (5, 5, 1) and int(ds[4]["label"]) == 1 and int(ds[4]["image"][0, 0, 0]) == 10


def test_prepare_decoded_images(tmp_path):
    (tmp_path / "imgs" / "x").mkdir(parents=True)
    (tmp_path / "imgs" / "x" / "0.png").write_bytes(_png(7))
    assert main(["data", "prepare", "images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"),
                 "--decode", "--quiet"]) == 0
    assert data.load_prepared(tmp_path / "o")[0]["image"].tolist() == np.full((5, 5, 1), 7).tolist()


def test_prepare_text_with_byte_tokens_and_shards(tmp_path):
    files = [str(p) for p in data.stdlib_text_files(limit=6)]
    assert main(["data", "prepare", "text", *files, "--out", str(tmp_path), "--tokenizer", "bytes",
                 "--num-shards", "2", "--quiet"]) == 0
    ds = data.load_prepared(tmp_path)
    assert len(ds) == 6 and len(list(tmp_path.glob("train-*.array_record"))) == 2
    assert bytes(ds[5]["tokens"].astype(np.uint8)).decode() == ds[5]["text"] == open(files[5]).read()


def test_prepare_arrays_from_npz_shows_progress(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", x=np.arange(12, dtype=np.float32).reshape(6, 2), y=np.arange(6))
    assert main(["data", "prepare", "arrays", str(tmp_path / "a.npz"), "--out", str(tmp_path / "o")]) == 0
    assert "train: rows" in capsys.readouterr().err  # the tqdm bar
    assert data.load_prepared(tmp_path / "o")[5]["x"].tolist() == [10.0, 11.0]


def test_prepare_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["data", "prepare", "arrays", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: numpy file" in err and len(err.strip().splitlines()) == 1, err  # a user error: one line
    assert main(["data", "prepare", "images", "a", "b", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["data", "prepare", "video", "x", "--out", str(tmp_path)])


def test_the_demo_subcommand_is_still_there():
    from baobab.cli import build_parser

    args = build_parser().parse_args(["demo", "--steps", "3"])
    assert args.steps == 3 and args.func.__name__ == "_demo"
