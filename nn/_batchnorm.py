"""``BatchNorm``: normalise over the batch with explicit running statistics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._checks import check_dim
from ._module import Module, param, state, static
from ._state import update_state

__all__ = ["BatchNorm"]


class BatchNorm(Module):
    """Batch normalisation over every axis but the last (channels-last).

    Shapes: ``(..., num_features) -> (..., num_features)``; ``(N, H, W, C)`` for
    images. Matches ``torch.nn.BatchNorm{1,2,3}d`` after moving channels last.

    * ``training=True`` (the default, as in PyTorch): normalise with the batch
      statistics and record new running statistics through ``nn.update_state``;
      call through ``nn.stateful_call`` to get the updated layer back.
      ``momentum`` follows PyTorch: ``running = (1 - momentum) * running + momentum * batch``,
      with the unbiased batch variance.
    * ``training=False`` (``nn.eval_mode(model)``): normalise with the running
      statistics; nothing is recorded.
    * ``axis_name``: under ``shard_map``/``vmap`` with a named axis, batch statistics
      are averaged over that axis (cross-device BatchNorm). Under plain ``jit`` on a
      batch-sharded array no name is needed: the mean is already global.

    Init: ``weight = 1``, ``bias = 0``, ``running_mean = 0``, ``running_var = 1``.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> bn = nn.BatchNorm(3)
    >>> y, bn = nn.stateful_call(bn, jnp.arange(12.0).reshape(4, 3))
    >>> y.shape, [round(v, 2) for v in bn.running_var.tolist()]
    ((4, 3), [2.4, 2.4, 2.4])
    """

    weight: jax.Array | None
    bias: jax.Array | None
    running_mean: jax.Array
    running_var: jax.Array
    num_features: int = static()
    eps: float = static(default=1e-5)
    momentum: float = static(default=0.1)
    training: bool = static(default=True)
    axis_name: Any = static(default=None)

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, training: bool = True, axis_name: Any = None,
                 axes: tuple[str | None] = ("channels",), dtype=jnp.float32):
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.training = training
        self.axis_name = axis_name
        self.weight = param(jnp.ones(num_features, dtype), axes) if affine else None
        self.bias = param(jnp.zeros(num_features, dtype), axes) if affine else None
        self.running_mean = state(jnp.zeros(num_features, dtype), axes)
        self.running_var = state(jnp.ones(num_features, dtype), axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_dim(x, -1, self.num_features, "num_features (channels last)")
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # statistics in float32 at least
        if self.training:
            reduce_axes = tuple(range(x.ndim - 1))
            count = jnp.asarray(x.size // self.num_features, jnp.float32)
            mean = jnp.mean(xf, axis=reduce_axes)  # (C,)
            if self.axis_name is not None:
                mean = jax.lax.pmean(mean, self.axis_name)
                count = jax.lax.psum(count, self.axis_name)
            # Two passes (variance of the centred input): E[x^2] - E[x]^2 cancels
            # catastrophically when |mean| >> std, e.g. after a ReLU or in bf16.
            var = jnp.mean(jnp.square(xf - mean), axis=reduce_axes)  # (C,) biased, for normalising
            if self.axis_name is not None:
                var = jax.lax.pmean(var, self.axis_name)
            unbiased = var * count / jnp.maximum(count - 1, 1)
            m = self.momentum
            update_state(
                self,
                running_mean=jax.lax.stop_gradient((1 - m) * self.running_mean + m * mean),
                running_var=jax.lax.stop_gradient((1 - m) * self.running_var + m * unbiased),
            )
        else:
            mean, var = self.running_mean.astype(xf.dtype), self.running_var.astype(xf.dtype)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.astype(y.dtype) + self.bias.astype(y.dtype)
        return y.astype(x.dtype)
