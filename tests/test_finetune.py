"""init_from= and LoRA through `run_train`: a GPT pretrained by baobab, fine-tuned on a second corpus."""

import json

import numpy as np
import pytest

from baobab import nn
from baobab.data import TextData
from baobab.commands import run_train
from baobab.experiment import CheckpointConfig, ExperimentConfig, LoggingConfig, OptimizerConfig, TrainerConfig
from baobab.runs import load_run, restore_model
from baobab.finetune import FinetuneConfig, LoRAConfig
from baobab.hf_runs import export_run
from baobab.models import GPT2Config


def _second_corpus() -> tuple[str, ...]:
    """IDLE's own text files (news, history, readme): English prose that ships with Python."""
    import pathlib

    import idlelib

    return tuple(sorted(str(p) for p in pathlib.Path(idlelib.__file__).parent.glob("*.txt")))


def _config(workdir, data, steps, **finetune):
    return ExperimentConfig(
        task="language_model",
        model=GPT2Config(vocab_size=256, max_len=32, hidden_size=32, num_layers=2, num_heads=2),
        data=data, optimizer=OptimizerConfig(lr=3e-3), trainer=TrainerConfig(workdir=str(workdir), steps=steps),
        checkpoint=CheckpointConfig(every=0, async_save=False), logging=LoggingConfig(log_every=5, progress=False),
        finetune=FinetuneConfig(**finetune))


@pytest.mark.slow
def test_gpt_pretrained_then_lora_fine_tuned_on_a_second_corpus(tmp_path):
    stdlib = TextData(seq_len=32, batch_size=8, stdlib_limit=20, eval_rows=16)
    docs = TextData(seq_len=32, batch_size=8, files=_second_corpus(), stdlib_limit=None, eval_rows=16)
    pre = run_train(_config(tmp_path / "pre", stdlib, 60))
    tuned_cfg = _config(tmp_path / "tuned", docs, 20, init_from=str(tmp_path / "pre"),
                        lora=LoRAConfig(targets=("*.c_attn", "*.c_fc"), rank=4))
    tuned = run_train(tuned_cfg)
    report = json.loads((tmp_path / "tuned" / "init_from.json").read_text())
    assert report["fresh"] == []  # every array came from the pretrained run
    model, step = restore_model(load_run(tmp_path / "tuned"))
    assert step == 20 and any(isinstance(m, nn.LoRALinear) for _, m in nn.iter_modules(model))
    trainable = [p for p, _, m in nn.iter_arrays(model) if m.kind == "param" and not m.frozen]
    assert trainable and all(p.endswith(("lora_a", "lora_b")) for p in trainable)
    base, _ = restore_model(load_run(tmp_path / "pre"))
    for path, x in nn.state_dict(base).items():  # frozen: the pretrained weights, unchanged
        stored = path.replace(".c_attn.", ".c_attn.base.").replace(".c_fc.", ".c_fc.base.")
        np.testing.assert_array_equal(np.asarray(nn.state_dict(model)[stored]), np.asarray(x))
    out = export_run(tmp_path / "tuned", tmp_path / "hf")  # LoRA merged on export
    assert (out / "model.safetensors").is_file()
    print("pretrain", pre.metrics, "finetune", tuned.metrics, tuned.eval_metrics)
