"""Experiments: one typed config that composes model, data and training, and the
functions the CLI runs on it (train, evaluate, plan, generate).

An ``ExperimentConfig`` has one section per concern. ``model`` and ``data`` choose
their kind from the tables in ``baobab.models.MODELS`` and ``baobab.data.DATASETS``;
the rest are plain sections defined here. The task (its loss and eval metrics)
follows from the data: ``classification`` or ``language_model``.

>>> from baobab.experiment import ExperimentConfig
>>> cfg = ExperimentConfig()
>>> cfg.model.kind, cfg.data.kind, cfg.optimizer.kind
('cnn', 'mnist', 'adamw')
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pydantic

from baobab import data as bdata
from baobab import models, nn
from baobab import train as btrain
from baobab.config import Config, ConfigError, to_json

__all__ = [
    "OptimizerConfig", "ScheduleConfig", "MeshConfig", "TrainerConfig", "CheckpointConfig", "LoggingConfig",
    "ExperimentConfig", "TASKS", "build_optimizer", "run_train", "load_run", "run_eval", "plan", "CONFIG_FILE",
]

#: Name of the resolved config in a run directory.
CONFIG_FILE = "config.json"


# ----------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------


class OptimizerConfig(Config):
    """The optimizer. Weight decay skips biases and norm scales (1-D parameters)."""

    kind: Literal["adamw", "sgd"] = "adamw"
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.0, ge=0)
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    clip_norm: Optional[float] = 1.0


class ScheduleConfig(Config):
    """The learning-rate schedule, as a multiple of ``optimizer.lr``."""

    kind: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = pydantic.Field(0, ge=0)
    final_fraction: float = pydantic.Field(0.0, ge=0, le=1)


class MeshConfig(Config):
    """Device mesh sizes (``-1``: the rest of the devices) and the sharding rules."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: Literal["default", "data_parallel", "fsdp", "tensor_parallel"] = "default"


class TrainerConfig(Config):
    """Where and how long to train."""

    workdir: str = "runs/default"
    steps: int = pydantic.Field(1000, gt=0)
    seed: int = 0
    microbatches: int = pydantic.Field(1, ge=1)
    precision: Optional[str] = None  # e.g. "params=float32,compute=bfloat16,output=float32"
    ema_decay: Optional[float] = None
    eval_every: int = pydantic.Field(0, ge=0)
    on_nonfinite: Literal["stop", "skip"] = "stop"


class CheckpointConfig(Config):
    """When to checkpoint and what to keep (``every=0``: only at the end)."""

    every: int = pydantic.Field(500, ge=0)
    keep: int = pydantic.Field(3, ge=1)
    keep_every: Optional[int] = None
    async_save: bool = True


class LoggingConfig(Config):
    """What the run prints and records."""

    log_every: int = pydantic.Field(50, ge=1)
    progress: Optional[bool] = None  # None: a progress bar only on a terminal
    profile_steps: Optional[tuple[int, int]] = None


class ExperimentConfig(Config):
    """A whole run. The default is the embedded-MNIST CNN, the README's main job."""

    model: models.ModelConfig = models.CNNConfig()
    data: bdata.DataConfig = bdata.MnistData(batch_size=64)
    optimizer: OptimizerConfig = OptimizerConfig(lr=2e-3)
    schedule: ScheduleConfig = ScheduleConfig(warmup_steps=40)
    trainer: TrainerConfig = TrainerConfig(steps=400)
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()


# ----------------------------------------------------------------------------------------
# Tasks: loss and per-example eval metrics
# ----------------------------------------------------------------------------------------


def _accepts_key(model: nn.Module) -> bool:
    return "key" in inspect.signature(type(model).__call__).parameters


def _forward(model: nn.Module, x: jax.Array, key: jax.Array | None) -> jax.Array:
    return model(x, key=key) if key is not None and _accepts_key(model) else model(x)


def _classification_loss(model, batch, key):
    logits = _forward(model, batch["image"], key)  # (B, classes)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["label"])
    accuracy = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return loss.mean(), {"accuracy": accuracy.mean()}


