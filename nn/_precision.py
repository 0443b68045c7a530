"""Precision policy: parameter, compute and output dtypes, set once by path.

A ``Policy`` says how a module stores its parameters, computes, and returns:
``Policy(param_dtype=float32, compute_dtype=bfloat16, output_dtype=float32)`` is
fp32 master weights with bf16 compute. ``nn.with_policy(model, policy, where="*")``
applies it to every module whose path matches; later calls override earlier ones,
so ``with_policy(with_policy(m, bf16), fp32, where="*norm*")`` keeps norms in fp32.

At call time a module with a policy casts its floating inputs and its own floating
parameters to ``compute_dtype`` and its floating outputs to ``output_dtype``. Integer
inputs (token ids) are untouched. Gradients flow through the casts, so they arrive
in the parameter dtype. Layers need no dtype arguments of their own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from ._core import cast_own_arrays
from ._module import Module
from ._params import path_matches
from ._pytree import replace_policy
from ._tree import map_modules

__all__ = ["Policy", "with_policy"]


def _dtype(value: Any, what: str) -> Any:
    try:
        return jnp.dtype(value)
    except TypeError:
        raise TypeError(f"Policy.{what}: {value!r} is not a dtype; use e.g. 'float32' or 'bfloat16'.") from None


class Policy(NamedTuple):
    """Dtypes for a module's parameters, computation and outputs.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> nn.Policy.from_string("params=float32,compute=bfloat16,output=float32").compute_dtype
    dtype(bfloat16)
    """

    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32
    output_dtype: Any = jnp.float32

    @classmethod
    def from_string(cls, text: str) -> "Policy":
        """Parse ``"params=float32,compute=bfloat16,output=float32"`` (as configs write it)."""
        names = {"params": "param_dtype", "compute": "compute_dtype", "output": "output_dtype"}
        values = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            if key.strip() not in names:
                raise ValueError(f"Policy string {text!r}: unknown key {key!r}; use {sorted(names)}.")
            values[names[key.strip()]] = value.strip()
        return cls.create(**values)

    @classmethod
    def create(cls, param_dtype: Any = "float32", compute_dtype: Any = "float32",
               output_dtype: Any = None) -> "Policy":
        """A policy with dtypes checked; ``output_dtype`` defaults to ``compute_dtype``."""
        p = _dtype(param_dtype, "param_dtype")
        c = _dtype(compute_dtype, "compute_dtype")
        o = c if output_dtype is None else _dtype(output_dtype, "output_dtype")
        return cls(p, c, o)


def with_policy(model: Module, policy: Policy, where: str = "*") -> Module:
    """Apply ``policy`` to every module whose path matches ``where``.

    Parameters are cast to ``policy.param_dtype`` now; state (running statistics)
    keeps its dtype. ``where`` uses ``nn.path_matches`` patterns; ``"*"`` is every
    module and ``""`` the root alone (whose ``output_dtype`` is the model's).

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> lin = nn.with_policy(nn.Linear(4, 2, key=jax.random.key(0)),
    ...                      nn.Policy.create("float32", "bfloat16", "float32"))
    >>> lin(jnp.ones((1, 4))).dtype
    dtype('float32')
    """
    if not isinstance(policy, Policy):
        raise TypeError(f"with_policy expects an nn.Policy, got {type(policy).__name__}.")
    hits = 0

    def visit(path: str, module: Module) -> Module:
        nonlocal hits
        if not (where == "*" or path_matches(where, path)):
            return module
        hits += 1
        return replace_policy(cast_own_arrays(module, policy.param_dtype), policy)

    out = map_modules(visit, model)
    if hits == 0:
        raise ValueError(f"with_policy: pattern {where!r} matched no module of {type(model).__name__}.")
    return out
