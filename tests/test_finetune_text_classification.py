"""configs/minilm_docstrings.py end to end, shortened: real MiniLM -> classifier -> Hugging Face export."""

import json
from pathlib import Path

import numpy as np
import pytest

from baobab import nn
from baobab.config import ConfigError, load_config
from baobab.commands import run_train
from baobab.runs import load_run, restore_model

REPO = Path(__file__).resolve().parents[1]


def _config(workdir, *extra):
    return load_config(REPO / "configs" / "minilm_docstrings.py",
                       [f"trainer.workdir={workdir}", "trainer.steps=3", "trainer.eval_every=0", "data.seq_len=32",
                        "data.batch_size=8", "checkpoint.async_save=false", "logging.progress=false", *extra])


@pytest.mark.slow
def test_minilm_fine_tune_starts_from_the_real_weights_and_exports_a_classifier(tmp_path):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    # FSDP over the 8 test devices: one copy of the weights and optimizer state instead of
    # eight data-parallel replicas (3.4 GB -> 1.5 GB of host memory for this test)
    config = _config(tmp_path / "run", "mesh.data=1", "mesh.fsdp=-1")
    result = run_train(config)
    fresh = json.loads((tmp_path / "run" / "init_from.json").read_text())["fresh"]
    assert fresh == ["classifier.weight", "classifier.bias"]  # the encoder and pooler came from MiniLM
    start = result.start_eval_metrics
    assert 0.0 <= start["eval/accuracy"] < 0.4 and start["eval/loss"] > 1.5  # an untrained head: near chance
    assert np.isfinite(result.metrics["train/loss"])

    from baobab.hf_runs import export_run

    out = export_run(tmp_path / "run", tmp_path / "hf")
    reference = BertForSequenceClassification.from_pretrained(str(out)).eval()
    assert reference.config.num_labels == 8
    folder = Path(config.finetune.init_from)
    texts = ["Create a TCP server bound to host and port.", "Return a logger with the specified name."]
    enc = AutoTokenizer.from_pretrained(str(folder))(texts, max_length=32, truncation=True, padding="max_length",
                                                     return_tensors="pt")
    with torch.no_grad():
        want = reference(**enc).logits.numpy()
    model, step = restore_model(load_run(tmp_path / "run"))
    assert step == 3
    model = nn.eval_mode(model)  # as reference.eval(): dropout off
    got = np.asarray(model(enc["input_ids"].numpy(), enc["attention_mask"].numpy()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_text_classification_needs_a_matching_bert(tmp_path):
    with pytest.raises(ConfigError, match=r"model.num_classes = 3 but the data has 8 classes; set model.num_classes=8"):
        run_train(_config(tmp_path / "a", "model.num_classes=3"))
    with pytest.raises(ConfigError, match=r"the model handles 16 positions but data.seq_len = 32"):
        run_train(_config(tmp_path / "b", "model.max_len=16", "finetune.init_from=null"))


def test_plan_compiles_the_text_classification_step(tmp_path):
    from baobab.planner import plan

    report = plan(_config(tmp_path / "p", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"))
    assert report["parameters"] == 22_716_296  # all-MiniLM-L6-v2 (22,713,216) + a 384 x 8 classifier
    assert report["tokens_per_step"] == 8 * 32 and report["problems"] == []
    # 6 N per token for the 10.6M weights that multiply (encoder, pooler), plus attention on top
    assert 6 * 10.6e6 * 8 * 32 < report["model_flops_per_step"] < 1.3 * 6 * 10.6e6 * 8 * 32
