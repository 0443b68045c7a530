"""The baobab module contract.

A module is a frozen dataclass that is also a JAX pytree. That is the whole idea,
and everything in ``baobab.nn`` builds on these rules:

1. **Fields are either static or dynamic.** Static fields (declared with
   ``nn.static()``) hold configuration: ints, floats, strings, dtypes, callables,
   shapes. They live in the pytree's auxiliary data, so they must be hashable.
   Dynamic fields hold arrays, submodules, ``None``, or tuples/lists/dicts of
   submodules. Nothing else: a Python number or string in a dynamic field is an
   error at construction time, naming the class, the field and the fix. Every
   field is declared in the class body; ``self.fc = nn.Linear(...)`` without an
   ``fc: nn.Linear`` line is an error that shows the line to add (an undeclared
   attribute would silently drop out of the pytree). A class that writes no
   ``__init__`` gets the dataclass one over all fields, its parents' first, unless
   a parent wrote an ``__init__``; that one is inherited.
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
   ``nn.array_meta(layer, "weight")`` reads it; ``nn.replace`` keeps it.
4. **Keys are explicit; modes are fields.** Constructors take a keyword-only
   ``key``; stochastic calls take ``key=``. Submodule keys come from
   ``nn.subkey(key, "name")``. Layers that behave differently in training and in
   evaluation (``Dropout``, ``BatchNorm``) have a static ``training`` field, set
   for a whole model by ``nn.train_mode`` / ``nn.eval_mode``; in training mode a
   ``Dropout`` called without a key is an error, in evaluation it is the identity.
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

from typing import Any

import numpy as np

from ._core import ModuleMeta, is_initializing, unannotated_error
from ._core import array_meta as array_meta
from ._core import replace as replace
from ._fields import PARAM as PARAM
from ._fields import STATE as STATE
from ._fields import ArrayMeta as ArrayMeta
from ._fields import is_array as is_array
from ._fields import param as param
from ._fields import state as state
from ._fields import static as static
from ._tree import At

__all__ = ["Module", "ArrayMeta", "array_meta", "param", "state", "static", "is_array", "replace"]


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


class Module(metaclass=ModuleMeta):
    """Base class of every baobab module: a frozen dataclass registered as a pytree.

    Subclasses declare fields with annotations (``nn.static()`` for configuration),
    set them in ``__init__(..., *, key)``, and implement a pure ``__call__``.
    See this file's docstring for the whole contract.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if is_initializing(self):
            if name not in type(self)._baobab_fields:
                raise unannotated_error(type(self), name, value)
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
        return At(self, path)

    def _repr(self, indent: str) -> str:
        cls = type(self)
        inner = indent + "  "
        parts = [f"{n}={_short_repr(getattr(self, n, None), inner)}"
                 for n in cls._baobab_static + cls._baobab_dynamic]
        one_line = f"{cls.__name__}({', '.join(parts)})"
        if len(one_line) + len(indent) <= 100 and "\n" not in one_line:
            return one_line
        body = ",\n".join(inner + p for p in parts)
        return f"{cls.__name__}(\n{body}\n{indent})"

    def __repr__(self) -> str:
        return self._repr("")
