"""A run whose disk fills mid-save: a named error, exit 1, the last good checkpoint kept, an exact resume.

The workdir sits on a small tmpfs mounted for the test (the CI and dev machines run
the suite as root). A filler file leaves room for about one and a half checkpoints,
so the first save fits and the second runs out of space halfway.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from baobab import nn, runs, train

REPO = Path(__file__).resolve().parents[1]
STEPS, EVERY = 60, 20
COMMAND = [sys.executable, "-m", "baobab.cli", "train", str(REPO / "configs" / "mnist_mlp.py"),
           f"trainer.steps={STEPS}", f"checkpoint.every={EVERY}", "logging.log_every=5", "logging.progress=false"]


def train_in(workdir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([*COMMAND, f"trainer.workdir={workdir}"], env=env, capture_output=True, text=True,
                          timeout=600)


def deterministic(workdir: Path) -> list[dict]:
    rows = [{k: v for k, v in r.items() if not k.startswith("perf/") and not k.endswith(("_per_s", "_time_s"))}
            for r in train.read_metrics(workdir)]
    return [r for r in rows if set(r) != {"step"}]


def weights(workdir: Path, step: int | None = None) -> dict[str, np.ndarray]:
    model, _ = runs.restore_model(runs.load_run(workdir), step=step)
    return {k: np.asarray(v) for k, v in nn.state_dict(model).items()}


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.fail(f"this test mounts a 32 MB tmpfs for the workdir and could not ({done.stderr.strip()}): "
                    f"run the suite as root (or with CAP_SYS_ADMIN) on Linux.")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_keeps_the_last_checkpoint_and_the_rerun_resumes_exactly(tmp_path, small_disk):
    reference = tmp_path / "reference"
    done = train_in(reference)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint_bytes = sum(f.stat().st_size for f in (reference / "checkpoints" / str(EVERY)).rglob("*")
                           if f.is_file())

    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * (free - int(1.5 * checkpoint_bytes) - 400_000))  # room for 1.5 checkpoints
    workdir = small_disk / "run"
    done = train_in(workdir)
    assert done.returncode == 1, done.stderr[-3000:]
    # No traceback at all: orbax's background threads fail too (and asyncio's loop closes under them while the
    # process exits); the CLI logs each of those in one line, and its own error is one line.
    assert "Traceback" not in done.stderr and "This is a bug in baobab" not in done.stderr, done.stderr[-3000:]
    ours = [line for line in done.stderr.splitlines() if line.startswith("baobab train:")]
    assert len(ours) == 1, done.stderr[-3000:]
    assert ours[0].startswith(f"baobab train: No space left on the device for the checkpoint of step {2 * EVERY} "
                              f"in {workdir / 'checkpoints'}: it needs up to "), ours[0]
    assert "MB free" in ours[0] or "kB free" in ours[0] or " B free" in ours[0] or "is free" in ours[0], ours[0]
    assert f"steps [{EVERY}] are intact" in ours[0], ours[0]
    metrics = train.read_metrics(workdir)  # the run stopped at the failed save, it did not train on
    assert max(r["step"] for r in metrics) <= 2 * EVERY + 1, metrics[-1]

    assert train.finished_steps(workdir / "checkpoints") == [EVERY]  # the last good one, restorable:
    early = weights(workdir, step=EVERY)
    for name, value in weights(reference, step=EVERY).items():
        np.testing.assert_array_equal(early[name], value, err_msg=name)

    filler.unlink()  # space freed: the same command resumes from step 20 and ends as if never stopped
    done = train_in(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from step {EVERY}" in done.stderr
    assert deterministic(workdir) == deterministic(reference)
    final, ref = weights(workdir), weights(reference)
    for name, value in ref.items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)
