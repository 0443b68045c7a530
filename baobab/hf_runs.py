"""Pretrained weights into runs and back: ``baobab import hf`` and ``baobab export hf``.

An imported model is stored as an ordinary run directory, so every command that
takes a run (``eval``, ``generate``, ``export``, ``init_from=``) takes it too::

    OUT/config.json                 the resolved ExperimentConfig (its model section)
    OUT/checkpoints/0/{state,config,run}
    OUT/hf/                         the source's config.json and tokenizer files, kept for export

``export_run`` reads a run's newest model (LoRA adapters merged in), read-only, and
writes a Hugging Face folder that ``transformers.AutoModel.from_pretrained`` loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax

from baobab import nn
from baobab import train as btrain
from baobab.config import to_json
from baobab.errors import CheckpointError, ConfigError
from baobab.experiment import ExperimentConfig, TrainerConfig, build_optimizer, make_mesh, rules
from baobab.models import hf_io
from baobab.runs import CHECKPOINTS, load_run, restore_model, write_config

__all__ = ["import_run", "export_run", "HF_DIR"]

HF_DIR = "hf"  # in a run directory: the source's config.json and tokenizer files
_KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
         "special_tokens_map.json", "tokenizer.model", "generation_config.json", "preprocessor_config.json")


def _import(src: str | Path, **overrides: Any):
    try:
        return hf_io.import_hf(src, **overrides)
    except NotImplementedError as err:  # an unsupported config setting is a user error
        raise ConfigError(f"{src}: {err}") from None


def import_run(src: str | Path, out: str | Path, **overrides: Any) -> tuple[Path, hf_io.ImportReport]:
    """Import ``src`` (HF folder or torchvision ``.safetensors``) as a run directory ``out`` at step 0."""
    out = Path(out)
    if (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise CheckpointError(f"{out} already holds checkpoints; import into a new directory.")
    model, report = _import(src, **overrides)
    task = getattr(type(model.config), "tasks", ("classification",))[0]
    config = ExperimentConfig(task=task, model=model.config, trainer=TrainerConfig(workdir=str(out), steps=1))
    mesh = make_mesh(config)
    state = btrain.create_state(model, build_optimizer(config), mesh=mesh, rules=rules(config))
    out.mkdir(parents=True, exist_ok=True)
    resolved = json.loads(to_json(config))
    checkpointer = btrain.Checkpointer(out / CHECKPOINTS, async_save=False)
    try:
        checkpointer.save(0, state, config=resolved, mesh_shape=dict(mesh.shape))
    finally:
        checkpointer.close()
    write_config(config)
    if jax.process_index() == 0:
        keep = out / HF_DIR
        keep.mkdir(exist_ok=True)
        folder = Path(src) if Path(src).is_dir() else None
        for name in _KEEP if folder else ():
            if (folder / name).is_file():
                shutil.copy2(folder / name, keep / name)
    return out, report


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write the newest model of run ``run_dir`` as a Hugging Face folder ``out``."""
    config = load_run(run_dir)
    model, _ = restore_model(config)
    model = nn.merge_lora(model) if hasattr(nn, "merge_lora") else model
    model = jax.device_get(model)
    keep = Path(config.trainer.workdir) / HF_DIR
    if not keep.is_dir():
        keep = Path(run_dir) / HF_DIR
    base = json.loads((keep / "config.json").read_text()) if (keep / "config.json").is_file() else None
    extra = [p for p in sorted(keep.glob("*")) if p.name != "config.json"] if keep.is_dir() else []
    return hf_io.export_hf(model, out, base_config=base, extra_files=extra)
