"""Feed-forward blocks: ``MLP`` (two Linears) and ``GatedMLP`` (SwiGLU / GeGLU)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ._dropout import Dropout
from ._keys import subkey
from ._linear import Linear
from ._module import Module, static

__all__ = ["MLP", "GatedMLP"]


def _check_activation(activation: Callable, cls: str) -> Callable:
    if not callable(activation):
        raise TypeError(f"{cls}: activation must be a callable such as jax.nn.gelu, got {activation!r}.")
    return activation


class MLP(Module):
    """Two-layer perceptron: ``fc2(activation(fc1(x)))``, with optional dropout.

    Shapes: ``(..., in_features) -> (..., out_features)`` through a hidden width
    of ``hidden_features``. ``fc1.weight`` has logical axes ``("embed", "mlp")``,
    ``fc2.weight`` ``("mlp", "embed")``, so tensor parallelism splits the hidden width.

    ``activation`` is static configuration (any hashable callable). The default
    ``jax.nn.gelu`` is the tanh approximation (GPT-2, ``torch.nn.GELU(approximate="tanh")``);
    for PyTorch's exact ``nn.GELU()`` pass ``functools.partial(jax.nn.gelu, approximate=False)``.

    ``dropout`` is a drop rate applied after the activation and after ``fc2``
    (as timm's ``Mlp``). With ``dropout > 0`` a call in training mode needs ``key=``;
    ``nn.eval_mode(mlp)`` turns dropout off.

    Init: both ``Linear`` layers as PyTorch, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    for weights and biases.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> mlp = nn.MLP(4, 8, 2, key=jax.random.key(0))
    >>> mlp.fc1.weight.shape, mlp.fc2.weight.shape, mlp(jnp.ones((3, 4))).shape
    ((4, 8), (8, 2), (3, 2))
    """

    fc1: Linear
    fc2: Linear
    dropout: Dropout
    activation: Callable[[jax.Array], jax.Array] = static()

    def __init__(self, in_features: int, hidden_features: int, out_features: int, *, key: jax.Array,
                 activation: Callable[[jax.Array], jax.Array] = jax.nn.gelu, use_bias: bool = True,
                 dropout: float = 0.0, dtype=jnp.float32):
        self.activation = _check_activation(activation, "MLP")
        self.fc1 = Linear(in_features, hidden_features, key=subkey(key, "fc1"), use_bias=use_bias,
                          axes=("embed", "mlp"), dtype=dtype)
        self.fc2 = Linear(hidden_features, out_features, key=subkey(key, "fc2"), use_bias=use_bias,
                          axes=("mlp", "embed"), dtype=dtype)
        self.dropout = Dropout(dropout)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        h = self.activation(self.fc1(x))  # (..., hidden)
        h = self.dropout(h, key=k1)
        y = self.fc2(h)  # (..., out)
        return self.dropout(y, key=k2)


class GatedMLP(Module):
    """Gated feed-forward block: ``down(activation(gate(x)) * up(x))``.

    Shapes: ``(..., features) -> (..., features)`` through ``hidden_features``.
    With ``activation=jax.nn.silu`` (the default) this is SwiGLU (Llama, Mistral);
    with ``jax.nn.gelu`` it is GeGLU (Gemma, T5 v1.1 use the tanh GELU, which is
    ``jax.nn.gelu``'s default)::

        swiglu = nn.GatedMLP(512, 1376, key=key)                          # SwiGLU
        geglu = nn.GatedMLP(512, 1376, key=key, activation=jax.nn.gelu)   # GeGLU

    Llama picks ``hidden_features`` near ``8/3 * features`` so the three matrices
    cost as much as a 4x MLP. ``gate.weight``/``up.weight`` have logical axes
    ``("embed", "mlp")``, ``down.weight`` ``("mlp", "embed")``.

    Init: the three ``Linear`` layers as PyTorch, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``;
    no biases unless ``use_bias=True`` (Llama has none).

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> ffn = nn.GatedMLP(8, 16, key=jax.random.key(0))
    >>> ffn.gate.weight.shape, ffn.down.weight.shape, ffn(jnp.ones((2, 8))).shape
    ((8, 16), (16, 8), (2, 8))
    """

    gate: Linear
    up: Linear
    down: Linear
    activation: Callable[[jax.Array], jax.Array] = static()

    def __init__(self, features: int, hidden_features: int, *, key: jax.Array,
                 activation: Callable[[jax.Array], jax.Array] = jax.nn.silu, use_bias: bool = False,
                 dtype=jnp.float32):
        self.activation = _check_activation(activation, "GatedMLP")
        self.gate = Linear(features, hidden_features, key=subkey(key, "gate"), use_bias=use_bias,
                           axes=("embed", "mlp"), dtype=dtype)
        self.up = Linear(features, hidden_features, key=subkey(key, "up"), use_bias=use_bias,
                         axes=("embed", "mlp"), dtype=dtype)
        self.down = Linear(hidden_features, features, key=subkey(key, "down"), use_bias=use_bias,
                           axes=("mlp", "embed"), dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.activation(self.gate(x)) * self.up(x)  # (..., hidden)
        return self.down(h)  # (..., features)
