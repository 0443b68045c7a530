"""``train``: the training loop, one function read top to bottom.

Inputs are plain and typed: a model (or a constructor ``key -> model``), a loss
function, an optax optimizer, a data iterator, and the run's settings as the config
sections ``TrainerConfig``, ``CheckpointConfig`` and ``LoggingConfig`` (an experiment
config's ``trainer``, ``checkpoint`` and ``logging``), with a ``Mesh`` or a
``MeshConfig``; optionally an eval function with an eval-iterator factory, and the
resolved config (JSON) to store with each checkpoint.

What a run says (logger ``baobab.train``; ``train.log_to_stderr()`` shows it): a start
banner (devices, mesh, parameters, steps, the step it resumed from); on resume, each
config field that differs from the checkpoint's and what follows from it; one line
per record when no progress bar is shown; checkpoints and evals. Rerunning a
finished run says so, with its final metrics, and returns without compiling.

Example (a linear regression, two steps, on one device):
    >>> import tempfile, jax, jax.numpy as jnp, numpy as np, optax
    >>> from baobab import nn, train
    >>> def loss_fn(model, batch, key):
    ...     return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)
    >>> data = ({"x": np.ones((8, 3), np.float32), "y": np.zeros((8, 1), np.float32)}
    ...         for _ in range(2))
    >>> trainer = train.TrainerConfig(workdir=tempfile.mkdtemp(), steps=2)
    >>> result = train.train(lambda k: nn.Linear(3, 1, key=k), loss_fn, optax.sgd(0.1), data, trainer,
    ...                      logging=train.LoggingConfig(log_every=1),
    ...                      mesh=train.make_mesh(devices=jax.devices()[:1]))
    >>> result.step, [r["step"] for r in train.read_metrics(trainer.workdir) if "train/loss" in r]
    (2, [1, 2])
"""

from __future__ import annotations

import json
import logging as _logging
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jax
import optax
from jax.sharding import Mesh

from baobab import nn
from baobab.errors import CheckpointError, ConfigError, DiskFullError

from ._checkpoint import Checkpointer, CheckpointWarning, supports_state
from ._checkpoint_faults import is_disk_full
from ._config_diff import describe
from ._core import Batch, EvalFn, LossFn
from ._distributed import initialize_distributed
from ._eval import evaluate, make_eval_step
from ._mesh import STRATEGY_RULES, make_mesh, put_batch
from ._metrics import MetricWriter, Progress
from ._nonfinite import leaf_paths
from ._preemption import StopOnSignal
from ._report import TrainResult, banner, finished
from ._settings import CheckpointConfig, LoggingConfig, MeshConfig, TrainerConfig
from ._state import ModelOrConstructor, abstract_state, create_state
from ._step import jit_step, make_train_step
from ._window import MetricWindow, Throughput
from ._workdir_lock import WorkdirLock

__all__ = ["TrainResult", "train"]

log = _logging.getLogger("baobab.train")


def _json_config(config: Mapping[str, Any] | None) -> dict | None:
    if config is None:
        return None
    try:
        return json.loads(json.dumps(dict(config)))
    except TypeError as e:
        raise TypeError(f"config must be JSON-serialisable (it is saved with each checkpoint): {e}") from None


def _sections(trainer: Any, checkpoint: Any, logging: Any, mesh: Any) -> None:
    for name, value, kind in (("trainer", trainer, TrainerConfig), ("checkpoint", checkpoint, CheckpointConfig),
                              ("logging", logging, LoggingConfig)):
        if not isinstance(value, kind):
            raise TypeError(f"train(..., {name}=...) takes a train.{kind.__name__}, got {type(value).__name__}; "
                            f"build it as train.{kind.__name__}(...) or pass config.{name}.")
    if mesh is not None and not isinstance(mesh, (Mesh, MeshConfig)):
        raise TypeError(f"mesh must be a jax Mesh, a train.MeshConfig or None, got {type(mesh).__name__}.")


