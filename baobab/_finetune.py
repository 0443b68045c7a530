"""Pretrained weights into runs and back: ``import hf``, ``export hf`` and ``init_from``.

An imported model is stored as an ordinary run directory, so every command that
takes a run (``eval``, ``generate``, ``export``, ``init_from=``) takes it too::

    OUT/config.json                 the resolved ExperimentConfig (its model section)
    OUT/checkpoints/0/{state,config,run}
    OUT/hf/                         the source's config.json and tokenizer files, kept for export

``export_run`` restores a run's newest model (LoRA adapters merged in) and writes a
Hugging Face folder that ``transformers.AutoModel.from_pretrained`` loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax

from baobab import nn
from baobab.models import hf_io

__all__ = ["import_run", "export_run", "HF_DIR", "FinetuneConfig", "LoRAConfig", "apply_finetune", "pretrained_model"]

HF_DIR = "hf"  # in a run directory: the source's config.json and tokenizer files
_KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
         "special_tokens_map.json", "tokenizer.model", "generation_config.json", "preprocessor_config.json")


def _import(src: str | Path, **overrides: Any):
    try:
        return hf_io.import_hf(src, **overrides)
    except NotImplementedError as err:  # an unsupported config setting is a user error
        raise ValueError(str(err)) from None


def import_run(src: str | Path, out: str | Path, **overrides: Any) -> tuple[Path, hf_io.ImportReport]:
    """Import ``src`` (HF folder or torchvision ``.safetensors``) as a run directory ``out`` at step 0."""
    from baobab import train as btrain
    from baobab.config import to_json
    from baobab.experiment import CONFIG_FILE, ExperimentConfig, TrainerConfig, _mesh, _rules, build_optimizer

    out = Path(out)
    if (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise ValueError(f"{out} already holds checkpoints; import into a new directory.")
    model, report = _import(src, **overrides)
    config = ExperimentConfig(model=model.config, trainer=TrainerConfig(workdir=str(out), steps=1))
    mesh, rules = _mesh(config), _rules(config)
    state = btrain.create_state(model, build_optimizer(config), mesh=mesh, rules=rules)
    out.mkdir(parents=True, exist_ok=True)
    resolved = json.loads(to_json(config))
    checkpointer = btrain.Checkpointer(out / "checkpoints", async_save=False)
    try:
        checkpointer.save(0, state, config=resolved, mesh_shape=dict(mesh.shape))
    finally:
        checkpointer.close()
    if jax.process_index() == 0:
        (out / CONFIG_FILE).write_text(to_json(config) + "\n")
        keep = out / HF_DIR
        keep.mkdir(exist_ok=True)
        folder = Path(src) if Path(src).is_dir() else None
        for name in _KEEP if folder else ():
            if (folder / name).is_file():
                shutil.copy2(folder / name, keep / name)
    return out, report


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write the newest model of run ``run_dir`` as a Hugging Face folder ``out``."""
    from baobab.experiment import load_run, restore_model

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


# ----------------------------------------------------------------------------------------
# Fine-tuning a run: init_from=, freezing, LoRA
# ----------------------------------------------------------------------------------------

import logging  # noqa: E402
from typing import Optional  # noqa: E402

import pydantic  # noqa: E402

from baobab.config import Config  # noqa: E402

log = logging.getLogger("baobab")
INIT_REPORT = "init_from.json"  # in the workdir: what came from init_from, and what is fresh


class LoRAConfig(Config):
    """LoRA adapters on the ``Linear`` layers under ``targets`` (``nn.path_matches`` patterns)."""

    targets: tuple[str, ...] = pydantic.Field(min_length=1)
    rank: int = pydantic.Field(8, ge=1)
    alpha: Optional[float] = None


class FinetuneConfig(Config):
    """Start from pretrained weights and choose what trains.

    * ``init_from``: a baobab run directory (its newest checkpoint) or a Hugging Face
      folder (imported on the fly). Arrays it lacks (a new classifier head) are
      initialised fresh and listed in ``<workdir>/init_from.json`` and the log.
    * ``freeze``: path patterns of parameters to freeze.
    * ``lora``: wrap linear layers with adapters; every other parameter is frozen
      except those under ``trainable``.
    """

    init_from: Optional[str] = None
    freeze: tuple[str, ...] = ()
    lora: Optional[LoRAConfig] = None
    trainable: tuple[str, ...] = ()


def apply_finetune(model: nn.Module, finetune: FinetuneConfig, key: jax.Array) -> nn.Module:
    """The structural part (freezing, LoRA), applied to a built model."""
    if finetune.freeze:
        model = nn.freeze(model, *finetune.freeze)
    if finetune.lora is not None:
        lo = finetune.lora
        model = nn.lora(model, *lo.targets, rank=lo.rank, alpha=lo.alpha, key=jax.random.fold_in(key, 7))
    if finetune.trainable:
        model = nn.unfreeze(model, *finetune.trainable)
    return model


def _from_run(model: nn.Module, run_dir: str) -> tuple[nn.Module, list[str]]:
    from baobab.experiment import load_run, restore_model

    pretrained, _ = restore_model(load_run(run_dir))
    theirs = {p: x for p, x in nn.state_dict(jax.device_get(nn.merge_lora(pretrained))).items()}
    own = nn.state_dict(model)
    take = {p: theirs[p] for p, x in own.items() if p in theirs and tuple(theirs[p].shape) == tuple(x.shape)}
    return nn.load_state_dict(model, take, strict=False, cast=True), [p for p in own if p not in take]


def pretrained_model(config: Any, key: jax.Array) -> nn.Module:
    """The run's model built from ``finetune.init_from``, then frozen / adapted as configured."""
    from baobab import models

    ft = config.finetune
    model = models.build_model(config.model, key=key)
    path = Path(ft.init_from)
    if not path.exists():
        raise FileNotFoundError(f"finetune.init_from={ft.init_from!r} does not exist; pass a baobab run directory "
                                f"or a Hugging Face folder (config.json + *.safetensors).")
    if (path / "checkpoints").is_dir():
        model, fresh = _from_run(model, ft.init_from)
    else:
        try:
            model, report = hf_io.load_into(model, path, fresh=("*",))
        except NotImplementedError as err:
            raise ValueError(str(err)) from None
        fresh = report.fresh
    if fresh:
        log.warning("init_from %s: %d arrays have no pretrained value and start fresh: %s", ft.init_from,
                    len(fresh), fresh)
    workdir = Path(config.trainer.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / INIT_REPORT).write_text(json.dumps({"init_from": ft.init_from, "fresh": fresh}, indent=1) + "\n")
    return apply_finetune(model, ft, key)


def has_checkpoint(workdir: str | Path) -> bool:
    ckpt = Path(workdir) / "checkpoints"
    return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())