def _classification_eval(model, batch):
    logits = model(batch["image"]).astype(jnp.float32)  # (B, classes)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return {"loss": loss, "accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)}


def _lm_terms(model, batch, key):
    tokens = batch["tokens"]  # (B, T + 1)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T)
    logits = _forward(model, inputs, key).astype(jnp.float32)  # (B, T, vocab)
    seg = batch.get("tokens_segment_ids")
    weight = jnp.ones(targets.shape, jnp.float32) if seg is None else (seg[:, 1:] > 0).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weight  # (B, T)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32) * weight
    return loss, correct, weight


def _lm_loss(model, batch, key):
    loss, correct, weight = _lm_terms(model, batch, key)
    n = jnp.maximum(weight.sum(), 1.0)
    return loss.sum() / n, {"token_accuracy": correct.sum() / n}


def _lm_eval(model, batch):
    loss, correct, weight = _lm_terms(model, batch, None)
    n = jnp.maximum(weight.sum(-1), 1.0)  # (B,)
    return {"loss": loss.sum(-1) / n, "token_accuracy": correct.sum(-1) / n}


#: Task name -> (loss_fn, eval_fn, tokens key for throughput).
TASKS: dict[str, tuple[Callable, Callable, Optional[str]]] = {
    "classification": (_classification_loss, _classification_eval, None),
    "language_model": (_lm_loss, _lm_eval, "tokens"),
}


# ----------------------------------------------------------------------------------------
# Building the pieces
# ----------------------------------------------------------------------------------------


def build_optimizer(config: ExperimentConfig) -> optax.GradientTransformation:
    """The optax optimizer with its schedule, clipping and weight-decay mask."""
    opt, sched, steps = config.optimizer, config.schedule, config.trainer.steps
    if sched.kind == "constant":
        lr: Any = optax.constant_schedule(opt.lr)
    else:
        warmup = min(sched.warmup_steps, steps - 1)
        lr = optax.warmup_cosine_decay_schedule(0.0 if warmup else opt.lr, opt.lr, warmup, max(steps, warmup + 1),
                                                end_value=opt.lr * sched.final_fraction)
    if opt.kind == "adamw":
        return btrain.adamw(lr, weight_decay=opt.weight_decay, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                            clip_norm=opt.clip_norm)
    parts = [optax.clip_by_global_norm(opt.clip_norm)] if opt.clip_norm else []
    if opt.weight_decay:
        parts.append(optax.add_decayed_weights(opt.weight_decay, mask=btrain.weight_decay_mask))
    parts.append(optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=opt.momentum))
    return optax.chain(*parts)


def _check_model_fits_data(config: ExperimentConfig, info: bdata.DataInfo) -> None:
    m = config.model
    problems = []
    if info.task == "classification":
        if getattr(m, "num_classes", info.num_classes) != info.num_classes:
            problems.append(f"model.num_classes = {m.num_classes} but the data has {info.num_classes} classes; "
                            f"set model.num_classes={info.num_classes}")
        if info.image_shape and hasattr(m, "image_size"):
            h, w, c = info.image_shape
            if m.image_size != h or getattr(m, "in_channels", c) != c:
                problems.append(f"model expects {m.image_size}x{m.image_size}x{getattr(m, 'in_channels', c)} "
                                f"images, the data has {h}x{w}x{c}; set model.image_size={h}"
                                + (f" model.in_channels={c}" if hasattr(m, "in_channels") else ""))
        if m.kind in ("gpt2", "llama", "bert"):
            problems.append(f"model.kind = {m.kind!r} is a text model but data.kind = {config.data.kind!r} is images")
    else:
        if m.kind not in ("gpt2", "llama"):
            problems.append(f"data.kind = {config.data.kind!r} is language modelling; use model.kind=gpt2 or llama, "
                            f"not {m.kind!r}")
        elif m.vocab_size < (info.vocab_size or 0):
            problems.append(f"model.vocab_size = {m.vocab_size} is smaller than the tokenizer's "
                            f"{info.vocab_size}; set model.vocab_size={info.vocab_size}")
        else:
            max_len = getattr(m, "max_len", None) or getattr(m, "max_position_embeddings", None)
            if max_len is not None and info.seq_len and max_len < info.seq_len:
                problems.append(f"the model handles {max_len} positions but data.seq_len = {info.seq_len}")
    if problems:
        raise ConfigError("; ".join(problems))


