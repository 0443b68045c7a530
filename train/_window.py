"""The metric window: a record's per-step train metrics, exact across checkpoints and resumes.

The step returns its metrics as device scalars. The loop adds them here and the
host reads them only when it must:

* at a **record** (every ``log_every`` steps, and the last step): ``summary()``
  reads, checks and averages the window, then empties it;
* before every **checkpoint** (and a stop on a signal): ``read()`` checks the steps
  for NaN/Inf, so no checkpoint is written after a bad step, but keeps their values.

The open window goes into the checkpoint (``state()``, JSON: per-step values as
Python floats, which JSON round-trips exactly) and a resumed run restores it
(``restore``), so each record averages the same ``log_every`` steps, bit for bit,
as in a run that was never interrupted; only timing figures (``Throughput``) depend
on the process that measured them.

>>> import jax.numpy as jnp
>>> from baobab.train._window import MetricWindow
>>> window = MetricWindow([], skip=False, last_checkpoint=lambda: (None, "ckpt"))
>>> for s, loss in ((1, 2.0), (2, 1.0)):
...     window.add(s, {"loss": jnp.float32(loss), "nonfinite": jnp.int32(0),
...                    "first_nonfinite_grad": jnp.int32(-1)})
>>> window.read(); saved = window.state()
>>> resumed = MetricWindow([], skip=False, last_checkpoint=lambda: (None, "ckpt"))
>>> resumed.restore(saved); resumed.summary()
{'train/loss': 1.5}
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

from ._nonfinite import NonFiniteError

__all__ = ["MetricWindow", "Throughput", "TIMING"]

log = logging.getLogger("baobab.train")

_FLAGS = ("nonfinite", "first_nonfinite_grad")
STATE_VERSION = 1

#: Record fields that measure time, so differ between runs that are otherwise identical.
TIMING = ("train/examples_per_s", "train/tokens_per_s", "train/step_time_s")


class MetricWindow:
    """Per-step metrics since the last record; see the module docstring.

    ``paths`` are the model's leaf paths (``leaf_paths``), to name a non-finite
    gradient. ``skip``: log and drop non-finite steps instead of raising
    ``NonFiniteError``. ``last_checkpoint()`` gives ``(step or None, directory)`` for
    the error message; it may wait for saves in flight.
    """

    def __init__(self, paths: list[str], *, skip: bool, last_checkpoint: Callable[[], tuple[int | None, Any]]):
        self.paths, self.skip, self.last_checkpoint = paths, skip, last_checkpoint
        self._device: list[tuple[int, Mapping[str, jax.Array]]] = []  # not read yet
        self.steps: list[dict[str, Any]] = []  # read and checked: {"step", "values", "skipped"}
        self.skipped: list[int] = []  # every skipped step of the run, resumes included

    def add(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
        """Keep the metrics of ``step`` (device arrays: nothing is read)."""
        self._device.append((step, metrics))

    def read(self) -> None:
        """Read the unread steps (the host sync) and check them; raises ``NonFiniteError``."""
        if not self._device:
            return
        steps = [s for s, _ in self._device]
        values = jax.device_get([m for _, m in self._device])
        self._device.clear()
        for s, m in zip(steps, values, strict=True):
            host = {k: float(v) for k, v in m.items() if k not in _FLAGS}
            if not m["nonfinite"]:
                self.steps.append({"step": s, "values": host, "skipped": False})
                continue
            index = int(m["first_nonfinite_grad"])
            path = self.paths[index] if 0 <= index < len(self.paths) else None
            where = (f"the gradient of {path} (the first non-finite one in tree order)" if path
                     else f"the loss ({host.get('loss')})")
            if not self.skip:
                last, directory = self.last_checkpoint()
                raise NonFiniteError(
                    f"Step {s}: non-finite value in {where}. The update was not applied. Last good checkpoint: "
                    f"{'none' if last is None else f'step {last} in {directory}'}. Lower the learning rate, add "
                    f"clipping, check the data, or set trainer.on_nonfinite='skip' to drop bad steps.",
                    step=s, path=path, last_checkpoint=last)
            log.warning("Step %d: non-finite %s; the update was skipped.", s, where)
            self.skipped.append(s)
            kept = {"learning_rate": host["learning_rate"]} if "learning_rate" in host else {}
            self.steps.append({"step": s, "values": kept, "skipped": True})

    def summary(self) -> dict[str, float]:
        """Read and average the window into one record's ``train/*`` metrics, and empty it.

        Each metric is the mean over the window's good steps; the learning rate is
        the last step's; ``train/skipped_steps`` counts the run's skipped steps.
        """
        self.read()
        good = [e["values"] for e in self.steps if not e["skipped"]]
        names = sorted({name for e in self.steps for name in e["values"]})
        out = {}
        for name in names:
            if name == "learning_rate":
                out["train/learning_rate"] = [e["values"][name] for e in self.steps if name in e["values"]][-1]
            elif good:
                out[f"train/{name}"] = float(np.mean([v[name] for v in good]))
        if self.skipped:
            out["train/skipped_steps"] = len(self.skipped)
        self.steps.clear()
        return out

    def state(self) -> dict[str, Any]:
        """The open window as JSON, for the checkpoint (call ``read()`` first)."""
        assert not self._device, "read() the window before saving it"
        return {"version": STATE_VERSION, "steps": list(self.steps), "skipped": list(self.skipped)}

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Continue the window saved with a checkpoint (None: a checkpoint without one)."""
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"metric window of version {state.get('version')!r}, expected {STATE_VERSION}")
        self.steps = [dict(e) for e in state["steps"]]
        self.skipped = list(state["skipped"])


class Throughput:
    """Examples/s, tokens/s and seconds per step over the train steps since the last record.

    ``paused()`` leaves out the time of evals and checkpoints.
    """

    def __init__(self, rows: int, tokens: int | None):
        self.rows, self.tokens = rows, tokens
        self.restart()

    def restart(self) -> None:
        self.steps, self._start, self._paused = 0, time.perf_counter(), 0.0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - start

    def metrics(self) -> tuple[dict[str, float], float]:
        """``(train/* timing metrics, seconds per step)``, then a fresh interval."""
        seconds = time.perf_counter() - self._start - self._paused
        out: dict[str, float] = {}
        per_step = seconds / max(self.steps, 1)
        if self.steps and seconds > 0:
            out["train/examples_per_s"] = self.rows * self.steps / seconds
            out["train/step_time_s"] = per_step
            if self.tokens is not None:
                out["train/tokens_per_s"] = self.tokens * self.steps / seconds
        self.restart()
        return out, per_step
