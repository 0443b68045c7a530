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

import contextlib
import inspect
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pydantic

from baobab import data as bdata
from baobab import models, nn, tpu
from baobab import train as btrain
from baobab.config import Config, ConfigError, to_json
from baobab._finetune import FinetuneConfig, apply_finetune, has_checkpoint, pretrained_model
from baobab.train._core import call_loss

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
    """Device mesh sizes (``-1``: the rest of the devices) and the sharding rules.

    ``topology`` names a TPU slice (e.g. ``"v5p:4x4x4"``, see ``baobab.tpu``) that
    ``baobab plan`` compiles for; ``baobab train`` runs on the devices it has.
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: Literal["default", "data_parallel", "fsdp", "tensor_parallel"] = "default"
    topology: Optional[str] = None


class TrainerConfig(Config):
    """Where and how long to train."""

    workdir: str = "runs/default"
    steps: int = pydantic.Field(1000, gt=0)
    seed: int = 0
    microbatches: int = pydantic.Field(1, ge=1)
    precision: Optional[str] = None  # e.g. "params=float32,compute=bfloat16,output=float32"
    ema_decay: Optional[float] = None
    eval_every: int = pydantic.Field(0, ge=0)
    eval_at_start: bool = False  # evaluate the starting model too (step 0): a fine-tune's "before"
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
    finetune: FinetuneConfig = FinetuneConfig()  # init_from=, freeze, LoRA


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


def _text_logits(model, batch, key):
    ids, mask = batch["input_ids"], batch["attention_mask"]  # (B, T) each
    return model(ids, mask, key=key) if key is not None and _accepts_key(model) else model(ids, mask)


def _text_classification_loss(model, batch, key):
    logits = _text_logits(model, batch, key).astype(jnp.float32)  # (B, classes)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return loss.mean(), {"accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32).mean()}


def _text_classification_eval(model, batch):
    logits = _text_logits(model, batch, None).astype(jnp.float32)  # (B, classes)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return {"loss": loss, "accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)}


#: Task name -> (loss_fn, eval_fn, tokens key for throughput).
TASKS: dict[str, tuple[Callable, Callable, Optional[str]]] = {
    "classification": (_classification_loss, _classification_eval, None),
    "text_classification": (_text_classification_loss, _text_classification_eval, "input_ids"),
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
    elif info.task == "text_classification":
        if m.kind != "bert":
            problems.append(f"data.kind = {config.data.kind!r} feeds token ids and an attention mask; use "
                            f"model.kind=bert, not {m.kind!r}")
        else:
            if m.num_classes != info.num_classes:
                problems.append(f"model.num_classes = {m.num_classes} but the data has {info.num_classes} classes; "
                                f"set model.num_classes={info.num_classes}")
            if m.vocab_size < (info.vocab_size or 0):
                problems.append(f"model.vocab_size = {m.vocab_size} is smaller than the tokenizer's "
                                f"{info.vocab_size}; use the model's own tokenizer.json as data.tokenizer")
            if m.max_len < (info.seq_len or 0):
                problems.append(f"the model handles {m.max_len} positions but data.seq_len = {info.seq_len}")
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
        log_every=lg.log_every, eval_every=t.eval_every,
        eval_at_start=t.eval_at_start, checkpoint_every=c.every, keep_checkpoints=c.keep,
        keep_every=c.keep_every, async_checkpoints=c.async_save, on_nonfinite=t.on_nonfinite,
        profile_steps=lg.profile_steps, progress=lg.progress)
    values.update(changes)
    return btrain.TrainerSettings(**values)


def _constructor(config: ExperimentConfig) -> Callable[[jax.Array], nn.Module]:
    model_config = config.model
    finetune = getattr(config, "finetune", FinetuneConfig())
    return lambda key: apply_finetune(models.build_model(model_config, key=key), finetune, key)


# ----------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------


def run_train(config: ExperimentConfig) -> btrain.TrainResult:
    """Train (or resume) the run in ``config.trainer.workdir``; write its resolved config."""
    btrain.initialize_distributed()  # before anything touches a device: multi-host launches need it first
    mesh, rules = _mesh(config), _rules(config)
    train_data, eval_data, info = bdata.build_data(config.data, mesh=mesh, rules=rules, seed=config.trainer.seed)
    _check_model_fits_data(config, info)
    sched = config.schedule
    if sched.kind == "cosine" and sched.warmup_steps >= config.trainer.steps:
        logging.getLogger("baobab").warning(
            "schedule.warmup_steps = %d covers all trainer.steps = %d: the warmup is cut to %d steps and the "
            "cosine decay never runs. Set schedule.warmup_steps well below the step count.",
            sched.warmup_steps, config.trainer.steps, config.trainer.steps - 1)
    workdir = Path(config.trainer.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    existing = workdir / CONFIG_FILE
    resolved = json.loads(to_json(config))
    if jax.process_index() == 0:
        existing.write_text(to_json(config) + "\n")
    loss_fn, eval_fn, tokens_key = TASKS[info.task]
    iterator = iter(train_data)
    try:
        start = _constructor(config)
        if config.finetune.init_from and not has_checkpoint(workdir):  # pretrained weights, then train
            start = pretrained_model(config, jax.random.split(jax.random.key(config.trainer.seed))[0])
        return btrain.train(start, loss_fn, build_optimizer(config), iterator,
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


def plan(config: ExperimentConfig, *, mesh=None, fix: bool = True) -> dict[str, Any]:
    """Compile the real train step ahead of time on abstract inputs and report its cost.

    Nothing is allocated: the state comes from ``jax.eval_shape``, the batch is a
    ``ShapeDtypeStruct``, and ``jit(...).lower(...).compile()`` gives XLA's memory and
    cost analyses per device. The step is the one ``baobab train`` runs (same
    constructor, optimizer, ``make_train_step`` and ``jit_step``).

    With ``mesh.topology`` set (e.g. ``"v5p:4x4x4"``; needs the ``tpu`` extra) the mesh
    is built over that TPU slice's devices (``baobab.tpu``) and the step is compiled
    for the pod. The report then says whether it fits the chip's HBM and, when it does
    not, by how much, which config changes would help (``"fixes"``) and, with
    ``fix=True``, the plan of the first of them that fits (``"replan"``).
    """
    topo = None
    if mesh is None:
        mesh, topo = _plan_mesh(config)
    rules = _rules(config)
    _, _, info = _data_info(config, None if topo else mesh, rules)
    _check_model_fits_data(config, info)
    optimizer = build_optimizer(config)
    t = config.trainer
    state = btrain.abstract_state(_constructor(config), optimizer, mesh=mesh, rules=rules, seed=t.seed,
                                  ema=t.ema_decay is not None, precision=t.precision)
    loss_fn, _, tokens_key = TASKS[info.task]
    step = btrain.jit_step(btrain.make_train_step(loss_fn, optimizer, microbatches=t.microbatches,
                                                  ema_decay=t.ema_decay), state, mesh=mesh, rules=rules)
    batch = _abstract_batch(config, info, mesh, rules)
    traced = step.trace(state, batch)
    start = time.perf_counter()
    compiled, out_of_memory = _compile(traced, topo)
    compile_s = time.perf_counter() - start

    memory = compiled.memory_analysis() if compiled is not None else None
    cost = compiled.cost_analysis() if compiled is not None else None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    size = lambda name: getattr(memory, name, None)  # noqa: E731
    global_batch = int(next(iter(batch.values())).shape[0])
    shards = _data_shards(mesh, rules, global_batch)
    counted = tpu.matmul_flops(traced.jaxpr)
    model_flops = 3 * tpu.matmul_flops(jax.make_jaxpr(_loss_only(loss_fn))(state.model, batch, _abstract_key()))
    report = {
        "parameters": nn.count_parameters(state.model),
        "trainable_parameters": nn.count_parameters(state.model, trainable_only=True),
        "flops_per_step": float(cost.get("flops", 0.0)) if cost else None,
        "counted_flops_per_device": counted / mesh.size,
        "model_flops_per_step": model_flops,
        # 3 x forward is the usual convention (6 N per token); it also counts an input gradient
        # that a first conv or matmul on the data never computes, hence the cap.
        "mfu_bound": min(1.0, model_flops / counted) if counted else None,
        "mesh": dict(mesh.shape),
        "devices": mesh.size,
        "rules": config.mesh.rules,
        "global_batch": global_batch,
        "tokens_per_step": global_batch * info.seq_len if tokens_key else None,
        "hosts": len(shards["hosts"]),
        "per_host_batch": global_batch // len(shards["hosts"]),
        "data_shards": shards["hosts"],
        "problems": shards["problems"],
        "batch_shards": shards["batch_shards"],
        "param_bytes": _bytes_per_device(state.model) + _bytes_per_device(state.ema),
        "optimizer_bytes": _bytes_per_device(state.opt_state),
        "batch_bytes": _bytes_per_device(batch),
        "gradient_bytes": _bytes_per_device(_trainable_leaves(state.model)),
        "argument_bytes": size("argument_size_in_bytes"),
        "output_bytes": size("output_size_in_bytes"),
        "temp_bytes": size("temp_size_in_bytes"),
        "alias_bytes": size("alias_size_in_bytes"),
        "peak_bytes": size("peak_memory_in_bytes") if topo is not None else None,  # CPU: no real peak
        "needed_bytes": _needed_bytes(memory) if out_of_memory is None else out_of_memory[0],
        "compile_seconds": compile_s,
        "summary": nn.summary_table(state.model, mesh=mesh, rules=rules),
        "topology": None,
        "not_expressible": NOT_EXPRESSIBLE,
    }
    held = sum(report[k] for k in ("param_bytes", "optimizer_bytes", "batch_bytes", "gradient_bytes"))
    report["activation_bytes"] = max(0, report["needed_bytes"] - held) if report["needed_bytes"] else None
    if topo is not None:
        report.update(_tpu_fit(report, topo, out_of_memory))
        if fix and not report["fits"]:
            report["fixes"], report["replan"] = _find_fix(config, report)
    return report


#: What ``plan`` would suggest but the config cannot express yet.
NOT_EXPRESSIBLE = (
    "bf16 Adam moments with fp32 master weights (optax's mu_dtype) have no config key; the bf16 fix stores "
    "parameters and Adam moments in bf16 (trainer.precision params=bfloat16), which changes the numerics",
)


def _plan_mesh(config: ExperimentConfig):
    """The mesh ``plan`` compiles for: the config's devices, or a TPU topology's."""
    if config.mesh.topology is None:
        return _mesh(config), None
    topo = tpu.topology(config.mesh.topology)
    spec = btrain.MeshSpec(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    try:
        mesh = btrain.make_mesh(spec, devices=topo.devices)
    except ValueError:
        raise ConfigError(f"mesh data={spec.data} fsdp={spec.fsdp} tensor={spec.tensor} does not divide the "
                          f"{topo.num_chips} chips of {topo.name}: give sizes whose product is {topo.num_chips}, "
                          f"or -1 for one axis to take the rest (e.g. mesh.data=-1)") from None
    return mesh, topo


def _compile(traced, topo):
    """``(compiled, None)``, or ``(None, (needed, available))`` when the TPU compiler runs out of HBM."""
    try:
        with tpu.quiet_libtpu() if topo is not None else contextlib.nullcontext():
            return traced.lower().compile(), None
    except jax.errors.JaxRuntimeError as err:
        out_of_memory = tpu.compiler_out_of_memory(str(err)) if topo is not None else None
        if out_of_memory is None:
            raise
        return None, out_of_memory


def _needed_bytes(memory) -> Optional[int]:
    """Bytes one device needs for the step: live arguments and outputs plus temporaries.

    The TPU backend also reports a ``peak_memory_in_bytes`` from its liveness analysis,
    which can be lower; this sum is the conservative figure (MaxText reports the same).
    """
    if memory is None:
        return None
    return int(memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
               + memory.temp_size_in_bytes)


def _bytes_per_device(tree: Any) -> int:
    """Bytes of one device's shards of an abstract tree (the largest shard of each leaf)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
        total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
    return total


