"""Bad inputs to the ``baobab`` command (#17): each is one named line on stderr, exit code 2, nothing written.

One section per kind of input: safetensors, a model folder's ``config.json``, a
tokenizer that does not fit the model, an ArrayRecord shard with a bad checksum, an
image folder with a corrupt PNG, a broken JSON-lines file, a config file that raises,
and ``key=value`` overrides fuzzed with hypothesis. Every command family (``train``,
``import hf``, ``data prepare``) is run at least once as a real subprocess; the rest
call ``baobab.cli.main`` in-process, which takes the same path. "Nothing written"
means the output or work directory does not exist afterwards, or, where it existed,
its tree (names, sizes, mtimes) is unchanged.

Pieces tested elsewhere are not repeated: reading errors of the data sources
(``test_data_bad_input.py``), the HF importer's missing/unexpected-tensor report
(``test_hf_import.py::test_errors_by_name``) and the common config mistakes
(``test_cli.py::test_bad_input_is_one_line_and_exit_code_2``).
"""

import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import REPO, run

from baobab import cli, data
from baobab.config import apply_overrides, load_config
from baobab.errors import UserError
from baobab.models import GPT2, GPT2Config, hf_io

MNIST_MLP = REPO / "configs" / "mnist_mlp.py"


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


def _tree(root: Path) -> dict | None:
    """``{relative path: (size, mtime_ns)}`` of ``root`` and everything under it; None if absent."""
    root = Path(root)
    if not root.exists():
        return None
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in [root, *root.rglob("*")]}


def _main(args, capsys) -> tuple[int, str]:
    """``baobab ARGS`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def _one_line(code: int, err: str, *needles: str) -> str:
    """Exit code 2 and exactly one non-empty stderr line, without a traceback, holding every needle."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _gpt2_folder(path: Path, *, vocab_size: int = 16) -> Path:
    """A tiny GPT-2 as a Hugging Face folder (config.json + model.safetensors), written by export hf."""
    model = GPT2(GPT2Config(vocab_size=vocab_size, max_len=8, hidden_size=8, num_layers=1, num_heads=2),
                 key=jax.random.key(0))
    return hf_io.export_hf(model, path)


