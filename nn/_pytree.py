"""How a built module is laid out, and how it flattens as a pytree.

A module keeps its field values as plain attributes. Next to them it keeps two
hidden entries that ride in the pytree's auxiliary data, so they survive every
``jax`` transform: the ``ArrayMeta`` of each array field, and the precision policy.

This file is the only one that touches those entries. Everything else reads them
with ``array_metas`` / ``policy_of`` and makes changed copies with
``replace_unchecked`` / ``replace_metas`` / ``replace_policy``. The unchecked copies
are for library code that builds trees of non-array leaves (masks, ``PartitionSpec``
trees); user-facing changes go through the validated ``nn.replace``.
"""

from __future__ import annotations

import types
from typing import Any, Mapping

import jax

from ._fields import ArrayMeta

__all__ = [
    "array_metas", "policy_of", "init_store", "replace_unchecked", "replace_metas", "replace_policy",
    "flatten", "flatten_with_keys", "unflatten",
]

_META = "_baobab_meta"  # dict: field name -> ArrayMeta
_POLICY = "_baobab_policy"  # precision Policy or None
_AUX = "_baobab_aux"  # the pytree aux data, computed once: a built module never changes


def array_metas(module: Any) -> Mapping[str, ArrayMeta]:
    """``{field name: ArrayMeta}`` for the module's own array fields (read-only)."""
    return types.MappingProxyType(module.__dict__[_META])


def policy_of(module: Any) -> Any:
    """The module's precision ``Policy``, or ``None``."""
    return module.__dict__.get(_POLICY)


def init_store(obj: Any, metas: dict[str, ArrayMeta]) -> None:
    """Attach the metadata to a module that construction has just validated."""
    d = obj.__dict__
    d[_META] = metas
    d.setdefault(_POLICY, None)
    d.pop(_AUX, None)


def replace_unchecked(module: Any, **changes: Any) -> Any:
    """A copy of ``module`` with fields changed, unvalidated (library use only)."""
    obj = object.__new__(type(module))
    d = obj.__dict__
    d.update(module.__dict__)
    d.pop(_AUX, None)  # the change may touch statics
    d[_META] = dict(module.__dict__[_META])
    d.update(changes)
    return obj


def replace_metas(module: Any, metas: Mapping[str, ArrayMeta]) -> Any:
    """A copy of ``module`` whose array metadata is ``metas``."""
    obj = replace_unchecked(module)
    obj.__dict__[_META] = dict(metas)
    return obj


def replace_policy(module: Any, policy: Any) -> Any:
    """A copy of ``module`` with precision policy ``policy`` (or ``None``)."""
    obj = replace_unchecked(module)
    obj.__dict__[_POLICY] = policy
    return obj


# ----------------------------------------------------------------------------------------
# Pytree registration: dynamic fields are children, everything else is aux data.
# ----------------------------------------------------------------------------------------


def _aux(obj: Any) -> tuple:
    # Cached: every jitted call flattens its module arguments, and building this tuple
    # was two thirds of the flattening time (benchmarks/mlp_overhead.py). Whatever
    # changes statics, metadata or policy makes a new object (the copies drop the cache).
    d = obj.__dict__
    aux = d.get(_AUX)
    if aux is None:
        statics = tuple(d[n] for n in type(obj)._baobab_static)
        aux = d[_AUX] = (statics, tuple(sorted(d[_META].items())), d[_POLICY])
    return aux


def flatten(obj: Any):
    d = obj.__dict__
    return [d[n] for n in type(obj)._baobab_dynamic], _aux(obj)


def flatten_with_keys(obj: Any):
    d = obj.__dict__
    GetAttrKey = jax.tree_util.GetAttrKey
    return [(GetAttrKey(n), d[n]) for n in type(obj)._baobab_dynamic], _aux(obj)


def unflatten(cls: type, aux: tuple, children: Any) -> Any:
    obj = object.__new__(cls)
    d = obj.__dict__
    d.update(zip(cls._baobab_dynamic, children))
    statics, metas, policy = aux
    d.update(zip(cls._baobab_static, statics))
    d[_META] = dict(metas)
    d[_POLICY] = policy
    d[_AUX] = aux
    return obj
