"""Building the train state directly on the mesh, and its shardings.

``create_state`` traces the whole construction once abstractly (``jax.eval_shape``)
to learn shapes and logical axes, then runs it under ``jax.jit`` with
``out_shardings``: each device materialises only its own slices of the model, the
EMA copy and the optimizer state. ``abstract_state`` stops after the first half
and is what a checkpoint restores into.

Where each leaf lives (``state_shardings``):

* ``model`` and ``ema``: ``nn.shardings(model, mesh, rules)``, from logical axes.
* ``opt_state``: a leaf takes the sharding of the parameter whose path it ends
  with and whose shape it has (Adam's ``mu.blocks[0].fc.weight`` mirrors
  ``blocks[0].fc.weight``). Anything else (step counts, scalar hyperparameters,
  factored statistics of another shape) is replicated.
* ``step`` and ``rng``: replicated.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from baobab import nn

from ._core import TrainState
from ._optim import only_trainable

__all__ = ["create_state", "abstract_state", "state_shardings"]

ModelOrConstructor = nn.Module | Callable[[jax.Array], nn.Module]


def _builder(model: ModelOrConstructor, optimizer: optax.GradientTransformation, *, seed: int,
             ema: bool, precision: str | nn.Policy | None) -> tuple[Callable[..., TrainState], tuple]:
    """A function building the state, and the arguments to call it with."""
    optimizer = only_trainable(optimizer)
    if isinstance(precision, str):
        precision = nn.Policy.from_string(precision)
    init_key, run_key = jax.random.split(jax.random.key(seed))

    def finish(m: nn.Module, rng: jax.Array) -> TrainState:
        if not isinstance(m, nn.Module):
            raise TypeError(
                f"The model constructor returned {type(m).__name__}, not an nn.Module. Pass a "
                f"module, or a function key -> module such as `lambda key: MyNet(key=key)`.")
        if precision is not None:
            m = nn.with_policy(m, precision)
        return TrainState(model=m, opt_state=optimizer.init(m), step=jnp.zeros((), jnp.int32),
                          rng=rng, ema=m if ema else None)

    if isinstance(model, nn.Module):
        return finish, (model, run_key)
    if not callable(model):
        raise TypeError(f"Expected an nn.Module or a constructor key -> module, got {type(model).__name__}.")
    return (lambda k, rng: finish(model(k), rng)), (init_key, run_key)


def state_shardings(state: TrainState, *, mesh: Mesh, rules: Mapping[str, Any]) -> TrainState:
    """A ``TrainState`` of ``NamedSharding``s for ``state`` (which may be abstract)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    model_shardings = nn.shardings(state.model, mesh, rules)
    by_path = {
        tuple(path): (tuple(x.shape), s)
        for (path, x), s in zip(jax.tree_util.tree_flatten_with_path(state.model)[0],
                                jax.tree.leaves(model_shardings), strict=True)
    }

    def for_opt_leaf(path: tuple, leaf: Any) -> NamedSharding:
        for n in range(len(path), 0, -1):
            hit = by_path.get(tuple(path[-n:]))
            if hit is not None and hit[0] == tuple(leaf.shape):
                return hit[1]
        return replicated

    return TrainState(
        model=model_shardings,
        opt_state=jax.tree_util.tree_map_with_path(for_opt_leaf, state.opt_state),
        step=replicated,
        rng=replicated,
        ema=None if state.ema is None else model_shardings,
    )


def abstract_state(model: ModelOrConstructor, optimizer: optax.GradientTransformation, *,
                   mesh: Mesh, rules: Mapping[str, Any], seed: int = 0, ema: bool = False,
                   precision: str | nn.Policy | None = None) -> TrainState:
    """The state as ``jax.ShapeDtypeStruct``s carrying their target shardings; nothing allocated."""
    build, args = _builder(model, optimizer, seed=seed, ema=ema, precision=precision)
    shapes = jax.eval_shape(build, *args)
    shardings = state_shardings(shapes, mesh=mesh, rules=rules)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def create_state(model: ModelOrConstructor, optimizer: optax.GradientTransformation, *,
                 mesh: Mesh, rules: Mapping[str, Any], seed: int = 0, ema: bool = False,
                 precision: str | nn.Policy | None = None) -> TrainState:
    """A fresh ``TrainState``, built sharded on ``mesh``.

    Args:
        model: an ``nn.Module``, or a constructor ``key -> nn.Module`` (preferred for
            large models: no host ever holds the whole model).
        optimizer: any optax optimizer; it is wrapped with ``only_trainable``.
        mesh, rules: where arrays live (``train.make_mesh``, ``nn.DEFAULT_RULES``).
        seed: seeds both the constructor's key and the run's ``rng``.
        ema: keep an EMA copy of the model (decay set in ``make_train_step``).
        precision: an ``nn.Policy`` or its string form, e.g.
            ``"params=float32,compute=bfloat16,output=float32"``, applied with
            ``nn.with_policy`` to every module.

    >>> import jax, optax
    >>> from baobab import nn, train
    >>> mesh = train.make_mesh(devices=jax.devices()[:1])
    >>> s = train.create_state(lambda k: nn.Linear(4, 8, key=k), optax.adam(1e-3),
    ...                        mesh=mesh, rules=nn.DEFAULT_RULES)
    >>> s.model.weight.sharding.spec, int(s.step)
    (P('fsdp', 'tensor'), 0)
    """
    build, args = _builder(model, optimizer, seed=seed, ema=ema, precision=precision)
    shardings = state_shardings(jax.eval_shape(build, *args), mesh=mesh, rules=rules)
    return jax.jit(build, out_shardings=shardings)(*args)
