"""``Int8Linear``: a frozen ``Linear`` held in int8 (per-output-channel scales), for LoRA bases.

``Int8Linear(linear)`` quantizes ``linear.weight`` symmetrically with one scale per
output channel (qwix, ``absmax`` calibration): ``weight ~= qvalue * scale`` with
``qvalue`` int8 ``(in, out)`` and ``scale`` float32 ``(out,)``. The call is
``qwix.dot_general(x, QArray(qvalue, scale))``; with a floating ``x`` qwix
dequantizes the weight to ``x``'s dtype inside the fused matmul, so the result
equals ``x @ dequantized_weight`` up to float rounding, and the int8 array is
what sits in memory between steps (half of bf16, a quarter of fp32).

Both arrays are parameters that stay frozen: ``nn.unfreeze`` refuses them (an
integer array has no gradient), the train step never differentiates them, and
the optimizer gives them no state. Their logical axes are the ``Linear``'s, so the
sharding rules place them as they placed the weight.

``nn.int8_lora_bases(model)`` (in ``_lora.py``) swaps the base of every
``nn.LoRALinear`` for its ``Int8Linear``. ``nn.merge_lora`` folds adapters into the dequantized weight (what
the adapters were trained against) and returns plain float ``Linear`` layers.

qwix is an optional dependency (``pip install 'baobab[quant]'``), imported only
when an ``Int8Linear`` is built or called.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._checks import check_dim
from ._core import construct
from ._fields import PARAM, ArrayMeta, Tagged
from ._linear import Linear
from ._module import Module, array_meta, static

__all__ = ["Int8Linear", "QWIX_MISSING"]

QWIX_MISSING = ("int8 weights (nn.Int8Linear, finetune.lora.base_dtype='int8') need the qwix quantization "
                "library, which is not installed: pip install 'baobab[quant]' (or pip install 'qwix>=0.1.8').")


def _qwix() -> Any:
    try:
        import qwix
    except ImportError as err:
        raise ImportError(QWIX_MISSING) from err
    return qwix


class Int8Linear(Module):
    """A frozen affine map with an int8 weight: ``(..., in_features) -> (..., out_features)``.

    ``qvalue`` is int8 ``(in, out)`` and ``scale`` float32 ``(out,)``, with
    ``weight ~= qvalue * scale`` (symmetric, per output channel, ``|qvalue| <= 127``);
    ``bias`` is the ``Linear``'s, unchanged. Stacked layers (``nn.Stacked``) carry a
    leading ``layers`` axis on all three; build those with ``jax.vmap(Int8Linear)``.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> lin = nn.Linear(64, 32, key=jax.random.key(0))
    >>> q = nn.Int8Linear(lin)
    >>> q.qvalue.dtype, q.scale.shape, nn.array_meta(q, "qvalue").frozen
    (dtype('int8'), (32,), True)
    >>> x = jax.random.normal(jax.random.key(1), (4, 64))
    >>> bool(jnp.abs(q(x) - lin(x)).max() < 0.02)
    True
    """

    qvalue: jax.Array
    scale: jax.Array
    bias: jax.Array | None
    in_features: int = static()
    out_features: int = static()

    def __init__(self, linear: Linear):
        if not isinstance(linear, Linear):
            raise TypeError(f"Int8Linear quantizes an nn.Linear, got {type(linear).__name__}.")
        if linear.weight.ndim != 2:
            raise ValueError(f"Int8Linear takes one Linear with a 2-D weight, got shape {tuple(linear.weight.shape)}; "
                             f"for stacked layers map it over the leading axis: jax.vmap(nn.Int8Linear)(linear).")
        qwix = _qwix()
        in_axis, out_axis = array_meta(linear, "weight").axes
        q = qwix.quantize(linear.weight.astype(jnp.float32), jnp.int8, channelwise_axes=(1,))  # scale (1, out)
        self.qvalue = Tagged(q.qvalue, ArrayMeta(PARAM, (in_axis, out_axis), frozen=True))  # (in, out) int8
        self.scale = Tagged(q.scale.reshape(-1), ArrayMeta(PARAM, (out_axis,), frozen=True))  # (out,) f32
        self.bias = None if linear.bias is None else Tagged(linear.bias, array_meta(linear, "bias"))
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    def _qarray(self, dtype: Any) -> Any:
        """The weight as a ``qwix.QArray`` whose dequantized dtype is ``dtype``."""
        scale = self.scale.astype(dtype)[..., None, :]  # (..., 1, out): one scale per output column
        return _qwix().QArray(self.qvalue, scale, None, jnp.int8)

    def dequantized_weight(self, dtype: Any = jnp.float32) -> jax.Array:
        """``qvalue * scale`` as a ``dtype`` array, ``(..., in, out)``."""
        return _qwix().dequantize(self._qarray(dtype))

    def dequantized(self) -> Linear:
        """The float ``Linear`` this layer computes (float32 weight; same axes, frozen flag and bias)."""
        if self.qvalue.ndim == 3:  # stacked: one Linear per layer, stacked the same way
            return jax.vmap(Int8Linear.dequantized)(self)
        meta = array_meta(self, "qvalue")
        weight = Tagged(self.dequantized_weight(jnp.float32), ArrayMeta(PARAM, meta.axes, frozen=meta.frozen))
        bias = None if self.bias is None else Tagged(self.bias, array_meta(self, "bias"))
        return construct(Linear, weight=weight, bias=bias, in_features=self.in_features,
                         out_features=self.out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_dim(x, -1, self.in_features, "in_features")
        lead = x.shape[:-1]
        dims = (((1,), (0,)), ((), ()))  # (N, in) . (in, out): contract in
        y = _qwix().dot_general(x.reshape(-1, self.in_features), self._qarray(x.dtype), dims,
                                preferred_element_type=x.dtype)  # (prod(...), out)
        if self.bias is not None:
            y = y + self.bias.astype(y.dtype)
        return y.reshape(*lead, self.out_features)  # (..., out)

