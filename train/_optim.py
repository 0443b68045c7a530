"""Optimizers: trainable-only wrapping, the weight-decay mask, and a default AdamW.

Any optax ``GradientTransformation`` can train a baobab model. Two conventions
make it safe on models with frozen parameters and layer state:

* ``only_trainable(opt)`` routes frozen parameters and state (BatchNorm running
  statistics) to ``optax.set_to_zero()``: they get **no optimizer state** and
  zero updates. ``train.create_state`` and ``train.make_train_step`` apply it, so
  pass the plain optimizer.
* ``weight_decay_mask(params)`` is True for the parameters that weight decay
  should touch: those with at least two dimensions once the leading ``"layers"``
  axis of ``nn.Stacked`` is set aside. Biases, norm scales and offsets (1-D) are
  left alone. Embedding tables (2-D) are decayed, as in GPT-2 and nanoGPT. The
  rule reads the logical axes stored with each array, so stacking does not fool
  it. ``train.adamw`` uses it by default.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from baobab import nn

__all__ = ["only_trainable", "weight_decay_mask", "adamw", "learning_rate_of"]

_ZERO = optax.set_to_zero()


def only_trainable(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optimizer`` for trainable parameters; nothing (zero updates, no state) for the rest.

    >>> import jax, optax
    >>> from baobab import nn, train
    >>> model = nn.freeze(nn.MLP(4, 8, 2, key=jax.random.key(0)), "fc1")
    >>> opt_state = train.only_trainable(optax.adam(1e-3)).init(model)
    >>> sum(x.size for x in jax.tree.leaves(opt_state)) == 2 * (8 * 2 + 2) + 1
    True
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"Expected an optax GradientTransformation such as optax.adamw(1e-3), got "
            f"{type(optimizer).__name__}.")
    return optax.multi_transform(
        {"trainable": optimizer, "frozen": _ZERO, "state": _ZERO}, nn.labels)


def _decays(path: str, x: Any, meta: nn.ArrayMeta) -> bool:
    dims = [a for a in meta.axes if a != "layers"]
    return meta.kind == "param" and len(dims) >= 2


def weight_decay_mask(params: Any) -> Any:
    """True for parameters with >= 2 dims (not counting ``"layers"``), else False.

    Accepts the model, or the masked tree optax passes inside ``only_trainable``.

    >>> import jax
    >>> from baobab import nn, train
    >>> mask = train.weight_decay_mask(nn.Linear(4, 8, key=jax.random.key(0)))
    >>> mask.weight, mask.bias
    (True, False)
    """
    return nn.map_arrays(_decays, params)


def adamw(learning_rate: float | optax.Schedule, *, weight_decay: float = 0.0,
          b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          clip_norm: float | None = None,
          mask: Callable[[Any], Any] | None = weight_decay_mask) -> optax.GradientTransformation:
    """AdamW with the decay mask above, optional global-norm clipping, and a visible LR.

    ``learning_rate`` is a float or an optax schedule (``optax.warmup_cosine_decay_schedule``).
    The learning rate is injected as a hyperparameter, so the training loop can
    log its current value.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn, train
    >>> opt = train.adamw(1e-3, weight_decay=0.1, clip_norm=1.0)
    >>> state = opt.init(nn.Linear(2, 2, key=jax.random.key(0)))
    >>> round(float(train.learning_rate_of(state)), 6)
    0.001
    """

    def make(learning_rate: Any) -> optax.GradientTransformation:
        # Pass the mask *function*: modules are callable, and optax calls callables.
        inner = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                            mask=mask)
        return inner if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), inner)

    return optax.inject_hyperparams(make)(learning_rate=learning_rate)


def learning_rate_of(opt_state: Any) -> jax.Array | None:
    """The current learning rate found in ``opt_state``, or None if it isn't visible.

    It is visible when the optimizer was wrapped with ``optax.inject_hyperparams``
    and has a ``learning_rate`` hyperparameter (``train.adamw`` does this).
    """
    for leaf in jax.tree.leaves(opt_state, is_leaf=_has_hyperparams):
        if _has_hyperparams(leaf) and "learning_rate" in leaf.hyperparams:
            return leaf.hyperparams["learning_rate"]
    return None


def _has_hyperparams(x: Any) -> bool:
    return isinstance(x, (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState))
