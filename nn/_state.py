"""Explicit state: layers return new state through ``nn.stateful_call``, never in place.

The problem: a model holding BatchNorm layers must give back updated running
statistics after a training step, and threading a ``state`` argument through every
layer by hand (as Equinox asks) is the most-complained-about part of stateful JAX.

The design:

* A stateful layer computes its new state and calls
  ``nn.update_state(self, running_mean=..., running_var=...)``.
* ``out, model = nn.stateful_call(model, x)`` runs the call with a collector open,
  then returns the output and a **new model** with every recorded update merged in.
  It is a pure function of its inputs, so it works under ``jax.jit``, ``jax.grad``
  (return the new model as ``aux``) and inside a donated training step.
* Calling a stateful layer in training mode outside ``nn.stateful_call`` is an error
  that says so, rather than silently dropping the update.
* Training vs evaluation is a static field (``training``) on the layers that care,
  flipped for a whole model with ``nn.train_mode(model)`` / ``nn.eval_mode(model)``,
  so no ``train=`` flag is threaded through calls either.

A training step with BatchNorm (``model`` from ``nn.train_mode``)::

    def loss_fn(model, x, y):
        logits, model = nn.stateful_call(model, x)
        return cross_entropy(logits, y), model

    (loss, model_with_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(model, x, y)
    # opt = optax.multi_transform({..., "state": optax.set_to_zero()}, nn.labels)
    updates, opt_state = opt.update(grads, opt_state, model)
    model = optax.apply_updates(model_with_stats, updates)

State updates made inside user-written ``jax.vmap``/``lax.scan`` bodies must be
returned from those bodies; ``nn.Stacked`` does this for its scanned layers.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from . import _context
from ._module import STATE, Module
from ._pytree import array_metas, replace_unchecked
from ._tree import map_modules

__all__ = ["update_state", "stateful_call", "merge_state", "train_mode", "eval_mode"]


def update_state(module: Module, **values: Any) -> None:
    """Record new values for ``module``'s state fields, from inside its ``__call__``.

    The values are cast to each field's stored dtype and must keep its shape.
    """
    original = _context.resolve_running(module)
    cls = type(original)
    metas = array_metas(original)
    for name, value in values.items():
        meta = metas.get(name)
        if meta is None or meta.kind != STATE:
            states = [n for n, m in metas.items() if m.kind == STATE]
            raise AttributeError(
                f"{cls.__name__}.{name} is not a state field (declared with nn.state); "
                f"state fields are {states}."
            )
        old = getattr(original, name)
        if tuple(value.shape) != tuple(old.shape):
            raise ValueError(
                f"{_context.where()}: new {name} has shape {tuple(value.shape)}, "
                f"the stored one {tuple(old.shape)}."
            )
    if not _context.is_collecting():
        raise RuntimeError(
            f"{_context.where()} updated its state ({', '.join(values)}) but nothing collects "
            f"it. Call the model through `out, model = nn.stateful_call(model, x)` to get the "
            f"updated model back, or switch to evaluation with `model = nn.eval_mode(model)`."
        )
    cast = {n: jnp.asarray(v, dtype=getattr(original, n).dtype) for n, v in values.items()}
    _context.record(original, cast)


def merge_state(model: Any, updates: dict[int, tuple[Module, dict[str, Any]]]) -> Any:
    """Merge recorded updates (keyed by module identity) into a new model."""
    if not updates:
        return model

    def rebuild(node: Any) -> Any:
        if isinstance(node, Module):
            changes = {}
            for name in type(node)._baobab_dynamic:
                child = getattr(node, name)
                new_child = rebuild(child)
                if new_child is not child:
                    changes[name] = new_child
            if id(node) in updates and updates[id(node)][0] is node:
                changes.update(updates[id(node)][1])
            return replace_unchecked(node, **changes) if changes else node
        if isinstance(node, tuple):
            new = tuple(rebuild(v) for v in node)
            return node if all(a is b for a, b in zip(new, node)) else new
        if isinstance(node, dict):
            new = {k: rebuild(v) for k, v in node.items()}
            return node if all(new[k] is node[k] for k in node) else new
        return node

    return rebuild(model)


def stateful_call(model: Module, *args: Any, method: str | None = None, **kwargs: Any) -> tuple[Any, Module]:
    """Call ``model`` (or ``model.<method>``) and return ``(output, updated_model)``.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> bn = nn.BatchNorm(3)
    >>> y, bn = nn.stateful_call(bn, jnp.arange(6.0).reshape(2, 3))
    >>> [round(float(v), 2) for v in bn.running_mean]
    [0.15, 0.25, 0.35]
    """
    fn = model if method is None else getattr(model, method)
    with _context.collecting() as updates:
        out = fn(*args, **kwargs)
    return out, merge_state(model, updates)


def _set_training(model: Module, training: bool) -> Module:
    def visit(path: str, module: Module) -> Module:
        if "training" in type(module)._baobab_static:
            return replace_unchecked(module, training=training)
        return module

    return map_modules(visit, model)


def train_mode(model: Module) -> Module:
    """A copy of ``model`` with every layer that has a ``training`` flag set to True."""
    return _set_training(model, True)


def eval_mode(model: Module) -> Module:
    """A copy of ``model`` with every layer that has a ``training`` flag set to False:
    ``BatchNorm`` normalises with its running statistics and ``Dropout`` is the identity.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> mlp = nn.MLP(4, 8, 2, key=jax.random.key(0), dropout=0.5)
    >>> nn.eval_mode(mlp).dropout.training, mlp(jnp.ones(4), key=jax.random.key(1)).shape
    (False, (2,))
    """
    return _set_training(model, False)
