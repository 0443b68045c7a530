"""The baobab module contract.

A module is a frozen dataclass that is also a JAX pytree. That is the whole idea,
and everything in ``baobab.nn`` builds on these rules:

1. **Fields are either static or dynamic.** Static fields (declared with
   ``nn.static()``) hold configuration: ints, floats, strings, dtypes, callables,
   shapes. They live in the pytree's auxiliary data, so they must be hashable.
   Dynamic fields hold arrays, submodules, ``None``, or tuples/lists/dicts of
   submodules. Nothing else: a Python number or string in a dynamic field is an
   error at construction time, naming the class, the field and the fix.
2. **Every leaf is an array.** Because configuration is static and arrays are the
   only leaves, plain ``jax.jit``, ``jax.grad``, ``jax.vmap``, ``jax.lax.scan``,
   ``jax.eval_shape``, ``jax.checkpoint`` and ``jax.tree.map`` take a model as it
   is. There are no filtered transforms (Equinox) and no split/merge (Flax NNX).
3. **Every array carries metadata.** In ``__init__`` an array is assigned wrapped,
   as ``nn.param(value, axes)`` (trainable) or ``nn.state(value, axes)``
   (non-trainable, e.g. running statistics). ``axes`` are logical axis names such
   as ``("embed", "mlp")``, set per instance. The wrapper is removed at the end of
   ``__init__``: afterwards ``layer.weight`` is the plain array, and the metadata
   rides in the pytree's auxiliary data, so it survives every transform.
4. **Keys are explicit.** Constructors take a keyword-only ``key``; stochastic
   calls take ``key=`` and are deterministic when it is ``None``. Submodule keys
   come from ``nn.subkey(key, "name")``.
5. **Modules are immutable.** Assigning to a field after ``__init__`` raises.
   Changes produce a new module (``model.at("blocks[2].mlp").set(new)``), and
   layer state such as BatchNorm statistics is returned by ``nn.stateful_call``,
   never mutated in place.
6. **Calls know where they are.** ``__call__`` of every module runs inside a
   ``jax.named_scope`` and records the module's path (``blocks[3].attn.q``), so
   errors and profiles name the place. A precision policy, if one is set, casts
   inputs and the module's own parameters to the compute dtype around the call.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> class Affine(nn.Module):
    ...     scale: jax.Array
    ...     size: int = nn.static()
    ...     def __init__(self, size, *, key):
    ...         self.size = size
    ...         self.scale = nn.param(jax.random.normal(key, (size,)), ("embed",))
    ...     def __call__(self, x):
    ...         return x * self.scale
    >>> m = Affine(3, key=jax.random.key(0))
    >>> jax.jit(lambda m, x: m(x))(m, jnp.ones(3)).shape
    (3,)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from . import _context

__all__ = ["Module", "ArrayMeta", "param", "state", "static", "is_array"]

PARAM = "param"
STATE = "state"


class ArrayMeta(NamedTuple):
    """Metadata of one array field: its kind, logical axes and frozen flag."""

    kind: str  # "param" (trainable) or "state" (not trained, e.g. running stats)
    axes: tuple[str | None, ...]
    frozen: bool = False


class _Tagged:
    """An array wrapped with its metadata, only while ``__init__`` runs."""

    __slots__ = ("value", "meta")

    def __init__(self, value: Any, meta: ArrayMeta):
        self.value = value
        self.meta = meta


def is_array(x: Any) -> bool:
    """True for the values a module may hold as leaves (tracers included)."""
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def _check_axes(axes: Any, where: str) -> tuple[str | None, ...]:
    if isinstance(axes, str) or not isinstance(axes, (tuple, list)):
        raise TypeError(
            f"{where}: logical axes must be a tuple of names, e.g. ('embed', 'mlp'), "
            f"got {axes!r}. For a vector write ('embed',), with the trailing comma."
        )
    for a in axes:
        if a is not None and not isinstance(a, str):
            raise TypeError(f"{where}: each logical axis is a str or None, got {a!r} in {axes!r}.")
    return tuple(axes)


def param(value: Any, axes: tuple[str | None, ...]) -> Any:
    """Mark ``value`` as a trainable parameter with logical ``axes``, inside ``__init__``.

    >>> import jax.numpy as jnp
    >>> from baobab import nn
    >>> class Bias(nn.Module):
    ...     b: jnp.ndarray
    ...     def __init__(self, n):
    ...         self.b = nn.param(jnp.zeros(n), ("embed",))
    >>> Bias(4).b.shape
    (4,)
    """
    return _Tagged(value, ArrayMeta(PARAM, _check_axes(axes, "nn.param")))


def state(value: Any, axes: tuple[str | None, ...]) -> Any:
    """Mark ``value`` as non-trainable state (e.g. running statistics), inside ``__init__``."""
    return _Tagged(value, ArrayMeta(STATE, _check_axes(axes, "nn.state")))


def static(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """Declare a static (configuration) field: hashable, part of the tree structure.

    >>> from baobab import nn
    >>> class Cfg(nn.Module):
    ...     width: int = nn.static(default=8)
    >>> Cfg().width
    8
    """
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["static"] = True
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


# ----------------------------------------------------------------------------------------
# Construction: run __init__, then validate and freeze.
# ----------------------------------------------------------------------------------------

_INITIALIZING = "_baobab_initializing"
META = "_baobab_meta"  # dict: field name -> ArrayMeta
POLICY = "_baobab_policy"  # precision Policy or None
AUX = "_baobab_aux"  # the pytree aux data, computed once: a built module never changes


def _describe(value: Any) -> str:
    if is_array(value):
        return f"array {value.dtype}{list(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:80]


def _not_array_error(cls: type, name: str, value: Any) -> TypeError:
    return TypeError(
        f"{cls.__name__}.{name} holds {_describe(value)}, which is not an array, a submodule "
        f"or None. Every leaf of a module must be an array. If it is configuration, declare "
        f"it static:\n    {name}: {type(value).__name__} = nn.static()\n"
        f"If it is a parameter, assign it as an array: self.{name} = nn.param(jnp.asarray(...), axes)."
    )


def _finalize_field(cls: type, name: str, value: Any, metas: dict[str, ArrayMeta]) -> Any:
    if isinstance(value, _Tagged):
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
    if value is None or isinstance(value, Module):
        return value
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            if not isinstance(v, Module):
                raise _not_array_error(cls, f"{name}[{i}]", v) if not isinstance(v, _Tagged) else TypeError(
                    f"{cls.__name__}.{name}[{i}]: a tuple/list field holds submodules only; "
                    f"give each array its own field."
                )
        return tuple(value)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, Module):
                raise TypeError(
                    f"{cls.__name__}.{name}[{k!r}]: a dict field maps str names to submodules, "
                    f"got {_describe(v)}."
                )
        return dict(value)
    raise _not_array_error(cls, name, value)


class _ModuleMeta(type):
    def __new__(mcs, name, bases, namespace, **kwargs):
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        if namespace.get("__module__") == __name__ and name == "Module":
            return cls
        has_init = any("__init__" in c.__dict__ for c in cls.__mro__ if c not in (Module, object))
        cls = dataclasses.dataclass(init=not has_init, repr=False, eq=False)(cls)
        fields = dataclasses.fields(cls)
        cls._baobab_static = tuple(f.name for f in fields if f.metadata.get("static"))
        cls._baobab_dynamic = tuple(f.name for f in fields if not f.metadata.get("static"))
        if "__call__" in namespace:
            cls.__call__ = _wrap_call(namespace["__call__"])
        jax.tree_util.register_pytree_with_keys(
            cls, _flatten_with_keys, functools.partial(_unflatten, cls), _flatten
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


def construct(cls: type, **values: Any) -> "Module":
    """Build a module from field values without running its ``__init__`` (validated)."""
    obj = cls.__new__(cls)
    obj.__dict__.update(values)
    return _finish(obj)


def _finish(obj: "Module") -> "Module":
    cls = type(obj)
    metas: dict[str, ArrayMeta] = {}
    for name in cls._baobab_dynamic:
        if not hasattr(obj, name):
            raise TypeError(f"{cls.__name__}.__init__ did not set the field {name!r}.")
        obj.__dict__[name] = _finalize_field(cls, name, getattr(obj, name), metas)
    for name in cls._baobab_static:
        if not hasattr(obj, name):
            raise TypeError(f"{cls.__name__}.__init__ did not set the static field {name!r}.")
        value = getattr(obj, name)
        if isinstance(value, list):
            value = tuple(value)
        obj.__dict__[name] = value
        if isinstance(value, _Tagged) or is_array(value) or isinstance(value, Module):
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
    obj.__dict__[META] = metas
    obj.__dict__.setdefault(POLICY, None)
    obj.__dict__.pop(AUX, None)
    return obj


# ----------------------------------------------------------------------------------------
# Pytree registration: dynamic fields are children, everything else is aux data.
# ----------------------------------------------------------------------------------------


def _aux(obj: "Module") -> tuple:
    # Cached: every jitted call flattens its module arguments, and building this tuple
    # was two thirds of the flattening time (benchmarks/mlp_overhead.py). Whatever
    # changes statics, metadata or policy makes a new object (replace() drops the cache).
    d = obj.__dict__
    aux = d.get(AUX)
    if aux is None:
        statics = tuple(d[n] for n in type(obj)._baobab_static)
        aux = d[AUX] = (statics, tuple(sorted(d[META].items())), d[POLICY])
    return aux


def _flatten(obj: "Module"):
    d = obj.__dict__
    return [d[n] for n in type(obj)._baobab_dynamic], _aux(obj)


def _flatten_with_keys(obj: "Module"):
    d = obj.__dict__
    GetAttrKey = jax.tree_util.GetAttrKey
    return [(GetAttrKey(n), d[n]) for n in type(obj)._baobab_dynamic], _aux(obj)


def _unflatten(cls: type, aux: tuple, children: Any) -> "Module":
    obj = object.__new__(cls)
    d = obj.__dict__
    d.update(zip(cls._baobab_dynamic, children))
    statics, metas, policy = aux
    d.update(zip(cls._baobab_static, statics))
    d[META] = dict(metas)
    d[POLICY] = policy
    d[AUX] = aux
    return obj


def replace(module: "Module", **changes: Any) -> "Module":
    """A copy of ``module`` with some dynamic or static fields replaced (no ``__init__`` run)."""
    cls = type(module)
    for name in changes:
        if name not in cls._baobab_dynamic and name not in cls._baobab_static:
            raise AttributeError(
                f"{cls.__name__} has no field {name!r}; fields are "
                f"{list(cls._baobab_dynamic + cls._baobab_static)}."
            )
    obj = object.__new__(cls)
    obj.__dict__.update(module.__dict__)
    obj.__dict__.pop(AUX, None)  # callers may change statics, metadata or the policy
    obj.__dict__[META] = dict(module.__dict__[META])
    obj.__dict__.update(changes)
    return obj


# ----------------------------------------------------------------------------------------
# Calls: named scope, module path, precision policy, error notes.
# ----------------------------------------------------------------------------------------


def _wrap_call(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def __call__(self, *args, **kwargs):
        with _context.calling(self) as frame:
            try:
                with jax.named_scope(type(self).__name__):
                    policy = self.__dict__.get(POLICY)
                    if policy is None:
                        return fn(self, *args, **kwargs)
                    from ._precision import cast_floating, cast_own_arrays

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


def _short_repr(value: Any, indent: str) -> str:
    if is_array(value):
        dt = np.dtype(value.dtype)
        short = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64",
                 "int32": "i32", "int64": "i64", "uint8": "u8", "bool": "bool"}.get(dt.name, dt.name)
        return f"{short}[{','.join(map(str, value.shape))}]"
    if isinstance(value, Module):
        return value._repr(indent)
    if isinstance(value, tuple) and value and all(isinstance(v, Module) for v in value):
        inner = indent + "  "
        items = ",\n".join(f"{inner}{_short_repr(v, inner)}" for v in value)
        return f"(\n{items}\n{indent})"
    if isinstance(value, dict) and value:
        inner = indent + "  "
        items = ",\n".join(f"{inner}{k!r}: {_short_repr(v, inner)}" for k, v in value.items())
        return f"{{\n{items}\n{indent}}}"
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    return repr(value)


class Module(metaclass=_ModuleMeta):
    """Base class of every baobab module: a frozen dataclass registered as a pytree.

    Subclasses declare fields with annotations (``nn.static()`` for configuration),
    set them in ``__init__(..., *, key)``, and implement a pure ``__call__``.
    See this file's docstring for the whole contract.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if _INITIALIZING in self.__dict__:
            self.__dict__[name] = value
            return
        raise AttributeError(
            f"{type(self).__name__} is immutable: cannot set {name!r} after __init__. "
            f"Make a new module instead, e.g. model.at({name!r}).set(value)."
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}.")

    def at(self, path: str):
        """Refer to a submodule or array by path, to read (``.get()``) or replace (``.set()``) it.

        Paths read as in ``jax.tree_util`` key paths: ``"blocks[2].mlp.fc.weight"``.

        >>> import jax, jax.numpy as jnp
        >>> from baobab import nn
        >>> class Pair(nn.Module):
        ...     a: jax.Array
        ...     b: jax.Array
        ...     def __init__(self):
        ...         self.a = nn.param(jnp.zeros(2), ("embed",))
        ...         self.b = nn.param(jnp.ones(2), ("embed",))
        >>> p = Pair().at("a").set(jnp.full(2, 5.0))
        >>> p.a.tolist(), p.at("b").get().tolist()
        ([5.0, 5.0], [1.0, 1.0])
        """
        from ._tree import At

        return At(self, path)

    def _repr(self, indent: str) -> str:
        cls = type(self)
        inner = indent + "  "
        parts = [f"{n}={_short_repr(self.__dict__.get(n, getattr(self, n, None)), inner)}"
                 for n in cls._baobab_static]
        parts += [f"{n}={_short_repr(self.__dict__.get(n), inner)}" for n in cls._baobab_dynamic]
        one_line = f"{cls.__name__}({', '.join(parts)})"
        if len(one_line) + len(indent) <= 100 and "\n" not in one_line:
            return one_line
        body = ",\n".join(inner + p for p in parts)
        return f"{cls.__name__}(\n{body}\n{indent})"

    def __repr__(self) -> str:
        return self._repr("")
