"""The train step: gradients (accumulated over microbatches), update, EMA, metrics.

``make_train_step`` returns the pure function ``(state, batch) -> (state, metrics)``
described in ``_core.py``; ``jit_step`` compiles it with the state donated and
explicit shardings. What one step does, in order:

1. Split the batch into ``microbatches`` (row ``r`` goes to microbatch ``r % k``,
   so every device holds rows of every microbatch) and ``lax.scan`` over them,
   summing gradients, loss and metrics; then divide by ``k``. With equal-size
   microbatches this is the mean over the whole batch, as one big batch gives.
   Layer state (BatchNorm statistics) is threaded through the scan.
2. Check the loss and every gradient leaf for NaN/Inf. A bad step keeps the old
   model and optimizer state (the step counter still advances) and reports the
   index of the first bad leaf in ``metrics["first_nonfinite_grad"]``.
3. ``optimizer.update`` (wrapped by ``only_trainable``) and ``optax.apply_updates``.
4. Update the EMA, if the state has one: ``ema = d * ema + (1 - d) * model`` on
   floating arrays (BatchNorm statistics included).

Metrics (scalars on the device): ``loss`` and the loss function's own metrics
(means over microbatches), ``grad_norm`` (global norm over trainable
parameters), ``learning_rate`` (when the optimizer exposes it), ``nonfinite``
(1 if the update was dropped) and ``first_nonfinite_grad`` (-1 when fine).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from baobab import nn
from baobab.errors import ConfigError

from ._core import Batch, LossFn, TrainState, call_loss
from ._mesh import batch_sharding
from ._nonfinite import first_nonfinite_leaf
from ._optim import learning_rate_of, only_trainable
from ._state import state_shardings

__all__ = ["make_train_step", "jit_step"]

StepFn = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]
RESERVED_METRICS = ("loss", "grad_norm", "learning_rate", "nonfinite", "first_nonfinite_grad")


def _split_microbatches(x: jax.Array, k: int, name: str) -> jax.Array:
    b = x.shape[0]
    if b % k:
        raise ConfigError(
            f"batch[{name!r}] has {b} rows, which do not split into microbatches={k}. Use a "
            f"global batch that is a multiple of {k}.")
    x = x.reshape((b // k, k) + x.shape[1:])  # (B/k, k, ...): row r -> microbatch r % k
    return jnp.swapaxes(x, 0, 1)  # (k, B/k, ...)


def _tree_add(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.add, a, b)


def _where(ok: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                    microbatches: int = 1, ema_decay: float | None = None) -> StepFn:
    """The pure train step for ``loss_fn`` and ``optimizer``: ``(state, batch) -> (state, metrics)``.

    Args:
        loss_fn: ``loss_fn(model, batch, key) -> loss`` or ``(loss, metrics)``.
        optimizer: any optax optimizer (the same one given to ``create_state``);
            it is wrapped with ``only_trainable`` here.
        microbatches: gradient accumulation steps inside the step (``lax.scan``).
        ema_decay: the EMA decay, required exactly when the state has an EMA.

    Compile it with ``jit_step``; see ``_core.py`` for the full contract.
    """
    if not isinstance(microbatches, int) or microbatches < 1:
        raise ConfigError(f"microbatches must be a positive int, got {microbatches!r}.")
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ConfigError(f"ema_decay must be in [0, 1), got {ema_decay!r}.")
    optimizer = only_trainable(optimizer)
    grad_fn = jax.value_and_grad(functools.partial(call_loss, loss_fn), has_aux=True)

    def gradients(model: nn.Module, batch: Batch, key: jax.Array):
        if microbatches == 1:
            (loss, (metrics, model)), grads = grad_fn(model, batch, key)
            return loss.astype(jnp.float32), metrics, model, grads
        micro = {name: _split_microbatches(x, microbatches, name) for name, x in batch.items()}
        first = jax.tree.map(lambda x: x[0], micro)
        (_, (metrics_shape, _)), _ = jax.eval_shape(grad_fn, model, first, key)
        zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)  # noqa: E731

        def body(carry, xs):
            model, grad_sum, loss_sum, metric_sum = carry
            i, mb = xs
            (loss, (metrics, model)), grads = grad_fn(model, mb, jax.random.fold_in(key, i))
            carry = (model, _tree_add(grad_sum, grads), loss_sum + loss.astype(jnp.float32),
                     _tree_add(metric_sum, metrics))
            return carry, None

        init = (model, jax.tree.map(jnp.zeros_like, model), jnp.zeros((), jnp.float32),
                zeros(metrics_shape))
        (model, grads, loss, metrics), _ = jax.lax.scan(
            body, init, (jnp.arange(microbatches), micro))
        scale = lambda t: jax.tree.map(lambda x: x / microbatches, t)  # noqa: E731
        return loss / microbatches, scale(metrics), model, scale(grads)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        if (state.ema is None) != (ema_decay is None):
            raise ValueError(
                "The state has an EMA but make_train_step got no ema_decay (or the reverse): "
                "pass ema=True to create_state and ema_decay=... here together.")
        key = jax.random.fold_in(state.rng, state.step)
        loss, metrics, model, grads = gradients(state.model, batch, key)
        clash = sorted(set(metrics) & set(RESERVED_METRICS))
        if clash:
            raise ValueError(f"loss_fn metrics {clash} clash with the step's own metrics "
                             f"{list(RESERVED_METRICS)}; rename them.")

        bad_leaf = first_nonfinite_leaf(grads)
        ok = jnp.isfinite(loss) & (bad_leaf < 0)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.model)
        new_model = optax.apply_updates(model, updates)
        new_model = _where(ok, new_model, state.model)  # a bad step changes nothing
        opt_state = _where(ok, opt_state, state.opt_state)

        ema = state.ema
        if ema is not None:
            d = ema_decay

            def average(e: jax.Array, p: jax.Array) -> jax.Array:
                if not jnp.issubdtype(e.dtype, jnp.inexact):
                    return p
                return (d * e + (1.0 - d) * p.astype(e.dtype)).astype(e.dtype)

            ema = jax.tree.map(average, ema, new_model)

        trainable = nn.trainable(state.model)
        grad_norm = optax.tree.norm(
            jax.tree.map(lambda g, t: g if t else jnp.zeros((), g.dtype), grads, trainable))
        out = {"loss": loss, **metrics, "grad_norm": grad_norm,
               "nonfinite": (~ok).astype(jnp.int32), "first_nonfinite_grad": bad_leaf}
        lr = learning_rate_of(opt_state)
        if lr is not None:
            out["learning_rate"] = jnp.asarray(lr, jnp.float32)
        new_state = TrainState(model=new_model, opt_state=opt_state, step=state.step + 1,
                               rng=state.rng, ema=ema)
        return new_state, out

    return train_step


def jit_step(step: StepFn, state: TrainState, *, mesh: Mesh, rules: Mapping[str, Any]) -> Any:
    """``jax.jit`` of ``step`` with the state donated and explicit shardings.

    ``state`` may be abstract; it only gives the structure for the shardings. The
    batch is sharded along ``"batch"`` (every leaf's leading dimension), metrics
    are replicated. Lower and compile it once (``.lower(state, batch).compile()``)
    to be sure later steps never recompile. The step is traced inside
    ``nn.kernel_mesh(mesh, rules)``, so kernels such as the TPU attention shard
    themselves over the same mesh.
    """
    shardings = state_shardings(state, mesh=mesh, rules=rules)

    @functools.wraps(step)
    def step_on_mesh(state: TrainState, batch: Batch):
        with nn.kernel_mesh(mesh, rules):
            return step(state, batch)

    batch = batch_sharding(1, mesh=mesh, rules=rules)  # a prefix: applies to every leaf
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step_on_mesh, in_shardings=(shardings, batch), out_shardings=(shardings, replicated),
                   donate_argnums=0)
