"""The LM text stream: rows shuffled one by one, one file split into train and eval, eval covering it all."""

import numpy as np
import pytest

from baobab import data
from baobab.errors import ConfigError

SEQ_LEN = 63  # rows of 64 bytes


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    """A single ~1 MB text file: 40 standard-library sources, one after the other."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_bytes(b"".join(p.read_bytes() for p in data.stdlib_text_files(limit=40)))
    return path


def _build(**fields):
    return data.build_data(data.TextData(stdlib_limit=None, seq_len=SEQ_LEN, **fields), mesh=None, rules=None)


def _row_bytes(row) -> bytes:
    return bytes(np.asarray(row).astype(np.uint8))


def test_one_batch_of_a_one_file_corpus_comes_from_all_over_the_file(one_file):
    text = one_file.read_bytes()
    train, _, _ = _build(files=(str(one_file),), batch_size=16)
    with iter(train) as it:
        batch = next(it)
    offsets = np.array([text.find(_row_bytes(row)) for row in batch["tokens"]])
    assert (offsets >= 0).all() and (offsets % (SEQ_LEN + 1) == 0).all()  # whole rows of the file
    places = len(set(offsets // 16_384))  # which 16 KB region of the ~1 MB file each row is from
    assert places >= 14, f"16 rows came from only {places} places of the file: {sorted(offsets)}"
    assert offsets.max() - offsets.min() > len(text) // 2


def test_the_row_stream_resumes_exactly(one_file):
    train, _, _ = _build(files=(str(one_file),), batch_size=8)
    with iter(train) as it:
        next(it), next(it)
        state = it.get_state()
        expected = next(it)["tokens"]
    with iter(train) as it:
        it.set_state(state)
        np.testing.assert_array_equal(next(it)["tokens"], expected)


def _eval_tokens(eval_factory) -> tuple[list[bytes], int]:
    """The real (unpadded) tokens of one eval pass, per row, and the number of rows scored."""
    rows, count = [], 0
    for batch in eval_factory():
        for row, segments, keep in zip(batch["tokens"], batch["tokens_segment_ids"], batch["mask"]):
            if keep:
                rows.append(_row_bytes(np.asarray(row)[np.asarray(segments) > 0]))
                count += 1
    return rows, count


def test_one_file_holds_out_its_last_fraction_and_eval_scores_all_of_it(one_file):
    text = one_file.read_bytes()
    train, eval_factory, _ = _build(files=(str(one_file),), eval_fraction=0.1, eval_batch_size=32)
    cut = len(text) - round(0.1 * len(text))
    rows, count = _eval_tokens(eval_factory)
    assert b"".join(rows) == text[cut:]  # every held-out byte, in order, none twice
    assert count == -(-(len(text) - cut) // (SEQ_LEN + 1))
    train_text = b"".join(_row_bytes(r["tokens"]) for r in train.source)
    assert train_text == text[:cut - cut % (SEQ_LEN + 1)]  # the head, short of one partial row


def test_many_files_hold_out_whole_files_and_eval_scores_all_of_them():
    files = sorted(data.stdlib_text_files(limit=40))
    _, eval_factory, _ = _build(files=tuple(map(str, files)), eval_fraction=0.1)
    rows, _ = _eval_tokens(eval_factory)
    assert b"".join(rows) == b"".join(f.read_bytes() for f in files[::10])
    capped = _build(files=tuple(map(str, files)), eval_fraction=0.1, eval_rows=5)[1]
    assert _eval_tokens(capped)[1] == 5


def test_rows_restart_segments_and_positions_at_each_file(tmp_path):
    (tmp_path / "a.txt").write_text("abcde")
    (tmp_path / "b.txt").write_text("xyz")
    docs = [data.ByteTokenize()({"text": "abcde"})["tokens"], data.ByteTokenize()({"text": "xyz"})["tokens"]]
    rows = data.TokenChunks(docs, length=4)
    assert len(rows) == 2  # 8 tokens, 2 rows
    assert _row_bytes(rows[1]["tokens"]) == b"exyz"
    assert rows[1]["tokens_segment_ids"].tolist() == [1, 2, 2, 2]
    assert rows[1]["tokens_positions"].tolist() == [0, 0, 1, 2]  # restarts at the row, then at the file


def test_bad_text_splits_name_the_setting(tmp_path):
    (tmp_path / "tiny.txt").write_text("abc")
    with pytest.raises(ConfigError, match="data.eval_fraction = 1.5"):
        _build(files=(str(tmp_path / "tiny.txt"),), eval_fraction=1.5)
    with pytest.raises(ConfigError, match="leave nothing to evaluate"):
        _build(files=(str(tmp_path / "tiny.txt"),), eval_fraction=0.1)
    with pytest.raises(data.DataError, match="every document is empty"):
        data.TokenChunks([np.zeros(0, np.int32)], length=4)
