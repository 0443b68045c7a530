"""``baobab.peft_export``: LoRA adapters in the PEFT format, checked against ``peft`` itself.

Small random models (no training): a BERT classifier with LoRA on query/value and a
trained head (``modules_to_save``), and a GPT-2 with scanned layers and LoRA on the
fused ``c_attn`` (a ``Conv1D`` in transformers: ``fan_in_fan_out``). The base is
exported with ``hf_io.export_hf``, the adapters loaded on it with
``peft.PeftModel.from_pretrained``; logits must be baobab's. Then the settings PEFT
cannot hold are refused by name.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import models, nn
from baobab.errors import ConfigError
from baobab.models import hf_io
from baobab.peft_export import adapter_state, export_adapters

IDS = np.array([[1, 5, 7, 9, 2, 11], [1, 3, 4, 2, 0, 0]])


def _bump(model, *prefixes):
    """Move lora_b (zero at the start) and the named parameters, so the adapters change the output."""
    def bump(path, x, meta):
        if path.endswith("lora_b") or path.startswith(prefixes):
            noise = jax.random.normal(jax.random.key(len(path)), x.shape, x.dtype)
            return x + 0.2 * noise
        return x

    return nn.map_arrays(bump, model)


def _peft(base_dir, adapter_dir, auto):
    import peft

    return peft.PeftModel.from_pretrained(auto.from_pretrained(str(base_dir)), str(adapter_dir)).eval()


def test_bert_classifier_adapters_and_head_load_in_peft(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    config = models.BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                               max_len=16, num_classes=3)
    base = models.Bert(config, key=jax.random.key(0))
    hf_io.export_hf(base, tmp_path / "base")
    tuned = nn.unfreeze(nn.lora(base, "*.query", "*.value", rank=4, alpha=8.0, key=jax.random.key(1)), "classifier")
    tuned = _bump(tuned, "classifier")
    out = export_adapters(tuned, tmp_path / "adapters", task="text_classification")
    settings = json.loads((out / "adapter_config.json").read_text())
    assert settings["r"] == 4 and settings["lora_alpha"] == 8 and settings["task_type"] == "SEQ_CLS"
    assert settings["modules_to_save"] == ["classifier"] and not settings["fan_in_fan_out"]
    assert "bert.encoder.layer.1.attention.self.value" in settings["target_modules"]

    mask = np.ones_like(IDS)
    mask[1, 4:] = 0
    got = np.asarray(nn.eval_mode(tuned)(jnp.asarray(IDS), jnp.asarray(mask)))
    before = np.asarray(nn.eval_mode(base)(jnp.asarray(IDS), jnp.asarray(mask)))
    assert np.abs(got - before).max() > 1e-2  # the adapters and the head do change the logits
    with torch.no_grad():
        want = _peft(tmp_path / "base", out, AutoModelForSequenceClassification)(
            input_ids=torch.tensor(IDS), attention_mask=torch.tensor(mask)).logits.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_gpt2_scanned_conv1d_adapters_load_in_peft(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    config = models.GPT2Config(vocab_size=64, max_len=16, hidden_size=16, num_layers=2, num_heads=2,
                               scan_layers=True)
    base = models.GPT2(config, key=jax.random.key(0))
    hf_io.export_hf(base, tmp_path / "base")
    tuned = _bump(nn.lora(base, "*.c_attn", rank=2, key=jax.random.key(1)))
    out = export_adapters(tuned, tmp_path / "adapters", task="language_model")
    settings = json.loads((out / "adapter_config.json").read_text())
    assert settings["fan_in_fan_out"] and settings["task_type"] == "CAUSAL_LM" and settings["modules_to_save"] is None
    assert settings["target_modules"] == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    got = np.asarray(nn.eval_mode(tuned)(jnp.asarray(IDS[:1])))
    assert np.abs(got - np.asarray(nn.eval_mode(base)(jnp.asarray(IDS[:1])))).max() > 1e-2
    with torch.no_grad():
        want = _peft(tmp_path / "base", out, AutoModelForCausalLM)(input_ids=torch.tensor(IDS[:1])).logits.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_merged_lora_is_summed_in_float32():
    mlp = nn.map_arrays(lambda p, x, m: x.astype(jnp.bfloat16), nn.MLP(64, 64, 2, key=jax.random.key(0)))
    tuned = nn.lora(mlp, "fc1", rank=2, key=jax.random.key(1))
    tuned = nn.map_arrays(lambda p, x, m: jnp.full_like(x, 3e-3) if p.endswith("lora_b") else x, tuned)
    lo, f32 = tuned.fc1, jnp.float32
    exact = (lo.base.weight.astype(f32) + (lo.lora_a.astype(f32) @ lo.lora_b.astype(f32)) * lo.scale)
    in_bf16 = lo.base.weight + (lo.lora_a @ lo.lora_b) * lo.scale  # what summing in the stored dtype gives
    assert not np.array_equal(np.asarray(in_bf16), np.asarray(exact.astype(jnp.bfloat16)))
    merged = nn.merge_lora(tuned).fc1
    assert merged.weight.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(merged.weight), np.asarray(exact.astype(jnp.bfloat16)))


def _tiny_bert(**kw):
    config = models.BertConfig(vocab_size=30, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                               max_len=8, **kw)
    return models.Bert(config, key=jax.random.key(0))


def test_settings_peft_cannot_hold_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"has no LoRA adapters \(finetune.lora was not set\).*without --adapters"):
        adapter_state(_tiny_bert())
    inside = nn.unfreeze(nn.lora(_tiny_bert(), "*.query", rank=2, key=jax.random.key(1)), "*.query.base.bias")
    with pytest.raises(ConfigError, match=r"'encoder.layer\[0\].attention.self.query.base.bias' trains inside the "
                                          r"LoRA layer .*Narrow finetune.trainable"):
        adapter_state(inside)
    gpt = models.GPT2(models.GPT2Config(vocab_size=64, max_len=16, hidden_size=16, num_layers=2, num_heads=2,
                                        scan_layers=True), key=jax.random.key(0))
    stacked = nn.unfreeze(nn.lora(gpt, "*.c_attn", rank=2, key=jax.random.key(1)), "*.ln_1")
    with pytest.raises(ConfigError, match=r"trains inside stacked layers.*model.scan_layers=false"):
        adapter_state(stacked)
    untied = models.GPT2(gpt.config.model_copy(update={"tie_embeddings": False}), key=jax.random.key(0))
    mixed = nn.lora(untied, "*.c_attn", "lm_head", rank=2, key=jax.random.key(1))
    with pytest.raises(ConfigError, match=r"mix GPT-2 Conv1D and Linear layers"):
        adapter_state(mixed)


def test_fresh_frozen_arrays_travel_as_modules_to_save():
    tuned = nn.lora(_tiny_bert(num_classes=2), "*.query", rank=2, key=jax.random.key(1))  # head frozen, but fresh
    settings, tensors = adapter_state(tuned, fresh=["classifier.weight", "classifier.bias"])
    assert settings["modules_to_save"] == ["classifier"]
    assert tensors["base_model.model.classifier.weight"].shape == (2, 8)  # torch layout (out, in)


def test_baobab_never_imports_peft():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sources = [p for d in ("baobab", "nn", "train", "data", "models") for p in (root / d).rglob("*.py")]
    assert sources and not [p for p in sources if "import peft" in p.read_text() or "from peft" in p.read_text()]
