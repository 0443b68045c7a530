"""benchmarks/soak_mnist_mlp.py: its figures from synthetic samples, and its reading of /proc and metrics.jsonl.

No training run and no timing here: the soak itself is a benchmark.
"""

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import soak_mnist_mlp as S  # noqa: E402


def _samples(rss_of_step, *, steps=20000, every=25):
    """(seconds, step, RSS bytes) every ``every`` steps, then one sample of the final record."""
    out = [(s / 60, s, int(rss_of_step(s))) for s in range(0, steps, every)]
    return out + [(steps / 60, steps, int(rss_of_step(steps)))]


def test_the_slope_is_in_mb_per_thousand_steps_and_ignores_warmup_and_the_final_record():
    # A steep warm-up (compile, first saves), then 0.5 MB per 1,000 steps, then a 50 MB jump at the final
    # record (the eval): only the middle may set the slope.
    def rss(step):
        if step < 2000:
            return 300e6 + 100e6 * step / 2000
        return 400e6 + 0.5e6 * (step - 2000) / 1000 + (50e6 if step == 20000 else 0)

    got = S.summarize(_samples(rss), steps=20000, warmup_steps=2000)
    assert got["slope_mb_per_1k_steps"] == pytest.approx(0.5, abs=1e-6)
    assert got["slope_second_half_mb_per_1k_steps"] == pytest.approx(0.5, abs=1e-6)
    assert got["rss_warmup_end_mb"] == pytest.approx(400.0)
    assert got["rss_train_end_mb"] == pytest.approx(rss(19975) / 1e6, abs=0.1)
    assert got["rss_final_mb"] == got["rss_peak_mb"] == pytest.approx(459.0)
    assert got["fit_samples"] == (20000 - 2000) // 25


def test_flat_memory_gives_a_zero_slope():
    got = S.summarize(_samples(lambda s: 400e6), steps=20000, warmup_steps=2000)
    assert got["slope_mb_per_1k_steps"] == 0.0
    assert S.slope_mb_per_1k_steps([5, 5], [1e6, 2e6]) != S.slope_mb_per_1k_steps([5, 5], [1e6, 2e6])  # NaN


def test_metrics_tail_reads_whole_lines_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = S.MetricsTail(path)
    assert tail.poll() == 0  # not written yet
    path.write_text(json.dumps({"step": 1, "perf/compile_s": 2.0}) + "\n" + '{"step": 50, "train/lo')
    assert tail.poll() == 1
    with path.open("a") as f:
        f.write('ss": 0.5}\n' + json.dumps({"step": 100, "eval/accuracy": 0.9}) + "\n")
    assert tail.poll() == 100
    assert tail.last["train/loss"] == 0.5 and tail.last["eval/accuracy"] == 0.9


def test_rss_counts_this_process_and_a_child():
    import subprocess

    own = S.rss_bytes(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for _ in range(100):  # until the child has started Python
            if (S._status_kib(child.pid, "VmRSS") or 0) > 4000:
                break
            subprocess.run(["sleep", "0.05"])
        assert child.pid in S._descendants(os.getpid())
        assert S.rss_bytes(os.getpid()) >= own + 1024 * S._status_kib(child.pid, "VmRSS") * 0.5
    finally:
        child.kill()
        child.wait()
    assert S.rss_bytes(2 ** 22 + 12345) is None  # no such process
