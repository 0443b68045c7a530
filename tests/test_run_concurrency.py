"""Reading a run never changes it, and reading it while it trains changes nothing either (#17).

Both tests drive the ``baobab`` command on a small character-level GPT
(configs/char_lm.py, shrunk by overrides): ``eval``, ``generate`` and ``export hf`` are
the readers, ``train`` (always a subprocess) the writer.

* A run directory is the same after the readers ran on it through ``baobab.cli.main``
  in this process (every name, size and mtime_ns), including an in-flight orbax temp directory planted in its checkpoints/:
  a reader must not clean it up; only the trainer may, and it may still be writing it.
* The same run trained alone and trained while reader processes run the three commands
  against it in a loop ends with the same metrics and the same weights, bit for bit, at
  every kept checkpoint, with no temp or skipped checkpoint left; every read of a run
  that had a checkpoint succeeded (an eval gives the trainer's own eval of that step),
  and a read before the first checkpoint failed with the documented one-line error.

Runtime: 127 s on 2 cores at load average 9 (each trainer's start-up and compile is ~30 s of it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from baobab import cli, runs
from baobab import train as btrain
from baobab.experiment import model_constructor

REPO = Path(__file__).resolve().parents[1]
BAOBAB = [sys.executable, "-m", "baobab.cli"]
PROMPT = "The "
STEPS = 1200
EVERY = 100  # checkpoints and evals: every checkpoint's eval is in metrics.jsonl
TINY_LM = [f"trainer.steps={STEPS}", f"trainer.eval_every={EVERY}", f"checkpoint.every={EVERY}",
           "model.num_layers=1", "model.hidden_size=32", "model.num_heads=2", "model.max_len=32",
           "data.seq_len=32", "data.batch_size=8", "schedule.warmup_steps=10", "logging.log_every=50",
           "logging.progress=false"]
# What the trainer measures with a clock; every other metric is a function of the config.
WALL_CLOCK = {"train/examples_per_s", "train/step_time_s", "train/tokens_per_s"}
NOT_READY = ("is not a baobab run directory", "no checkpoint to load; train the run first")


def user_env() -> dict[str, str]:
    """A user's environment: one CPU device (conftest's 8 fake devices are for this process)."""
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def train_command(workdir: Path) -> list[str]:
    return [*BAOBAB, "train", str(REPO / "configs" / "char_lm.py"), f"trainer.workdir={workdir}", *TINY_LM]


def reader_commands(run: Path, out: Path) -> list[list[str]]:
    return [["eval", str(run)], ["generate", str(run), "--prompt", PROMPT, "--steps", "8"],
            ["export", "hf", str(run), str(out)]]


def tree_snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every file and folder under ``root`` (and ``root`` itself): (is a folder, size, mtime_ns)."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in [root, *sorted(root.rglob("*"))]}


def deterministic(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in WALL_CLOCK and not k.startswith("perf/")}


def metric_lines(workdir: Path) -> list[dict]:
    return [deterministic(json.loads(line)) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def models_by_step(workdir: Path) -> dict[int, list[np.ndarray]]:
    """Every finished checkpoint's model, read with ``train.read_model``, as numpy leaves."""
    config = runs.load_run(workdir)
    target = jax.eval_shape(model_constructor(config), jax.random.key(0))
    directory = workdir / runs.CHECKPOINTS
    out = {}
    for step in btrain.finished_steps(directory):
        model, read = btrain.read_model(directory, target, step=step, ema=config.trainer.ema_decay is not None)
        assert read == step
        out[step] = [np.asarray(x) for x in jax.tree.leaves(model)]
    return out


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args[:4]} timed out\n{err[-3000:]}")


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Run A: the tiny LM trained with nothing else reading it. (workdir, last stdout line)."""
    workdir = tmp_path_factory.mktemp("alone") / "run"
    proc = subprocess.Popen(train_command(workdir), env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = finish(proc)
    assert proc.returncode == 0, err[-3000:]
    return workdir, json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Read-only commands leave the run directory exactly as it was
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_eval_generate_and_export_leave_the_run_directory_untouched(alone, tmp_path, capsys):
    workdir, _ = alone
    steps = btrain.finished_steps(workdir / runs.CHECKPOINTS)
    assert steps[-1] == STEPS
    # What a trainer killed mid-save leaves (or one still saving): only the trainer may remove it.
    in_flight = workdir / runs.CHECKPOINTS / f"{STEPS + EVERY}.orbax-checkpoint-tmp-123"
    (in_flight / "state").mkdir(parents=True)
    (in_flight / "state" / "half_written").write_bytes(b"\0" * 100)
    try:
        before = tree_snapshot(workdir)
        printed = []
        for args in reader_commands(workdir, tmp_path / "hf"):  # the CLI's own entry point, in this process
            assert cli.main(args) == 0, capsys.readouterr().err[-2000:]
            printed.append(capsys.readouterr().out)
        assert tree_snapshot(workdir) == before  # nothing created, deleted, moved, written or touched
        assert (in_flight / "state" / "half_written").stat().st_size == 100
    finally:
        shutil.rmtree(in_flight)
    ev_out, gen_out, ex_out = printed
    final_eval = [r for r in metric_lines(workdir) if "eval/loss" in r][-1]
    got = json.loads(ev_out.strip().splitlines()[-1])  # on this process's 8 devices: sums in another order
    assert got == {"step": STEPS, "loss": pytest.approx(final_eval["eval/loss"], rel=1e-6),
                   "token_accuracy": pytest.approx(final_eval["eval/token_accuracy"], rel=1e-6)}
    assert gen_out.startswith(PROMPT) and len(gen_out) > len(PROMPT) + 1, gen_out
    assert "model.safetensors" in json.loads(ex_out.strip().splitlines()[-1])["files"]
    assert (tmp_path / "hf" / "model.safetensors").stat().st_size > 0


# ---------------------------------------------------------------------------
# Readers against a run while it trains
# ---------------------------------------------------------------------------

# One reader process per command, each running it through ``baobab.cli.main`` in a loop
# until STOP appears, then once more on the finished run; one JSON line per call. A loop
# in one process, not a process per call, so that a read costs a second and not an
# import of JAX; three at once, so that each command reads checkpoints of all ages.
READER_LOOP = r"""
import contextlib, io, json, sys, time
from pathlib import Path
from baobab import cli, runs

