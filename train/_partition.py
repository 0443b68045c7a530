"""Split a model into what trains and what does not, and put the halves back together.

The step differentiates only the trainable half. ``jax.value_and_grad`` then never
builds the weight gradients of frozen parameters (the base weights under LoRA, a
frozen encoder), so freezing saves backward compute, not only optimizer memory.

``split_trainable(model)`` returns two trees with the model's exact structure:

* ``trainable``: the trainable parameters (``nn.trainable``), ``None`` elsewhere;
* ``rest``: frozen parameters and layer state (BatchNorm statistics), ``None``
  where ``trainable`` holds an array.

``merge(trainable, rest)`` takes each array from whichever half holds it. ``None``
is an empty pytree, so both halves pass through ``jax.jit``, ``jax.grad`` and
``lax.scan`` as they are, and a gradient of ``trainable`` has its shape.

>>> import jax
>>> from baobab import nn
>>> from baobab.train._partition import merge, split_trainable
>>> mlp = nn.freeze(nn.MLP(4, 8, 2, key=jax.random.key(0)), "fc1")
>>> trainable, rest = split_trainable(mlp)
>>> trainable.fc1.weight is None, rest.fc1.weight.shape, trainable.fc2.weight.shape
(True, (4, 8), (8, 2))
>>> len(jax.tree.leaves(trainable)), len(jax.tree.leaves(rest))
(2, 2)
>>> bool((merge(trainable, rest).fc1.weight == mlp.fc1.weight).all())
True
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from baobab import nn

__all__ = ["split_trainable", "merge", "fill_zeros", "take_like", "trainable_positions"]


def _is_none(x: Any) -> bool:
    return x is None


def split_trainable(model: Any) -> tuple[Any, Any]:
    """``(trainable, rest)``: the model's arrays split by ``nn.trainable``, ``None`` in the gaps."""
    mask = nn.trainable(model)
    trainable = jax.tree.map(lambda x, t: x if t else None, model, mask)
    rest = jax.tree.map(lambda x, t: None if t else x, model, mask)
    return trainable, rest


def merge(trainable: Any, rest: Any) -> Any:
    """The model again: each leaf from ``trainable``, or from ``rest`` where ``trainable`` has ``None``."""
    return jax.tree.map(lambda t, r: r if t is None else t, trainable, rest, is_leaf=_is_none)


def fill_zeros(grads: Any, rest: Any) -> Any:
    """``grads`` of the trainable half, with zeros (of each array's shape) for the rest.

    The optimizer (``only_trainable``) takes a tree with the model's structure and
    gives frozen leaves and state zero updates without reading them, so XLA drops
    these zeros; the optimizer state keeps the layout it always had.
    """
    return merge(grads, jax.tree.map(jnp.zeros_like, rest))


def take_like(half: Any, tree: Any) -> Any:
    """The leaves of ``tree`` (the model's structure) where ``half`` holds an array, ``None`` elsewhere."""
    return jax.tree.map(lambda h, x: None if h is None else x, half, tree, is_leaf=_is_none)


def trainable_positions(model: Any) -> list[int]:
    """Indices, among ``jax.tree.leaves(model)``, of the trainable leaves, in tree order."""
    return [i for i, t in enumerate(jax.tree.leaves(nn.trainable(model))) if t]
