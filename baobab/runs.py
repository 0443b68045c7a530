"""Run directories: what ``baobab train`` leaves behind, and how to load it from Python.

A run directory (``trainer.workdir``) holds::

    config.json              the resolved ExperimentConfig (every default filled in)
    metrics.jsonl            one JSON object per logged step (train/*, eval/*, perf/*)
    tensorboard/             the same metrics as TensorBoard events
    checkpoints/<step>/      state/ (model, optimizer, step, rng, ema), data/, config/, run/
    hf/                      for imported models: the source's config.json and tokenizer files
    init_from.json           for fine-tunes: what came from ``finetune.init_from``, what is fresh
    assets/                  tokenizer/ files, labels.json (class names), generation_config.json:
                             what a downstream user needs (``baobab.run_assets``)

``load_run`` reads the config and ``restore_model`` the newest model, read-only:
neither creates, deletes nor moves anything, so both are safe on a run that is
still training. ``write_config`` is the writer ``baobab train`` uses.

>>> import tempfile
>>> from baobab import runs
>>> from baobab.experiment import ExperimentConfig, TrainerConfig
>>> workdir = tempfile.mkdtemp()
>>> path = runs.write_config(ExperimentConfig(trainer=TrainerConfig(workdir=workdir)))
>>> runs.load_run(workdir, ["trainer.steps=5"]).trainer.steps
5
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import jax
import pydantic

from baobab import train as btrain
from baobab.config import _error_from_validation, apply_overrides, to_json
from baobab.errors import CheckpointError, ConfigError
from baobab.experiment import ExperimentConfig, make_mesh, model_constructor, rules

__all__ = ["CONFIG_FILE", "CHECKPOINTS", "load_run", "restore_model", "write_config", "has_checkpoint"]

#: Name of the resolved config in a run directory.
CONFIG_FILE = "config.json"
#: The checkpoint folder inside a run directory.
CHECKPOINTS = "checkpoints"


def write_config(config: ExperimentConfig) -> Path:
    """Write the resolved ``config`` as ``<workdir>/config.json`` (process 0 only); its path."""
    workdir = Path(config.trainer.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / CONFIG_FILE
    if jax.process_index() == 0:
        path.write_text(to_json(config) + "\n")
    return path


def _with_task(values: dict[str, Any]) -> dict[str, Any]:
    """Run directories written before configs named their task: take the data's only task."""
    if "task" not in values and isinstance(values.get("data"), dict):
        from baobab import data as bdata

        entry = bdata.DATASETS.get(values["data"].get("kind"))
        tasks = getattr(entry.config, "tasks", ()) if entry else ()
        if len(tasks) == 1:
            values = {**values, "task": tasks[0]}
    return values


def load_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The resolved config of a run directory (or of a checkpoint inside one), with overrides.

    ``trainer.workdir`` is the directory that holds the ``config.json`` (a run that was
    moved or copied is read where it is now), unless an override sets it.
    """
    path = Path(run_dir)
    for candidate in (path / CONFIG_FILE, path.parent / CONFIG_FILE, path.parent.parent / CONFIG_FILE):
        if candidate.is_file():
            try:
                values = json.loads(candidate.read_text(encoding="utf-8"))
                if not isinstance(values, dict):
                    raise ConfigError(f"{candidate}: not a valid baobab run config (a JSON "
                                      f"{type(values).__name__}, not an object); restore the file from the run.")
                config = ExperimentConfig.model_validate(_with_task(values))
            except pydantic.ValidationError as err:  # by key: the CLI shows one line
                raise ConfigError(f"{candidate}: not a valid baobab run config ({_error_from_validation(err)}); was "
                                  f"it written by another baobab version?") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ConfigError(f"{candidate}: not valid JSON ({' '.join(str(err).split())}); restore the file "
                                  f"from the run.") from None
            # The run is where its config.json is, wherever it was trained: a moved or copied run
            # directory reads its own checkpoints, not those of the path it was trained in.
            config = config.model_copy(update={"trainer": config.trainer.model_copy(
                update={"workdir": str(candidate.parent)})})
            return apply_overrides(config, list(overrides))
    raise ConfigError(f"{str(run_dir)!r} is not a baobab run directory: no {CONFIG_FILE} there or above it. "
                      f"Pass the trainer.workdir of a run.")


def has_checkpoint(workdir: str | Path) -> bool:
    """Whether ``workdir`` holds at least one finished checkpoint."""
    return bool(btrain.finished_steps(Path(workdir) / CHECKPOINTS))


def restore_model(config: ExperimentConfig, mesh=None, *, step: int | None = None) -> tuple[Any, int]:
    """``(model, step)``: the newest checkpointed model of a run (its EMA weights if kept), read-only.

    Only the model is read, straight into its shardings on ``mesh`` (default: the
    config's mesh); the optimizer state stays on disk, and nothing in the run
    directory changes.
    """
    mesh = mesh or make_mesh(config)
    directory = Path(config.trainer.workdir) / CHECKPOINTS
    if not btrain.finished_steps(directory):
        raise CheckpointError(f"{config.trainer.workdir}: no checkpoint to load; train the run first")
    target = btrain.abstract_state(model_constructor(config), _no_optimizer(), mesh=mesh, rules=rules(config),
                                   seed=config.trainer.seed, precision=config.trainer.precision).model
    return btrain.read_model(directory, target, step=step, ema=config.trainer.ema_decay is not None)


def _no_optimizer():
    import optax

    return optax.identity()
