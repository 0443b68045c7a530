"""``train``: the training loop, one function read top to bottom.

Inputs are plain and typed: a model (or a constructor ``key -> model``), a loss
function, an optax optimizer, a data iterator, a ``TrainerSettings`` and,
optionally, an eval function with an eval-iterator factory and the resolved
config to store with each checkpoint. Configs and the command line call this.

Example (a linear regression, two steps, on one device):
    >>> import tempfile, jax, jax.numpy as jnp, numpy as np, optax
    >>> from baobab import nn, train
    >>> def loss_fn(model, batch, key):
    ...     return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)
    >>> data = ({"x": np.ones((8, 3), np.float32), "y": np.zeros((8, 1), np.float32)}
    ...         for _ in range(2))
    >>> settings = train.TrainerSettings(workdir=tempfile.mkdtemp(), steps=2, log_every=1)
    >>> result = train.train(lambda k: nn.Linear(3, 1, key=k), loss_fn, optax.sgd(0.1), data,
    ...                      settings, mesh=train.make_mesh(devices=jax.devices()[:1]))
    >>> result.step, [r["step"] for r in train.read_metrics(settings.workdir) if "train/loss" in r]
    (2, [1, 2])
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from baobab import nn

from ._checkpoint import Checkpointer, CheckpointWarning, supports_state
from ._core import Batch, EvalFn, LossFn, TrainState
from ._distributed import initialize_distributed
from ._eval import evaluate, make_eval_step
from ._mesh import MeshSpec, make_mesh, put_batch
from ._metrics import MetricWriter, Progress
from ._nonfinite import NonFiniteError, leaf_paths
from ._preemption import StopOnSignal
from ._state import ModelOrConstructor, abstract_state, create_state
from ._step import jit_step, make_train_step

__all__ = ["TrainerSettings", "TrainResult", "train"]

log = logging.getLogger("baobab.train")


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    """How to run: where, how long, how often to log, evaluate and checkpoint.

    Attributes:
        workdir: run directory (checkpoints, metrics.jsonl, tensorboard/, profile/).
        steps: total number of train steps (a resumed run continues to this).
        seed: seeds model init and the run's RNG.
        mesh: ``MeshSpec`` of the data/fsdp/tensor axes (ignored if ``train`` gets a mesh).
        rules: logical-axis rules; None is ``nn.DEFAULT_RULES``.
        microbatches: gradient accumulation steps inside each step.
        precision: ``nn.Policy`` string, e.g. ``"params=float32,compute=bfloat16,output=float32"``.
        ema_decay: keep an EMA of the weights with this decay (None: no EMA).
        log_every: steps between metric reads (the only host syncs with the device).
        eval_every: steps between evals (0: only at the end); needs ``eval_fn``/``eval_data``.
        eval_at_start: also evaluate the starting model of a fresh run, logged at step 0
            (the "before" of a fine-tune; a resumed run does not repeat it).
        checkpoint_every: steps between checkpoints (0: only at the end and on signals).
        keep_checkpoints: keep the newest N checkpoints...
        keep_every: ...plus every checkpoint whose step is a multiple of this.
        async_checkpoints: write checkpoints in the background.
        resume: continue from the newest checkpoint in ``workdir`` if there is one.
        on_nonfinite: ``"stop"`` (raise ``NonFiniteError``) or ``"skip"`` (drop the update, warn).
        profile_steps: ``(a, b)``: capture a ``jax.profiler`` trace of steps a..b into
            ``workdir/profile``.
        progress: a progress bar; None shows one only when stderr is a terminal.
        tokens_key: batch key whose element count is the tokens of a batch (for tokens/s).
        handle_signals: on SIGTERM/SIGINT, checkpoint at the next step and return.
    """

    workdir: str
    steps: int
    seed: int = 0
    mesh: MeshSpec = MeshSpec()
    rules: Mapping[str, Any] | None = None
    microbatches: int = 1
    precision: str | None = None
    ema_decay: float | None = None
    log_every: int = 50
    eval_every: int = 0
    eval_at_start: bool = False
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    keep_every: int | None = None
    async_checkpoints: bool = True
    resume: bool = True
    on_nonfinite: str = "stop"
    profile_steps: tuple[int, int] | None = None
    progress: bool | None = None
    tokens_key: str | None = None
    handle_signals: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, what: str) -> None:
            if not ok:
                raise ValueError(f"TrainerSettings.{field} = {getattr(self, field)!r}: {what}.")

        need(isinstance(self.steps, int) and self.steps > 0, "steps", "must be a positive int")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        need(self.eval_every >= 0, "eval_every", "must be >= 0 (0: only at the end)")
        need(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0 (0: only at the end)")
        need(self.on_nonfinite in ("stop", "skip"), "on_nonfinite", "use 'stop' or 'skip'")
        need(isinstance(self.mesh, MeshSpec), "mesh", "must be a train.MeshSpec")
        if self.profile_steps is not None:
            a, b = self.profile_steps
            need(1 <= a <= b, "profile_steps", "must be (a, b) with 1 <= a <= b (step numbers)")


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the final state and how the run ended."""

    state: TrainState
    step: int
    preempted: bool
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    skipped_steps: list[int]
    start_eval_metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # eval_at_start's


