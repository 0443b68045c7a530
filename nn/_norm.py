"""Per-example normalisation: ``LayerNorm``, ``RMSNorm`` and ``GroupNorm``.

All three compute their statistics in float32 (float64 if the input is float64),
whatever the input dtype, and return the input dtype: a bf16 policy gives bf16 in
and out with float32 statistics in between. They hold no state, so they need no
``nn.stateful_call``; ``BatchNorm`` (batch statistics) lives in ``_batchnorm.py``.
"""

from __future__ import annotations

import operator
from typing import Sequence

import jax
import jax.numpy as jnp

from ._checks import ShapeError, check_dim
from ._context import where
from ._module import Module, param, static

__all__ = ["LayerNorm", "RMSNorm", "GroupNorm"]


def _stats_dtype(x: jax.Array) -> jnp.dtype:
    """float32 for half/bf16/float32 inputs, float64 for float64; refuses integers."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{where()}: expected a floating-point input, got dtype {x.dtype}.")
    return jnp.promote_types(x.dtype, jnp.float32)


def _as_shape(shape: int | Sequence[int], cls: str) -> tuple[int, ...]:
    """Normalise an int or a sequence of ints to a tuple of positive ints."""
    try:
        dims = (operator.index(shape),) if not isinstance(shape, Sequence) else tuple(map(operator.index, shape))
    except TypeError:
        raise TypeError(f"{cls}: normalized_shape must be an int or a tuple of ints, got {shape!r}.") from None
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{cls}: normalized_shape must be non-empty with positive sizes, got {shape!r}.")
    return dims


def _check_eps(eps: float | None, cls: str, allow_none: bool = False) -> float | None:
    if eps is None and allow_none:
        return None
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"{cls}: eps must be a float >= 0, got {eps!r}.")
    return float(eps)


def _check_trailing(x: jax.Array, shape: tuple[int, ...]) -> None:
    """Raise ``ShapeError`` unless the last ``len(shape)`` dimensions of ``x`` are ``shape``."""
    if len(shape) == 1:
        check_dim(x, -1, shape[0], "normalized_shape")
    elif tuple(x.shape[-len(shape):]) != shape or x.ndim < len(shape):
        raise ShapeError(
            f"{where()}: expected input whose last {len(shape)} dimensions are {shape} "
            f"(normalized_shape), got shape {tuple(x.shape)}."
        )


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes.

    Shapes: ``(..., *normalized_shape) -> (..., *normalized_shape)``; with an int,
    ``(..., features) -> (..., features)``. Matches ``torch.nn.LayerNorm``:
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the biased variance,
    both over the normalised axes. Statistics are float32; the output has the
    input's dtype.

    Init (as PyTorch): ``weight = 1``, ``bias = 0``. ``use_scale=False`` drops
    ``weight``, ``use_bias=False`` drops ``bias`` (both ``None``). ``axes`` names
    the logical axes of ``weight``/``bias`` (default ``"norm"`` on each).

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> ln = nn.LayerNorm(8)
    >>> y = ln(jnp.arange(16.0).reshape(2, 8))
    >>> y.shape, y.std(-1).round(3).tolist()
    ((2, 8), [1.0, 1.0])
    >>> nn.LayerNorm((4, 8), use_bias=False)(jnp.ones((2, 4, 8))).shape
    (2, 4, 8)
    """

    weight: jax.Array | None
    bias: jax.Array | None
    normalized_shape: tuple[int, ...] = static()
    eps: float = static(default=1e-5)

    def __init__(self, normalized_shape: int | Sequence[int], *, eps: float = 1e-5,
                 use_scale: bool = True, use_bias: bool = True,
                 axes: tuple[str | None, ...] | None = None, dtype=jnp.float32):
        self.normalized_shape = _as_shape(normalized_shape, "LayerNorm")
        self.eps = _check_eps(eps, "LayerNorm")
        axes = ("norm",) * len(self.normalized_shape) if axes is None else axes
        self.weight = param(jnp.ones(self.normalized_shape, dtype), axes) if use_scale else None
        self.bias = param(jnp.zeros(self.normalized_shape, dtype), axes) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        _check_trailing(x, self.normalized_shape)
        xf = x.astype(_stats_dtype(x))
        reduce = tuple(range(-len(self.normalized_shape), 0))
        mean = jnp.mean(xf, axis=reduce, keepdims=True)  # (..., 1, ..., 1)
        centred = xf - mean
        var = jnp.mean(jnp.square(centred), axis=reduce, keepdims=True)  # biased, as torch
        y = centred * jax.lax.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.astype(y.dtype)
        if self.bias is not None:
            y = y + self.bias.astype(y.dtype)
        return y.astype(x.dtype)


