"""Pooling, channels last: ``MaxPool``, ``AvgPool``, ``AdaptiveAvgPool``, ``GlobalAvgPool``.

These modules hold no arrays, only static configuration. Like ``Conv``, they take
``(N, *spatial, C)`` or unbatched ``(*spatial, C)``, and the number of spatial dims
is the length of ``window``/``output_size``: an int means 1D, ``(2, 2)`` means 2D.
Sizes, padding and divisors follow PyTorch's ``MaxPool2d``, ``AvgPool2d`` and
``AdaptiveAvgPool2d`` exactly.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import ShapeError
from ._context import where
from ._conv import as_tuple, batched, spatial_ndim
from ._module import Module, static

__all__ = ["MaxPool", "AvgPool", "AdaptiveAvgPool", "GlobalAvgPool"]


def _pool_config(layer: str, window: Any, stride: Any, padding: Any, dilation: Any = 1):
    n = spatial_ndim(window, "window", layer)
    window = as_tuple(window, n, "window", layer)
    stride = window if stride is None else as_tuple(stride, n, "stride", layer)
    padding = as_tuple(padding, n, "padding", layer, minimum=0)
    dilation = as_tuple(dilation, n, "dilation", layer)
    for p, k, d in zip(padding, window, dilation, strict=True):
        if 2 * p > d * (k - 1) + 1:
            raise ValueError(
                f"{layer}: padding={padding} must be at most half the (dilated) window "
                f"{window} in every dimension, as in PyTorch; otherwise a window can lie "
                f"wholly in the padding."
            )
    return window, stride, padding, dilation


def _out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size; ``ceil_mode`` drops a last window starting in the right pad."""
    span = size + 2 * p - (d * (k - 1) + 1)
    if span < 0:
        raise ShapeError(
            f"{where()}: a spatial dimension of size {size} with padding {p} is smaller than "
            f"the window {d * (k - 1) + 1}."
        )
    out = -(-span // s) + 1 if ceil_mode else span // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _window_pads(spatial, window, stride, padding, dilation, ceil_mode):
    """Output sizes and the (lo, hi) pads that produce them (hi includes any ceil_mode extra)."""
    outs, pads = [], []
    for size, k, s, p, d in zip(spatial, window, stride, padding, dilation, strict=True):
        out = _out_size(size, k, s, p, d, ceil_mode)
        extra = max(0, (out - 1) * s + d * (k - 1) + 1 - (size + 2 * p))
        outs.append(out)
        pads.append((p, p + extra))
    return tuple(outs), pads


class MaxPool(Module):
    """Max pooling over 1, 2 or 3 spatial dims, channels last, as ``torch.nn.MaxPool{1,2,3}d``.

    Shapes: ``(N, *spatial, C) -> (N, *spatial_out, C)`` (or unbatched), with per dim
    ``out = floor((size + 2 * padding - dilation * (window - 1) - 1) / stride) + 1``
    (``ceil`` with ``ceil_mode=True``, dropping a last window that would start in the
    right padding). ``stride`` defaults to ``window``. Padding is ``-inf``, at most
    half the window. ``window`` as an int means 1D; pass ``(2, 2)`` for images.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> nn.MaxPool((2, 2))(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
    """

    window: tuple[int, ...] = static()
    stride: tuple[int, ...] = static()
    padding: tuple[int, ...] = static()
    dilation: tuple[int, ...] = static()
    ceil_mode: bool = static()

    def __init__(self, window: int | Sequence[int], *, stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                 ceil_mode: bool = False):
        self.window, self.stride, self.padding, self.dilation = _pool_config(
            "MaxPool", window, stride, padding, dilation)
        self.ceil_mode = bool(ceil_mode)

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.window)
        x, unbatched = batched(x, n, "window")
        _, pads = _window_pads(x.shape[1:-1], self.window, self.stride, self.padding, self.dilation,
                               self.ceil_mode)
        # A concrete (numpy) identity lets lax pick the differentiable max-pool primitive.
        lowest = np.array(-np.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min, x.dtype)
        if all(d == 1 for d in self.dilation):
            y = jax.lax.reduce_window(
                x, lowest, jax.lax.max, window_dimensions=(1, *self.window, 1),
                window_strides=(1, *self.stride, 1), padding=((0, 0), *pads, (0, 0)),
            )  # (N, *spatial_out, C)
        else:  # lax has no gradient for dilated max pooling: take the max of strided slices
            y = _dilated_max(x, pads, self.window, self.stride, self.dilation, lowest)
        return y[0] if unbatched else y


def _dilated_max(x, pads, window, stride, dilation, lowest):
    """Max over the ``prod(window)`` strided slices of the padded ``x``, one per window offset."""
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=lowest)
    outs = [(size - d * (k - 1) - 1) // s + 1
            for size, k, s, d in zip(xp.shape[1:-1], window, stride, dilation, strict=True)]
    y = None
    for offset in itertools.product(*(range(k) for k in window)):
        start = [o * d for o, d in zip(offset, dilation, strict=True)]
        limit = [b + (o - 1) * s + 1 for b, o, s in zip(start, outs, stride, strict=True)]
        part = jax.lax.slice(xp, (0, *start, 0), (xp.shape[0], *limit, xp.shape[-1]), (1, *stride, 1))
        y = part if y is None else jnp.maximum(y, part)
    return y  # (N, *spatial_out, C)


def _avg_counts(size: int, out: int, k: int, s: int, p: int, include_pad: bool) -> np.ndarray:
    """How many elements PyTorch divides each window's sum by, along one dim."""
    counts = np.empty(out, np.float32)
    for i in range(out):
        start = i * s - p
        end = min(start + k, size + p)  # windows never count the ceil_mode overhang
        if not include_pad:
            start, end = max(start, 0), min(end, size)
        counts[i] = end - start
    return counts


