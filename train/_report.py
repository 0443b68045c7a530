"""What a run says and returns: the start banner, a finished run's summary, ``TrainResult``.

The loop logs to ``logging.getLogger("baobab.train")``. Importing baobab configures
no logging; a program that wants the lines on stderr calls ``log_to_stderr()`` once
(the ``baobab`` command does, first thing), or configures ``logging`` itself.

>>> import logging
>>> from baobab import train
>>> handler = train.log_to_stderr()
>>> handler is train.log_to_stderr()  # a second call adds nothing
True
>>> logging.getLogger("baobab").removeHandler(handler); logging.getLogger("baobab").setLevel(logging.NOTSET)
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import tqdm
from jax.sharding import Mesh

from baobab import nn

from ._core import TrainState
from ._metrics import read_metrics

__all__ = ["TrainResult", "banner", "finished", "log_to_stderr"]

log = logging.getLogger("baobab.train")


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the final state and how the run ended.

    ``metrics`` are the last record's ``train/*`` values, ``eval_metrics`` the last
    eval's; ``preempted`` is True when a signal stopped the run after a checkpoint.
    """

    state: TrainState
    step: int
    preempted: bool
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    skipped_steps: list[int]
    start_eval_metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # eval_at_start's


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def banner(*, workdir: Path, mesh: Mesh, state: TrainState, start: int, steps: int,
           restored_from: Path | None, processes: int) -> str:
    """The start line: steps, where it resumed from, devices, mesh and parameter count."""
    device = mesh.devices.flat[0]
    sizes = " ".join(f"{name}={size}" for name, size in mesh.shape.items())
    where = (f"resumed from step {start} ({restored_from})" if restored_from is not None
             else "a fresh run")
    params = nn.count_parameters(state.model)
    trainable = nn.count_parameters(state.model, trainable_only=True)
    return (f"Training to step {steps} in {workdir}: {where} | {mesh.size} {device.platform} device(s) in "
            f"{processes} process(es), mesh {sizes} | {params:,} parameters ({trainable:,} trainable)")


def finished(workdir: Path, state: TrainState, step: int, steps: int, skipped: list[int],
             checkpoint: Path) -> TrainResult:
    """A run whose checkpoint already reached ``steps``: say so, with its final metrics."""
    records = read_metrics(workdir)
    train = next((r for r in reversed(records) if any(k.startswith("train/") for k in r)), {})
    evals = next((r for r in reversed(records) if any(k.startswith("eval/") for k in r)), {})
    metrics = {k: v for k, v in train.items() if k.startswith("train/")}
    eval_metrics = {k: v for k, v in evals.items() if k.startswith(("eval/", "eval_ema/"))}
    shown = {k: v for k, v in {**metrics, **eval_metrics}.items()
             if not k.endswith(("_per_s", "step_time_s"))}
    if step == steps:
        what = f"The run in {workdir} is already complete: step {step} of trainer.steps = {steps}"
    else:
        what = (f"The run in {workdir} is already past trainer.steps = {steps} (its checkpoint is at step "
                f"{step})")
    log.info("%s (%s). Final metrics: %s. Nothing to do; raise trainer.steps to train further.", what,
             checkpoint, _fmt(shown) or "none recorded")
    return TrainResult(state=state, step=step, preempted=False, metrics=metrics, eval_metrics=eval_metrics,
                       skipped_steps=list(skipped))


class _StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` through ``tqdm.write``, so a progress bar stays whole."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def log_to_stderr(level: int = logging.INFO) -> logging.Handler:
    """Show baobab's log lines (the ``baobab`` logger and its children) on stderr.

    Adds one handler to the ``baobab`` logger and sets its level; a second call
    returns the same handler. Lines read ``12:00:01 baobab.train: message``. The
    root logger is left alone, so an application's own logging setup still applies.
    """
    logger = logging.getLogger("baobab")
    for handler in logger.handlers:
        if isinstance(handler, _StderrHandler):
            return handler
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
