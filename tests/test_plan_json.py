"""`baobab plan CONFIG --json`: one JSON object on stdout; LoRA counts and costs less than full training."""

import json
from pathlib import Path

from baobab import cli

REPO = Path(__file__).resolve().parents[1]
GPT_BYTES = REPO / "configs" / "gpt_bytes.py"
LORA = 'finetune.lora={"targets": ["*.c_attn", "*.c_fc", "*.c_proj"], "rank": 4}'
KEYS = ("flops_per_step", "bytes_per_device", "trainable_params", "total_params", "gradient_bytes",
        "optimizer_bytes")


def _plan_json(capsys, *overrides):
    assert cli.main(["plan", str(GPT_BYTES), *overrides, "--json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out)  # the whole of stdout is one object
    assert out.strip().count("\n") == 0 and isinstance(record, dict)
    return record


def test_lora_plan_trains_and_costs_less_than_full(capsys):
    full = _plan_json(capsys)
    lora = _plan_json(capsys, LORA)
    for record in (full, lora):
        assert all(isinstance(record[k], (int, float)) and record[k] > 0 for k in KEYS), record
        assert record["bytes_per_device"] == record["needed_bytes"]
        assert "summary" not in record
    assert full["trainable_params"] == full["total_params"]
    assert lora["trainable_params"] < 0.1 * lora["total_params"]
    assert lora["total_params"] > full["total_params"]  # the adapters come on top
    # What trains sets the gradient and optimizer memory, and the step skips frozen weight gradients.
    assert lora["gradient_bytes"] == 4 * lora["trainable_params"]
    assert lora["optimizer_bytes"] < 0.1 * full["optimizer_bytes"]
    assert lora["flops_per_step"] < 0.8 * full["flops_per_step"], (lora["flops_per_step"], full["flops_per_step"])
