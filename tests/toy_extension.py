"""Toys that extend baobab the documented way (``docs/design.md``, "How to add ..."):
each is one file's worth of code plus one table entry, made by ``tests/test_extending.py``.

* a model kind: ``ToyLinearConfig`` / ``ToyLinear`` for ``models.MODELS``;
* a dataset kind: ``QuadrantData`` and ``build_quadrants`` for ``data.DATASETS``
  (8x8 images whose one bright quadrant is the label);
* a task: ``REGRESSION``, a ``tasks.Task`` for ``tasks.TASKS``, fed by ``LineData``
  (``y = x . w`` plus a little noise).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import grain
import jax
import jax.numpy as jnp
import numpy as np

from baobab import data as bdata
from baobab import nn
from baobab.config import Config
from baobab.tasks import Task


class ToyLinearConfig(Config):
    kind: Literal["toy_linear"] = "toy_linear"
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression")
    in_features: int = 784
    num_classes: int = 10  # outputs; 1 for regression
    fail_inside: bool = False  # raise an internal TypeError from __call__ (a bug, for the CLI test)


class ToyLinear(nn.Module):
    """``(N, ...) -> (N, num_classes)``: one ``Linear`` on the flattened input."""

    linear: nn.Linear
    config: ToyLinearConfig = nn.static()

    def __init__(self, config: ToyLinearConfig, *, key: jax.Array):
        self.config = config
        self.linear = nn.Linear(config.in_features, config.num_classes, key=key, axes=("embed", "classes"))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.config.fail_inside:
            len(None)  # an internal bug: TypeError: object of type 'NoneType' has no len()
        return self.linear(x.reshape(x.shape[0], -1))


class QuadrantData(Config):
    kind: Literal["quadrants"] = "quadrants"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    batch_size: int = 32
    examples: int = 512


def _quadrant_examples(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = int(rng.integers(4))
        image = rng.uniform(0, 0.3, (8, 8, 1)).astype(np.float32)
        r, c = divmod(label, 2)
        image[4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.7
        out.append({"image": image, "label": np.int32(label)})
    return out


def build_quadrants(cfg: QuadrantData, mesh, rules, seed):
    train = bdata.train_loader(grain.MapDataset.source(_quadrant_examples(cfg.examples, seed)),
                               batch_size=cfg.batch_size, seed=seed, mesh=mesh, rules=rules)
    test = bdata.eval_loader(grain.MapDataset.source(_quadrant_examples(128, seed + 1)), batch_size=64,
                             mesh=mesh, rules=rules)
    return train, (lambda: iter(test)), bdata.DataInfo("classification", num_classes=4, image_shape=(8, 8, 1))


class LineData(Config):
    kind: Literal["line"] = "line"
    tasks: ClassVar[tuple[str, ...]] = ("regression",)
    features: int = 8
    batch_size: int = 32


def _line_examples(n: int, features: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    w = np.linspace(-1, 1, features).astype(np.float32)  # the same line for every split
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = x @ w + 0.01 * rng.normal(size=n).astype(np.float32)
    return [{"x": x[i], "y": np.float32(y[i])} for i in range(n)]


def build_line(cfg: LineData, mesh, rules, seed):
    train = bdata.train_loader(grain.MapDataset.source(_line_examples(1024, cfg.features, seed)),
                               batch_size=cfg.batch_size, seed=seed, mesh=mesh, rules=rules)
    test = bdata.eval_loader(grain.MapDataset.source(_line_examples(256, cfg.features, seed + 1)), batch_size=64,
                             mesh=mesh, rules=rules)
    return train, (lambda: iter(test)), bdata.DataInfo("regression", seq_len=cfg.features)


def _squared_error(model, batch):
    return (model(batch["x"])[:, 0] - batch["y"]) ** 2  # (B,)


def _regression_check(model_config, info) -> list[str]:
    if "regression" not in type(model_config).tasks:
        return [f"model.kind = {model_config.kind!r} does not run task=regression"]
    if getattr(model_config, "num_classes", 1) != 1:
        return [f"model.num_classes = {model_config.num_classes}; a regression needs model.num_classes=1"]
    return []


REGRESSION = Task(
    name="regression",
    loss=lambda model, batch, key: (jnp.mean(_squared_error(model, batch)), {}),
    eval=lambda model, batch: {"mse": _squared_error(model, batch)},
    batch=lambda info, size: {"x": ((size, info.seq_len), jnp.float32), "y": ((size,), jnp.float32)},
    check=_regression_check,
)