def _tokenizer(path: Path, size: int) -> Path:
    """A word-level ``tokenizer.json`` of ``size`` tokens (``w0`` .. and ``[UNK]``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(size - 1)} | {"[UNK]": size - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def _write_config(path: Path, body: str) -> Path:
    path.write_text("from baobab.data import TextClassificationData, TextData\n"
                    "from baobab.experiment import ExperimentConfig, FinetuneConfig, TrainerConfig\n"
                    "from baobab.models import BertConfig, GPT2Config\n\n\n"
                    f"def get_config():\n    return ExperimentConfig({body}\n")  # the body closes the call
    return path


# ----------------------------------------------------------------------------------------
# Truncated or bit-flipped safetensors
# ----------------------------------------------------------------------------------------


def _damage(raw: bytes, how: str) -> bytes:
    if how == "truncated":  # the header is whole; the tensors' bytes stop half way
        return raw[: len(raw) // 2]
    if how == "header-length-bit":  # the 8-byte little-endian header length, bit 30 flipped
        return raw[:3] + bytes([raw[3] ^ 0x40]) + raw[4:]
    if how == "header-json-byte":  # a byte inside the JSON header
        return raw[:20] + bytes([raw[20] ^ 0xFF]) + raw[21:]
    assert how == "empty"
    return b""


@pytest.mark.parametrize("how", ["truncated", "header-length-bit", "header-json-byte", "empty"])
def test_import_hf_of_damaged_safetensors(how, tmp_path, capsys):
    src = _gpt2_folder(tmp_path / "src")
    weights = src / "model.safetensors"
    weights.write_bytes(_damage(weights.read_bytes(), how))
    out = tmp_path / "run"
    args = ["import", "hf", src, out]
    if how == "truncated":  # one real process for the family
        proc = run(*args, cwd=tmp_path)
        code, err = proc.returncode, proc.stderr
    else:
        code, err = _main(args, capsys)
    _one_line(code, err, f"baobab import: error: {weights}: not a readable safetensors file, truncated or corrupted",
              "download or save it again")
    assert _tree(out) is None


def test_train_with_init_from_damaged_safetensors_writes_no_run(tmp_path, capsys, monkeypatch):
    """The pretrained source is read before the run directory is made (it used to hold config.json by then)."""
    monkeypatch.chdir(tmp_path)
    src = _gpt2_folder(tmp_path / "src", vocab_size=256)
    weights = src / "model.safetensors"
    weights.write_bytes(_damage(weights.read_bytes(), "truncated"))
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    workdir = tmp_path / "run"
    config = _write_config(tmp_path / "lm.py", f"""
        task="language_model",
        model=GPT2Config(vocab_size=256, max_len=8, hidden_size=8, num_layers=1, num_heads=2),
        data=TextData(files=({str(tmp_path / 'corpus.txt')!r},), seq_len=7, batch_size=4, eval_batch_size=4),
        trainer=TrainerConfig(workdir={str(workdir)!r}, steps=2),
        finetune=FinetuneConfig(init_from={str(src)!r}))""")
    code, err = _main(["train", config], capsys)
    _one_line(code, err, f"baobab train: error: {weights}: not a readable safetensors file", "save it again")
    assert _tree(workdir) is None


# ----------------------------------------------------------------------------------------
# A config.json with wrong types or an unknown architecture
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case, needles", [
    ("wrong-type", ["config.json (gpt2): n_embd='big' (GPT2Config.hidden_size): input should be a valid integer",
                    "correct the value"]),
    ("unknown-architecture", ["model_type 'mamba' is not supported; supported: ['gpt2', 'llama'"]),
    ("not-json", ["config.json: not valid JSON (", "fix or download the file again"]),
    ("not-an-object", ["config.json: expected a JSON object {...}, got a list"]),
    ("shape-mismatch", ["does not fit GPT2(gpt2): shape mismatches (1): ['transformer.wpe.weight (8, 8) -> ",
                        "needs (9, 8)", "pass the weights saved with this config.json"]),
])
def test_import_hf_of_a_bad_config_json(case, needles, tmp_path, capsys):
    src = _gpt2_folder(tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    text = {"wrong-type": json.dumps({**cfg, "n_embd": "big"}),
            "unknown-architecture": json.dumps({**cfg, "model_type": "mamba"}),
            "not-json": (src / "config.json").read_text()[:-9],
            "not-an-object": json.dumps([cfg]),
            "shape-mismatch": json.dumps({**cfg, "n_positions": 9})}[case]
    (src / "config.json").write_text(text)
    out = tmp_path / "run"
    if case == "wrong-type":
        proc = run("import", "hf", src, out, cwd=tmp_path)
        code, err = proc.returncode, proc.stderr
    else:
        code, err = _main(["import", "hf", src, out], capsys)
    line = _one_line(code, err, "baobab import: error: ", str(src), *needles)
    if case != "shape-mismatch":  # (that one names the folder: its weights do not fit its config)
        assert str(src / "config.json") in line
    assert _tree(out) is None


def test_eval_of_a_run_whose_config_json_has_a_wrong_type(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"task": "classification", "trainer": {"steps": "many"}}))
    before = _tree(run_dir)
    code, err = _main(["eval", run_dir], capsys)
    _one_line(code, err, f"{run_dir / 'config.json'}: not a valid baobab run config (trainer.steps: input should be "
                         f"a valid integer", "'many'")
    assert _tree(run_dir) == before


# ----------------------------------------------------------------------------------------
# A tokenizer whose vocabulary does not fit the model
# ----------------------------------------------------------------------------------------


def test_import_hf_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path, capsys):
    src = _gpt2_folder(tmp_path / "src", vocab_size=16)
    _tokenizer(src / "tokenizer.json", 21)
    out = tmp_path / "run"
    code, err = _main(["import", "hf", src, out], capsys)
    _one_line(code, err, f"{src / 'tokenizer.json'}: the tokenizer has 21 tokens but the model's vocab_size",
              "is 16, so ids 16..20 have no embedding", "put the tokenizer.json that came with these weights")
    assert _tree(out) is None
    _tokenizer(src / "tokenizer.json", 16)  # the same size (or a padded, larger model vocabulary) imports
    assert _main(["import", "hf", src, out], capsys)[0] == 0
    assert (out / "hf" / "tokenizer.json").is_file()


def test_train_refuses_a_tokenizer_larger_than_the_model_vocabulary(tmp_path):
    _tokenizer(tmp_path / "tokenizer.json", 300)
    (tmp_path / "corpus.txt").write_text(" ".join(f"w{i % 299}" for i in range(2000)))
    workdir = tmp_path / "run"
    config = _write_config(tmp_path / "lm.py", f"""
        task="language_model",
        model=GPT2Config(vocab_size=256, max_len=8, hidden_size=8, num_layers=1, num_heads=2),
        data=TextData(files=({str(tmp_path / 'corpus.txt')!r},), seq_len=7, batch_size=4, eval_batch_size=4,
                      tokenizer={str(tmp_path / 'tokenizer.json')!r}),
        trainer=TrainerConfig(workdir={str(workdir)!r}, steps=2))""")
    proc = run("train", config, cwd=tmp_path)
    _one_line(proc.returncode, proc.stderr, "model.vocab_size = 256 is smaller than the tokenizer's 300",
              "set model.vocab_size=300")
    assert _tree(workdir) is None


# ----------------------------------------------------------------------------------------
# An ArrayRecord shard with a bad checksum
# ----------------------------------------------------------------------------------------


def _prepared(folder: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        data.write_split(folder, split, [{"image": rng.integers(0, 255, (28, 28, 1), dtype=np.uint8),
                                          "label": np.int32(i % 2)} for i in range(n)], info={"classes": ["a", "b"]})
    return folder / "train-00000-of-00001.array_record"


def _flip(path: Path, start: int, count: int) -> None:
    raw = bytearray(path.read_bytes())
    assert len(raw) > start + count
    raw[start:start + count] = bytes(b ^ 0xFF for b in raw[start:start + count])
    path.write_bytes(bytes(raw))


def _train_prepared(folder: Path, workdir: Path, *extra: str) -> list:
    return ["train", MNIST_MLP, "data.kind=prepared", f"data.path={folder}", "data.batch_size=8",
            "data.eval_batch_size=40", "model.num_classes=2", f"trainer.workdir={workdir}", "trainer.steps=60", *extra]


def test_train_on_a_shard_whose_block_header_fails_its_checksum(tmp_path):
    shard = _prepared(tmp_path / "prepared")
    # the header of the last 64 KiB block, which holds the footer the reader checks when it opens the shard
    _flip(shard, (shard.stat().st_size - 1) // 65536 * 65536, 24)
    before, workdir = _tree(tmp_path / "prepared"), tmp_path / "run"
    proc = run(*_train_prepared(tmp_path / "prepared", workdir), cwd=tmp_path)
    _one_line(proc.returncode, proc.stderr, f"baobab train: error: {shard}: cannot open as ArrayRecord",
              "hash mismatch", "re-create it with `baobab data prepare`")
    assert _tree(workdir) is None and _tree(tmp_path / "prepared") == before


def test_train_on_a_record_that_fails_its_checksum_names_file_record_and_the_key(tmp_path, capsys):
    """A damaged record inside a shard is only found when it is read, after training began (its log
    lines come first); the last line names the shard, the record and ``data.skip_corrupt=true``, which
    then lets the run finish without it."""
    shard = _prepared(tmp_path / "prepared")
    _flip(shard, 3000, 40)
    workdir = tmp_path / "run"
    code, err = _main(_train_prepared(tmp_path / "prepared", workdir), capsys)
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"baobab train: error: {shard} record ") and "hash mismatch" in last, last
    assert "data.skip_corrupt=true" in last
    code, err = _main(_train_prepared(tmp_path / "prepared", tmp_path / "skipping", "data.skip_corrupt=true"),
                      capsys)
    assert code == 0 and "skipped corrupt record" in err, err


# ----------------------------------------------------------------------------------------
# An image folder with a corrupt PNG
# ----------------------------------------------------------------------------------------


def _image_folder(root: Path, *, broken: bool) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    if broken:
        good = (root / "dog" / "1.png").read_bytes()
        (root / "dog" / "1.png").write_bytes(good[:40])  # a PNG cut short
    return root


def test_prepare_images_with_a_corrupt_png_names_it_and_writes_nothing(tmp_path):
    images = _image_folder(tmp_path / "images", broken=True)
    proc = run("data", "prepare", "images", images, "--out", tmp_path / "out", "--quiet", cwd=tmp_path)
    _one_line(proc.returncode, proc.stderr, f"baobab data prepare: error: {images / 'dog' / '1.png'}: cannot decode")
    assert _tree(tmp_path / "out") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no staging folder left behind


def test_prepare_images_into_an_existing_folder_leaves_it_as_it_was(tmp_path, capsys):
    """It used to create the shard (and replace the split's old shards) before the bad file was reached."""
    out = tmp_path / "out"
    good = _image_folder(tmp_path / "good", broken=False)
    for split in ("train", "test"):
        assert _main(["data", "prepare", "images", good, "--out", out, "--split", split, "--quiet"], capsys)[0] == 0
    before = _tree(out)
    images = _image_folder(tmp_path / "images", broken=True)
    for split in ("train", "validation"):  # replacing a split, and adding one
        code, err = _main(["data", "prepare", "images", images, "--out", out, "--split", split, "--quiet"], capsys)
        _one_line(code, err, f"{images / 'dog' / '1.png'}: cannot decode as an image")
        assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "images", "out"]


