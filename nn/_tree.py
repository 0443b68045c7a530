"""Walking a model by path: iterate, map and replace arrays and submodules.

Paths are written as ``jax.tree_util`` key paths read, without the leading dot:
``blocks[3].attn.q.weight``. Tuple items are ``[i]``, dict items ``['name']``.
``blocks.3.attn`` is accepted as input too.

A module class may declare ``_baobab_leading_axes = {"field": ("layers",)}``: the
arrays under that field carry extra leading dimensions (as ``nn.Stacked`` does), and
their logical axes are prefixed accordingly.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ._context import join_path
from ._core import is_module, replace
from ._fields import ArrayMeta, is_array
from ._pytree import array_metas, replace_unchecked

if TYPE_CHECKING:  # for annotations only: _module.py imports this file (for Module.at)
    from ._module import Module

__all__ = ["iter_arrays", "map_arrays", "iter_modules", "map_modules", "parse_path", "At"]


def _child_items(module: Module) -> Iterator[tuple[str, Any]]:
    for name in type(module)._baobab_dynamic:
        yield name, getattr(module, name)


def _prefix_for(module: Module, field: str) -> tuple:
    return getattr(type(module), "_baobab_leading_axes", {}).get(field, ())


def iter_arrays(tree: Any, path: str = "", prefix: tuple = ()) -> Iterator[tuple[str, Any, ArrayMeta]]:
    """Yield ``(path, array, meta)`` for every array in a model, in tree order.

    ``meta.axes`` includes leading axes added by stacking (``"layers"``).
    """
    if is_module(tree):
        metas = array_metas(tree)
        for name, value in _child_items(tree):
            child_prefix = prefix + _prefix_for(tree, name)
            child_path = join_path(path, name)
            if name in metas:
                if value is None:
                    continue
                meta = metas[name]
                yield child_path, value, meta._replace(axes=child_prefix + meta.axes)
            else:
                yield from iter_arrays(value, child_path, child_prefix)
    elif isinstance(tree, tuple):
        for i, v in enumerate(tree):
            yield from iter_arrays(v, join_path(path, f"[{i}]"), prefix)
    elif isinstance(tree, dict):
        for k in sorted(tree):
            yield from iter_arrays(tree[k], join_path(path, f"[{k!r}]"), prefix)


def map_arrays(fn: Callable[[str, Any, ArrayMeta], Any], tree: Any, path: str = "", prefix: tuple = ()) -> Any:
    """Rebuild a model with each array replaced by ``fn(path, array, meta)``.

    The result has the model's tree structure, so it can be a mask, a tree of
    shardings or logical axes, or a new model.
    """
    if is_module(tree):
        metas = array_metas(tree)
        changes = {}
        for name, value in _child_items(tree):
            child_prefix = prefix + _prefix_for(tree, name)
            child_path = join_path(path, name)
            if name in metas:
                if value is not None:
                    meta = metas[name]
                    changes[name] = fn(child_path, value, meta._replace(axes=child_prefix + meta.axes))
            else:
                changes[name] = map_arrays(fn, value, child_path, child_prefix)
        return replace_unchecked(tree, **changes)  # the new leaves may be masks or specs
    if isinstance(tree, tuple):
        return tuple(map_arrays(fn, v, join_path(path, f"[{i}]"), prefix) for i, v in enumerate(tree))
    if isinstance(tree, dict):
        return {k: map_arrays(fn, tree[k], join_path(path, f"[{k!r}]"), prefix) for k in sorted(tree)}
    return tree


def iter_modules(tree: Any, path: str = "") -> Iterator[tuple[str, Module]]:
    """Yield ``(path, module)`` for the model and every submodule, parents first."""
    if is_module(tree):
        yield path, tree
        for name, value in _child_items(tree):
            yield from iter_modules(value, join_path(path, name))
    elif isinstance(tree, tuple):
        for i, v in enumerate(tree):
            yield from iter_modules(v, join_path(path, f"[{i}]"))
    elif isinstance(tree, dict):
        for k in sorted(tree):
            yield from iter_modules(tree[k], join_path(path, f"[{k!r}]"))


def map_modules(fn: Callable[[str, Module], Module], tree: Any, path: str = "") -> Any:
    """Rebuild a model bottom-up, replacing each module ``m`` by ``fn(path, m)``."""
    if is_module(tree):
        changes = {name: map_modules(fn, value, join_path(path, name))
                   for name, value in _child_items(tree) if not is_array(value)}
        return fn(path, replace_unchecked(tree, **changes))
    if isinstance(tree, tuple):
        return tuple(map_modules(fn, v, join_path(path, f"[{i}]")) for i, v in enumerate(tree))
    if isinstance(tree, dict):
        return {k: map_modules(fn, v, join_path(path, f"[{k!r}]")) for k, v in tree.items()}
    return tree


# ----------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z_0-9]*)|\[(\d+)\]|\[(['\"])(.*?)\3\]|\.(\d+)")


def parse_path(path: str) -> list[str | int]:
    """``"blocks[2].mlp"`` or ``"blocks.2.mlp"`` -> ``["blocks", 2, "mlp"]``."""
    tokens: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None or m.end() == pos:
            raise ValueError(
                f"Cannot parse path {path!r} at position {pos} ({path[pos:]!r}). "
                f"Write paths like 'blocks[2].mlp.fc.weight'."
            )
        name, index, _, key, dotted_index = m.groups()
        if name is not None:
            tokens.append(name)
        elif key is not None:
            tokens.append(key)
        else:
            tokens.append(int(index if index is not None else dotted_index))
        pos = m.end()
    return tokens


def _format(tokens: list[str | int]) -> str:
    out = ""
    for t in tokens:
        out = join_path(out, f"[{t}]" if isinstance(t, int) else t)
    return out or "<root>"


def _step(node: Any, token: str | int, done: list) -> Any:
    if is_module(node):
        if isinstance(token, str) and token in type(node)._baobab_dynamic:
            return getattr(node, token)
        options = list(type(node)._baobab_dynamic)
    elif isinstance(node, tuple):
        if isinstance(token, int) and 0 <= token < len(node):
            return node[token]
        options = [f"[{i}]" for i in range(len(node))]
    elif isinstance(node, dict):
        if token in node:
            return node[token]
        options = list(node)
    else:
        options = []
    raise KeyError(
        f"No {token!r} under '{_format(done)}' ({type(node).__name__}). "
        f"Valid next steps: {options[:20]}."
    )


def _set(node: Any, tokens: list, value: Any, done: list) -> Any:
    if not tokens:
        return value
    token, rest = tokens[0], tokens[1:]
    child = _step(node, token, done)
    new_child = _set(child, rest, value, done + [token])
    if is_module(node):
        if token in array_metas(node):
            _check_leaf(child, new_child, _format(done + [token]))
        return replace(node, **{token: new_child})
    if isinstance(node, tuple):
        return node[:token] + (new_child,) + node[token + 1:]
    new = dict(node)
    new[token] = new_child
    return new


def _check_leaf(old: Any, new: Any, where: str) -> None:
    if not is_array(new):
        raise TypeError(f"'{where}' holds an array; cannot replace it with {type(new).__name__}.")
    if old is not None and tuple(old.shape) != tuple(new.shape):
        raise ValueError(
            f"'{where}' has shape {tuple(old.shape)}, the replacement has {tuple(new.shape)}. "
            f"To change a shape, replace the whole submodule that owns it."
        )


class At:
    """A reference into a model by path; see ``Module.at``."""

    def __init__(self, model: Module, path: str):
        self._model = model
        self._tokens = parse_path(path)

    def get(self) -> Any:
        node = self._model
        for i, token in enumerate(self._tokens):
            node = _step(node, token, self._tokens[:i])
        return node

    def set(self, value: Any) -> Module:
        """A new model with the referenced submodule or array replaced by ``value``."""
        return _set(self._model, self._tokens, value, [])

    def apply(self, fn: Callable[[Any], Any]) -> Module:
        """A new model with the referenced value replaced by ``fn(value)``."""
        return self.set(fn(self.get()))
