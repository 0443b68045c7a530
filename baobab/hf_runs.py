"""Pretrained weights into runs and back: ``baobab import hf`` and ``baobab export hf``.

An imported model is stored as an ordinary run directory, so every command that
takes a run (``eval``, ``generate``, ``export``, ``init_from=``) takes it too::

    OUT/config.json                 the resolved ExperimentConfig (its model section)
    OUT/checkpoints/0/{state,config,run}
    OUT/hf/                         the source's config.json and tokenizer files, kept for export

``export_run`` reads a run's newest model (LoRA adapters merged in, in float32),
read-only, and writes a Hugging Face folder that ``transformers.AutoTokenizer`` and
``AutoModelFor...`` load alone: the weights, the run's tokenizer files, ``id2label``
from its class names and its ``generation_config.json`` (``baobab.run_assets``).
``export_run(..., adapters=True)`` writes a LoRA run's adapters for ``peft`` instead.
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
from baobab.errors import CheckpointError, ConfigError, DataError
from baobab.experiment import ExperimentConfig, TrainerConfig, build_optimizer, make_mesh, rules
from baobab.models import hf_io
from baobab.run_assets import read_assets
from baobab.runs import CHECKPOINTS, CONFIG_FILE, load_run, restore_model, write_config

__all__ = ["import_run", "export_run", "HF_DIR"]

HF_DIR = "hf"  # in a run directory: the source's config.json and tokenizer files
GENERATION_CONFIG = "generation_config.json"
_KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
         "special_tokens_map.json", "tokenizer.model", "generation_config.json", "preprocessor_config.json")


def _import(src: str | Path, **overrides: Any):
    """The model in ``src``, read slice by slice straight into its shardings on the run's mesh."""
    try:
        model_config = hf_io.source_config(hf_io.open_source(src), **overrides)
        _check_tokenizer(Path(src), model_config)
        tasks = getattr(type(model_config), "tasks", ("classification",))
        if not tasks:
            raise ConfigError(f"{src}: a {model_config.kind!r} model runs no baobab task yet, so it cannot become a "
                              f"run directory; import it in Python with baobab.models.hf_io.import_hf({str(src)!r}) "
                              f"(and export with hf_io.export_hf).")
        task = tasks[0]
        config = ExperimentConfig(task=task, model=model_config, trainer=TrainerConfig(steps=1))
        mesh = make_mesh(config)
        model, report = hf_io.import_hf(src, mesh=mesh, rules=rules(config), **overrides)
    except NotImplementedError as err:  # an unsupported config setting is a user error
        where = Path(src) / "config.json" if Path(src).is_dir() else src
        raise ConfigError(f"{where}: {err}") from None
    return model, report, mesh


def _check_tokenizer(folder: Path, model_config: Any) -> None:
    """A ``tokenizer.json`` beside the weights must give only ids the model has embeddings for.

    A larger model vocabulary is fine (checkpoints pad theirs, e.g. to a multiple of 64).
    """
    path = folder / "tokenizer.json"
    vocab = getattr(model_config, "vocab_size", None)
    if vocab is None or not folder.is_dir() or not path.is_file():
        return
    from baobab.data import Tokenize

    size = Tokenize(path).vocab_size
    if size > vocab:
        raise DataError(f"{path}: the tokenizer has {size} tokens but the model's vocab_size "
                        f"({folder / 'config.json'}) is {vocab}, so ids {vocab}..{size - 1} have no embedding; "
                        f"put the tokenizer.json that came with these weights beside them.")


def import_run(src: str | Path, out: str | Path, **overrides: Any) -> tuple[Path, hf_io.ImportReport]:
    """Import ``src`` (HF folder or torchvision ``.safetensors``) as a run directory ``out`` at step 0."""
    out = Path(out)
    if (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise CheckpointError(f"{out} already holds checkpoints; import into a new directory.")
    model, report, mesh = _import(src, **overrides)
    task = getattr(type(model.config), "tasks", ("classification",))[0]
    config = ExperimentConfig(task=task, model=model.config, trainer=TrainerConfig(workdir=str(out), steps=1))
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


def export_run(run_dir: str | Path, out: str | Path, *, adapters: bool = False) -> Path:
    """Write the newest model of run ``run_dir`` as a Hugging Face folder ``out``.

    The folder also gets the run's assets (``baobab.run_assets``): its tokenizer files,
    ``id2label`` / ``label2id`` from its class names, its ``generation_config.json``.
    ``adapters=True`` writes a LoRA run's adapters in the PEFT format instead of the
    merged weights (``baobab.peft_export``).
    """
    config = load_run(run_dir)
    workdir = Path(config.trainer.workdir)
    if not (workdir / CONFIG_FILE).is_file():  # a moved run directory: its files are where it is now
        workdir = Path(run_dir)
    if adapters and config.finetune.lora is None:
        raise ConfigError(f"export hf --adapters: run {str(run_dir)!r} has no LoRA adapters (its finetune.lora "
                          f"is not set); drop --adapters to export its full weights.")
    model, _ = restore_model(config)
    model = jax.device_get(model)
    keep = workdir / HF_DIR
    assets = read_assets(workdir)
    base = json.loads((keep / "config.json").read_text()) if (keep / "config.json").is_file() else {}
    extra = {p.name: p for p in sorted(keep.glob("*")) if p.name != "config.json"} if keep.is_dir() else {}
    extra.update({p.name: p for p in assets.tokenizer_files})  # what training read wins over the import's copy
    if assets.generation:  # the run's own settings replace the import's
        extra.pop(GENERATION_CONFIG, None)
    if adapters:
        from baobab.init_from import INIT_REPORT
        from baobab.peft_export import export_adapters

        report = workdir / INIT_REPORT
        fresh = json.loads(report.read_text()).get("fresh", []) if report.is_file() else []
        out = export_adapters(model, out, fresh=fresh, task=config.task, base_model=config.finetune.init_from,
                              extra_files=extra.values())
    else:
        if assets.class_names:
            names = assets.class_names
            base["id2label"] = {str(i): name for i, name in enumerate(names)}
            base["label2id"] = {name: i for i, name in enumerate(names)}
        if assets.generation:  # the run's token ids; unknown ones null, not the HF class's defaults
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                if key in assets.generation or key not in base:
                    base[key] = assets.generation.get(key)
        out = hf_io.export_hf(nn.merge_lora(model), out, base_config=base or None, extra_files=extra.values())
    if assets.generation:
        (Path(out) / GENERATION_CONFIG).write_text(json.dumps(assets.generation, indent=2) + "\n")
    return Path(out)
