"""Parameters by name: masks, freezing, counting, and flat state dicts.

Every function here reads the metadata stored with each array (``nn.param`` /
``nn.state``), so masks are trees with the model's exact structure and plug into
``optax.masked`` and ``optax.multi_transform`` as they are.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from ._context import join_path
from ._module import PARAM, STATE, Module, is_array
from ._pytree import array_metas, replace_metas
from ._tree import iter_arrays, map_arrays, map_modules

__all__ = [
    "logical_axes", "trainable", "is_state", "labels", "freeze", "unfreeze", "named_parameters",
    "count_parameters", "state_dict", "load_state_dict", "path_matches",
]


def path_matches(pattern: str, path: str) -> bool:
    """True when ``pattern`` matches ``path`` or one of its ancestors.

    ``*`` matches any run of characters (dots included), ``?`` one character;
    everything else, brackets included, is literal. ``"encoder"`` and
    ``"encoder.*"`` both match ``"encoder.layers[0].weight"``.
    """
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    compiled = re.compile(regex + r"(?:[.\[].*)?")
    return compiled.fullmatch(path) is not None


def logical_axes(model: Module) -> Module:
    """A tree like ``model`` whose leaves are ``PartitionSpec``s of logical axis names.

    >>> import jax
    >>> from baobab import nn
    >>> lin = nn.Linear(4, 8, key=jax.random.key(0), axes=("embed", "mlp"))
    >>> nn.logical_axes(lin).weight
    P('embed', 'mlp')
    """
    return map_arrays(lambda path, x, meta: PartitionSpec(*meta.axes), model)


def trainable(model: Module) -> Module:
    """Bool mask: True for parameters that are trained (not state, not frozen).

    ``optax.masked(opt, nn.trainable(model))`` gives masked-out leaves no optimizer
    state, but passes their updates through unchanged. To also zero them, use
    ``nn.labels`` with ``optax.multi_transform``.
    """
    return map_arrays(lambda path, x, meta: meta.kind == PARAM and not meta.frozen, model)


def labels(model: Module) -> Module:
    """Label tree for ``optax.multi_transform``: ``"trainable"``, ``"frozen"`` or ``"state"``.

    Frozen parameters and state get no optimizer state and zero updates. Pass the
    function itself, not its result: a module is callable, and ``multi_transform``
    calls a callable ``param_labels`` with the parameters.

    >>> import jax, optax
    >>> from baobab import nn
    >>> model = nn.freeze(nn.MLP(4, 8, 2, key=jax.random.key(0)), "fc1")
    >>> zero = optax.set_to_zero()
    >>> opt = optax.multi_transform(
    ...     {"trainable": optax.adamw(1e-3), "frozen": zero, "state": zero}, nn.labels)
    >>> nn.labels(model).fc1.weight, nn.labels(model).fc2.weight
    ('frozen', 'trainable')
    """

    def label(path: str, x: Any, meta: Any) -> str:
        if meta.kind == STATE:
            return "state"
        return "frozen" if meta.frozen else "trainable"

    return map_arrays(label, model)


def is_state(model: Module) -> Module:
    """Bool mask: True for non-trainable state (e.g. BatchNorm running statistics)."""
    return map_arrays(lambda path, x, meta: meta.kind == STATE, model)


def _set_frozen(model: Module, patterns: tuple[str, ...], frozen: bool) -> Module:
    if not patterns:
        raise ValueError("Give at least one path pattern, e.g. nn.freeze(model, 'encoder.*').")
    hits = {p: 0 for p in patterns}

    def visit(path: str, module: Module) -> Module:
        metas = array_metas(module)
        new_metas = dict(metas)
        for name, meta in metas.items():
            full = join_path(path, name)
            matched = [p for p in patterns if path_matches(p, full)]
            for p in matched:
                hits[p] += 1
            if matched and meta.kind == PARAM:
                if not frozen and not jnp.issubdtype(getattr(module, name).dtype, jnp.inexact):
                    raise ValueError(
                        f"nn.unfreeze: {full} is {jnp.dtype(getattr(module, name).dtype)} (e.g. an "
                        f"nn.Int8Linear's quantized weight) and cannot be trained: it has no gradient. Use "
                        f"patterns that leave it out, e.g. nn.unfreeze(model, '*.lora_*', 'classifier').")
                new_metas[name] = meta._replace(frozen=frozen)
        return replace_metas(module, new_metas)

    out = map_modules(visit, model)
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        paths = [p for p, _, _ in iter_arrays(model)]
        raise ValueError(
            f"Pattern(s) {missing} matched no array of {type(model).__name__}. "
            f"Paths look like {paths[:6]}."
        )
    return out


def freeze(model: Module, *patterns: str) -> Module:
    """A copy of ``model`` whose parameters under the path patterns are frozen.

    Frozen parameters are False in ``nn.trainable``, so masked optimizers give them
    no state and no updates.

    >>> import jax
    >>> from baobab import nn
    >>> mlp = nn.MLP(4, 8, 2, key=jax.random.key(0))
    >>> frozen = nn.freeze(mlp, "fc1.*")
    >>> nn.trainable(frozen).fc1.weight, nn.trainable(frozen).fc2.weight
    (False, True)
    """
    return _set_frozen(model, patterns, True)


def unfreeze(model: Module, *patterns: str) -> Module:
    """A copy of ``model`` with the parameters under the patterns trainable again."""
    return _set_frozen(model, patterns or ("*",), False)


def named_parameters(model: Module, *, include_state: bool = False) -> Iterator[tuple[str, jax.Array]]:
    """Yield ``(dotted_path, array)`` for each parameter (and state, if asked)."""
    for path, x, meta in iter_arrays(model):
        if meta.kind == PARAM or include_state:
            yield path, x


def count_parameters(model: Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters (state such as running statistics excluded)."""
    total = 0
    for _, x, meta in iter_arrays(model):
        if meta.kind == PARAM and not (trainable_only and meta.frozen):
            total += int(np.prod(x.shape))
    return total


