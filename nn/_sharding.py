"""Sharding from logical axes: rules map logical names to mesh axes.

A rule table such as ``{"batch": ("data", "fsdp"), "embed": "fsdp", "mlp": "tensor"}``
says which mesh axes split each logical dimension. Data parallel, FSDP and tensor
parallel are different tables over the same model, not different code.

Semantics, chosen to be strict so a typo never silently replicates a model:

* every logical name on a parameter must appear in the rules (``None`` = replicate);
* every mesh axis named in the rules must exist in the mesh (size 1 is fine);
* a mesh axis is used at most once per array: a later dimension asking for an axis
  already used is left unsplit;
* a dimension must divide evenly by the product of its mesh axes' sizes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, TypeVar

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from baobab.errors import ShapeMismatchError

from ._module import Module
from ._tree import map_arrays

__all__ = ["DEFAULT_RULES", "logical_to_mesh", "batch_sharding", "shardings", "create_sharded"]

Rules = Mapping[str, Any]
M = TypeVar("M")

#: Rules for the logical axis names used by baobab's layers: FSDP over ``fsdp``,
#: tensor parallel over ``tensor``, the batch over ``data`` and ``fsdp``.
DEFAULT_RULES: dict[str, Any] = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "vocab": "tensor",
    "layers": None,
    "length": None,
    "channels": None,
    "conv_in": None,
    "conv_out": "tensor",
    "kernel": None,
    "norm": None,
    "classes": None,
}


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def logical_to_mesh(axes: tuple[str | None, ...], rules: Rules, mesh: Mesh | None = None,
                    shape: tuple[int, ...] | None = None, where: str = "array") -> PartitionSpec:
    """Translate logical axis names into a mesh ``PartitionSpec``.

    >>> from baobab import nn
    >>> nn.logical_to_mesh(("batch", "embed"), {"batch": ("data", "fsdp"), "embed": None})
    P(('data', 'fsdp'), None)
    """
    used: set[str] = set()
    spec: list[Any] = []
    for dim, name in enumerate(axes):
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise KeyError(
                f"{where}: logical axis {name!r} has no sharding rule. Add it to the rules, "
                f"e.g. rules={{..., {name!r}: None}} to replicate it. Rules have {sorted(rules)}."
            )
        mesh_axes = tuple(a for a in _as_tuple(rules[name]) if a not in used)
        if mesh is not None:
            unknown = [a for a in mesh_axes if a not in mesh.shape]
            if unknown:
                raise KeyError(
                    f"{where}: the rule for {name!r} names mesh axes {unknown} that the mesh "
                    f"does not have; the mesh has {dict(mesh.shape)}."
                )
            if shape is not None:
                size = math.prod(mesh.shape[a] for a in mesh_axes)
                if shape[dim] % size:
                    raise ShapeMismatchError(
                        f"{where}: dimension {dim} ({name!r}) has size {shape[dim]}, which does "
                        f"not divide by mesh axes {mesh_axes} of total size {size}. Change the "
                        f"rule for {name!r} or the mesh."
                    )
        used.update(mesh_axes)
        spec.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
    return PartitionSpec(*spec)


def batch_sharding(ndim: int, *, mesh: Mesh, rules: Rules | None = None, rows: int | None = None) -> NamedSharding:
    """The sharding of a global batch leaf with ``ndim`` dims: dim 0 along the ``"batch"`` rule.

    The other dimensions are replicated. ``rules`` defaults to ``DEFAULT_RULES``
    (``"batch"`` over ``("data", "fsdp")``). With ``rows`` (the global batch size),
    a batch that does not split evenly over the batch's mesh axes is refused here,
    before any data is read. ``baobab.train`` and ``baobab.data`` export this function.

    >>> import jax
    >>> from baobab.nn._sharding import batch_sharding
    >>> mesh = jax.make_mesh((1, 1), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    >>> batch_sharding(3, mesh=mesh).spec
    P(('data', 'fsdp'), None, None)
    """
    rules = DEFAULT_RULES if rules is None else rules
    spec = logical_to_mesh(("batch",) + (None,) * (max(ndim, 1) - 1), rules, mesh, where="batch")
    if rows is not None:
        axes = _as_tuple(spec[0])
        shards = math.prod(mesh.shape[a] for a in axes)
        if rows % shards:
            raise ShapeMismatchError(
                f"a global batch of {rows} rows does not divide by the {shards} batch shards (mesh axes "
                f"{axes} under the 'batch' rule): make the global batch size a multiple of {shards}, or "
                f"change the mesh.")
    return NamedSharding(mesh, spec)


def shardings(model: Module, mesh: Mesh, rules: Rules) -> Module:
    """A tree like ``model`` of ``NamedSharding``s, from logical axes and ``rules``.

    ``model`` may be abstract (from ``jax.eval_shape``); nothing is allocated.
    """

    def one(path: str, x: Any, meta: Any) -> NamedSharding:
        spec = logical_to_mesh(meta.axes, rules, mesh, tuple(x.shape), where=path)
        return NamedSharding(mesh, spec)

    return map_arrays(one, model)


def create_sharded(constructor: Callable[..., M], *args: Any, mesh: Mesh, rules: Rules) -> M:
    """Build a model directly sharded on ``mesh``: no host ever holds it whole.

    ``constructor(*args)`` is traced once abstractly (``jax.eval_shape``) to learn the
    shapes and logical axes, then run under ``jax.jit`` with ``out_shardings`` so each
    device only materialises its own slices.

    >>> import jax
    >>> from baobab import nn
    >>> mesh = jax.make_mesh((1,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    >>> lin = nn.create_sharded(lambda k: nn.Linear(4, 8, key=k), jax.random.key(0),
    ...                         mesh=mesh, rules={"embed": "fsdp", "mlp": None})
    >>> lin.weight.sharding.spec
    P('fsdp', None)
    """
    abstract = jax.eval_shape(constructor, *args)
    out_shardings = shardings(abstract, mesh, rules)
    return jax.jit(constructor, out_shardings=out_shardings)(*args)
