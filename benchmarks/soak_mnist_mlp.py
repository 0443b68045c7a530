"""Soak: does a long ``baobab train configs/mnist_mlp.py`` run keep its host memory flat?

The script launches, as a user would::

    baobab train configs/mnist_mlp.py trainer.steps=20000 trainer.workdir=<a temporary folder>

with the config's own cadence (a checkpoint every 500 steps, async, keeping 3; a
metrics record every 50 steps, to ``metrics.jsonl`` and TensorBoard; the eval at the
end, which is all ``mnist_mlp.py`` asks for), and every ``--interval`` seconds reads
the resident set size (``VmRSS`` in ``/proc/<pid>/status``, summed over the process
and any children) together with the step the run has reached (the last record of
``metrics.jsonl``, so to within ``log_every`` = 50 steps).

Warm-up is the first 10 % of the steps (``--warmup``): 2,000 steps, ~35 s on 2
cores. By then the run has compiled its step, written four async checkpoints
(orbax's and the Checkpointer's threads exist after the first) and deleted the
oldest one (``keep`` = 3 starts deleting at the fourth), and opened its metric files:
everything it will do again later except the final eval. ``baobab`` sets glibc to
keep freed memory (``baobab/host_memory.py``): the heap never shrinks and may grow
by a few blocks early on, which is what warm-up must absorb.

Figures: RSS at the end of warm-up, at the end of training, the peak (sampled, and
the kernel's ``VmHWM`` high-water mark), and the least-squares slope of RSS against
step over the training samples after warm-up (the final record, written after the
final eval, is left out of the fit), in MB (10^6 bytes) per 1,000 steps. No growth
means a slope near 0; the issue's threshold is 1 MB per 1,000 steps.

    python benchmarks/soak_mnist_mlp.py                     # 20,000 steps, ~6-10 min on 2 cores
    python benchmarks/soak_mnist_mlp.py --steps 2000        # a trial run
    python benchmarks/soak_mnist_mlp.py --set checkpoint.every=0 --json /tmp/no_ckpt.json

``--set key=value`` (repeatable) passes more overrides to ``baobab train``, to toggle
checkpoints or evals when looking for the source of a growth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

CONFIG = Path(__file__).parents[1] / "configs" / "mnist_mlp.py"
RESULTS_DIR = Path(__file__).parent / "results"
MB = 1e6


# ---------------------------------------------------------------------------------------------
# Reading the process
# ---------------------------------------------------------------------------------------------

def _status_kib(pid: int, field: str) -> int | None:
    """``field`` (e.g. ``VmRSS``) of ``/proc/<pid>/status`` in KiB; None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _descendants(pid: int) -> list[int]:
    """The process ids below ``pid`` (children, their children...), from ``/proc/*/stat``."""
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        parent_of[int(stat.parent.name)] = int(text[text.rindex(")") + 2:].split()[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, parent in parent_of.items() if parent == p]
        found += kids
        frontier += kids
    return found


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` and its descendants, in bytes; None once ``pid`` is gone."""
    own = _status_kib(pid, "VmRSS")
    if own is None:
        return None
    return 1024 * (own + sum(_status_kib(c, "VmRSS") or 0 for c in _descendants(pid)))


class MetricsTail:
    """The last ``step`` written to ``<workdir>/metrics.jsonl``, read incrementally."""

    def __init__(self, path: Path):
        self.path, self.offset, self.step, self.last = path, 0, 0, {}

    def poll(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return self.step
        end = chunk.rfind(b"\n") + 1  # only whole lines: the writer may be mid-line
        for line in chunk[:end].splitlines():
            if line.strip():
                record = json.loads(line)
                self.step, self.last = max(self.step, int(record.get("step", 0))), {**self.last, **record}
        self.offset += end
        return self.step


# ---------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------

def slope_mb_per_1k_steps(steps: Sequence[float], rss: Sequence[float]) -> float:
    """The least-squares slope of ``rss`` (bytes) against ``steps``, in MB per 1,000 steps.

    >>> slope_mb_per_1k_steps([0, 1000, 2000], [100e6, 102e6, 104e6])
    2.0
    """
    x, y = np.asarray(steps, float), np.asarray(rss, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return float("nan")
    return round(float(np.polyfit(x, y, 1)[0]) * 1000 / MB, 6) + 0.0  # + 0.0: no -0.0 in a table


def summarize(samples: Sequence[tuple[float, int, int]], *, steps: int, warmup_steps: int) -> dict[str, Any]:
    """The soak's figures from ``(seconds, step reached, RSS bytes)`` samples in time order.

    The fit takes the samples with ``warmup_steps <= step < steps``: after warm-up, and
    before the last record (which the loop writes after the final eval).
    """
    t, step, rss = (np.asarray(c, float) for c in zip(*samples, strict=True))
    after = step >= warmup_steps
    fit = after & (step < steps)
    half = fit & (step >= (warmup_steps + steps) / 2)
    first_after = int(np.argmax(after)) if after.any() else len(rss) - 1
    return {
        "warmup_steps": warmup_steps,
        "warmup_end_s": round(float(t[first_after]), 1),
        "rss_warmup_end_mb": round(float(rss[first_after]) / MB, 1),
        "rss_train_end_mb": round(float(rss[fit][-1]) / MB, 1) if fit.any() else None,
        "rss_final_mb": round(float(rss[-1]) / MB, 1),
        "rss_peak_mb": round(float(rss.max()) / MB, 1),
        "rss_min_after_warmup_mb": round(float(rss[after].min()) / MB, 1) if after.any() else None,
        "slope_mb_per_1k_steps": slope_mb_per_1k_steps(step[fit], rss[fit]),
        "slope_second_half_mb_per_1k_steps": slope_mb_per_1k_steps(step[half], rss[half]),
        "fit_samples": int(fit.sum()),
    }


def _thin(samples: list[tuple[float, int, int]], most: int = 200) -> list[list[float]]:
    """At most ``most`` evenly spaced samples, as ``[seconds, step, RSS MB]``, for a plot."""
    every = max(1, -(-len(samples) // most))
    return [[round(t, 1), s, round(r / MB, 1)] for t, s, r in samples[::every] + samples[-1:]]


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def _print(line: str) -> None:
    print(line, flush=True)  # flushed: the progress lines are for a watcher of a log file too


def soak(*, steps: int, interval: float, overrides: Sequence[str], workdir: Path,
         log: Callable[[str], None] = _print) -> tuple[list[tuple[float, int, int]], dict[str, Any]]:
    """Run ``baobab train`` in ``workdir`` and sample it; the samples and what the run reported."""
    baobab = shutil.which("baobab") or sys.exit("the `baobab` command is not on PATH: pip install -e . first")
    command = [baobab, "train", str(CONFIG), f"trainer.steps={steps}", f"trainer.workdir={workdir / 'run'}",
               *overrides]
    log("$ " + " ".join(command))
    tail = MetricsTail(workdir / "run" / "metrics.jsonl")
    samples, hwm, next_log = [], 0, 30.0
    with (workdir / "train.log").open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        while proc.poll() is None:
            rss, t = rss_bytes(proc.pid), time.perf_counter() - start
            hwm = max(hwm, _status_kib(proc.pid, "VmHWM") or 0)
            if rss is not None:
                samples.append((t, tail.poll(), rss))
                if t >= next_log:
                    log(f"  {t:6.0f} s  step {samples[-1][1]:>6}  RSS {rss / MB:7.1f} MB")
                    next_log += 30.0
            time.sleep(interval)
        wall = time.perf_counter() - start
    if proc.returncode:
        text = (workdir / "train.log").read_text(errors="replace")
        sys.exit(f"baobab train exited with {proc.returncode}; the end of its log:\n{text[-3000:]}")
    tail.poll()
    last = tail.last
    shown = ["baobab", "train", "configs/mnist_mlp.py", f"trainer.steps={steps}", "trainer.workdir=<tmp>/run",
             *overrides]
    return samples, {"command": " ".join(shown), "wall_s": round(wall, 1), "vm_hwm_mb": round(1024 * hwm / MB, 1),
                     "steps_reached": tail.step,
                     "eval_accuracy": last.get("eval/accuracy"), "train_loss": last.get("train/loss")}


def main() -> None:
    # Here, not at the top: importing _harness applies baobab's malloc setting to this process (harmless in
    # the sampler, which the `baobab` command's setting mirrors), and tests/test_bench_soak.py imports this file.
    import _harness as H

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20000, help="trainer.steps (default 20,000)")
    p.add_argument("--quick", action="store_true", help="a smoke run: --steps 1000")
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up, as a fraction of the steps (default 0.1)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between samples (default 0.5)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one more override for `baobab train` (repeatable), e.g. checkpoint.every=0")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (its path is printed)")
    p.add_argument("--json", default=str(RESULTS_DIR / "soak_mnist_mlp.json"), help="where to write the results")
    args = p.parse_args()
    steps = 1000 if args.quick else args.steps
    info = H.machine()
    print(H.describe(info), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="baobab_soak_"))
    try:
        samples, run = soak(steps=steps, interval=args.interval, overrides=args.set, workdir=workdir)
    finally:
        if args.keep:
            print(f"run folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    figures = summarize(samples, steps=steps, warmup_steps=round(args.warmup * steps))
    result = {"machine": info, "config": "configs/mnist_mlp.py", "steps": steps, "overrides": args.set,
              "interval_s": args.interval, **run, **figures, "samples": len(samples), "trace": _thin(samples)}
    print()
    print(H.table([{
        "steps": steps, "wall (s)": run["wall_s"], "warm-up end (MB)": figures["rss_warmup_end_mb"],
        "final (MB)": figures["rss_final_mb"], "peak (MB)": figures["rss_peak_mb"], "VmHWM (MB)": run["vm_hwm_mb"],
        "slope (MB/1k steps)": figures["slope_mb_per_1k_steps"],
        "2nd half": figures["slope_second_half_mb_per_1k_steps"]}],
        ["steps", "wall (s)", "warm-up end (MB)", "final (MB)", "peak (MB)", "VmHWM (MB)",
         "slope (MB/1k steps)", "2nd half"]))
    print(f"wrote {H.write_json(args.json, result)}")


if __name__ == "__main__":
    main()