def _rules(config: ExperimentConfig) -> dict[str, Any]:
    return dict(btrain.STRATEGY_RULES[config.mesh.rules])


def _mesh(config: ExperimentConfig):
    return btrain.make_mesh(btrain.MeshSpec(config.mesh.data, config.mesh.fsdp, config.mesh.tensor))


def _settings(config: ExperimentConfig, **changes: Any) -> btrain.TrainerSettings:
    t, c, lg = config.trainer, config.checkpoint, config.logging
    values = dict(
        workdir=t.workdir, steps=t.steps, seed=t.seed, mesh=btrain.MeshSpec(config.mesh.data, config.mesh.fsdp,
                                                                            config.mesh.tensor),
        rules=_rules(config), microbatches=t.microbatches, precision=t.precision, ema_decay=t.ema_decay,
        log_every=lg.log_every, eval_every=t.eval_every, checkpoint_every=c.every, keep_checkpoints=c.keep,
        keep_every=c.keep_every, async_checkpoints=c.async_save, on_nonfinite=t.on_nonfinite,
        profile_steps=lg.profile_steps, progress=lg.progress)
    values.update(changes)
    return btrain.TrainerSettings(**values)


def _constructor(config: ExperimentConfig) -> Callable[[jax.Array], nn.Module]:
    model_config = config.model
    return lambda key: models.build_model(model_config, key=key)


# ----------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------


