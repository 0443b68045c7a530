"""How a class becomes a module: the metaclass, construction checks, ``nn.replace``, calls.

``_module.py`` states the contract; this file enforces it. ``ModuleMeta`` turns each
``nn.Module`` subclass into a dataclass (generating ``__init__`` only when no class
in its line wrote one) and registers it as a pytree. Building a module runs
``__init__`` and then validates every field (``_finish``); ``nn.replace`` validates
the changed fields the same way. ``wrap_call`` puts each ``__call__`` in a named
scope, records the module's path and applies the precision policy.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any, Callable

import jax
import numpy as np

from . import _context, _pytree
from ._fields import PARAM, ArrayMeta, Tagged, is_array

__all__ = ["ModuleMeta", "is_module", "is_initializing", "construct", "replace", "array_meta",
           "unannotated_error", "wrap_call", "cast_floating", "cast_own_arrays"]

_INITIALIZING = "_baobab_initializing"
_GENERATED = "_baobab_generated_init"  # set on the __init__ functions that dataclasses wrote


def is_module(x: Any) -> bool:
    """True for instances of ``nn.Module`` subclasses."""
    return isinstance(type(x), ModuleMeta)


def is_initializing(obj: Any) -> bool:
    return _INITIALIZING in obj.__dict__


# ----------------------------------------------------------------------------------------
# Field checks, shared by construction and nn.replace
# ----------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if is_array(value):
        return f"array {value.dtype}{list(value.shape)}"
    if is_module(value):
        return f"{type(value).__name__}(...)"
    return f"{type(value).__name__} {value!r}"[:80]


def _not_array_error(cls: type, name: str, value: Any) -> TypeError:
    return TypeError(
        f"{cls.__name__}.{name} holds {_describe(value)}, which is not an array, a submodule "
        f"or None. Every leaf of a module must be an array. If it is configuration, declare "
        f"it static:\n    {name}: {type(value).__name__} = nn.static()\n"
        f"If it is a parameter, assign it as an array: self.{name} = nn.param(jnp.asarray(...), axes)."
    )


def _finalize_field(cls: type, name: str, value: Any, metas: dict[str, ArrayMeta]) -> Any:
    if isinstance(value, Tagged):
        v = value.value
        if isinstance(v, (int, float, complex, bool)) or not is_array(v):
            if isinstance(v, (int, float, complex, bool, np.generic)):
                v = jax.numpy.asarray(v)
            else:
                raise _not_array_error(cls, name, v)
        if len(value.meta.axes) != v.ndim:
            raise ValueError(
                f"{cls.__name__}.{name} has shape {tuple(v.shape)} ({v.ndim} dims) but "
                f"{len(value.meta.axes)} logical axes {value.meta.axes}: give one name per dimension."
            )
        metas[name] = value.meta
        return v
    if is_array(value):
        raise TypeError(
            f"{cls.__name__}.{name} was assigned a bare array of shape {tuple(value.shape)}. "
            f"Say what it is and name its axes:\n    self.{name} = nn.param(value, ('embed', ...))"
            f"  # trainable\n    self.{name} = nn.state(value, (...))  # not trained"
        )
    if value is None or is_module(value):
        return value
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            if not is_module(v):
                raise _not_array_error(cls, f"{name}[{i}]", v) if not isinstance(v, Tagged) else TypeError(
                    f"{cls.__name__}.{name}[{i}]: a tuple/list field holds submodules only; "
                    f"give each array its own field."
                )
        return tuple(value)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not is_module(v):
                raise TypeError(
                    f"{cls.__name__}.{name}[{k!r}]: a dict field maps str names to submodules, "
                    f"got {_describe(v)}."
                )
        return dict(value)
    raise _not_array_error(cls, name, value)


def _check_static(cls: type, name: str, value: Any) -> Any:
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, Tagged) or is_array(value) or is_module(value):
        raise TypeError(
            f"{cls.__name__}.{name} is declared nn.static() but holds {_describe(value)}; "
            f"arrays and submodules belong in non-static fields (drop nn.static())."
        )
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"{cls.__name__}.{name} is static, so it must be hashable (it is part of the "
            f"tree structure that jit caches on), got {_describe(value)}. Use a tuple "
            f"instead of a list/dict."
        ) from None
    return value


def _field_line(name: str, value: Any) -> tuple[str, bool]:
    """The class-body line that declares ``name`` for ``value``, and whether it is dynamic."""
    if is_module(value):
        return f"{name}: {type(value).__name__}", True
    if isinstance(value, Tagged) or is_array(value):
        return f"{name}: jax.Array", True
    if isinstance(value, (tuple, list)) and value and all(is_module(v) for v in value):
        return f"{name}: tuple[{type(value[0]).__name__}, ...]", True
    if isinstance(value, dict) and value and all(is_module(v) for v in value.values()):
        return f"{name}: dict[str, {type(next(iter(value.values()))).__name__}]", True
    if value is None:
        return f"{name}: jax.Array | None  (or `{name}: Any = nn.static()` for configuration)", True
    kind = "Callable" if callable(value) else type(value).__name__
    return f"{name}: {kind} = nn.static()", False


def unannotated_error(cls: type, name: str, value: Any) -> TypeError:
    """``self.name = value`` in ``__init__`` where the class declares no field ``name``."""
    line, dynamic = _field_line(name, value)
    why = ("it would not be part of the pytree, so jit, grad and nn.summary would not see it"
           if dynamic else "only declared fields are kept; configuration is declared with nn.static()")
    close = difflib.get_close_matches(name, list(cls._baobab_fields), n=1)
    typo = f" (did you mean {close[0]!r}?)" if close else ""
    return TypeError(
        f"{cls.__name__}.__init__ set self.{name} = {_describe(value)}, but {cls.__name__} has no "
        f"field {name!r}{typo}. A module keeps only the fields its class body declares; {why}. "
        f"Add to the class body of {cls.__name__}:\n    {line}"
    )


# ----------------------------------------------------------------------------------------
# The metaclass and construction: run __init__, then validate and freeze.
# ----------------------------------------------------------------------------------------


def _generates_init(cls: type, namespace: dict) -> bool:
    """Dataclass semantics for ``__init__``: generate one (over all fields, the parents'
    first) unless this class or a parent wrote its own, which is then inherited."""
    if "__init__" in namespace:
        return False
    for c in cls.__mro__[1:]:
        init = c.__dict__.get("__init__")
        if init is not None:
            return init is object.__init__ or getattr(init, _GENERATED, False)
    return True


class ModuleMeta(type):
    """Makes each ``nn.Module`` subclass a dataclass and a pytree, and validates instances."""

    def __new__(mcs, name, bases, namespace, **kwargs):
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        if not any(isinstance(b, mcs) for b in bases):
            return cls  # nn.Module itself
        generate = _generates_init(cls, namespace)
        cls = dataclasses.dataclass(init=generate, repr=False, eq=False)(cls)
        if generate:
            setattr(cls.__init__, _GENERATED, True)
        fields = dataclasses.fields(cls)
        cls._baobab_static = tuple(f.name for f in fields if f.metadata.get("static"))
        cls._baobab_dynamic = tuple(f.name for f in fields if not f.metadata.get("static"))
        cls._baobab_fields = frozenset(f.name for f in fields)
        if "__call__" in namespace:
            cls.__call__ = wrap_call(namespace["__call__"])
        jax.tree_util.register_pytree_with_keys(
            cls, _pytree.flatten_with_keys, functools.partial(_pytree.unflatten, cls), _pytree.flatten
        )
        return cls

    def __call__(cls, *args, **kwargs):
        obj = cls.__new__(cls)
        obj.__dict__[_INITIALIZING] = True
        try:
            cls.__init__(obj, *args, **kwargs)
        finally:
            del obj.__dict__[_INITIALIZING]
        return _finish(obj)


def construct(cls: type, **values: Any) -> Any:
    """Build a module from field values without running its ``__init__`` (validated)."""
    for name, value in values.items():
        if name not in cls._baobab_fields:
            raise unannotated_error(cls, name, value)
    obj = cls.__new__(cls)
    obj.__dict__.update(values)
    return _finish(obj)


def _finish(obj: Any) -> Any:
    cls = type(obj)
    metas: dict[str, ArrayMeta] = {}
    for name in cls._baobab_dynamic:
        if not hasattr(obj, name):
            raise TypeError(f"{cls.__name__}.__init__ did not set the field {name!r}.")
        obj.__dict__[name] = _finalize_field(cls, name, getattr(obj, name), metas)
    for name in cls._baobab_static:
        if not hasattr(obj, name):
            raise TypeError(f"{cls.__name__}.__init__ did not set the static field {name!r}.")
        obj.__dict__[name] = _check_static(cls, name, getattr(obj, name))
    _pytree.init_store(obj, metas)
    return obj


def replace(module: Any, **changes: Any) -> Any:
    """A copy of ``module`` with some fields replaced, checked as construction checks them.

    No ``__init__`` runs. A bare array given to an array field keeps the field's
    metadata (kind, logical axes, frozen) and must have as many dimensions; pass
    ``nn.param(value, axes)`` or ``nn.state(value, axes)`` to change the metadata.
    Static fields must stay hashable; dynamic ones hold arrays, submodules or ``None``.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> lin = nn.Linear(2, 3, key=jax.random.key(0))
    >>> new = nn.replace(lin, bias=jnp.ones(3))
    >>> new.bias.tolist(), nn.array_meta(new, "bias").axes
    ([1.0, 1.0, 1.0], ('mlp',))
    """
    if not is_module(module):
        raise TypeError(f"nn.replace expects an nn.Module, got {type(module).__name__}.")
    cls = type(module)
    for name in changes:
        if name not in cls._baobab_fields:
            close = difflib.get_close_matches(name, list(cls._baobab_fields), n=1)
            raise TypeError(
                f"nn.replace: {cls.__name__} has no field {name!r}"
                f"{f' (did you mean {close[0]!r}?)' if close else ''}; its fields are "
                f"{list(cls._baobab_dynamic + cls._baobab_static)}."
            )
    metas = dict(_pytree.array_metas(module))
    checked = {}
    for name, value in changes.items():
        if name in cls._baobab_static:
            checked[name] = _check_static(cls, name, value)
            continue
        old_meta = metas.pop(name, None)
        old = getattr(module, name)
        if old_meta is not None and is_array(value) and is_array(old):  # keeps its metadata
            if len(value.shape) != len(old.shape):
                raise ValueError(
                    f"{cls.__name__}.{name} has {len(old.shape)} dims (logical axes {old_meta.axes}); "
                    f"the replacement has shape {tuple(value.shape)}. Give it {len(old.shape)} dims, or "
                    f"new axes with nn.replace(module, {name}=nn.param(value, axes))."
                )
            metas[name] = old_meta
            checked[name] = value
        else:
            checked[name] = _finalize_field(cls, name, value, metas)
    return _pytree.replace_metas(_pytree.replace_unchecked(module, **checked), metas)


def array_meta(module: Any, name: str) -> ArrayMeta:
    """The ``ArrayMeta`` (kind, logical axes, frozen) of ``module``'s array field ``name``.

    These are the field's own axes; ``nn.iter_arrays`` also adds the leading axes of
    an ``nn.Stacked`` (``"layers"``). To change them, see ``nn.replace``.

    >>> import jax
    >>> from baobab import nn
    >>> lin = nn.Linear(4, 8, key=jax.random.key(0))
    >>> nn.array_meta(lin, "weight")
    ArrayMeta(kind='param', axes=('embed', 'mlp'), frozen=False)
    """
    if not is_module(module):
        raise TypeError(f"nn.array_meta expects an nn.Module, got {type(module).__name__}.")
    metas = _pytree.array_metas(module)
    if name not in metas:
        cls = type(module)
        what = (f"holds {_describe(getattr(module, name))}" if name in cls._baobab_fields
                else "is not a field")
        raise ValueError(
            f"nn.array_meta: {cls.__name__}.{name} {what}, not an array; "
            f"the array fields of {cls.__name__} are {list(metas)}."
        )
    return metas[name]


# ----------------------------------------------------------------------------------------
# Calls: named scope, module path, precision policy, error notes.
# ----------------------------------------------------------------------------------------


def _cast(x: Any, dtype: Any) -> Any:
    if isinstance(x, jax.Array) and jax.numpy.issubdtype(x.dtype, jax.numpy.floating) and x.dtype != dtype:
        return x.astype(dtype)
    return x


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Cast the floating-point arrays of ``tree`` to ``dtype``; leave the rest alone."""
    return jax.tree.map(lambda x: _cast(x, dtype), tree)


