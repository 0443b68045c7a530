"""``Conv`` and ``ConvTranspose``: 1D/2D/3D convolutions, channels last.

Both layers take ``(N, *spatial, C_in)`` or one unbatched example ``(*spatial, C_in)``.
The number of spatial dimensions is ``len(kernel_size)``: an int ``kernel_size``
means 1D, ``(3, 3)`` means 2D, ``(3, 3, 3)`` means 3D.

Both lower to ``jax.lax.conv_general_dilated``; the transposed convolution is the
gradient of a convolution with respect to its input, written as a convolution of
the stride-dilated input with the spatially flipped kernel.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import einops
import jax
import jax.numpy as jnp

from ._checks import ShapeError, check_dim
from ._context import where
from ._linear import torch_linear_init
from ._module import Module, param, static

__all__ = ["Conv", "ConvTranspose"]

PADDING_MODES = ("SAME", "VALID", "CAUSAL")
_SPATIAL_LETTERS = "DHW"  # lax dimension-number letters for up to 3 spatial dims
_SPATIAL_NAMES = {1: "L", 2: "H, W", 3: "D, H, W"}


# ----------------------------------------------------------------------------------------
# Helpers shared with the pooling layers
# ----------------------------------------------------------------------------------------


def as_tuple(value: Any, n: int, name: str, layer: str, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as ``n`` ints: an int is repeated, a sequence must have length ``n``."""
    values = (value,) * n if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else None
    if (values is None or len(values) != n
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)):
        raise ValueError(
            f"{layer}: {name} must be an int >= {minimum} or {n} such ints (one per spatial "
            f"dimension), got {value!r}."
        )
    return values


def spatial_ndim(size: Any, name: str, layer: str) -> int:
    """The number of spatial dims a kernel/window size implies: int -> 1, tuple -> its length."""
    n = 1 if isinstance(size, int) else len(size) if isinstance(size, Sequence) else 0
    if not 1 <= n <= 3:
        raise ValueError(
            f"{layer}: {name} must be an int (1D) or a tuple of 2 or 3 ints (2D, 3D), got {size!r}."
        )
    return n


def batched(x: jax.Array, n: int, what: str) -> tuple[jax.Array, bool]:
    """Check ``x`` is ``(N, *spatial, C)`` or ``(*spatial, C)``; give it a batch axis.

    Returns ``(x with a batch axis, whether one was added)``. ``what`` names the size
    that set ``n`` (``"kernel_size"``, ``"window"``), for the hint on 1D layers.
    """
    if x.ndim not in (n + 1, n + 2):
        dims = _SPATIAL_NAMES[n]
        hint = ""
        if n == 1 and x.ndim > 3:
            hint = f" An int {what} means 1D; for 2D pass a tuple, e.g. {what}=(3, 3)."
        raise ShapeError(
            f"{where()}: expected a {n}D input (N, {dims}, C) or unbatched ({dims}, C), i.e. "
            f"{n + 2} or {n + 1} dimensions, got shape {tuple(x.shape)}.{hint}"
        )
    return (x[None], True) if x.ndim == n + 1 else (x, False)


def dimension_numbers(n: int) -> tuple[str, str, str]:
    """``lax`` dimension numbers for channels-last inputs and ``(*kernel, I, O)`` kernels."""
    sp = _SPATIAL_LETTERS[3 - n:]
    return f"N{sp}C", f"{sp}IO", f"N{sp}C"


def _check_groups(layer: str, in_channels: int, out_channels: int, groups: int) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}.")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value % groups:
            raise ValueError(
                f"{layer}: groups={groups} must divide {name}={value}. For a depthwise "
                f"convolution use groups=in_channels and out_channels a multiple of it."
            )


