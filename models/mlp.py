"""A multi-layer perceptron classifier: flatten, hidden ``Linear`` + activation layers, a head.

The smallest model in the zoo, and the one to read first: a config class, a model
class built from it with an explicit key, and a pure ``__call__``.

>>> import jax, jax.numpy as jnp
>>> from baobab.models import MLPClassifier, MLPConfig
>>> model = MLPClassifier(MLPConfig(in_features=784, hidden=(64,)), key=jax.random.key(0))
>>> model(jnp.zeros((8, 28, 28, 1))).shape  # (N, H, W, C) is flattened to (N, 784)
(8, 10)
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import pydantic

from baobab import nn
from baobab.config import Config

__all__ = ["MLPConfig", "MLPClassifier"]

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "tanh": jnp.tanh}


class MLPConfig(Config):
    """An MLP classifier. Defaults suit 28x28 grey-scale digits (MNIST)."""

    kind: Literal["mlp"] = "mlp"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the baobab.tasks it can run
    in_features: int = pydantic.Field(784, gt=0, description="size of one flattened input example")
    hidden: tuple[pydantic.PositiveInt, ...] = pydantic.Field((512, 256), description="hidden widths")
    num_classes: int = pydantic.Field(10, gt=0)
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0, description="drop rate after each hidden layer")


class MLPClassifier(nn.Module):
    """``(N, ...) -> (N, num_classes)`` logits; every axis after the first is flattened.

    Paths: ``hidden[i].weight`` ``(in, out)`` and ``hidden[i].bias``, then ``head``.
    Inputs must be floating point (scale uint8 pixels first, e.g. ``data.Normalize()``).
    With ``dropout > 0`` a call in training mode needs ``key=`` (``nn.eval_mode(model)`` turns dropout off).
    """

    hidden: tuple[nn.Linear, ...]
    dropout: nn.Dropout
    head: nn.Linear
    config: MLPConfig = nn.static()

    def __init__(self, config: MLPConfig, *, key: jax.Array):
        self.config = config
        widths = (config.in_features, *config.hidden)
        self.hidden = tuple(
            nn.Linear(d_in, d_out, key=nn.subkey(key, f"hidden[{i}]"), axes=("embed", "mlp"))
            for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(widths[-1], config.num_classes, key=nn.subkey(key, "head"),
                              axes=("mlp", "classes"))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(
                f"MLPClassifier expects floating-point inputs, got {x.dtype} with shape {tuple(x.shape)}. "
                f"Scale integer pixels first, e.g. x.astype(jnp.float32) / 255 or data.Normalize()."
            )
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.config.in_features:
            raise nn.ShapeError(
                f"MLPClassifier(in_features={self.config.in_features}) got input of shape {tuple(x.shape)}; "
                f"expected (N, ...) with {self.config.in_features} values per example. Set "
                f"MLPConfig(in_features={math.prod(x.shape[1:]) if x.ndim >= 2 else '...'}) for this data."
            )
        keys = [None] * len(self.hidden) if key is None else list(jax.random.split(key, len(self.hidden)))
        h = x.reshape(x.shape[0], -1)  # (N, in_features)
        for layer, layer_key in zip(self.hidden, keys, strict=True):
            h = self.dropout(ACTIVATIONS[self.config.activation](layer(h)), key=layer_key)  # (N, width)
        return self.head(h)  # (N, num_classes)