class AvgPool(Module):
    """Average pooling over 1, 2 or 3 spatial dims, channels last, as ``torch.nn.AvgPool{1,2,3}d``.

    Shapes and sizes as ``MaxPool`` (no dilation). Padding is zeros. With
    ``count_include_pad=True`` (PyTorch's default) a window's sum is divided by the
    number of its positions inside the padded input; with ``False``, by the number
    inside the unpadded input. Positions added by ``ceil_mode`` never count.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> x = jnp.ones((5, 1))  # (L, C): a 1D window of 3, padded by 1 on each side
    >>> (nn.AvgPool(3, stride=1, padding=1)(x)[:, 0] * 3).round().tolist()  # the pad counts
    [2.0, 3.0, 3.0, 3.0, 2.0]
    >>> nn.AvgPool(3, stride=1, padding=1, count_include_pad=False)(x)[:, 0].tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """

    window: tuple[int, ...] = static()
    stride: tuple[int, ...] = static()
    padding: tuple[int, ...] = static()
    ceil_mode: bool = static()
    count_include_pad: bool = static()

    def __init__(self, window: int | Sequence[int], *, stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True):
        self.window, self.stride, self.padding, _ = _pool_config("AvgPool", window, stride, padding)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.window)
        x, unbatched = batched(x, n, "window")
        spatial = x.shape[1:-1]
        outs, pads = _window_pads(spatial, self.window, self.stride, self.padding, (1,) * n,
                                  self.ceil_mode)
        total = jax.lax.reduce_window(
            x, np.array(0, x.dtype), jax.lax.add, window_dimensions=(1, *self.window, 1),
            window_strides=(1, *self.stride, 1), padding=((0, 0), *pads, (0, 0)),
        )  # (N, *spatial_out, C)
        counts = np.ones((), np.float32)
        for size, out, k, s, p in zip(spatial, outs, self.window, self.stride, self.padding, strict=True):
            counts = np.multiply.outer(counts, _avg_counts(size, out, k, s, p, self.count_include_pad))
        y = total / jnp.asarray(counts[..., None], total.dtype)  # counts: (*spatial_out, 1)
        return y[0] if unbatched else y


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """``(out, size)`` averaging matrix: row ``i`` averages ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    m = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class AdaptiveAvgPool(Module):
    """Average pooling to a fixed output size, as ``torch.nn.AdaptiveAvgPool{1,2,3}d``.

    Shapes: ``(N, *spatial, C) -> (N, *output_size, C)`` (or unbatched). Output cell
    ``i`` of a dim of size ``L`` averages inputs ``floor(i * L / out)`` to
    ``ceil((i + 1) * L / out) - 1``, so cells overlap when ``out`` does not divide
    ``L``. ``output_size`` is an int (1D) or a tuple; a ``None`` entry keeps that
    dim's size.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> nn.AdaptiveAvgPool((3, 3))(jnp.ones((2, 7, 10, 4))).shape
    (2, 3, 3, 4)
    """

    output_size: tuple[int | None, ...] = static()

    def __init__(self, output_size: int | Sequence[int | None]):
        n = spatial_ndim(output_size, "output_size", "AdaptiveAvgPool")
        sizes = (output_size,) if isinstance(output_size, int) else tuple(output_size)
        if not all(s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 1) for s in sizes):
            raise ValueError(
                f"AdaptiveAvgPool: output_size must be {n} positive ints or None (keep that "
                f"dimension), got {output_size!r}."
            )
        self.output_size = sizes

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.output_size)
        x, unbatched = batched(x, n, "output_size")
        for axis, out in enumerate(self.output_size, start=1):
            size = x.shape[axis]
            if out is None or out == size:
                continue
            m = jnp.asarray(_adaptive_matrix(size, out), x.dtype)  # (out, size)
            x = jnp.tensordot(m, x, axes=([1], [axis]), precision=jax.lax.Precision.HIGHEST)
            x = jnp.moveaxis(x, 0, axis)  # the pooled dim back in place
        return x[0] if unbatched else x


class GlobalAvgPool(Module):
    """Mean over the ``num_spatial_dims`` axes before the last (channel) axis.

    Shapes: ``(..., *spatial, C) -> (..., C)``, or ``(..., 1, ..., 1, C)`` with
    ``keepdims=True``. Any number of leading (batch) axes. Equals
    ``torch.nn.AdaptiveAvgPool2d(1)`` followed by a flatten, for ``num_spatial_dims=2``.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> nn.GlobalAvgPool()(jnp.ones((8, 7, 7, 512))).shape
    (8, 512)
    """

    num_spatial_dims: int = static()
    keepdims: bool = static()

    def __init__(self, num_spatial_dims: int = 2, *, keepdims: bool = False):
        if not isinstance(num_spatial_dims, int) or isinstance(num_spatial_dims, bool) or num_spatial_dims < 1:
            raise ValueError(f"GlobalAvgPool: num_spatial_dims must be a positive int, got {num_spatial_dims!r}.")
        self.num_spatial_dims = num_spatial_dims
        self.keepdims = bool(keepdims)

    def __call__(self, x: jax.Array) -> jax.Array:
        n = self.num_spatial_dims
        if x.ndim < n + 1:
            raise ShapeError(
                f"{where()}: expected an input (..., *spatial, C) with {n} spatial dimensions, "
                f"i.e. at least {n + 1} dimensions, got shape {tuple(x.shape)}."
            )
        return jnp.mean(x, axis=tuple(range(-n - 1, -1)), keepdims=self.keepdims)