def _trainable_leaves(model: nn.Module) -> list[Any]:
    """The parameters that get gradients (what the update holds at once besides the state)."""
    return [x for x, t in zip(jax.tree.leaves(model), jax.tree.leaves(nn.trainable(model)), strict=True) if t]


def _abstract_key() -> jax.ShapeDtypeStruct:
    return jax.eval_shape(lambda: jax.random.key(0))


def _loss_only(loss_fn: Callable) -> Callable:
    return lambda model, batch, key: call_loss(loss_fn, model, batch, key)[0]


def _data_shards(mesh, rules, global_batch: int) -> dict[str, Any]:
    """Which rows of the global batch each host's devices hold, and what would break the loader.

    baobab's loaders give host ``p`` of ``n`` examples ``p, p + n, ...`` of the shuffled
    stream, ``global_batch / n`` rows per step, and ``jax.make_array_from_process_local_data``
    places them, in order, on the rows that host's devices hold (which need not be one
    block). So each host's devices must hold exactly ``global_batch / n`` distinct rows.
    """
    sharding = btrain.batch_sharding(1, mesh=mesh, rules=rules)
    rows: dict[int, set[int]] = {}
    devices: dict[int, int] = {}
    for device, index in sharding.devices_indices_map((global_batch,)).items():
        rows.setdefault(device.process_index, set()).update(range(*index[0].indices(global_batch)))
        devices[device.process_index] = devices.get(device.process_index, 0) + 1
    hosts = sorted(rows)
    problems = []
    if global_batch % len(hosts):
        problems.append(f"data.batch_size={global_batch} is not a multiple of the {len(hosts)} hosts; each host "
                        f"loads batch_size / hosts rows")
    per_host = global_batch // len(hosts)
    shared = [h for h in hosts if len(rows[h]) != per_host]
    if shared and not problems:
        problems.append(f"host {shared[0]}'s devices hold {len(rows[shared[0]])} rows of the global batch, but "
                        f"each host loads {per_host} different ones: the 'batch' rule's mesh axes must split the "
                        f"batch over the hosts (keep the tensor axis within a host)")
    spec = sharding.spec[0] if len(sharding.spec) else None
    axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
    return {"hosts": [{"host": h, "devices": devices[h], "rows": _ranges(rows[h])} for h in hosts],
            "problems": problems, "batch_shards": int(np.prod([mesh.shape[a] for a in axes]))}