def _conv_padding(padding: Any, n: int) -> str | tuple[tuple[int, int], ...]:
    """Normalise ``padding`` to ``"SAME"``, ``"VALID"``, ``"CAUSAL"`` or ``n`` (lo, hi) pairs."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in PADDING_MODES:
            raise ValueError(
                f"Conv: padding {padding!r} is not a padding mode; use one of {list(PADDING_MODES)} "
                f"(any case), an int, or one int or (lo, hi) pair per spatial dimension."
            )
        if mode == "CAUSAL" and n > 1:
            raise NotImplementedError(
                f"Conv: padding='CAUSAL' is defined for 1D convolutions only (pad the start of "
                f"the sequence by dilation * (kernel_size - 1)). For a {n}D convolution give "
                f"explicit (lo, hi) pairs, e.g. causal in the first axis and 'same' in the others: "
                f"padding=((d * (k - 1), 0), (k // 2, k // 2), ...)."
            )
        return mode
    bad = ValueError(
        f"Conv: padding must be one of {list(PADDING_MODES)}, an int, or {n} entries (one per "
        f"spatial dimension) each an int or a (lo, hi) pair of ints, got {padding!r}."
    )
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding,) * n
    if not isinstance(padding, Sequence) or len(padding) != n:
        raise bad
    pairs = []
    for p in padding:
        pair = (p, p) if isinstance(p, int) else tuple(p) if isinstance(p, Sequence) else ()
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair):
            raise bad
        pairs.append(pair)
    return tuple(pairs)


# ----------------------------------------------------------------------------------------
# Conv
# ----------------------------------------------------------------------------------------


class Conv(Module):
    """Convolution over 1, 2 or 3 spatial dimensions, channels last.

    Shapes: ``(N, *spatial, in_channels) -> (N, *spatial_out, out_channels)``; an
    unbatched ``(*spatial, in_channels)`` gives ``(*spatial_out, out_channels)``. The
    number of spatial dims is ``len(kernel_size)`` (an int ``kernel_size`` means 1D).

    * ``stride``, ``dilation``: an int or one int per spatial dim.
    * ``padding``: ``"VALID"`` (none), ``"SAME"`` (output size ``ceil(size / stride)``,
      any extra padding at the end, as ``lax``; with ``stride=1`` this is PyTorch's
      ``padding="same"``), ``"CAUSAL"`` (1D only: pad the start by
      ``dilation * (kernel_size - 1)``, so output ``t`` sees inputs ``<= t``), an int
      ``p`` (``p`` zeros on both sides of every spatial dim, as PyTorch), or one entry
      per spatial dim, each an int or a ``(lo, hi)`` pair. Zero padding only. The
      default is ``"SAME"`` (PyTorch's default, ``0``, is ``"VALID"``).
    * ``groups``: split the channels into ``groups`` independent convolutions; must
      divide ``in_channels`` and ``out_channels``. ``groups=in_channels`` is depthwise.

    ``weight`` is ``(*kernel_size, in_channels // groups, out_channels)`` (PyTorch stores
    ``(out, in // groups, *kernel)``: ``weight = torch_w.permute(2, ..., 1, 0)``);
    ``bias`` is ``(out_channels,)``. Logical axes: ``("kernel",) * n + ("conv_in",
    "conv_out")`` and ``("conv_out",)``. Init matches PyTorch: weight and bias
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = in_channels // groups *
    prod(kernel_size)`` (kaiming-uniform with ``a=sqrt(5)``).

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> conv = nn.Conv(3, 16, (3, 3), stride=2, padding=1, key=jax.random.key(0))
    >>> conv.weight.shape, conv(jnp.ones((8, 32, 32, 3))).shape
    ((3, 3, 3, 16), (8, 16, 16, 16))
    >>> causal = nn.Conv(4, 4, 3, padding="CAUSAL", dilation=2, key=jax.random.key(0))
    >>> causal(jnp.ones((10, 4))).shape
    (10, 4)
    """

    weight: jax.Array
    bias: jax.Array | None
    in_channels: int = static()
    out_channels: int = static()
    kernel_size: tuple[int, ...] = static()
    stride: tuple[int, ...] = static()
    padding: Any = static()
    dilation: tuple[int, ...] = static()
    groups: int = static()

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], *,
                 key: jax.Array, stride: int | Sequence[int] = 1, padding: Any = "SAME",
                 dilation: int | Sequence[int] = 1, groups: int = 1, use_bias: bool = True,
                 dtype=jnp.float32):
        n = spatial_ndim(kernel_size, "kernel_size", "Conv")
        _check_groups("Conv", in_channels, out_channels, groups)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = as_tuple(kernel_size, n, "kernel_size", "Conv")
        self.stride = as_tuple(stride, n, "stride", "Conv")
        self.dilation = as_tuple(dilation, n, "dilation", "Conv")
        self.padding = _conv_padding(padding, n)
        self.groups = groups
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        init = torch_linear_init(fan_in)
        wkey, bkey = jax.random.split(key)
        shape = (*self.kernel_size, in_channels // groups, out_channels)
        self.weight = param(init(wkey, shape, dtype), ("kernel",) * n + ("conv_in", "conv_out"))
        self.bias = param(init(bkey, (out_channels,), dtype), ("conv_out",)) if use_bias else None

    def _explicit_padding(self) -> str | tuple[tuple[int, int], ...]:
        if self.padding == "CAUSAL":
            return tuple((d * (k - 1), 0) for k, d in zip(self.kernel_size, self.dilation, strict=True))
        return self.padding

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.kernel_size)
        check_dim(x, -1, self.in_channels, "in_channels")
        x, unbatched = batched(x, n, "kernel_size")
        y = jax.lax.conv_general_dilated(
            x, self.weight, window_strides=self.stride, padding=self._explicit_padding(),
            rhs_dilation=self.dilation, dimension_numbers=dimension_numbers(n),
            feature_group_count=self.groups,
        )  # (N, *spatial_out, C_out)
        if self.bias is not None:
            y = y + self.bias
        return y[0] if unbatched else y


# ----------------------------------------------------------------------------------------
# ConvTranspose
# ----------------------------------------------------------------------------------------


class ConvTranspose(Module):
    """Transposed convolution over 1, 2 or 3 spatial dims, channels last, as PyTorch's.

    Shapes: ``(N, *spatial, in_channels) -> (N, *spatial_out, out_channels)`` (or
    unbatched), with, per spatial dim, as ``torch.nn.ConvTranspose{1,2,3}d``::

        out = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1

    ``padding`` (an int or one int per spatial dim) removes that many rows from both
    ends of the full output; ``output_padding`` (each smaller than the stride or the
    dilation) adds rows at the end, to pick among the input sizes a strided ``Conv``
    maps to the same output size. ``groups`` must divide both channel counts.

    ``weight`` is ``(*kernel_size, in_channels, out_channels // groups)`` (PyTorch stores
    ``(in, out // groups, *kernel)``: ``weight = torch_w.permute(2, ..., 0, 1)``);
    ``bias`` is ``(out_channels,)``. Logical axes: ``("kernel",) * n + ("conv_in",
    "conv_out")`` and ``("conv_out",)``. Init matches PyTorch: weight and bias
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` where, as in PyTorch, ``fan_in =
    out_channels // groups * prod(kernel_size)`` (computed from the stored weight).

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> up = nn.ConvTranspose(16, 8, (3, 3), stride=2, padding=1, output_padding=1, key=jax.random.key(0))
    >>> up(jnp.ones((2, 16, 16, 16))).shape
    (2, 32, 32, 8)
    """

    weight: jax.Array
    bias: jax.Array | None
    in_channels: int = static()
    out_channels: int = static()
    kernel_size: tuple[int, ...] = static()
    stride: tuple[int, ...] = static()
    padding: tuple[int, ...] = static()
    output_padding: tuple[int, ...] = static()
    dilation: tuple[int, ...] = static()
    groups: int = static()

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], *,
                 key: jax.Array, stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 output_padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                 groups: int = 1, use_bias: bool = True, dtype=jnp.float32):
        n = spatial_ndim(kernel_size, "kernel_size", "ConvTranspose")
        _check_groups("ConvTranspose", in_channels, out_channels, groups)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = as_tuple(kernel_size, n, "kernel_size", "ConvTranspose")
        self.stride = as_tuple(stride, n, "stride", "ConvTranspose")
        self.dilation = as_tuple(dilation, n, "dilation", "ConvTranspose")
        if isinstance(padding, str):
            raise ValueError(
                f"ConvTranspose: padding must be an int or one int per spatial dimension "
                f"(PyTorch's meaning: rows removed from both ends of the output), got {padding!r}."
            )
        self.padding = as_tuple(padding, n, "padding", "ConvTranspose", minimum=0)
        self.output_padding = as_tuple(output_padding, n, "output_padding", "ConvTranspose", minimum=0)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation, strict=True):
            if op >= max(s, d):
                raise ValueError(
                    f"ConvTranspose: output_padding={self.output_padding} must be smaller than "
                    f"the stride {self.stride} or the dilation {self.dilation} in every dimension."
                )
        self.groups = groups
        fan_in = out_channels // groups * math.prod(self.kernel_size)
        init = torch_linear_init(fan_in)
        wkey, bkey = jax.random.split(key)
        shape = (*self.kernel_size, in_channels, out_channels // groups)
        self.weight = param(init(wkey, shape, dtype), ("kernel",) * n + ("conv_in", "conv_out"))
        self.bias = param(init(bkey, (out_channels,), dtype), ("conv_out",)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.kernel_size)
        check_dim(x, -1, self.in_channels, "in_channels")
        x, unbatched = batched(x, n, "kernel_size")
        # The equivalent forward convolution: flip the kernel in space and regroup it to
        # (*kernel, in // groups, out); dilate the input by the stride and pad it so the
        # kernel overhangs by dilation * (k - 1) - padding (negative pads crop).
        kernel = jnp.flip(self.weight, axis=tuple(range(n)))
        kernel = einops.rearrange(kernel, "... (g i) o -> ... i (g o)", g=self.groups)
        pads = []
        for k, d, p, op in zip(self.kernel_size, self.dilation, self.padding, self.output_padding, strict=True):
            overhang = d * (k - 1) - p
            pads.append((overhang, overhang + op))
        y = jax.lax.conv_general_dilated(
            x, kernel, window_strides=(1,) * n, padding=pads, lhs_dilation=self.stride,
            rhs_dilation=self.dilation, dimension_numbers=dimension_numbers(n),
            feature_group_count=self.groups,
        )  # (N, *spatial_out, C_out)
        if self.bias is not None:
            y = y + self.bias
        return y[0] if unbatched else y
