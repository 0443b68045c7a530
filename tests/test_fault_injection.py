"""Kill a real ``baobab train`` at random moments, rerun the same command, get the same run.

Each trial starts ``baobab train configs/mnist_mlp.py`` (shortened by overrides) in a
fresh workdir, waits for one phase of the run, stops it there at a random moment
with a signal, then reruns the identical command until it finishes. The finished
run must equal an uninterrupted one bit for bit: every train record, the final
eval metrics and every weight of the final model.

Phases, seen from outside the process (as an operator's ``kill`` would be):

- ``startup``: before step 1 (data loading and prefetch threads, compiling);
- ``step``: between train steps, at a random step;
- ``save``: while an async checkpoint is being written (its ``*.orbax-checkpoint-tmp``
  directory exists);
- ``eval``: after the train record of an eval step, before its eval record;
- ``final-save``: while the last step's checkpoint is being written.

``kill -9`` gets every phase; SIGTERM and SIGINT (a clean stop: checkpoint at the
next step, exit 0) get random phases. CI runs 7 trials. The long mode runs 20
``kill -9`` trials plus SIGTERM and SIGINT ones and prints what each fault did::

    BAOBAB_FAULT_TRIALS=20 python -m pytest tests/test_fault_injection.py -s
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import test_train_support as S
from baobab import runs, train

REPO = Path(__file__).resolve().parents[1]
STEPS, EVERY, EVAL_EVERY = 120, 20, 30
COMMAND = [sys.executable, "-m", "baobab.cli", "train", str(REPO / "configs" / "mnist_mlp.py"),
           f"trainer.steps={STEPS}", f"checkpoint.every={EVERY}", f"trainer.eval_every={EVAL_EVERY}",
           "logging.log_every=5", "logging.progress=false"]
PHASES = ("startup", "step", "save", "eval", "final-save")
TIMEOUT = 300
LONG_TRIALS = int(os.environ.get("BAOBAB_FAULT_TRIALS", "0"))


def start(workdir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.Popen([*COMMAND, f"trainer.workdir={workdir}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def records(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return out


def in_flight(workdir: Path) -> list[str]:
    ckpts = workdir / "checkpoints"
    try:
        return [e.name for e in os.scandir(ckpts) if ".orbax-checkpoint-tmp" in e.name]
    except FileNotFoundError:
        return []


def deterministic(rows: list[dict]) -> list[dict]:
    """Metric records without wall-clock values (throughput, step and compile times)."""
    kept = [{k: v for k, v in r.items() if not k.startswith("perf/") and k not in (
        "train/examples_per_s", "train/step_time_s", "train/tokens_per_s")} for r in rows]
    return [r for r in kept if set(r) != {"step"}]  # a resume's first-step timing record


def final_model(workdir: Path) -> dict[str, np.ndarray]:
    from baobab import nn

    model, step = runs.restore_model(runs.load_run(workdir))
    assert step == STEPS
    return {k: np.asarray(v) for k, v in nn.state_dict(model).items()}


def wait_for_phase(p: subprocess.Popen, workdir: Path, phase: str, rng: random.Random) -> str:
    """Block until ``p`` is in ``phase`` (at a random point of it); returns what was seen."""
    deadline = time.time() + TIMEOUT
    target_step = rng.randrange(2, STEPS - 2)
    target_save = rng.choice(range(EVERY, STEPS, EVERY))  # which save, which eval: any of them
    target_eval = rng.choice(range(EVAL_EVERY, STEPS, EVAL_EVERY))
    first_wait = rng.uniform(0.5, 3.0)
    t0 = time.time()
    while time.time() < deadline:
        if p.poll() is not None:
            return "finished before the phase was seen"
        if phase in ("save", "final-save"):
            rows, steps = [], []  # only the checkpoint folder is watched: poll it as fast as we can
        else:
            rows = records(workdir)
            steps = [r["step"] for r in rows if "train/loss" in r]
        if phase == "startup" and time.time() - t0 > first_wait:
            return f"startup, {time.time() - t0:.1f}s in" if not steps else f"step {steps[-1]} (startup was over)"
        if phase == "step" and steps and steps[-1] >= target_step:
            time.sleep(rng.uniform(0, 0.05))
            return f"after step {steps[-1]}"
        if phase in ("save", "final-save"):
            first = target_save if phase == "save" else STEPS  # that save, or a later one if it was missed
            tmp = [n for n in in_flight(workdir) if int(n.split(".")[0]) >= first]
            if tmp:
                time.sleep(rng.uniform(0, 0.003))
                return f"saving {sorted(tmp)}"
        if phase == "eval" and steps:
            evals = {r["step"] for r in rows if any(k.startswith("eval/") for k in r)}
            pending = [s for s in steps if s % EVAL_EVERY == 0 and s not in evals and target_eval <= s < STEPS]
            if pending:
                return f"eval at step {pending[-1]}"
        time.sleep(0.0005 if phase in ("save", "final-save") else 0.002)
    p.kill()
    pytest.fail(f"phase {phase} not reached in {TIMEOUT}s")


def finish(p: subprocess.Popen) -> str:
    return S.finish(p, timeout=TIMEOUT, what="baobab train")[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    p = start(workdir)
    err = finish(p)
    assert p.returncode == 0, err[-3000:]
    assert err.count("Compiled the train step") == 1, err[-3000:]  # each line once (no absl root handler copy)
    return deterministic(records(workdir)), final_model(workdir)


def trials() -> list[tuple[str, str]]:
    if LONG_TRIALS:
        kills = [(PHASES[i % len(PHASES)], "SIGKILL") for i in range(LONG_TRIALS)]
        return kills + [(phase, sig) for sig in ("SIGTERM", "SIGINT") for phase in PHASES]
    return [(phase, "SIGKILL") for phase in PHASES] + [("step", "SIGTERM"), ("save", "SIGINT")]


REPORT: list[dict] = []


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(len(trials())))
def test_a_run_stopped_at_a_random_moment_resumes_to_the_same_result(trial, reference, tmp_path):
    phase, sig = trials()[trial]
    rng = random.Random(1000 + trial)
    ref_rows, ref_model = reference
    workdir = tmp_path / "run"

    p = start(workdir)
    seen = wait_for_phase(p, workdir, phase, rng)
    assert p.poll() is None, f"the run ended before its {phase} phase was seen: the trial would test nothing"
    p.send_signal(getattr(signal, sig))
    err = finish(p)
    stopped = p.returncode
    if sig == "SIGKILL":
        assert stopped == -signal.SIGKILL, err[-3000:]
    elif phase != "startup":  # the loop's handler is installed: checkpoint at the next step, exit 0
        assert stopped == 0, err[-3000:]
    left = sorted(os.listdir(workdir / "checkpoints")) if (workdir / "checkpoints").exists() else []

    p = start(workdir)  # the same command again
    err = finish(p)
    assert p.returncode == 0, err[-3000:]
    resumed = next((line.split("resumed from ")[-1].split(" (")[0] for line in err.splitlines()
                    if "resumed from" in line), "")
    REPORT.append({"trial": trial, "signal": sig, "phase": phase, "seen": seen, "exit": stopped,
                   "left": left, "resumed": resumed or ("nothing: the run had finished" if "is already complete" in err
                                           else "the start (no checkpoint)")})
    print(f"\ntrial {trial}: {sig} in {phase} ({seen}); exit {stopped}; checkpoints left {left}; "
          f"rerun resumed from {REPORT[-1]['resumed']}")

    assert deterministic(records(workdir)) == ref_rows  # every record, the final eval included
    model = final_model(workdir)
    assert model.keys() == ref_model.keys()
    for name, value in model.items():
        np.testing.assert_array_equal(value, ref_model[name], err_msg=name)
    assert train.finished_steps(workdir / "checkpoints")[-1] == STEPS
    assert not in_flight(workdir)
