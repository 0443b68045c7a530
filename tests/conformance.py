"""The layer conformance table: every layer passes the same contract checks.

A new layer joins with one ``Case`` line in ``CASES``: a name, a factory
``make(key) -> module``, and ``inputs(key) -> tuple of call arguments``.
``tests/test_conformance.py`` runs each case through jit, vmap, grad
(``check_grads``), eval_shape, bf16 compute under a precision policy, logical
axes on every array, and sharded init on the fake 8-device mesh.

Sizes are multiples of 8 so every dimension shards evenly on the 2x2x2 mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from baobab import nn


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[jax.Array], nn.Module]
    inputs: Callable[[jax.Array], tuple[Any, ...]]
    # Differentiate with respect to the first input too (False for integer inputs).
    grad_inputs: bool = True
    # bf16 tolerance (relative to the output scale) under the precision policy.
    bf16_tol: float = 5e-2
    # Call keyword arguments (static, e.g. mode flags).
    kwargs: dict = dataclasses.field(default_factory=dict)


def normal(*shape: int) -> Callable[[jax.Array], tuple[Any, ...]]:
    return lambda k: (jax.random.normal(k, shape),)


def tokens(*shape: int, vocab: int) -> Callable[[jax.Array], tuple[Any, ...]]:
    return lambda k: (jax.random.randint(k, shape, 0, vocab),)


CASES: list[Case] = [
    # --- core -------------------------------------------------------------------------
    Case("Linear", lambda k: nn.Linear(8, 16, key=k), normal(4, 8)),
    Case("Linear-nobias", lambda k: nn.Linear(8, 16, key=k, use_bias=False, axes=("mlp", "embed")), normal(4, 8)),
    Case("BatchNorm-eval", lambda k: nn.BatchNorm(8, training=False), normal(4, 8)),
    Case("Stacked-Linear", lambda k: nn.Stacked(lambda kk: nn.Linear(8, 8, key=kk, axes=("embed", "mlp")), 3, key=k), normal(4, 8)),
]

# Each layer group keeps its lines in its own file, so groups can be edited apart.
from conformance_conv import CASES as _conv  # noqa: E402  conv, pool, embedding, einops, containers
from conformance_norm import CASES as _norm  # noqa: E402  normalisation, dropout, MLPs
from conformance_attention import CASES as _attention  # noqa: E402  attention, positional

CASES += _conv + _norm + _attention
