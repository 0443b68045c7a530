"""``Linear``: an affine map ``y = x @ weight + bias`` over the last axis."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ._checks import check_dim
from ._module import Module, param, static

__all__ = ["Linear", "torch_linear_init"]

Initializer = Callable[..., jax.Array]


def torch_linear_init(fan_in: int) -> Initializer:
    """PyTorch's default for ``nn.Linear``/``nn.Conv``: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / max(fan_in, 1) ** 0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Linear(Module):
    """Affine map over the last axis: ``(..., in_features) -> (..., out_features)``.

    ``weight`` is stored ``(in_features, out_features)`` (PyTorch stores the
    transpose). Init matches PyTorch: weight and bias ``U(-1/sqrt(in), 1/sqrt(in))``,
    unless ``weight_init``/``bias_init`` (``jax.nn.initializers``) are given.
    ``axes`` names the logical axes of ``weight``; ``bias`` takes the second.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> q = nn.Linear(16, 32, key=jax.random.key(0), axes=("embed", "heads"))
    >>> q(jnp.ones((4, 16))).shape
    (4, 32)
    """

    weight: jax.Array
    bias: jax.Array | None
    in_features: int = static()
    out_features: int = static()

    def __init__(self, in_features: int, out_features: int, *, key: jax.Array, use_bias: bool = True,
                 axes: tuple[str | None, str | None] = ("embed", "mlp"),
                 weight_init: Initializer | None = None, bias_init: Initializer | None = None,
                 dtype=jnp.float32):
        self.in_features = in_features
        self.out_features = out_features
        wkey, bkey = jax.random.split(key)
        weight_init = weight_init or torch_linear_init(in_features)
        self.weight = param(weight_init(wkey, (in_features, out_features), dtype), axes)
        if use_bias:
            bias_init = bias_init or torch_linear_init(in_features)
            self.bias = param(bias_init(bkey, (out_features,), dtype), (axes[1],))
        else:
            self.bias = None

    def __call__(self, x: jax.Array) -> jax.Array:
        check_dim(x, -1, self.in_features, "in_features")
        # One 2-D matmul over the flattened leading axes. With (B, T, in) @ (in, out), the
        # weight gradient contracts two axes, and XLA:CPU then materialises transposed
        # copies of the incoming gradient, re-running the whole fused chain of residual
        # adds that produces it: 13-17 % of a small GPT's step (benchmarks/RESULTS.md).
        lead = x.shape[:-1]
        y = x.reshape(-1, self.in_features) @ self.weight  # (prod(...), out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)  # (..., out)
