"""What a user sees: ``metrics.jsonl``, TensorBoard events, and a progress bar.

Only process 0 writes; on other processes the writer and the bar do nothing.

* ``<workdir>/metrics.jsonl``: one JSON object per logging step,
  ``{"step": 100, "train/loss": 0.53, ...}``. Non-finite values are written as
  ``null`` so the file stays valid JSON. On resume, lines past the restored step
  are dropped, so the file reads as one run.
* ``<workdir>/tensorboard/``: the same scalars as TensorBoard event files,
  written by ``_tensorboard.py`` (neither TensorFlow nor torch is imported); events
  past the restored step are purged on resume.
* A tqdm bar with step, loss, learning rate, throughput and ETA when stderr is a
  terminal; otherwise (or with ``logging.progress=False``) one plain log line per
  record: ``step 400/1000 | loss 0.1234 | lr 3.000e-03 | examples/s 5,120.0 | eta 0:00:42``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Mapping

import tqdm

from ._tensorboard import EventWriter

__all__ = ["MetricWriter", "Progress", "read_metrics"]

log = logging.getLogger("baobab.train")


def _clean(value: Any) -> Any:
    value = float(value) if not isinstance(value, (int, str, bool)) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
    """The records of ``<workdir>/metrics.jsonl``, in order."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _complete_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file a killed run may have left, without a half-written last line."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
            log.warning("Dropped the half-written last line of %s (the run was stopped while writing it).", path)
    return records


class MetricWriter:
    """Writes scalar metrics to ``metrics.jsonl`` and TensorBoard under ``workdir``."""

    def __init__(self, workdir: str | Path, *, enabled: bool = True, resume_step: int | None = None):
        """``resume_step``: drop the records after it (a resumed run writes them again); -1 drops
        all of them (a fresh start over a run that was stopped before its first checkpoint);
        None appends."""
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in _complete_records(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")
        purge = None if resume_step is None else resume_step + 1
        self._tb = EventWriter(Path(workdir) / "tensorboard", purge_step=purge)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` (name -> number) at ``step``."""
        if not self.enabled or not metrics:
            return
        record = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(name, value, global_step=int(step))
        self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _fmt(x: float) -> str:
    return f"{x:.3e}" if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4) else f"{x:.4f}"


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """A tqdm bar, or one plain log line per record; silent off process 0.

    ``interactive``: True a bar, False log lines, None a bar only when stderr is a terminal.
    """

    def __init__(self, total: int, initial: int, *, enabled: bool, interactive: bool | None = None):
        self.total = total
        self.enabled = enabled
        if interactive is None:
            interactive = sys.stderr.isatty()
        self.interactive = enabled and interactive
        self.bar = tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                             disable=not self.interactive)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def show(self, step: int, metrics: Mapping[str, float], seconds_per_step: float) -> None:
        """Show a record's metrics: on the bar, or as one log line (loss, lr, throughput, ETA)."""
        if not self.enabled:
            return
        parts = {"loss": metrics.get("train/loss")}
        if "train/learning_rate" in metrics:
            parts["lr"] = metrics["train/learning_rate"]
        shown = {k: _fmt(v) for k, v in parts.items() if v is not None}
        rates = {"ex/s": metrics.get("train/examples_per_s"), "tok/s": metrics.get("train/tokens_per_s")}
        if self.interactive:
            shown.update({k: _fmt(v) for k, v in rates.items() if v is not None})
            self.bar.set_postfix(shown, refresh=True)
            return
        names = {"ex/s": "examples/s", "tok/s": "tokens/s"}
        shown.update({names[k]: f"{v:,.1f}" for k, v in rates.items() if v is not None})
        eta = _eta((self.total - step) * seconds_per_step)
        text = " | ".join(f"{k} {v}" for k, v in shown.items())
        log.info("step %d/%d | %s | eta %s", step, self.total, text, eta)

    def close(self) -> None:
        self.bar.close()