run, stop, log = map(Path, sys.argv[1:4])
command = json.loads(sys.argv[4])
round = 0
while True:
    last = stop.exists()
    args = [a.replace("{round}", str(round)) for a in command]
    started_while_training = not stop.exists()
    had_checkpoint = runs.has_checkpoint(run)
    stdout, stderr = io.StringIO(), io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = cli.main(args)
    with log.open("a") as f:
        f.write(json.dumps({"command": args[0], "rc": rc, "had_checkpoint": had_checkpoint, "last": last,
                            "started_while_training": started_while_training, "stdout": stdout.getvalue(),
                            "stderr": stderr.getvalue()[-2000:], "seconds": time.monotonic() - start}) + "\n")
    round += 1
    if rc:  # no checkpoint yet: leave the cores to the trainer for a moment
        time.sleep(0.5)
    if last:
        break
"""


@pytest.mark.slow
def test_readers_against_a_training_run_change_nothing(alone, tmp_path):
    workdir_a, final_a = alone
    workdir = tmp_path / "run"
    stop = tmp_path / "stop"
    commands = reader_commands(workdir, tmp_path / "hf_{round}")
    logs = [tmp_path / f"reads_{args[0]}.jsonl" for args in commands]
    readers = [subprocess.Popen([sys.executable, "-c", READER_LOOP, str(workdir), str(stop), str(log),
                                 json.dumps(args)], env=user_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for args, log in zip(commands, logs, strict=True)]
    trainer = subprocess.Popen(train_command(workdir), env=user_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out, err = finish(trainer)
    finally:
        stop.touch()  # the readers' last round reads the finished run
    reader_errs = [finish(reader)[1] for reader in readers]
    assert trainer.returncode == 0, err[-3000:]
    for reader, reader_err in zip(readers, reader_errs, strict=True):
        assert reader.returncode == 0, reader_err[-3000:]

    # The run is the run trained alone: every deterministic metric, and every kept checkpoint (the
    # newest checkpoint.keep = 3: the trainer deleted the older ones while they were read), bit for bit.
    assert deterministic(json.loads(out.strip().splitlines()[-1])) == deterministic(final_a)
    assert metric_lines(workdir) == metric_lines(workdir_a)
    ours, theirs = models_by_step(workdir), models_by_step(workdir_a)
    assert sorted(ours) == sorted(theirs) and max(ours) == STEPS, (sorted(ours), sorted(theirs))
    for step, leaves in ours.items():
        assert len(leaves) == len(theirs[step])
        for x, y in zip(leaves, theirs[step], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=f"step {step}")
    left = [p.name for p in (workdir / runs.CHECKPOINTS).iterdir() if not p.name.isdigit()]
    assert left == [] and not (workdir / "checkpoints_skipped").exists(), left

    # Every read of a run with a checkpoint worked; one before it said why, in one line.
    reads = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    evals_a = {r["step"]: r for r in metric_lines(workdir_a) if "eval/loss" in r}
    for r in reads:
        if r["rc"] != 0:
            assert not r["had_checkpoint"] and r["rc"] == 2, r
            assert any(why in r["stderr"] for why in NOT_READY), r
        elif r["command"] == "eval":  # the metrics of the checkpoint it read, as the trainer measured them
            got = json.loads(r["stdout"].strip().splitlines()[-1])
            want = evals_a[got["step"]]
            assert got == {"step": got["step"], "loss": want["eval/loss"],
                           "token_accuracy": want["eval/token_accuracy"]}, (got, want)
        elif r["command"] == "generate":
            assert r["stdout"].startswith(PROMPT) and len(r["stdout"]) > len(PROMPT) + 1, r
        else:
            assert "model.safetensors" in json.loads(r["stdout"].strip().splitlines()[-1])["files"], r
    during = [r for r in reads if r["rc"] == 0 and r["started_while_training"]]
    assert {r["command"] for r in during} == {"eval", "generate", "export"}, [(r["command"], r["rc"]) for r in reads]
    mid_steps = {json.loads(r["stdout"].strip().splitlines()[-1])["step"] for r in during if r["command"] == "eval"}
    assert min(mid_steps) < STEPS, mid_steps  # it read a checkpoint of a run still training
    final = [r for r in reads if r["last"]]
    assert [r["rc"] for r in final] == [0, 0, 0], final
