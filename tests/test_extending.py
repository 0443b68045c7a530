"""Adding a model kind, a dataset kind or a task is one file plus one table entry.

Each test adds a toy from ``tests/toy_extension.py`` with one ``setitem`` on the
table, then trains it through the same path as ``baobab train`` (``run_train``),
and checks that it learned.
"""

from __future__ import annotations

import pytest

import toy_extension as toy
from baobab import data as bdata
from baobab import models, tasks
from baobab.commands import run_train
from baobab.data import MnistData
from baobab.config import ConfigError, apply_overrides
from baobab.experiment import ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainerConfig


def experiment(tmp_path, **sections) -> ExperimentConfig:
    base = dict(data=MnistData(batch_size=64, eval_batch_size=200), optimizer=OptimizerConfig(lr=1e-2), schedule=ScheduleConfig(kind="constant"),
                trainer=TrainerConfig(workdir=str(tmp_path / "run"), steps=60, eval_at_start=True))
    return ExperimentConfig(**{**base, **sections})


def test_a_new_model_kind_is_one_table_entry(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="model: unknown kind 'toy_linear'"):
        apply_overrides(ExperimentConfig(), ["model.kind=toy_linear"])
    monkeypatch.setitem(models.MODELS, "toy_linear", models.ModelEntry(toy.ToyLinearConfig, toy.ToyLinear))
    config = apply_overrides(experiment(tmp_path), ["model.kind=toy_linear"])  # overrides see it at once
    assert isinstance(config.model, toy.ToyLinearConfig)
    result = run_train(config)
    assert result.start_eval_metrics["eval/accuracy"] < 0.3  # a fresh linear model guesses
    assert result.eval_metrics["eval/accuracy"] > 0.75  # it learned MNIST digits


def test_a_new_dataset_kind_is_one_table_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(bdata.DATASETS, "quadrants", bdata.DatasetEntry(toy.QuadrantData, toy.build_quadrants))
    config = experiment(tmp_path, model=models.MLPConfig(in_features=64, hidden=(16,), num_classes=4),
                        data=toy.QuadrantData())
    assert ExperimentConfig.model_validate(config.model_dump()) == config  # the resolved config round-trips
    with pytest.raises(ConfigError, match="model.num_classes = 10 but the data has 4 classes"):
        run_train(apply_overrides(config, ["model.num_classes=10"]))
    result = run_train(config)
    assert result.eval_metrics["eval/accuracy"] > 0.95


def test_a_new_task_is_one_table_entry(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown task 'regression'"):
        apply_overrides(ExperimentConfig(), ["task=regression"])
    monkeypatch.setitem(tasks.TASKS, "regression", toy.REGRESSION)
    monkeypatch.setitem(bdata.DATASETS, "line", bdata.DatasetEntry(toy.LineData, toy.build_line))
    monkeypatch.setitem(models.MODELS, "toy_linear", models.ModelEntry(toy.ToyLinearConfig, toy.ToyLinear))
    config = experiment(tmp_path, task="regression", model=toy.ToyLinearConfig(in_features=8, num_classes=1),
                        data=toy.LineData(), optimizer=OptimizerConfig(lr=0.1, weight_decay=0.0),
                        schedule=ScheduleConfig(kind="cosine", warmup_steps=5))
    with pytest.raises(ConfigError, match="a regression needs model.num_classes=1"):
        run_train(apply_overrides(config, ["model.num_classes=3"]))
    result = run_train(config)
    before, after = result.start_eval_metrics["eval/mse"], result.eval_metrics["eval/mse"]
    assert after < 0.01 * before and after < 0.01, (before, after)