def cast_own_arrays(module: Any, dtype: Any) -> Any:
    """A copy of ``module`` with its own floating parameters (not submodules', not state)
    cast to ``dtype``. State such as running statistics keeps its stored precision."""
    metas = _pytree.array_metas(module)
    return _pytree.replace_unchecked(
        module, **{n: _cast(getattr(module, n), dtype) for n, m in metas.items() if m.kind == PARAM})


def wrap_call(fn: Callable) -> Callable:
    """Run ``fn(self, ...)`` as a module call: named scope, path, policy, error note."""

    @functools.wraps(fn)
    def __call__(self, *args, **kwargs):
        with _context.calling(self) as frame:
            try:
                with jax.named_scope(type(self).__name__):
                    policy = _pytree.policy_of(self)
                    if policy is None:
                        return fn(self, *args, **kwargs)
                    cast_self = cast_own_arrays(self, policy.compute_dtype)
                    frame.alias = cast_self
                    args, kwargs = cast_floating((args, kwargs), policy.compute_dtype)
                    out = fn(cast_self, *args, **kwargs)
                    return cast_floating(out, policy.output_dtype)
            except Exception as e:  # add where it happened, once, at the innermost module
                if not getattr(e, "_baobab_noted", False):
                    try:
                        e.add_note(f"(raised inside {frame.describe()})")
                        e._baobab_noted = True
                    except (AttributeError, TypeError):
                        pass
                raise

    return __call__
