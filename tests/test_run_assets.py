"""``RUN/assets/``: what a run keeps beside its weights, and what ``baobab export hf`` makes of it.

The language-model case end to end: a BPE tokenizer trained here (a bare
``tokenizer.json``, as ``tokenizers`` writes it), a tiny GPT-2 trained 2 steps on
IDLE's NEWS.txt, exported; transformers' ``AutoTokenizer``, ``GenerationConfig`` and
``AutoModelForCausalLM`` read the export folder alone.
"""

import json
from pathlib import Path

import idlelib
import numpy as np
import pytest

from baobab import data, nn, run_assets
from baobab.commands import run_train
from baobab.experiment import CheckpointConfig, ExperimentConfig, LoggingConfig, TrainerConfig
from baobab.hf_runs import export_run
from baobab.models import GPT2Config
from baobab.runs import load_run, restore_model

NEWS = Path(idlelib.__file__).parent / "NEWS.txt"
TEXTS = ["What's New in IDLE 3.11.0", "Fix a crash when pasting text into the Shell window.",
         "<|endoftext|>Two documents<|endoftext|>", "naïve ünïcode 12345"]


def _bpe(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train([str(NEWS)], trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("lm_assets")
    tokenizer = _bpe(work / "tok")
    config = ExperimentConfig(
        task="language_model",
        model=GPT2Config(vocab_size=400, max_len=32, hidden_size=32, num_layers=2, num_heads=2),
        data=data.TextData(files=(str(NEWS),), stdlib_limit=None, eval_fraction=0.1, seq_len=32, batch_size=8,
                           tokenizer=str(tokenizer)),
        trainer=TrainerConfig(workdir=str(work / "run"), steps=2, eval_every=0),
        checkpoint=CheckpointConfig(async_save=False), logging=LoggingConfig(progress=False))
    run_train(config)
    return work, tokenizer


def test_an_lm_run_keeps_its_tokenizer_and_generation_settings(lm_run):
    from tokenizers import Tokenizer

    work, tokenizer = lm_run
    assets = work / "run" / "assets"
    assert (assets / "tokenizer" / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    eos = Tokenizer.from_file(str(tokenizer)).token_to_id("<|endoftext|>")
    made = json.loads((assets / "tokenizer" / "tokenizer_config.json").read_text())
    assert made == {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "model_max_length": 32}
    assert json.loads((assets / "generation_config.json").read_text()) == {"eos_token_id": eos, "max_length": 32,
                                                                            "do_sample": False}
    assert not (assets / "labels.json").exists()


def test_an_lm_export_alone_tokenises_generates_and_scores_as_baobab(lm_run):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    work, tokenizer = lm_run
    out = export_run(work / "run", work / "hf")
    original = Tokenizer.from_file(str(tokenizer))
    exported = AutoTokenizer.from_pretrained(str(out))
    for text in TEXTS:
        assert exported(text)["input_ids"] == original.encode(text).ids, text
    eos = original.token_to_id("<|endoftext|>")
    assert exported.eos_token_id == eos
    generation = GenerationConfig.from_pretrained(str(out))
    assert (generation.eos_token_id, generation.max_length, generation.do_sample) == (eos, 32, False)
    reference = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert reference.config.eos_token_id == eos and reference.config.bos_token_id is None  # not GPT-2's 50256
    ids = np.asarray([exported(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        want = reference(input_ids=torch.tensor(ids)).logits.numpy()
    model, _ = restore_model(load_run(work / "run"))
    np.testing.assert_allclose(np.asarray(nn.eval_mode(model)(ids)), want, rtol=1e-4, atol=1e-5)


def test_cli_refuses_adapters_of_a_run_without_lora(lm_run, capsys):
    from baobab.cli import main

    work, _ = lm_run
    assert main(["export", "hf", str(work / "run"), str(work / "nope"), "--adapters"]) == 2
    err = capsys.readouterr().err
    assert "has no LoRA adapters" in err and "drop --adapters" in err
    assert not (work / "nope").exists()


def test_assets_are_written_once_and_class_names_come_from_the_data(tmp_path):
    config = ExperimentConfig(trainer=TrainerConfig(workdir=str(tmp_path)))
    run_assets.write_assets(config, data.DataInfo("classification", num_classes=2, class_names=("no", "yes")))
    run_assets.write_assets(config, data.DataInfo("classification", num_classes=2, class_names=("a", "b")))
    assert run_assets.read_assets(tmp_path).class_names == ("no", "yes")  # a resumed run keeps what it began with
    assert data.data_info(data.MnistData()).class_names == tuple("0123456789")
    rows = tmp_path / "train.jsonl"
    rows.write_text("".join(json.dumps({"text": t, "label": lb}) + "\n" for t, lb in
                            [("a", "spam"), ("b", "ham"), ("c", "spam")]))
    assert data.jsonl_texts(rows)[1] == ("ham", "spam")  # the label indices labels.json names, in order
    assert run_assets.read_assets(tmp_path / "none") == run_assets.RunAssets()  # runs from before assets


def test_a_missing_tokenizer_file_is_named(tmp_path):
    from baobab.errors import ConfigError

    config = ExperimentConfig(task="language_model", model=GPT2Config(vocab_size=300, max_len=16, hidden_size=16,
                                                                      num_layers=1, num_heads=2),
                              data=data.TextData(tokenizer=str(tmp_path / "gone.json")),
                              trainer=TrainerConfig(workdir=str(tmp_path / "run")))
    with pytest.raises(ConfigError, match=r"data.tokenizer = '.*gone.json' is not a file"):
        run_assets.write_assets(config, data.DataInfo("language_model"))