def state_dict(model: Module) -> dict[str, jax.Array]:
    """A flat ``{path: array}`` of every parameter and state array, in tree order.

    >>> import jax
    >>> from baobab import nn
    >>> sorted(nn.state_dict(nn.Linear(2, 3, key=jax.random.key(0))))
    ['bias', 'weight']
    """
    return {path: x for path, x, _ in iter_arrays(model)}


def load_state_dict(model: Module, values: Mapping[str, Any], *, strict: bool = True,
                    cast: bool = False) -> Module:
    """A copy of ``model`` with arrays taken from ``values`` (a flat ``{path: array}``).

    All problems are reported together in one ``ValueError``: missing keys and
    unexpected keys (when ``strict``), and shape or dtype mismatches (always;
    pass ``cast=True`` to convert dtypes instead).

    Each loaded array keeps the target's sharding: a sharded model (``nn.create_sharded``,
    or abstract ``jax.ShapeDtypeStruct`` leaves carrying a ``sharding``) is filled slice by
    slice, so nothing lands whole on one device.

    >>> import jax, numpy as np
    >>> from baobab import nn
    >>> mesh = jax.make_mesh((1,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    >>> lin = nn.create_sharded(lambda k: nn.Linear(4, 8, key=k), jax.random.key(0), mesh=mesh,
    ...                         rules={"embed": "fsdp", "mlp": None})
    >>> new = nn.load_state_dict(lin, {"weight": np.ones((4, 8), np.float32), "bias": np.zeros(8, np.float32)})
    >>> new.weight.sharding == lin.weight.sharding, float(new.weight.sum())
    (True, 32.0)
    """
    own = {path: x for path, x, _ in iter_arrays(model)}
    problems: list[str] = []
    missing = [k for k in own if k not in values]
    unexpected = [k for k in values if k not in own]
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if strict and unexpected:
        hints = []
        for k in unexpected:
            close = difflib.get_close_matches(k, list(own), n=1)
            hints.append(f"{k} (did you mean {close[0]}?)" if close else k)
        problems.append(f"unexpected keys ({len(unexpected)}): {hints}")
    for k, target in own.items():
        if k not in values:
            continue
        v = values[k]
        if not (is_array(v) or hasattr(v, "shape")):
            problems.append(f"{k}: expected an array, got {type(v).__name__}")
            continue
        if tuple(v.shape) != tuple(target.shape):
            problems.append(f"{k}: shape mismatch, model has {tuple(target.shape)}, got {tuple(v.shape)}")
        elif not cast and np.dtype(v.dtype) != np.dtype(target.dtype):
            problems.append(
                f"{k}: dtype mismatch, model has {np.dtype(target.dtype)}, got {np.dtype(v.dtype)} "
                f"(pass cast=True to convert)"
            )
    if problems:
        raise ValueError(
            f"load_state_dict into {type(model).__name__} failed:\n  " + "\n  ".join(problems)
        )

    def take(path: str, x: Any, meta: Any) -> Any:
        return x if path not in values else _placed(values[path], x)

    return map_arrays(take, model)


def _placed(value: Any, target: Any) -> jax.Array:
    """``value`` as an array of ``target``'s dtype, in ``target``'s sharding if it has one.

    A host value (numpy, a memory-mapped tensor) is sliced per addressable device
    (``make_array_from_callback``), so no device ever holds more than its own slice and
    each process reads only the slices of its devices; a ``jax.Array`` in another
    sharding is resharded (under ``jit``, which also works across processes).
    """
    sharding = getattr(target, "sharding", None)
    if sharding is None:  # an abstract target without a sharding: the default device
        return jnp.asarray(value, dtype=target.dtype)
    if isinstance(value, jax.Array):
        if value.sharding != sharding:
            if value.is_fully_addressable and sharding.is_fully_addressable:
                value = jax.device_put(value, sharding)  # also across device sets
            else:
                value = jax.jit(lambda v: v, out_shardings=sharding)(value)
        return value if value.dtype == target.dtype else value.astype(target.dtype)
    dtype = np.dtype(target.dtype)
    return jax.make_array_from_callback(tuple(target.shape), sharding,
                                        lambda index: np.asarray(value[index]).astype(dtype, copy=False))
