"""The train step: gradients (accumulated over microbatches), update, EMA, metrics.

``make_train_step`` returns the pure function ``(state, batch) -> (state, metrics)``
described in ``_core.py``; ``jit_step`` compiles it with the state donated and
explicit shardings. What one step does, in order:

1. Split the model into its trainable parameters and the rest (frozen parameters,
   layer state; ``_partition.py``) and differentiate with respect to the trainable
   half only: frozen weights (a LoRA base, a frozen encoder) get no weight
   gradients, so freezing saves backward FLOPs as well as optimizer memory.
2. Split the batch into ``microbatches`` (row ``r`` goes to microbatch ``r % k``,
   so every device holds rows of every microbatch) and ``lax.scan`` over them,
   summing gradients, loss and metrics; then divide by ``k``. With equal-size
   microbatches this is the mean over the whole batch, as one big batch gives.
   Layer state (BatchNorm statistics) is threaded through the scan.
3. Check the loss and every trainable gradient leaf for NaN/Inf. A bad step keeps
   the old model and optimizer state (the step counter still advances) and reports
   the index (among all of the model's leaves, as ``leaf_paths`` lists them) of the
   first bad leaf in ``metrics["first_nonfinite_grad"]``.
4. ``optimizer.update`` (wrapped by ``only_trainable``, given zeros for the frozen
   leaves, so the optimizer state has the layout it always had) and
   ``optax.apply_updates`` on the trainable half.
5. Update the EMA, if the state has one: ``ema = d * ema + (1 - d) * model`` on
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
from ._partition import fill_zeros, merge, split_trainable, take_like, trainable_positions
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

    def loss_of_parts(trainable: Any, rest: Any, batch: Batch, key: jax.Array):
        return call_loss(loss_fn, merge(trainable, rest), batch, key)

    part_grad_fn = jax.value_and_grad(loss_of_parts, has_aux=True)  # w.r.t. the trainable half only

    def grad_fn(model: nn.Module, batch: Batch, key: jax.Array):
        trainable, rest = split_trainable(model)
        return part_grad_fn(trainable, rest, batch, key)

    def gradients(model: nn.Module, batch: Batch, key: jax.Array):
        """``loss, metrics, updated model, grads`` (grads: the trainable half, None elsewhere)."""
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

        init = (model, jax.tree.map(jnp.zeros_like, split_trainable(model)[0]), jnp.zeros((), jnp.float32),
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

        # Only trainable gradients exist; their first bad leaf is named by its index among the
        # model's leaves, which is what leaf_paths(model) lists on the host.
        positions = jnp.asarray(trainable_positions(state.model) or [-1], jnp.int32)
        bad = first_nonfinite_leaf(grads)
        bad_leaf = jnp.where(bad < 0, -1, positions[jnp.maximum(bad, 0)])
        ok = jnp.isfinite(loss) & (bad < 0)
        trainable, rest = split_trainable(model)
        updates, opt_state = optimizer.update(fill_zeros(grads, rest), state.opt_state, state.model)
        new_model = merge(optax.apply_updates(trainable, take_like(trainable, updates)), rest)
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

        grad_norm = optax.tree.norm(grads)  # trainable parameters only: nothing else has one
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