# ----------------------------------------------------------------------------------------
# A JSON-lines file with a broken line
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("line, needle", [
    (b'{"text": "w3 w4", "label": "a"', ":3: not valid JSON (Expecting ',' delimiter)"),
    (b'{"text": "caf\xe9", "label": "a"}', ":3: not valid UTF-8 at byte 13 of the line; save the file as UTF-8"),
    (b'{"text": "w5", "label": "c"}', ":3: example 2 has label 'c', which is not one of the 2 classes"),
])
def test_train_on_a_jsonl_file_with_a_broken_line_names_the_line(line, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tokenizer(tmp_path / "tokenizer.json", 20)
    lines = [b'{"text": "w1 w2", "label": "a"}', b"", line, b'{"text": "w2", "label": "b"}']
    (tmp_path / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "eval.jsonl").write_text('{"text": "w1", "label": "a"}\n{"text": "w2", "label": "b"}\n')
    train, evaluate = (tmp_path / "train.jsonl", tmp_path / "eval.jsonl")
    if "label 'c'" in needle:  # an unknown class is found in the eval file, against the train file's classes
        train, evaluate = evaluate, train
    workdir = tmp_path / "run"
    config = _write_config(tmp_path / "cls.py", f"""
        task="text_classification",
        model=BertConfig(vocab_size=20, max_len=16, hidden_size=8, num_layers=1, num_heads=2,
                         intermediate_size=16, num_classes=2),
        data=TextClassificationData(tokenizer={str(tmp_path / 'tokenizer.json')!r}, train_file={str(train)!r},
                                    eval_file={str(evaluate)!r}, seq_len=8, batch_size=2, eval_batch_size=2),
        trainer=TrainerConfig(workdir={str(workdir)!r}, steps=2))""")
    code, err = _main(["train", config], capsys)
    _one_line(code, err, f"baobab train: error: {tmp_path / 'train.jsonl'}{needle}")
    assert _tree(workdir) is None


# ----------------------------------------------------------------------------------------
# A config file that raises
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source, needles", [
    ("import math\n\nSCALE = 1 / 0\n", ["line 3: failed to load (ZeroDivisionError: division by zero)"]),
    ("def get_config(:\n    pass\n", ["line 1: failed to load (SyntaxError: "]),
    ("import no_such_module_here\n", ["line 1: failed to load (ModuleNotFoundError: No module named "
                                      "'no_such_module_here')"]),
    ("import sys\nsys.exit(3)\n", ["line 2: failed to load (SystemExit: 3)"]),
    ("def get_config():\n    settings = {}\n    return settings['lr']\n",
     ["line 3: get_config() failed (KeyError: 'lr')"]),
    ("def get_config():\n    raise RuntimeError('line one\\nline two')\n",
     ["line 2: get_config() failed (RuntimeError: line one line two)"]),
])
def test_a_config_file_that_raises_is_named_by_line(source, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad_config.py"
    path.write_text(source)
    if "ZeroDivisionError" in needles[0]:
        proc = run("train", path, cwd=tmp_path)
        code, err = proc.returncode, proc.stderr
    else:
        code, err = _main(["train", path], capsys)
    _one_line(code, err, f"baobab train: error: {path} ", *needles, "; fix the config file")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["bad_config.py"]


# ----------------------------------------------------------------------------------------
# Overrides, fuzzed
# ----------------------------------------------------------------------------------------


BASE = load_config(MNIST_MLP)


def _keys(tree, prefix=""):
    for key, value in tree.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{key}.")


TREE = BASE.model_dump(mode="python")
KEYS = sorted(_keys(TREE))


def _value_at(key):
    node = TREE
    for part in key.split("."):
        node = node[part]
    return node


NASTY = ["", " ", "[", "]", "(", ")", "()", "[]", "{}", "{[]: 1}", "{1, []}", "(1,", "'", '"', "'a'", "None", "null",
         "TRUE", "...", "1j", "b'x'", "=", "a=b", "\x00", "\n", "((((((((", "[" * 300 + "]" * 300, "1e999", "-1", "-",
         "nan", "0x10", "1_000", "{'a': 1}", "[1, 'a']", "(0.9, 0.95)", "mlp", "cnn", "gpt2", "prepared", "adamw",
         "é", "😀", "\u202e", "true", "False"]
_segments = st.sampled_from(["model", "data", "kind", "optimizer", "lr", "", "trainer", "steps", " ", "path",
                             "mesh", "hidden", "0"])
_key = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda k: k + "x"),  # one letter off
    st.lists(_segments, min_size=1, max_size=4).map(".".join),  # real segments, wrong places
    st.text(max_size=12),  # anything at all, line breaks and control characters included
)
_value = st.lists(st.one_of(st.sampled_from(NASTY), st.integers(-10**30, 10**30).map(str),
                            st.floats().map(repr), st.text(max_size=8)), min_size=1, max_size=3).map("".join)
