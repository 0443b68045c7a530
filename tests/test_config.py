"""Typed configs: overrides by key, coercion, unknown keys and wrong types rejected by name."""

import json
from typing import Annotated, Literal, Optional, Union

import pydantic
import pytest

from baobab.config import Config, ConfigError, apply_overrides, load_config, parse_value, to_json


class MLP(Config):
    kind: Literal["mlp"] = "mlp"
    hidden: int = 128
    dropout: float = 0.0


class CNN(Config):
    kind: Literal["cnn"] = "cnn"
    channels: tuple[int, ...] = (32, 64)


class Optimizer(Config):
    lr: float = 1e-3
    nesterov: bool = False
    clip: Optional[float] = 1.0


class Experiment(Config):
    model: Annotated[Union[MLP, CNN], pydantic.Field(discriminator="kind")] = MLP()
    optimizer: Optimizer = Optimizer()
    steps: int = 100
    name: str = "run"


def test_values_are_coerced_sensibly():
    cfg = apply_overrides(Experiment(), ["optimizer.lr=3e-4", "steps=20", "optimizer.nesterov=true",
                                         "optimizer.clip=None", "name=my-run", "model.hidden=64"])
    assert (cfg.optimizer.lr, cfg.steps, cfg.optimizer.nesterov, cfg.optimizer.clip) == (3e-4, 20, True, None)
    assert (cfg.name, cfg.model.hidden) == ("my-run", 64)
    assert parse_value("(1, 2)") == (1, 2) and parse_value("FALSE") is False and parse_value("-1") == -1


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"^optimizer.lrr: no such key; did you mean optimizer.lr\?$"):
        apply_overrides(Experiment(), ["optimizer.lrr=1"])
    with pytest.raises(ConfigError, match=r"^stepz: no such key; did you mean steps\?$"):
        apply_overrides(Experiment(), ["stepz=1"])
    with pytest.raises(ConfigError, match=r"expected key=value"):
        apply_overrides(Experiment(), ["steps"])


def test_wrong_type_is_rejected_by_key():
    with pytest.raises(ConfigError, match=r"^steps: input should be a valid integer.*got 'abc'"):
        apply_overrides(Experiment(), ["steps=abc"])
    with pytest.raises(ConfigError, match=r"optimizer.nesterov: input should be a valid boolean"):
        apply_overrides(Experiment(), ["optimizer.nesterov=maybe"])


def test_kind_switches_section_and_unknown_kind_lists_valid_ones():
    cfg = apply_overrides(Experiment(), ["model.kind=cnn", "model.channels=(8,16,32)"])
    assert cfg.model == CNN(channels=(8, 16, 32))
    with pytest.raises(ConfigError, match=r"model: unknown kind 'rnn'; valid kinds: 'mlp', 'cnn'"):
        apply_overrides(Experiment(), ["model.kind=rnn"])
    with pytest.raises(ConfigError, match=r"model.hidden: no such key"):
        apply_overrides(Experiment(), ["model.kind=cnn", "model.hidden=3"])


def test_configs_are_frozen_and_resolve_to_json():
    cfg = Experiment()
    with pytest.raises(pydantic.ValidationError):
        cfg.steps = 3
    data = json.loads(to_json(cfg))
    assert data["optimizer"]["lr"] == 1e-3 and data["model"]["kind"] == "mlp"
    assert Experiment.model_validate(data) == cfg


def test_load_config_from_a_python_file(tmp_path):
    f = tmp_path / "exp.py"
    f.write_text("from test_config import Experiment\n\ndef get_config():\n    return Experiment(steps=7)\n")
    assert load_config(f, ["name=x"]).model_dump() == Experiment(steps=7, name="x").model_dump()
    with pytest.raises(ConfigError, match=r"config file '.*missing.py' does not exist"):
        load_config(tmp_path / "missing.py")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match=r"defines no get_config\(\)"):
        load_config(tmp_path / "empty.py")
    (tmp_path / "bad.py").write_text("from test_config import Experiment\ndef get_config():\n    return Experiment(stepz=1)\n")
    with pytest.raises(ConfigError, match=r"bad.py: stepz: no such key"):
        load_config(tmp_path / "bad.py")


def test_the_embedded_default_is_configs_mnist_cnn():
    from pathlib import Path

    from baobab.experiment import ExperimentConfig

    repo = Path(__file__).resolve().parents[1]
    mnist_cnn = load_config(repo / "configs" / "mnist_cnn.py")
    default = ExperimentConfig()
    assert mnist_cnn.model_dump(exclude={"trainer": {"workdir"}}) == default.model_dump(exclude={"trainer": {"workdir"}})


def test_every_config_file_loads():
    from pathlib import Path

    from baobab.experiment import ExperimentConfig

    repo = Path(__file__).resolve().parents[1]
    for path in sorted((repo / "configs").glob("*.py")):
        config = load_config(path)
        assert isinstance(config, ExperimentConfig), path
        assert "Command" in (load_config.__module__ and path.read_text()) or "Plan" in path.read_text(), path


def test_a_warmup_longer_than_the_run_is_reported(tmp_path, caplog):
    import logging

    from baobab.data import MnistData
    from baobab.commands import run_train
    from baobab.experiment import CheckpointConfig, ExperimentConfig, LoggingConfig, TrainerConfig
    from baobab.models import MLPConfig

    config = ExperimentConfig(model=MLPConfig(hidden=(16,)), trainer=TrainerConfig(workdir=str(tmp_path), steps=3),
                              data=MnistData(batch_size=64, eval_batch_size=200),
                              checkpoint=CheckpointConfig(async_save=False), logging=LoggingConfig(progress=False))
    assert config.schedule.warmup_steps == 40  # the default schedule
    with caplog.at_level(logging.WARNING, logger="baobab"):
        result = run_train(config)
    assert "schedule.warmup_steps = 40 covers all trainer.steps = 3: the warmup is cut to 2 steps" in caplog.text
    assert result.metrics["train/learning_rate"] == pytest.approx(config.optimizer.lr)  # no decay at the end


def test_switching_to_a_kind_with_required_keys_takes_them_from_the_same_overrides():
    from baobab.experiment import ExperimentConfig

    cfg = apply_overrides(ExperimentConfig(), ["data.kind=prepared", "data.path=/data/x", "data.batch_size=8"])
    assert (cfg.data.kind, cfg.data.path, cfg.data.batch_size) == ("prepared", "/data/x", 8)
    with pytest.raises(ConfigError, match="data.path: field required"):
        apply_overrides(ExperimentConfig(), ["data.kind=prepared"])