def _json_config(config: Mapping[str, Any] | None) -> dict | None:
    if config is None:
        return None
    try:
        return json.loads(json.dumps(dict(config)))
    except TypeError as e:
        raise TypeError(f"config must be JSON-serialisable (it is saved with each checkpoint): {e}") from None


def _global_rows(batch: Mapping[str, jax.Array]) -> int:
    return int(next(iter(batch.values())).shape[0])


def train(model: ModelOrConstructor, loss_fn: LossFn, optimizer: optax.GradientTransformation,
          data: Iterable[Batch], settings: TrainerSettings, *,
          eval_fn: EvalFn | None = None, eval_data: Callable[[], Iterable[Batch]] | None = None,
          config: Mapping[str, Any] | None = None, mesh: Mesh | None = None) -> TrainResult:
    """Train ``model`` for ``settings.steps`` steps; resume from ``settings.workdir`` if possible.

    Args:
        model: an ``nn.Module`` or a constructor ``key -> nn.Module``.
        loss_fn: ``loss_fn(model, batch, key) -> loss | (loss, metrics)``.
        optimizer: any optax optimizer (frozen parameters and layer state are left out).
        data: an iterator (or iterable) of batch dicts, host-local numpy rows or global
            arrays. With ``get_state``/``set_state`` its position is checkpointed.
        settings: see ``TrainerSettings``.
        eval_fn: ``eval_fn(model, batch) -> {name: (B,) per-example values}``.
        eval_data: a function returning a fresh iterator over the eval split.
        config: the resolved run config (JSON), stored in every checkpoint.
        mesh: a mesh to use instead of ``settings.mesh`` (axes data, fsdp, tensor).

    Returns a ``TrainResult``; ``preempted`` is True if a signal stopped the run
    (after saving a checkpoint): the caller should then exit with status 0.
    Raises ``NonFiniteError`` on a NaN/Inf loss or gradient with ``on_nonfinite="stop"``.
    """
    if (eval_fn is None) != (eval_data is None):
        raise ValueError("Pass eval_fn and eval_data together (eval_data is a function returning "
                         "a fresh iterator over the eval split).")
    config = _json_config(config)

    # ------------------------------------------------------------------------------------
    # Processes, mesh and run directory.
    # ------------------------------------------------------------------------------------
    initialize_distributed()
    mesh = make_mesh(settings.mesh) if mesh is None else mesh
    rules = dict(nn.DEFAULT_RULES if settings.rules is None else settings.rules)
    is_chief = jax.process_index() == 0
    workdir = Path(settings.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if is_chief:
        log.info("Mesh %s over %d devices in %d process(es); workdir %s.", dict(mesh.shape),
                 mesh.size, jax.process_count(), workdir)

    # ------------------------------------------------------------------------------------
    # Train state: restored from the newest good checkpoint, or created on the mesh.
    # ------------------------------------------------------------------------------------
    data_iter = iter(data)
    build = dict(mesh=mesh, rules=rules, seed=settings.seed, ema=settings.ema_decay is not None,
                 precision=settings.precision)
    checkpointer = Checkpointer(workdir / "checkpoints", keep_last=settings.keep_checkpoints,
                                keep_every=settings.keep_every, async_save=settings.async_checkpoints)
    try:
        if not settings.resume and checkpointer.all_steps():
            raise ValueError(
                f"{checkpointer.directory} already has checkpoints {checkpointer.all_steps()} and "
                f"resume=False. Use a new workdir, or resume=True to continue that run.")
        restored = checkpointer.restore(abstract_state(model, optimizer, **build),
                                        data_iterator=data_iter)
    except BaseException:
        checkpointer.close()
        raise
    if restored is not None:
        state, start = restored.state, restored.step
        if is_chief:
            log.info("Resumed from %s (step %d).", restored.path, start)
        if config is not None and restored.config is not None and restored.config != config:
            changed = sorted(k for k in set(config) | set(restored.config)
                             if config.get(k) != restored.config.get(k))
            log.warning("The config differs from the checkpoint's in %s.", changed)
        if start > 0 and not supports_state(data_iter):
            warnings.warn(
                f"{type(data_iter).__name__} has no get_state/set_state, so its position was not "
                f"saved; skipping {start} batches to reach step {start}. Give the iterator "
                f"get_state/set_state (grain iterators have them) to resume instantly.",
                CheckpointWarning, stacklevel=2)
            for _ in range(start):
                next(data_iter)
    else:
        state, start = create_state(model, optimizer, **build), 0
    if is_chief:
        log.info("Model: %s parameters (%s trainable).", f"{nn.count_parameters(state.model):,}",
                 f"{nn.count_parameters(state.model, trainable_only=True):,}")

    # ------------------------------------------------------------------------------------
    # Compile the step once, ahead of time: later steps cannot recompile.
    # ------------------------------------------------------------------------------------
    step_fn = make_train_step(loss_fn, optimizer, microbatches=settings.microbatches,
                              ema_decay=settings.ema_decay)
    writer = MetricWriter(workdir, enabled=is_chief, resume_step=start if restored else None)
    progress = Progress(settings.steps, start, enabled=is_chief and settings.progress is not False,
                        interactive=settings.progress)
    eval_step = make_eval_step(eval_fn) if eval_fn is not None else None
    paths = leaf_paths(state.model)
    step, batch, pending, skipped = start, None, [], []
    last_metrics: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    start_eval: dict[str, float] = {}
    preempted = tracing = False

    def next_batch() -> dict[str, jax.Array] | None:
        try:
            raw = next(data_iter)
        except StopIteration:
            return None
        return put_batch(raw, mesh=mesh, rules=rules)

    def flush() -> dict[str, float]:
        """Read the pending per-step metrics (the one host sync), check them, average them."""
        values = jax.device_get([m for _, m in pending])
        steps = [s for s, _ in pending]
        pending.clear()
        good = []
        for s, m in zip(steps, values, strict=True):
            if not m["nonfinite"]:
                good.append(m)
                continue
            index = int(m["first_nonfinite_grad"])
            path = paths[index] if index >= 0 else None
            where = (f"the gradient of {path} (the first non-finite one in tree order)" if path
                     else f"the loss ({float(m['loss'])})")
            if settings.on_nonfinite == "skip":
                skipped.append(s)
                log.warning("Step %d: non-finite %s; the update was skipped.", s, where)
                continue
            checkpointer.wait()
            last = checkpointer.latest_step
            raise NonFiniteError(
                f"Step {s}: non-finite value in {where}. The update was not applied. "
                f"Last good checkpoint: "
                f"{'none' if last is None else f'step {last} in {checkpointer.directory}'}. "
                f"Lower the learning rate, add clipping, check the data, or pass "
                f"on_nonfinite='skip' to drop bad steps.", step=s, path=path, last_checkpoint=last)
        out = {}
        for name in values[-1]:
            if name in ("nonfinite", "first_nonfinite_grad"):
                continue
            if name == "learning_rate":
                out["train/learning_rate"] = float(values[-1][name])
            elif good:
                out[f"train/{name}"] = float(np.mean([float(m[name]) for m in good]))
        if skipped:
            out["train/skipped_steps"] = len(skipped)
        return out

    def run_eval() -> dict[str, float]:
        results = {f"eval/{k}": v for k, v in
                   evaluate(eval_step, state.model, eval_data(), mesh=mesh, rules=rules).items()}
        if state.ema is not None:
            results.update({f"eval_ema/{k}": v for k, v in
                            evaluate(eval_step, state.ema, eval_data(), mesh=mesh, rules=rules).items()})
        return results

    def save() -> None:
        if step in checkpointer.all_steps():
            return
        blocked = checkpointer.save(step, state, data_iterator=data_iter, config=config,
                                    mesh_shape=dict(mesh.shape))
        if is_chief:
            log.info("Checkpoint at step %d (the loop was blocked %.3fs).", step, blocked)

    stop = StopOnSignal(settings.handle_signals)
    try:
        stop.install()  # from here on, a first signal means "checkpoint and return"
        if step < settings.steps:
            batch = next_batch()
            if batch is None:
                raise ValueError("The data iterator is empty: it yielded no batch.")
            t0 = time.perf_counter()
            compiled = jit_step(step_fn, state, mesh=mesh, rules=rules).lower(state, batch).compile()
            compile_s = time.perf_counter() - t0
            rows = _global_rows(batch)
            if settings.tokens_key is not None and settings.tokens_key not in batch:
                raise ValueError(f"TrainerSettings.tokens_key={settings.tokens_key!r} is not a batch "
                                 f"key; the batch has {sorted(batch)}.")
            tokens = batch[settings.tokens_key].size if settings.tokens_key else None
            if is_chief:
                log.info("Compiled the train step in %.2fs (global batch %d).", compile_s, rows)

        # --------------------------------------------------------------------------------
        # The loop. The host only dispatches; it reads metrics at logging intervals.
        # --------------------------------------------------------------------------------
        if settings.eval_at_start and eval_step is not None and step == 0:
            start_eval = run_eval()
            writer.write(0, start_eval)
            if is_chief:
                log.info("Eval before training (step 0): %s",
                         ", ".join(f"{k} {v:.4f}" for k, v in start_eval.items()))
        interval_start, interval_steps = time.perf_counter(), 0
        while step < settings.steps:
            if batch is None:
                batch = next_batch()
                if batch is None:
                    log.warning("The data ran out at step %d of %d; stopping.", step, settings.steps)
                    break
            if settings.profile_steps is not None and step + 1 == settings.profile_steps[0]:
                jax.profiler.start_trace(str(workdir / "profile"))
                tracing = True

            state, metrics = compiled(state, batch)
            batch = None
            step += 1
            pending.append((step, metrics))
            interval_steps += 1
            progress.update()

            if step == start + 1:  # first-step latency: one deliberate wait
                jax.block_until_ready(metrics)
                first_s = time.perf_counter() - t0 - compile_s
                writer.write(step, {"perf/compile_s": compile_s, "perf/first_step_s": first_s})
                if is_chief:
                    log.info("First step took %.3fs.", first_s)
                interval_start, interval_steps = time.perf_counter(), 0
            if tracing and step == settings.profile_steps[1]:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                tracing = False
                if is_chief:
                    log.info("Profile of steps %s written to %s.", settings.profile_steps,
                             workdir / "profile")

            last_step = step == settings.steps
            log_due = step % settings.log_every == 0 or last_step
            ckpt_due = settings.checkpoint_every > 0 and step % settings.checkpoint_every == 0
            if jax.process_count() == 1:
                stop_now = stop.requested
            else:
                stop_now = (log_due or ckpt_due) and stop.agreed()
            eval_due = eval_step is not None and (
                last_step or (settings.eval_every > 0 and step % settings.eval_every == 0))

            if (log_due or ckpt_due or stop_now or eval_due) and pending:
                last_metrics = flush()  # raises NonFiniteError before any checkpoint
                seconds = time.perf_counter() - interval_start
                if interval_steps and seconds > 0:
                    last_metrics["train/examples_per_s"] = rows * interval_steps / seconds
                    last_metrics["train/step_time_s"] = seconds / interval_steps
                    if tokens is not None:
                        last_metrics["train/tokens_per_s"] = tokens * interval_steps / seconds
                writer.write(step, last_metrics)
                progress.show(step, last_metrics, seconds / max(interval_steps, 1))
                interval_start, interval_steps = time.perf_counter(), 0
            if eval_due:
                last_eval = run_eval()
                writer.write(step, last_eval)
                if is_chief:
                    log.info("Eval at step %d: %s", step,
                             ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
                interval_start = time.perf_counter()  # throughput counts train steps only
            if ckpt_due or stop_now:
                save()
                interval_start = time.perf_counter()  # throughput counts train steps only
            if stop_now:
                preempted = True
                if is_chief:
                    log.warning("Stopped by %s at step %d after saving a checkpoint.",
                                stop.signal_name or "a signal on another process", step)
                break

        # --------------------------------------------------------------------------------
        # The end: a final checkpoint, durable before returning.
        # --------------------------------------------------------------------------------
        if pending:
            last_metrics = flush()
        if step > start or restored is None:
            save()
        checkpointer.wait()
    finally:
        if tracing:
            jax.profiler.stop_trace()
        progress.close()
        writer.close()
        checkpointer.close()
        stop.uninstall()
    return TrainResult(state=state, step=step, preempted=preempted, metrics=last_metrics,
                       eval_metrics=last_eval, skipped_steps=skipped, start_eval_metrics=start_eval)