def run_train(config: ExperimentConfig) -> btrain.TrainResult:
    """Train (or resume) the run in ``config.trainer.workdir``; write its resolved config."""
    mesh, rules = _mesh(config), _rules(config)
    train_data, eval_data, info = bdata.build_data(config.data, mesh=mesh, rules=rules, seed=config.trainer.seed)
    _check_model_fits_data(config, info)
    workdir = Path(config.trainer.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    existing = workdir / CONFIG_FILE
    resolved = json.loads(to_json(config))
    if jax.process_index() == 0:
        existing.write_text(to_json(config) + "\n")
    loss_fn, eval_fn, tokens_key = TASKS[info.task]
    iterator = iter(train_data)
    try:
        return btrain.train(_constructor(config), loss_fn, build_optimizer(config), iterator,
                            _settings(config, tokens_key=tokens_key), eval_fn=eval_fn if eval_data else None,
                            eval_data=eval_data, config=resolved, mesh=mesh)
    finally:
        close = getattr(iterator, "close", None)
        if close:
            close()


def load_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """The resolved config of a run directory (or of a checkpoint inside one)."""
    path = Path(run_dir)
    candidates = [path / CONFIG_FILE, path.parent / CONFIG_FILE, path.parent.parent / CONFIG_FILE]
    for candidate in candidates:
        if candidate.is_file():
            from baobab.config import apply_overrides

            try:
                config = ExperimentConfig.model_validate(json.loads(candidate.read_text()))
            except pydantic.ValidationError as err:
                raise ConfigError(f"{candidate}: not a valid baobab run config ({err.error_count()} errors)") from None
            return apply_overrides(config, overrides)
    raise ConfigError(f"{str(run_dir)!r} is not a baobab run directory: no {CONFIG_FILE} there or above it. "
                      f"Pass the trainer.workdir of a run.")


def restore_model(config: ExperimentConfig, mesh=None) -> tuple[nn.Module, int]:
    """The newest checkpointed model of a run (EMA weights if the run kept them) and its step."""
    mesh = mesh or _mesh(config)
    rules = _rules(config)
    checkpointer = btrain.Checkpointer(Path(config.trainer.workdir) / "checkpoints", async_save=False)
    try:
        target = btrain.abstract_state(_constructor(config), build_optimizer(config), mesh=mesh, rules=rules,
                                       seed=config.trainer.seed, ema=config.trainer.ema_decay is not None,
                                       precision=config.trainer.precision)
        restored = checkpointer.restore(target)
    finally:
        checkpointer.close()
    if restored is None:
        raise ConfigError(f"{config.trainer.workdir}: no checkpoint to load; train the run first")
    state = restored.state
    model = state.ema if getattr(state, "ema", None) is not None else state.model
    return model, int(state.step)


def run_eval(config: ExperimentConfig) -> dict[str, float]:
    """Evaluate the newest checkpoint of a run over its exact eval split."""
    mesh, rules = _mesh(config), _rules(config)
    _, eval_data, info = bdata.build_data(config.data, mesh=mesh, rules=rules, seed=config.trainer.seed)
    if eval_data is None:
        raise ConfigError(f"data.kind = {config.data.kind!r} has no eval split configured")
    model, step = restore_model(config, mesh)
    _, eval_fn, _ = TASKS[info.task]
    metrics = btrain.evaluate(btrain.make_eval_step(eval_fn), model, eval_data(), mesh=mesh, rules=rules)
    return {"step": step, **metrics}


def plan(config: ExperimentConfig, *, mesh=None) -> dict[str, Any]:
    """Compile the real train step ahead of time on abstract inputs and report its cost.

    Nothing is allocated: the state comes from ``jax.eval_shape``, the batch is a
    ``ShapeDtypeStruct``, and ``jit(...).lower(...).compile()`` gives XLA's memory and
    cost analyses per device.
    """
    mesh = mesh or _mesh(config)
    rules = _rules(config)
    _, _, info = _data_info(config, mesh, rules)
    _check_model_fits_data(config, info)
    optimizer = build_optimizer(config)
    state = btrain.abstract_state(_constructor(config), optimizer, mesh=mesh, rules=rules, seed=config.trainer.seed,
                                  ema=config.trainer.ema_decay is not None, precision=config.trainer.precision)
    loss_fn, _, _ = TASKS[info.task]
    step = btrain.jit_step(btrain.make_train_step(loss_fn, optimizer, microbatches=config.trainer.microbatches,
                                                  ema_decay=config.trainer.ema_decay), state, mesh=mesh, rules=rules)
    batch = _abstract_batch(config, info, mesh, rules)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    params = nn.count_parameters(state.model)
    return {
        "parameters": params,
        "flops_per_step": float(cost.get("flops", 0.0)) if cost else 0.0,
        "mesh": dict(mesh.shape),
        "devices": mesh.size,
        "global_batch": int(next(iter(batch.values())).shape[0]),
        "argument_bytes": getattr(memory, "argument_size_in_bytes", None),
        "output_bytes": getattr(memory, "output_size_in_bytes", None),
        "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "alias_bytes": getattr(memory, "alias_size_in_bytes", None),
        "compile_seconds": compile_s,
        "summary": nn.summary_table(state.model, mesh=mesh, rules=rules),
    }


def _data_info(config: ExperimentConfig, mesh, rules) -> tuple[None, None, bdata.DataInfo]:
    """The DataInfo of the data section without reading data where the kind allows it."""
    d = config.data
    if d.kind == "mnist":
        return None, None, bdata.DataInfo("classification", num_classes=10, image_shape=(28, 28, 1))
    if d.kind == "text" and d.tokenizer == "bytes":
        return None, None, bdata.DataInfo("language_model", vocab_size=256, seq_len=d.seq_len)
    return bdata.build_data(d, mesh=mesh, rules=rules, seed=config.trainer.seed)


def _abstract_batch(config: ExperimentConfig, info: bdata.DataInfo, mesh, rules) -> dict[str, jax.ShapeDtypeStruct]:
    d = config.data
    size = d.batch_size
    if info.task == "classification":
        shapes = {"image": ((size, *info.image_shape), jnp.float32), "label": ((size,), jnp.int32)}
    else:
        t = info.seq_len + 1
        shapes = {"tokens": ((size, t), jnp.int32), "tokens_segment_ids": ((size, t), jnp.int32),
                  "tokens_positions": ((size, t), jnp.int32)}
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=btrain.batch_sharding(len(shape), mesh=mesh, rules=rules))
            for k, (shape, dtype) in shapes.items()}
