"""The baobab training contract: what a step is.

A training run is a loop around one function, the **step**::

    state, metrics = step(state, batch)

and everything in ``baobab.train`` builds on these rules:

1. **The state is one pytree.** ``TrainState`` holds the model (an ``nn.Module``),
   the optimizer state, the step counter, the run's RNG key and, optionally, an
   exponential moving average (EMA) of the model. Checkpoints save and restore
   exactly this tree, so a restored run continues bit for bit.
2. **The step is pure, jitted once and donates the state.** It is compiled with
   ``jax.jit(step, in_shardings=..., out_shardings=..., donate_argnums=0)``. The
   shardings are explicit and come from the model's logical axes and a rule table
   (``nn.shardings(model, mesh, rules)``); optimizer-state leaves take the
   sharding of the parameter they mirror. Data parallel, FSDP and tensor parallel
   are different rule tables and mesh shapes, never different code. ``jax.pmap``
   is not used: data parallelism is ``jit`` over the ``data`` mesh axis.
3. **A batch is a dict of global arrays.** Its leaves have the global batch as
   their leading dimension, sharded along the logical ``"batch"`` axis. Data
   iterators yield host-local numpy rows (this process's share) or global
   ``jax.Array``s; ``put_batch`` turns the former into the latter.
4. **The loss function is plain.** ``loss_fn(model, batch, key)`` returns a scalar
   loss, or ``(loss, metrics)`` with a dict of scalar metrics. It calls the model
   as usual: the step runs it inside ``nn.stateful_call``, so layers with state
   (BatchNorm) have their updates collected and returned with the gradients.
5. **Randomness is derived, never stored per step.** The key of step ``s`` is
   ``jax.random.fold_in(state.rng, s)``; microbatch ``i`` of that step uses
   ``fold_in(step_key, i)``. Resuming at step ``s`` therefore draws the same keys.
6. **Metrics stay on the device.** The step returns a dict of scalar arrays; the
   loop keeps them as device arrays and reads them only at logging intervals, so
   the host never waits on a step in between.

Example (one step on one device):
    >>> import jax, jax.numpy as jnp, numpy as np, optax
    >>> from baobab import nn, train
    >>> def loss_fn(model, batch, key):
    ...     return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)
    >>> mesh = train.make_mesh(devices=jax.devices()[:1])
    >>> state = train.create_state(lambda k: nn.Linear(4, 2, key=k), optax.sgd(0.1),
    ...                            mesh=mesh, rules=nn.DEFAULT_RULES)
    >>> batch = {"x": np.ones((8, 4), np.float32), "y": np.zeros((8, 2), np.float32)}
    >>> step = train.jit_step(train.make_train_step(loss_fn, optax.sgd(0.1)), state,
    ...                       mesh=mesh, rules=nn.DEFAULT_RULES)
    >>> state, metrics = step(state, train.put_batch(batch, mesh=mesh, rules=nn.DEFAULT_RULES))
    >>> int(state.step), sorted(metrics)[:3]
    (1, ['first_nonfinite_grad', 'grad_norm', 'loss'])
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Union

import jax

from baobab import nn

__all__ = ["TrainState", "LossFn", "EvalFn", "Batch", "call_loss"]

#: A batch: a dict of arrays whose leading dimension is the (global) batch.
Batch = Mapping[str, Any]

#: ``loss_fn(model, batch, key) -> loss`` or ``-> (loss, {name: scalar})``.
LossFn = Callable[[nn.Module, Batch, jax.Array], Union[jax.Array, tuple[jax.Array, Mapping[str, jax.Array]]]]

#: ``eval_fn(model, batch) -> {name: per-example values of shape (B,)}``.
EvalFn = Callable[[nn.Module, Batch], Mapping[str, jax.Array]]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a run carries from step to step, as one pytree.

    Fields:
        model: the ``nn.Module`` being trained (parameters and layer state).
        opt_state: the optax state of the optimizer (none for frozen parameters
            and layer state: see ``train.only_trainable``).
        step: int32 scalar, the number of steps taken.
        rng: a typed PRNG key; step ``s`` uses ``fold_in(rng, s)``.
        ema: an exponential moving average of ``model`` (same structure), or None.

    Paths read like ``.model.blocks[3].attn.q.weight``.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn, train
    >>> s = train.TrainState(model=nn.Linear(2, 2, key=jax.random.key(0)), opt_state=(),
    ...                      step=jnp.zeros((), jnp.int32), rng=jax.random.key(1))
    >>> len(jax.tree.leaves(s))
    4
    """

    model: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array
    ema: Any = None

    def replace(self, **changes: Any) -> "TrainState":
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)


class _Loss(nn.Module):
    """The loss as a module, so ``nn.stateful_call`` can collect layer state under it."""

    model: Any
    fn: Callable = nn.static()

    def __call__(self, batch: Batch, key: jax.Array) -> Any:
        return self.fn(self.model, batch, key)


_LOSS_RETURN = (
    "loss_fn must return a scalar loss or (loss, metrics) with metrics a dict of scalars, "
    "got {what}. Write it as `def loss_fn(model, batch, key): ... return loss, {{'accuracy': acc}}`."
)


def call_loss(loss_fn: LossFn, model: nn.Module, batch: Batch, key: jax.Array
              ) -> tuple[jax.Array, tuple[dict[str, jax.Array], nn.Module]]:
    """Run ``loss_fn`` under ``nn.stateful_call``: ``loss, (metrics, updated_model)``.

    The shape of the return value fits ``jax.value_and_grad(..., has_aux=True)``:
    the updated model (new BatchNorm statistics) rides in the aux output.
    """
    out, wrapper = nn.stateful_call(_Loss(model=model, fn=loss_fn), batch, key)
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise TypeError(_LOSS_RETURN.format(what=f"a tuple of {len(out)} items"))
        loss, metrics = out
    else:
        loss, metrics = out, {}
    if not hasattr(loss, "shape") or loss.shape != ():
        shape = getattr(loss, "shape", type(loss).__name__)
        raise TypeError(_LOSS_RETURN.format(what=f"a loss of shape {shape}") +
                        " Reduce it with jnp.mean over the batch.")
    return loss, (dict(metrics), wrapper.model)
