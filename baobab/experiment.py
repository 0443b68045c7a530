"""The experiment config: one typed section per concern, composed into ``ExperimentConfig``.

``model`` and ``data`` choose their kind from ``baobab.models.MODELS`` and
``baobab.data.DATASETS``; ``optimizer`` and ``schedule`` from ``baobab.optimizers``;
``finetune`` is ``baobab.finetune``'s; ``task`` names a ``baobab.tasks.TASKS`` entry.
The functions below turn a config into the mesh, rules, model constructor and
optimizer that ``train``, ``eval``, ``plan`` and ``import`` all use.

>>> from baobab.experiment import ExperimentConfig
>>> cfg = ExperimentConfig()
>>> cfg.task, cfg.model.kind, cfg.data.kind, cfg.optimizer.kind
('classification', 'cnn', 'mnist', 'adamw')
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax
import pydantic

from baobab import data as bdata
from baobab import models, nn
from baobab import train as btrain
from baobab.config import Config, ConfigError
from baobab.finetune import FinetuneConfig, LoRAConfig, apply_finetune
from baobab.optimizers import OptimizerConfig, ScheduleConfig, build_optimizer as _build, build_schedule
from baobab.tasks import TASKS, Task
from baobab.train import CheckpointConfig, LoggingConfig, MeshConfig, TrainerConfig

__all__ = [
    "OptimizerConfig", "ScheduleConfig", "MeshConfig", "TrainerConfig", "CheckpointConfig", "LoggingConfig",
    "FinetuneConfig", "LoRAConfig", "ExperimentConfig", "build_optimizer", "make_mesh", "rules",
    "model_constructor", "task_of", "check_fits",
]


# ----------------------------------------------------------------------------------------
# The whole run. trainer/checkpoint/mesh/logging are baobab.train's own settings types
# (train/_settings.py), re-exported here: train.train takes the same sections.
# ----------------------------------------------------------------------------------------


class ExperimentConfig(Config):
    """A whole run. The default is the embedded-MNIST CNN, the README's main job.

    ``task`` names what the run optimises (``baobab.tasks.TASKS``); the model and the
    data must both support it (``tasks`` on their config classes).
    """

    task: str = "classification"
    model: models.ModelConfig = models.CNNConfig()
    data: bdata.DataConfig = bdata.MnistData(batch_size=64)
    optimizer: OptimizerConfig = OptimizerConfig(lr=2e-3)
    schedule: ScheduleConfig = ScheduleConfig(warmup_steps=40)
    trainer: TrainerConfig = TrainerConfig(steps=400)
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
    finetune: FinetuneConfig = FinetuneConfig()  # init_from=, freeze, LoRA

    @pydantic.field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        return task


# ----------------------------------------------------------------------------------------
# From a config to the pieces every command uses
# ----------------------------------------------------------------------------------------


def build_optimizer(config: ExperimentConfig) -> optax.GradientTransformation:
    """The optax optimizer of a run: ``optimizer`` with the ``schedule`` over ``trainer.steps``."""
    lr = build_schedule(config.schedule, config.optimizer.lr, steps=config.trainer.steps)
    return _build(config.optimizer, lr)


def rules(config: ExperimentConfig) -> dict[str, Any]:
    """The logical-axis rules of ``mesh.rules``."""
    return dict(btrain.STRATEGY_RULES[config.mesh.rules])


def make_mesh(config: ExperimentConfig):
    """The device mesh of ``mesh.data/fsdp/tensor`` over this process's devices."""
    return btrain.make_mesh(config.mesh)


def model_constructor(config: ExperimentConfig) -> Callable[[jax.Array], nn.Module]:
    """``key -> model``: the model section built, then frozen / LoRA-wrapped as ``finetune`` says."""
    model_config, finetune = config.model, config.finetune
    return lambda key: apply_finetune(models.build_model(model_config, key=key), finetune, key)


def task_of(config: ExperimentConfig) -> Task:
    """The ``Task`` the config names."""
    return TASKS[config.task]


def check_fits(config: ExperimentConfig, info: bdata.DataInfo) -> None:
    """Refuse a model, data and task that do not fit together, naming the keys to set."""
    task = task_of(config)
    problems = []
    if info.task != task.name and info.task not in task.reads:
        problems.append(f"data.kind = {config.data.kind!r} feeds {info.task}, not task={task.name}; set "
                        f"task={info.task}, or choose a data kind for {task.name}")
    problems += task.check(config.model, info)
    if problems:
        raise ConfigError("; ".join(problems))
