"""Positional information: learned and sinusoidal embeddings, and rotary embeddings (RoPE).

* ``LearnedPositionalEmbedding`` and ``SinusoidalPositionalEmbedding`` map positions
  ``(...)`` to vectors ``(..., features)`` that are added to the token embeddings.
* ``RotaryEmbedding`` rotates queries and keys ``(..., T, heads, head_dim)`` by an
  angle proportional to their position, so attention scores depend on relative
  position only. ``MultiHeadAttention(rotary=...)`` applies it for you.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import einops
import jax
import jax.numpy as jnp
import numpy as np

from . import _context
from ._checks import ShapeError, check_dim
from ._module import Module, param, static

__all__ = ["LearnedPositionalEmbedding", "SinusoidalPositionalEmbedding", "RotaryEmbedding", "RopeScaling"]

Initializer = Callable[..., jax.Array]

_SCALING_KINDS = ("linear", "llama3")


def _positive_int(owner: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}.")


def _even(owner: str, name: str, value: int) -> None:
    if value % 2:
        raise ValueError(
            f"{owner}: {name}={value} must be even, since dimensions are used in (sin, cos) pairs."
        )


class LearnedPositionalEmbedding(Module):
    """A trained vector per position: positions ``(...)`` of an integer dtype ``-> (..., features)``.

    ``weight`` is ``(max_len, features)`` with logical axes ``("length", "embed")``.
    PyTorch models build it from ``torch.nn.Embedding``, and init matches that:
    ``N(0, 1)``, unless ``weight_init`` (a ``jax.nn.initializers`` function) is given;
    GPT-2 and BERT use ``jax.nn.initializers.normal(0.02)``.

    Positions must lie in ``[0, max_len)``. Under ``jit`` they cannot be checked, so a
    position out of range gives a row of NaN (``jnp.take(..., mode="fill")``) rather
    than a silently reused last row.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> pos = nn.LearnedPositionalEmbedding(128, 16, key=jax.random.key(0))
    >>> tokens = jnp.zeros((2, 10, 16))
    >>> (tokens + pos(jnp.arange(10))).shape  # (B, T, F) + (T, F)
    (2, 10, 16)
    """

    weight: jax.Array
    max_len: int = static()
    features: int = static()

    def __init__(self, max_len: int, features: int, *, key: jax.Array,
                 weight_init: Initializer | None = None, dtype=jnp.float32):
        _positive_int("LearnedPositionalEmbedding", "max_len", max_len)
        _positive_int("LearnedPositionalEmbedding", "features", features)
        self.max_len = max_len
        self.features = features
        weight_init = weight_init or jax.nn.initializers.normal(stddev=1.0)
        self.weight = param(weight_init(key, (max_len, features), dtype), ("length", "embed"))

    def __call__(self, positions: jax.Array) -> jax.Array:
        positions = jnp.asarray(positions)
        if not jnp.issubdtype(positions.dtype, jnp.integer):
            raise TypeError(
                f"{_context.where()}: expected integer positions, got dtype {positions.dtype} "
                f"with shape {tuple(positions.shape)}. Use e.g. jnp.arange(T)."
            )
        return jnp.take(self.weight, positions, axis=0, mode="fill", fill_value=jnp.nan)  # (..., F)


class SinusoidalPositionalEmbedding(Module):
    """The fixed sin/cos table of "Attention Is All You Need": ``(...) -> (..., features)``.

    ``out[..., 2i] = sin(p / base**(2i / features))`` and
    ``out[..., 2i + 1] = cos(p / base**(2i / features))`` for position ``p``. No
    parameters; any length works. Positions may be integer (output float32) or
    floating (output in their dtype).

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> table = nn.SinusoidalPositionalEmbedding(8)(jnp.arange(4))
    >>> table.shape, table[0].tolist()
    ((4, 8), [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    """

    features: int = static()
    base: float = static(default=10000.0)

    def __init__(self, features: int, *, base: float = 10000.0):
        _positive_int("SinusoidalPositionalEmbedding", "features", features)
        _even("SinusoidalPositionalEmbedding", "features", features)
        self.features = features
        self.base = float(base)

    def __call__(self, positions: jax.Array) -> jax.Array:
        positions = jnp.asarray(positions)
        floating = jnp.issubdtype(positions.dtype, jnp.floating)
        dtype = positions.dtype if floating else jnp.float32
        inv_freq = self.base ** (-np.arange(0, self.features, 2) / self.features)  # (F/2,)
        angles = positions.astype(dtype)[..., None] * jnp.asarray(inv_freq, dtype)  # (..., F/2)
        pairs = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # (..., F/2, 2)
        return einops.rearrange(pairs, "... f two -> ... (f two)")  # (..., F)


class RopeScaling(NamedTuple):
    """How ``RotaryEmbedding`` stretches its frequencies for contexts longer than training.

    * ``RopeScaling("linear", factor)``: position interpolation; every frequency is
      divided by ``factor`` (same as positions divided by ``factor``).
    * ``RopeScaling("llama3", factor, low_freq_factor, high_freq_factor, original_max_len)``:
      Llama 3.1's scheme. Wavelengths shorter than ``original_max_len / high_freq_factor``
      are kept, those longer than ``original_max_len / low_freq_factor`` are divided by
      ``factor``, and the band between is interpolated smoothly. Llama 3.1 uses
      ``RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)``.

    Other kinds (YaRN, dynamic NTK, LongRoPE) raise ``NotImplementedError``.

    >>> from baobab import nn
    >>> nn.RotaryEmbedding(64, base=500000.0, scaling=nn.RopeScaling("llama3", 8.0)).scaling.kind
    'llama3'
    """

    kind: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_len: int = 8192


def _inv_freq(head_dim: int, base: float, scaling: RopeScaling | None) -> np.ndarray:
    """The rotation frequency of each dimension pair, in float64: ``(head_dim // 2,)``."""
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if scaling is None:
        return inv_freq
    if scaling.kind == "linear":
        return inv_freq / scaling.factor
    # llama3: 1 keeps a frequency, 0 divides it by `factor`, a smooth ramp between.
    wavelen = 2 * math.pi / inv_freq
    ramp = (scaling.original_max_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    keep = np.clip(ramp, 0.0, 1.0)
    return (1 - keep) * inv_freq / scaling.factor + keep * inv_freq


def _check_scaling(scaling: object) -> RopeScaling | None:
    if scaling is None:
        return None
    if not isinstance(scaling, RopeScaling):
        raise TypeError(
            f"RotaryEmbedding: scaling must be None or an nn.RopeScaling, got {scaling!r}. "
            f"For example nn.RopeScaling('llama3', factor=8.0) or nn.RopeScaling('linear', factor=2.0)."
        )
    if scaling.kind not in _SCALING_KINDS:
        raise NotImplementedError(
            f"RotaryEmbedding: RoPE scaling kind {scaling.kind!r} is not implemented; "
            f"the implemented kinds are {list(_SCALING_KINDS)}."
        )
    if not scaling.factor > 0:
        raise ValueError(f"RotaryEmbedding: scaling factor must be > 0, got {scaling.factor!r}.")
    if scaling.kind == "llama3" and not scaling.high_freq_factor > scaling.low_freq_factor:
        raise ValueError(
            f"RotaryEmbedding: llama3 scaling needs high_freq_factor > low_freq_factor, got "
            f"{scaling.high_freq_factor} and {scaling.low_freq_factor}."
        )
    return scaling


class RotaryEmbedding(Module):
    """Rotary position embedding (RoPE): rotate dimension pairs by ``position * frequency``.

    Shapes: ``x`` is ``(..., T, heads, head_dim)`` (queries or keys); ``positions``
    is ``(T,)`` or broadcastable to ``x.shape[:-2]`` (e.g. ``(B, T)``), integer or
    float, and defaults to ``arange(T)``. The output has ``x``'s shape and dtype.

    Dimension ``i`` is paired with ``i + head_dim // 2`` (the "rotate half" layout of
    GPT-NeoX and Hugging Face Llama checkpoints), with frequencies
    ``base ** (-2i / head_dim)``, optionally stretched by ``scaling``
    (an ``nn.RopeScaling``). Angles are computed in float32. No parameters.

    ``rope(x, positions)`` and ``rope.apply(x, positions)`` are the same pure function.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> rope = nn.RotaryEmbedding(8)
    >>> q = jax.random.normal(jax.random.key(0), (2, 5, 4, 8))  # (B, T, H, D)
    >>> rope.apply(q, jnp.arange(5)).shape
    (2, 5, 4, 8)
    >>> bool(jnp.allclose(rope(q, jnp.zeros(5, int)), q))  # position 0 is the identity
    True
    """

    head_dim: int = static()
    base: float = static(default=10000.0)
    scaling: RopeScaling | None = static(default=None)

    def __init__(self, head_dim: int, *, base: float = 10000.0, scaling: RopeScaling | None = None):
        _positive_int("RotaryEmbedding", "head_dim", head_dim)
        _even("RotaryEmbedding", "head_dim", head_dim)
        self.head_dim = head_dim
        self.base = float(base)
        self.scaling = _check_scaling(scaling)

    def __call__(self, x: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        check_dim(x, -1, self.head_dim, "head_dim")
        if x.ndim < 3:
            raise ShapeError(
                f"{_context.where()}: expected input (..., T, heads, head_dim) with at least 3 "
                f"dimensions, got shape {tuple(x.shape)}."
            )
        T = x.shape[-3]
        positions = jnp.arange(T) if positions is None else jnp.asarray(positions)
        if positions.ndim == 0 or positions.shape[-1] != T or positions.ndim > x.ndim - 2:
            raise ShapeError(
                f"{_context.where()}: positions must be (T,) or broadcastable to "
                f"{tuple(x.shape[:-2])} (the input's leading dims, T={T}), got shape "
                f"{tuple(positions.shape)}."
            )
        inv_freq = jnp.asarray(_inv_freq(self.head_dim, self.base, self.scaling), jnp.float32)
        angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (..., T, D/2)
        cos = jnp.cos(angles)[..., None, :].astype(x.dtype)  # (..., T, 1, D/2)
        sin = jnp.sin(angles)[..., None, :].astype(x.dtype)  # (..., T, 1, D/2)
        x1, x2 = jnp.split(x, 2, axis=-1)  # (..., T, H, D/2) each
        return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)  # (..., T, H, D)

    def apply(self, x: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        """Rotate ``x`` ``(..., T, heads, head_dim)`` by ``positions``; the same as ``rope(x, positions)``.

        >>> import jax.numpy as jnp
        >>> from baobab import nn
        >>> nn.RotaryEmbedding(4).apply(jnp.ones((3, 1, 4)), jnp.arange(3)).shape
        (3, 1, 4)
        """
        return self(x, positions)
