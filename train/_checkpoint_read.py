"""Reading a model out of a run's checkpoints, read-only: for eval, generate and export.

``Checkpointer`` is the writer: it opens an orbax manager that cleans up temporary
directories and may move unreadable checkpoints aside. A command that only needs
the weights must not touch a run that may still be training, so ``read_model``
opens nothing for writing: it lists the finished step folders itself (orbax names
unfinished ones ``<step>.orbax-checkpoint-tmp-*``), and restores only the model
(or its EMA) subtree of ``<step>/state`` into the target's shardings, leaving the
optimizer state on disk unread.

>>> import tempfile, jax, optax
>>> from baobab import nn, train
>>> mesh = train.make_mesh(devices=jax.devices()[:1])
>>> make = lambda k: nn.Linear(2, 3, key=k)
>>> state = train.create_state(make, optax.adam(1e-3), mesh=mesh, rules=nn.DEFAULT_RULES)
>>> ckpt = train.Checkpointer(tempfile.mkdtemp() + "/checkpoints", async_save=False)
>>> _ = ckpt.save(7, state); ckpt.close()
>>> model, step = train.read_model(ckpt.directory, jax.eval_shape(make, jax.random.key(0)))
>>> step, model.weight.shape
(7, (2, 3))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from baobab.errors import CheckpointError

__all__ = ["finished_steps", "read_model"]


def finished_steps(directory: str | Path) -> list[int]:
    """The steps of ``directory`` whose checkpoint is complete, oldest first (nothing is opened)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "state").is_dir())


def _name(key: Any) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    raise TypeError(f"unexpected pytree key {key!r}")


def _nested(pairs: list[tuple[tuple[Any, ...], Any]]) -> Any:
    """``[(key path, value)]`` -> nested dicts and lists, as orbax stores a pytree.

    Orbax writes a sequence node (a ``SequenceKey`` level, e.g. a tuple of blocks) as a
    list, so the template for a partial restore must have lists in the same places.
    """
    if len(pairs) == 1 and not pairs[0][0]:
        return pairs[0][1]
    groups: dict[Any, list] = {}
    for keys, value in pairs:
        groups.setdefault(keys[0], []).append((keys[1:], value))
    children = {key: _nested(rest) for key, rest in groups.items()}
    if all(isinstance(k, jax.tree_util.SequenceKey) for k in children):
        by_index = {k.idx: child for k, child in children.items()}
        return [by_index.get(i) for i in range(max(by_index) + 1)]
    return {_name(k): child for k, child in children.items()}


def read_model(directory: str | Path, target: Any, *, step: int | None = None, ema: bool = True) -> tuple[Any, int]:
    """``(model, step)``: the model of the newest (or the given) checkpoint in ``directory``.

    ``target`` is the model's abstract tree (``jax.eval_shape`` of its constructor,
    or ``train.abstract_state(...).model``, whose shardings are used; leaves without
    a sharding are placed on the default device). With ``ema=True`` the EMA weights
    are returned when the run kept them. Nothing in ``directory`` is created, deleted
    or moved.
    """
    directory = Path(directory)
    steps = finished_steps(directory)
    if not steps:
        raise CheckpointError(f"{directory}: no finished checkpoint to read; train the run first "
                              f"(or give the run directory that holds checkpoints/).")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise CheckpointError(f"{directory}: no finished checkpoint at step {step}; it has steps {steps}.")
    path = directory / str(step) / "state"
    saved = ocp.PyTreeCheckpointHandler().metadata(path)
    saved = getattr(saved, "tree", saved)
    branch = "ema" if ema and saved.get("ema") else "model"
    leaves = jax.tree_util.tree_flatten_with_path(target)[0]
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    item = _nested([(keys, x) for keys, x in leaves])
    args = _nested([(keys, ocp.ArrayRestoreArgs(sharding=getattr(x, "sharding", None) or default,
                                                 global_shape=x.shape, dtype=x.dtype)) for keys, x in leaves])
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
        try:
            restored = reader.restore(path, args=ocp.args.PyTreeRestore(
                item={branch: item}, restore_args={branch: args}, partial_restore=True))[branch]
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{path}: the checkpoint's model does not match the run's config "
                                  f"({type(err).__name__}: {str(err)[:300]}); was the config changed "
                                  f"after training?") from err
    flat = []
    for keys, _ in leaves:
        node = restored
        for k in keys:
            node = node[k.idx] if isinstance(k, jax.tree_util.SequenceKey) else node[_name(k)]
        flat.append(node)
    return jax.tree.unflatten(jax.tree.structure(target), flat), step