def _ranges(rows: set[int]) -> str:
    """``{0, 1, 2, 3, 8, 9}`` -> ``"0-3, 8-9"``."""
    out, ordered = [], sorted(rows)
    start = prev = ordered[0]
    for r in [*ordered[1:], None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
        if r is not None:
            start = prev = r
    return ", ".join(out)


def _tpu_fit(report: dict[str, Any], topo, out_of_memory) -> dict[str, Any]:
    """Whether the compiled step fits the chip's HBM, by how much, and the speed it is bounded by."""
    chip = topo.chip
    needed = report["needed_bytes"]
    step_s = report["counted_flops_per_device"] / chip.peak_bf16_flops
    tokens = report["tokens_per_step"]
    return {
        "topology": topo.name,
        "chip": chip.generation,
        "device_kind": topo.devices[0].device_kind,
        "accelerator_type": topo.accelerator_type,
        "hbm_bytes": chip.hbm_bytes,
        "fits": out_of_memory is None and needed <= chip.hbm_bytes,
        "compiler_hbm_bytes": None if out_of_memory is None else out_of_memory[1],
        "peak_flops_per_chip": chip.peak_bf16_flops,
        "step_seconds_bound": step_s,
        "tokens_per_second_bound": tokens / step_s if tokens and step_s else None,
    }


def _fix_candidates(config: ExperimentConfig, report: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Config changes that lower per-device memory, least intrusive first: ``(overrides, why)``."""
    candidates: list[tuple[tuple[str, ...], str]] = []
    mesh = report["mesh"]
    top = report["devices"] // mesh["tensor"]
    rules = () if config.mesh.rules in ("default", "fsdp") else ("mesh.rules=fsdp",)
    fsdp = mesh["fsdp"] * 2
    while fsdp <= top:
        if top % fsdp == 0:
            candidates.append(((f"mesh.data={top // fsdp}", f"mesh.fsdp={fsdp}", *rules),
                               f"more FSDP: parameters, gradients and Adam state split over {fsdp} chips"))
        fsdp *= 2
    model = config.model
    if getattr(model, "remat", "nothing_saveable") not in ("nothing_saveable", "full"):
        scan = () if getattr(model, "scan_layers", True) else ("model.scan_layers=True",)
        candidates.append((("model.remat=nothing_saveable", *scan),
                           "remat: keep only each layer's input, recompute the rest in the backward pass"))
    rows = report["global_batch"] // report["batch_shards"]  # per device
    k = config.trainer.microbatches * 2
    while rows and rows % k == 0:
        candidates.append(((f"trainer.microbatches={k}",),
                           f"microbatches: {k} gradient-accumulation steps, 1/{k} of the activations at a time"))
        k *= 2
    policy = nn.Policy.from_string(config.trainer.precision) if config.trainer.precision else None
    if policy is None or jnp.dtype(policy.param_dtype) != jnp.bfloat16:
        compute = "bfloat16" if policy is None else jnp.dtype(policy.compute_dtype).name
        output = "float32" if policy is None else jnp.dtype(policy.output_dtype).name
        candidates.append(((f"trainer.precision=params=bfloat16,compute={compute},output={output}",),
                           "bf16 parameters and optimizer state: half the bytes, but bf16 master weights"))
    if len(candidates) > 1:  # every change at once, strongest of each kind
        strongest: dict[str, str] = {}
        for overrides, _ in candidates:
            for item in overrides:
                strongest[item.split("=", 1)[0]] = item
        candidates.append((tuple(strongest.values()), "all of the above together"))
    return candidates


#: At most this many fixes are compiled; failing compiles stop early (the TPU compiler
#: refuses a program that does not fit in seconds), the first that fits compiles fully.
MAX_FIX_TRIES = 8


def _find_fix(config: ExperimentConfig, report: dict[str, Any]) -> tuple[list[dict[str, Any]], Optional[dict]]:
    """Re-plan with each candidate fix in turn; stop at the first that fits."""
    from baobab.config import apply_overrides

    candidates = _fix_candidates(config, report)
    if len(candidates) > MAX_FIX_TRIES:  # keep "all of the above together" last
        candidates = [*candidates[:MAX_FIX_TRIES - 1], candidates[-1]]
    tried = []
    for overrides, why in candidates:
        entry: dict[str, Any] = {"overrides": list(overrides), "why": why, "fits": False, "needed_bytes": None,
                                 "error": None}
        tried.append(entry)
        try:
            result = plan(apply_overrides(config, overrides), fix=False)
        except ValueError as err:  # e.g. an array dimension that does not split over the new mesh
            entry["error"] = str(err).strip().splitlines()[0]
            continue
        entry.update(fits=result["fits"], needed_bytes=result["needed_bytes"])
        if result["fits"]:
            return tried, result
    return tried, None


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
    elif info.task == "text_classification":
        shapes = {"input_ids": ((size, info.seq_len), jnp.int32), "attention_mask": ((size, info.seq_len), jnp.int32),
                  "label": ((size,), jnp.int32)}
    else:
        t = info.seq_len + 1
        shapes = {"tokens": ((size, t), jnp.int32), "tokens_segment_ids": ((size, t), jnp.int32),
                  "tokens_positions": ((size, t), jnp.int32)}
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=btrain.batch_sharding(len(shape), mesh=mesh, rules=rules))
            for k, (shape, dtype) in shapes.items()}
