"""A LoRA run's adapters in the PEFT format: ``baobab export hf RUN OUT --adapters``.

``peft.PeftModel.from_pretrained(base, OUT)`` on the Hugging Face model the run
started from then computes what baobab's adapted model does. The folder holds::

    adapter_config.json        peft_type LORA, r, lora_alpha (scale = lora_alpha / r),
                               target_modules (full HF module names), modules_to_save
    adapter_model.safetensors  base_model.model.<HF module>.lora_A.weight (r, in) and
                               .lora_B.weight (out, r); the whole of each module in
                               modules_to_save (float32)

``modules_to_save`` holds every module with a trained non-adapter parameter (a new
classifier head, ``finetune.trainable``) or a freshly initialised one (``fresh``, from
``init_from.json``): the base model cannot hold those values. PEFT is not imported here;
the format is written from its documented layout.

>>> import jax, numpy as np
>>> from baobab import models, nn
>>> from baobab.peft_export import adapter_state
>>> bert = models.Bert(models.BertConfig(vocab_size=30, hidden_size=8, num_layers=1, num_heads=2,
...                                      intermediate_size=16, max_len=8), key=jax.random.key(0))
>>> tuned = nn.lora(bert, "*.query", rank=2, key=jax.random.key(1))
>>> settings, tensors = adapter_state(tuned)
>>> settings["target_modules"], settings["r"]
(['encoder.layer.0.attention.self.query'], 2)
>>> tensors["base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"].shape
(2, 8)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from baobab import nn
from baobab.errors import ConfigError
from baobab.models import hf
from baobab.models.hf_io import _export_names

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "adapter_state", "export_adapters"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_TASK_TYPES = {"text_classification": "SEQ_CLS", "classification": "SEQ_CLS", "language_model": "CAUSAL_LM"}


def _per_layer(path: str, stacks: dict[str, int]) -> list[tuple[str, int | None]]:
    """A stored module path -> its per-layer paths (``h[3].attn``) and rows of the stacked arrays."""
    for stack, n in stacks.items():
        inner = f"{stack}.layer" if stack else "layer"
        if path == inner or path.startswith(inner + "."):
            rest = path[len(inner):]
            return [(f"{stack}[{i}]{rest}", i) for i in range(n)]
    return [(path, None)]


def _theirs(config: Any, table: hf.NameTable, path: str, what: str) -> tuple[str, str]:
    hit = table.to_theirs(path)
    if hit is None:
        raise ConfigError(f"export --adapters: {what} {path!r} has no Hugging Face name in the {config.kind!r} "
                          f"table, so PEFT cannot address it; export merged weights (without --adapters).")
    name = next(iter(_export_names(config, {hit[0]: np.zeros(())})))
    return name, hit[1]


def _row(x: Any, row: int | None) -> np.ndarray:
    x = np.asarray(x)
    return x if row is None else x[row]


def adapter_state(model: nn.Module, *, fresh: Iterable[str] = (), task: str | None = None,
                  base_model: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(adapter_config, tensors)`` of a model with ``nn.LoRALinear`` layers, in PEFT's names and layouts.

    ``fresh``: paths of arrays that did not come from the base model (``init_from.json``).
    """
    config = model.config
    table = hf.names_for(config)
    stacks = {p: m.num_layers for p, m in nn.iter_modules(model) if isinstance(m, nn.Stacked)}
    loras = {p: m for p, m in nn.iter_modules(model) if isinstance(m, nn.LoRALinear)}
    if not loras:
        raise ConfigError(f"export --adapters: this {config.kind!r} model has no LoRA adapters (finetune.lora was "
                          f"not set); export it without --adapters for the full weights.")
    scales = {(m.rank, m.scale) for m in loras.values()}
    if len(scales) > 1:
        raise ConfigError(f"export --adapters: LoRA layers with different ranks or scales {sorted(scales)}; "
                          f"PEFT's one r / lora_alpha cannot hold them. Export merged weights instead.")
    rank, scale = scales.pop()
    tensors: dict[str, np.ndarray] = {}
    targets, layouts = [], set()
    for path, m in loras.items():
        for layer, row in _per_layer(path, stacks):
            name, layout = _theirs(config, table, f"{layer}.weight", "LoRA layer")
            if layout == "conv":
                raise ConfigError(f"export --adapters: LoRA layer {path!r} is a convolution in Hugging Face; "
                                  f"baobab's LoRA adapts Linear layers only. Export merged weights instead.")
            layouts.add(layout)
            module = name.removesuffix(".weight")
            targets.append(module)
            tensors[f"{_PREFIX}{module}.lora_A.weight"] = _row(m.lora_a, row).T.astype(np.float32)  # (r, in)
            tensors[f"{_PREFIX}{module}.lora_B.weight"] = _row(m.lora_b, row).T.astype(np.float32)  # (out, r)
    if len(layouts) > 1:  # Conv1D (GPT-2, "same") and Linear ("linear") in one adapter
        raise ConfigError("export --adapters: LoRA targets mix GPT-2 Conv1D and Linear layers; PEFT's one "
                          "fan_in_fan_out cannot hold both. Target one kind of layer.")

    saved = _modules_to_save(model, loras, stacks, set(fresh))
    to_save = []
    for module_path in saved:
        hf_module = None
        for path, x, meta in nn.iter_arrays(model):
            if not path.startswith(module_path + "."):
                continue
            name, layout = _theirs(config, table, path, "trained parameter")
            tensors[_PREFIX + name] = np.ascontiguousarray(hf.to_torch_layout(np.asarray(x), layout)
                                                           .astype(np.float32))
            suffix = path[len(module_path):]
            hf_module = hf_module or name.removesuffix(suffix)
        to_save.append(hf_module)
    alpha = rank * scale
    settings = {
        "peft_type": "LORA", "task_type": _TASK_TYPES.get(task or ""), "base_model_name_or_path": base_model,
        "r": rank, "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha, "lora_dropout": 0.0,
        "target_modules": sorted(targets), "modules_to_save": sorted(to_save) or None, "bias": "none",
        "fan_in_fan_out": layouts == {"same"}, "use_rslora": False, "use_dora": False,
        "init_lora_weights": True, "inference_mode": True,
    }
    return settings, tensors