class RMSNorm(Module):
    """Root-mean-square normalisation over the trailing ``normalized_shape`` axes.

    Shapes: ``(..., *normalized_shape) -> (..., *normalized_shape)``; an int means
    the last axis. Matches ``torch.nn.RMSNorm``: ``y = x / sqrt(mean(x**2) + eps) * weight``.

    ``eps=None`` (the default, as in PyTorch) means the machine epsilon of the
    float32 compute dtype, ``finfo(float32).eps ~ 1.19e-7`` (float64 inputs:
    ``finfo(float64).eps``). PyTorch also uses the float32 epsilon for bf16/half
    inputs, since it computes in float32. Models trained with a fixed value
    (Llama: 1e-5 or 1e-6, T5: 1e-6) should pass it: ``nn.RMSNorm(d, eps=1e-6)``.

    Init (as PyTorch): ``weight = 1``; ``use_scale=False`` drops it (``None``).
    ``axes`` names the logical axes of ``weight`` (default ``"norm"`` on each).

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> rms = nn.RMSNorm(4)
    >>> rms(jnp.array([[2.0, -2.0, 2.0, -2.0]])).round(4).tolist()
    [[1.0, -1.0, 1.0, -1.0]]
    """

    weight: jax.Array | None
    normalized_shape: tuple[int, ...] = static()
    eps: float | None = static(default=None)

    def __init__(self, normalized_shape: int | Sequence[int], *, eps: float | None = None,
                 use_scale: bool = True, axes: tuple[str | None, ...] | None = None,
                 dtype=jnp.float32):
        self.normalized_shape = _as_shape(normalized_shape, "RMSNorm")
        self.eps = _check_eps(eps, "RMSNorm", allow_none=True)
        axes = ("norm",) * len(self.normalized_shape) if axes is None else axes
        self.weight = param(jnp.ones(self.normalized_shape, dtype), axes) if use_scale else None

    def __call__(self, x: jax.Array) -> jax.Array:
        _check_trailing(x, self.normalized_shape)
        xf = x.astype(_stats_dtype(x))
        eps = jnp.finfo(xf.dtype).eps if self.eps is None else self.eps
        reduce = tuple(range(-len(self.normalized_shape), 0))
        mean_sq = jnp.mean(jnp.square(xf), axis=reduce, keepdims=True)  # (..., 1, ..., 1)
        y = xf * jax.lax.rsqrt(mean_sq + eps)
        if self.weight is not None:
            y = y * self.weight.astype(y.dtype)
        return y.astype(x.dtype)


class GroupNorm(Module):
    """Group normalisation, channels-last: ``(N, ..., C) -> (N, ..., C)``.

    The leading axis is the batch; the ``C`` channels are split into
    ``num_groups`` contiguous groups, and each example is normalised over its
    spatial axes and the channels of each group. Matches ``torch.nn.GroupNorm``
    on ``(N, C, ...)`` after moving channels last (``(N, H, W, C)`` for images,
    ``(N, L, C)`` for sequences). ``num_groups=1`` normalises over everything but
    the batch; ``num_groups=C`` is instance normalisation.

    Init (as PyTorch): ``weight = 1``, ``bias = 0``, per channel (logical axis
    ``"channels"``); ``affine=False`` drops both (``None``).

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> gn = nn.GroupNorm(2, 8)
    >>> gn(jax.random.normal(jax.random.key(0), (2, 4, 4, 8))).shape
    (2, 4, 4, 8)
    """

    weight: jax.Array | None
    bias: jax.Array | None
    num_groups: int = static()
    num_channels: int = static()
    eps: float = static(default=1e-5)

    def __init__(self, num_groups: int, num_channels: int, *, eps: float = 1e-5, affine: bool = True,
                 axes: tuple[str | None] = ("channels",), dtype=jnp.float32):
        for name, value in (("num_groups", num_groups), ("num_channels", num_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GroupNorm: {name} must be a positive int, got {value!r}.")
        if num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: num_channels={num_channels} is not divisible by num_groups={num_groups}; "
                f"each group needs the same number of channels. Pick num_groups among the "
                f"divisors of {num_channels}, e.g. "
                f"{[g for g in range(1, num_channels + 1) if num_channels % g == 0][:8]}."
            )
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = _check_eps(eps, "GroupNorm")
        self.weight = param(jnp.ones(num_channels, dtype), axes) if affine else None
        self.bias = param(jnp.zeros(num_channels, dtype), axes) if affine else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim < 2:
            raise ShapeError(
                f"{where()}: expected input (N, ..., C) with a leading batch axis, at least 2 "
                f"dimensions, got shape {tuple(x.shape)}. For one example, add the axis: x[None]."
            )
        check_dim(x, -1, self.num_channels, "num_channels (channels last)")
        xf = x.astype(_stats_dtype(x))
        g = xf.reshape(*x.shape[:-1], self.num_groups, self.num_channels // self.num_groups)  # (N, ..., G, C/G)
        reduce = tuple(range(1, x.ndim - 1)) + (x.ndim,)  # spatial axes and the channels within a group
        mean = jnp.mean(g, axis=reduce, keepdims=True)  # (N, 1.., G, 1)
        centred = g - mean
        var = jnp.mean(jnp.square(centred), axis=reduce, keepdims=True)  # biased, as torch
        y = (centred * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)  # (N, ..., C)
        if self.weight is not None:
            y = y * self.weight.astype(y.dtype) + self.bias.astype(y.dtype)
        return y.astype(x.dtype)