def train(model: ModelOrConstructor, loss_fn: LossFn, optimizer: optax.GradientTransformation,
          data: Iterable[Batch], trainer: TrainerConfig, *, checkpoint: CheckpointConfig = CheckpointConfig(),
          logging: LoggingConfig = LoggingConfig(), mesh: Mesh | MeshConfig | None = None,
          rules: Mapping[str, Any] | None = None, tokens_key: str | None = None,
          eval_fn: EvalFn | None = None, eval_data: Callable[[], Iterable[Batch]] | None = None,
          config: Mapping[str, Any] | None = None, resume: bool = True,
          handle_signals: bool = True) -> TrainResult:
    """Train ``model`` for ``trainer.steps`` steps; resume from ``trainer.workdir`` if possible.

    Args:
        model: an ``nn.Module`` or a constructor ``key -> nn.Module``.
        loss_fn: ``loss_fn(model, batch, key) -> loss | (loss, metrics)``.
        optimizer: any optax optimizer (frozen parameters and layer state are left out).
        data: an iterator (or iterable) of batch dicts, host-local numpy rows or global
            arrays. With ``get_state``/``set_state`` its position is checkpointed.
        trainer, checkpoint, logging: the run's settings (see ``train/_settings.py``).
        mesh: a ``Mesh`` with axes data, fsdp, tensor, or a ``MeshConfig`` to build one
            over all devices; None is ``MeshConfig()`` (every device on ``data``).
        rules: logical-axis rules; None is ``STRATEGY_RULES[mesh.rules]`` for a
            ``MeshConfig``, else ``nn.DEFAULT_RULES``.
        tokens_key: batch key whose element count is a batch's tokens (for tokens/s).
        eval_fn: ``eval_fn(model, batch) -> {name: (B,) per-example values}``.
        eval_data: a function returning a fresh iterator over the eval split.
        config: the resolved run config (JSON), stored in every checkpoint; a resume
            logs how it differs from the checkpoint's.
        resume: continue from the newest checkpoint in the workdir; False refuses a
            workdir that has checkpoints.
        handle_signals: on SIGTERM/SIGINT, checkpoint at the next step and return.

    Returns a ``TrainResult``; ``preempted`` is True if a signal stopped the run
    (after saving a checkpoint): the caller should then exit with status 0.
    Raises ``NonFiniteError`` on a NaN/Inf loss or gradient with ``on_nonfinite="stop"``.
    """
    _sections(trainer, checkpoint, logging, mesh)
    if (eval_fn is None) != (eval_data is None):
        raise ValueError("Pass eval_fn and eval_data together (eval_data is a function returning "
                         "a fresh iterator over the eval split).")
    config = _json_config(config)

    # ------------------------------------------------------------------------------------
    # Processes, mesh and run directory.
    # ------------------------------------------------------------------------------------
    initialize_distributed()
    if rules is None:
        rules = STRATEGY_RULES[mesh.rules] if isinstance(mesh, MeshConfig) else nn.DEFAULT_RULES
    rules = dict(rules)
    mesh = mesh if isinstance(mesh, Mesh) else make_mesh(mesh)
    is_chief = jax.process_index() == 0
    workdir = Path(trainer.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir):  # one trainer per workdir; freed on every exit (see _workdir_lock.py)
        # --------------------------------------------------------------------------------
        # Train state: restored from the newest good checkpoint, or created on the mesh.
        # --------------------------------------------------------------------------------
        data_iter = iter(data)
        build = dict(mesh=mesh, rules=rules, seed=trainer.seed, ema=trainer.ema_decay is not None,
                     precision=trainer.precision)
        checkpointer = Checkpointer(workdir / "checkpoints", keep_last=checkpoint.keep,
                                    keep_every=checkpoint.keep_every, async_save=checkpoint.async_save)
        try:
            if not resume and checkpointer.all_steps():
                raise CheckpointError(
                    f"{checkpointer.directory} already has checkpoints {checkpointer.all_steps()} and "
                    f"resume=False. Use a new trainer.workdir, or resume=True to continue that run.")
            saved = checkpointer.newest_config() if config is not None else None
            if is_chief and saved is not None and saved[1] != config:  # said before a restore that may fail
                lines = describe(saved[1], config, step=saved[0])
                log.warning("The config differs from the one saved at step %d, in %d field(s):\n  %s", saved[0],
                            len(lines), "\n  ".join(lines))
            restored = checkpointer.restore(abstract_state(model, optimizer, **build), data_iterator=data_iter)
        except BaseException:
            checkpointer.close()
            raise
        state, start = (restored.state, restored.step) if restored else (create_state(model, optimizer, **build), 0)

        def last_checkpoint() -> tuple[int | None, Path]:  # for a NonFiniteError's message
            checkpointer.wait()
            return checkpointer.latest_step, checkpointer.directory

        window = MetricWindow(leaf_paths(state.model), skip=trainer.on_nonfinite == "skip",
                              last_checkpoint=last_checkpoint)
        window.restore(restored.metrics if restored else None)
        if restored and start >= trainer.steps:  # a finished run: nothing to compile
            checkpointer.close()
            return finished(workdir, state, start, trainer.steps, window.skipped, restored.path)
        if is_chief:
            log.info("%s", banner(workdir=workdir, mesh=mesh, state=state, start=start, steps=trainer.steps,
                                  restored_from=restored.path if restored else None, processes=jax.process_count()))
        if start > 0 and not supports_state(data_iter):
            warnings.warn(
                f"{type(data_iter).__name__} has no get_state/set_state, so its position was not "
                f"saved; skipping {start} batches to reach step {start}. Give the iterator "
                f"get_state/set_state (grain iterators have them) to resume instantly.",
                CheckpointWarning, stacklevel=2)
            for _ in range(start):
                next(data_iter)

        # --------------------------------------------------------------------------------
        # Compile the step once, ahead of time: later steps cannot recompile.
        # --------------------------------------------------------------------------------
        step_fn = make_train_step(loss_fn, optimizer, microbatches=trainer.microbatches,
                                  ema_decay=trainer.ema_decay)
        writer = MetricWriter(workdir, enabled=is_chief, resume_step=start if restored else -1)  # -1: a fresh start
        progress = Progress(trainer.steps, start, enabled=is_chief, interactive=logging.progress)
        eval_step = make_eval_step(eval_fn, mesh=mesh, rules=rules) if eval_fn is not None else None
        profile = logging.profile_steps
        step, batch = start, None
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

        def run_eval() -> dict[str, float]:
            results = {f"eval/{k}": v for k, v in
                       evaluate(eval_step, state.model, eval_data(), mesh=mesh, rules=rules).items()}
            if state.ema is not None:
                results.update({f"eval_ema/{k}": v for k, v in
                                evaluate(eval_step, state.ema, eval_data(), mesh=mesh, rules=rules).items()})
            return results

        def save() -> None:
            window.read()  # raises NonFiniteError before any checkpoint; the window itself stays open
            if step in checkpointer.all_steps():
                return
            blocked = checkpointer.save(step, state, data_iterator=data_iter, config=config,
                                        mesh_shape=dict(mesh.shape), metrics=window.state())
            if is_chief:
                log.info("Checkpoint at step %d (the loop was blocked %.3fs).", step, blocked)

        stop = StopOnSignal(handle_signals)
        try:
            stop.install()  # from here on, a first signal means "checkpoint and return"
            batch = next_batch()
            if batch is None:
                raise ValueError("The data iterator is empty: it yielded no batch.")
            t0 = time.perf_counter()
            compiled = jit_step(step_fn, state, mesh=mesh, rules=rules).lower(state, batch).compile()
            compile_s = time.perf_counter() - t0
            if tokens_key is not None and tokens_key not in batch:
                raise ConfigError(f"tokens_key={tokens_key!r} is not a batch key; the batch has {sorted(batch)}.")
            rows = int(next(iter(batch.values())).shape[0])
            timing = Throughput(rows, batch[tokens_key].size if tokens_key else None)
            if is_chief:
                log.info("Compiled the train step in %.2fs (global batch %d).", compile_s, rows)

            # ----------------------------------------------------------------------------
            # The loop. The host only dispatches; it reads metrics at records and checkpoints.
            # ----------------------------------------------------------------------------
            if trainer.eval_at_start and eval_step is not None and step == 0:
                start_eval = run_eval()
                writer.write(0, start_eval)
                if is_chief:
                    log.info("Eval before training (step 0): %s",
                             ", ".join(f"{k} {v:.4f}" for k, v in start_eval.items()))
            while step < trainer.steps:
                if batch is None:
                    batch = next_batch()
                    if batch is None:
                        log.warning("The data ran out at step %d of %d; stopping.", step, trainer.steps)
                        break
                if profile is not None and step + 1 == profile[0]:
                    jax.profiler.start_trace(str(workdir / "profile"))
                    tracing = True

                state, metrics = compiled(state, batch)
                batch = None
                step += 1
                window.add(step, metrics)
                if checkpointer.failed:  # a background save failed (a full disk): stop, do not train on
                    checkpointer.wait()
                timing.steps += 1
                progress.update()

                if step == start + 1:  # first-step latency: one deliberate wait
                    jax.block_until_ready(metrics)
                    first_s = time.perf_counter() - t0 - compile_s
                    writer.write(step, {"perf/compile_s": compile_s, "perf/first_step_s": first_s})
                    if is_chief:
                        log.info("First step took %.3fs.", first_s)
                    timing.restart()
                if tracing and step == profile[1]:
                    jax.block_until_ready(state)
                    jax.profiler.stop_trace()
                    tracing = False
                    if is_chief:
                        log.info("Profile of steps %s written to %s.", profile, workdir / "profile")

                last_step = step == trainer.steps
                log_due = step % logging.log_every == 0 or last_step
                ckpt_due = checkpoint.every > 0 and step % checkpoint.every == 0
                if jax.process_count() == 1:
                    stop_now = stop.requested
                else:
                    stop_now = (log_due or ckpt_due) and stop.agreed()
                eval_due = eval_step is not None and (
                    last_step or (trainer.eval_every > 0 and step % trainer.eval_every == 0))

                if log_due:  # a record: the window's mean, at log_every multiples and the last step only
                    last_metrics = window.summary()  # raises NonFiniteError
                    speed, per_step = timing.metrics()
                    last_metrics.update(speed)
                    writer.write(step, last_metrics)
                    progress.show(step, last_metrics, per_step)
                if eval_due:
                    with timing.paused():  # throughput counts train steps only
                        last_eval = run_eval()
                    writer.write(step, last_eval)
                    if is_chief:
                        log.info("Eval at step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
                if ckpt_due or stop_now:
                    with timing.paused():
                        save()
                if stop_now:
                    preempted = True
                    if is_chief:
                        log.warning("Stopped by %s at step %d after saving a checkpoint.",
                                    stop.signal_name or "a signal on another process", step)
                    break

            # ----------------------------------------------------------------------------
            # The end: a final checkpoint, durable before returning.
            # ----------------------------------------------------------------------------
            if step > start or restored is None:
                save()
            checkpointer.wait()
        except OSError as e:
            if not is_disk_full(e) or isinstance(e, DiskFullError):
                raise
            checkpointer.wait()  # a save that failed for the same reason is the one to report
            raise DiskFullError(f"No space left on the device writing {e.filename or workdir} at step {step}. "
                                f"The run stops; free space and rerun the same command to resume from "
                                f"step {checkpointer.latest_step or 0}.") from e
        finally:
            if tracing:
                jax.profiler.stop_trace()
            progress.close()
            writer.close()
            checkpointer.close()
            stop.uninstall()
        return TrainResult(state=state, step=step, preempted=preempted, metrics=last_metrics,
                           eval_metrics=last_eval, skipped_steps=window.skipped, start_eval_metrics=start_eval)