def _modules_to_save(model: nn.Module, loras: dict, stacks: dict[str, int], fresh: set[str]) -> list[str]:
    """Paths of the modules whose parameters PEFT must carry: trained outside the adapters, or fresh."""
    owners = []
    for path, _, meta in nn.iter_arrays(model):
        trained = meta.kind == "param" and not meta.frozen  # not state, not frozen
        if not (trained or path in fresh) or re.search(r"\.lora_[ab]$", path):
            continue
        owner = path.rsplit(".", 1)[0] if "." in path else ""
        inside = [p for p in loras if owner == p or owner.startswith(p + ".")]
        if inside:
            raise ConfigError(f"export --adapters: {path!r} trains inside the LoRA layer {inside[0]!r} (a "
                              f"finetune.trainable pattern matches it); PEFT cannot save part of an adapted "
                              f"layer. Narrow finetune.trainable, or export merged weights.")
        if _per_layer(owner, stacks)[0][1] is not None:
            raise ConfigError(f"export --adapters: {path!r} trains inside stacked layers; PEFT's "
                              f"modules_to_save needs one module per layer. Set model.scan_layers=false, or "
                              f"export merged weights.")
        if owner not in owners:
            owners.append(owner)
    return owners


def export_adapters(model: nn.Module, out: str | Path, *, fresh: Iterable[str] = (), task: str | None = None,
                    base_model: str | None = None, extra_files: Iterable[Path] = ()) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (and ``extra_files``) into ``out``."""
    import shutil

    from safetensors.numpy import save_file

    settings, tensors = adapter_state(model, fresh=fresh, task=task, base_model=base_model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, out / ADAPTER_WEIGHTS,
              metadata={"format": "pt"})
    (out / ADAPTER_CONFIG).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    for f in extra_files:
        shutil.copy2(f, out / Path(f).name)
    return out