_override = st.one_of(
    st.sampled_from(KEYS).map(lambda k: f"{k}={_value_at(k)!r}"),  # a valid value of the right type
    st.tuples(_key, _value).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=10),  # no '=' at all, or only one
)


def _names_an_override(message: str, overrides: list[str]) -> bool:
    for item in overrides:
        key = item.partition("=")[0].strip()
        if repr(item) in message:  # `override 'x': expected key=value`
            return True
        if key and (key in message or repr(key) in message):
            return True
        if key.endswith(".kind") and f"{key[:-len('.kind')]}: unknown kind" in message:  # model: unknown kind 'x'
            return True
        if "." in key and f"{key.rsplit('.', 1)[0]}: " in message:  # data.path.x=1 -> data.path: not a string
            return True
    return False


OUTCOMES = {"valid": 0, "refused": 0}


@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(_override, min_size=1, max_size=4))
def test_fuzzed_overrides_give_a_valid_config_or_one_named_error(overrides):
    """1,000 generated override lists through ``apply_overrides`` (what ``baobab train CONFIG key=value``
    runs): a valid config that survives its own JSON round trip, or a one-line ``UserError`` naming an
    override's key. Any other exception fails the test."""
    try:
        config = apply_overrides(BASE, overrides)
    except UserError as err:
        message = str(err)
        assert message.strip() and "\n" not in message.strip(), message
        assert _names_an_override(message, overrides), (overrides, message)
        OUTCOMES["refused"] += 1
        return
    from baobab.config import to_json

    assert type(config).model_validate(json.loads(to_json(config))) == config
    OUTCOMES["valid"] += 1


def test_the_fuzz_reached_both_outcomes():
    """Runs after the fuzz (file order): the generator must produce valid configs as well as errors."""
    if not sum(OUTCOMES.values()):  # run alone (-k): fuzz here
        test_fuzzed_overrides_give_a_valid_config_or_one_named_error()
    assert OUTCOMES["valid"] >= 50 and OUTCOMES["refused"] >= 500, OUTCOMES


@pytest.mark.parametrize("overrides, needle", [  # cases the fuzz found, through the real command
    (["optimizer.lr={[]: 1}"], "optimizer.lr: input should be a valid number"),
    (["model.kind=[1]"], "model: unknown kind [1]; valid kinds: 'mlp'"),
    (["model.hidden=" + "[" * 300 + "]" * 300], "model.hidden"),
    ([" =3"], "override ' =3': expected key=value"),
    (["data.kind=prepared", "data.path.x=1"], "data.path: input should be a valid string"),
    (["mod\nel.kind=cnn"], "'mod\\nel.kind': no such key"),
])
def test_overrides_the_fuzz_found_are_one_line_errors(overrides, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _main(["train", MNIST_MLP, *overrides], capsys)
    _one_line(code, err, needle)
    assert list(tmp_path.iterdir()) == []
