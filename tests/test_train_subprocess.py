"""Real processes: SIGTERM/SIGINT, kill -9 mid-save, and two hosts on localhost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import test_train_support as S
from baobab import nn, train

SCRIPT = str(Path(S.__file__).resolve())
TIMEOUT = 240


def spawn(args: dict, *, devices: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, SCRIPT, json.dumps(args)], env=S.subprocess_env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> tuple[str, str]:
    return S.finish(p, timeout=TIMEOUT)


def result_of(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def wait_for_first_step(workdir: Path, p: subprocess.Popen) -> None:
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        if train.read_metrics(workdir):  # written right after step 1
            return
        if p.poll() is not None:
            pytest.fail(f"subprocess ended early:\n{p.stderr.read()[-3000:]}")
        time.sleep(0.05)
    p.kill()
    pytest.fail("no step was taken in time")


def restore(workdir: Path) -> train.Restored:
    mesh = train.make_mesh(devices=jax.devices()[:1])
    target = train.abstract_state(S.make_net(), S.optimizer(), mesh=mesh, rules=nn.DEFAULT_RULES)
    ckpt = train.Checkpointer(workdir / "checkpoints")
    try:
        return ckpt.restore(target)
    finally:
        ckpt.close()


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_exits_cleanly(tmp_path):
    p = spawn({"workdir": str(tmp_path), "steps": 100_000, "log_every": 1000, "slow_data": 0.02},
              devices=1)
    wait_for_first_step(tmp_path, p)
    p.send_signal(signal.SIGTERM)
    out, err = finish(p)
    assert p.returncode == 0, err[-3000:]
    result = result_of(out)
    assert result["preempted"] and 1 <= result["step"] < 100_000
    assert "Got SIGTERM" in err
    restored = restore(tmp_path)
    assert restored.step == result["step"] and int(restored.state.step) == result["step"]
    assert restored.config == {"test": True}


@pytest.mark.slow
def test_a_second_signal_exits_at_once(tmp_path):
    p = spawn({"workdir": str(tmp_path), "steps": 100_000, "log_every": 1000, "slow_data": 3.0},
              devices=1)
    wait_for_first_step(tmp_path, p)
    marker = tmp_path / "drawing"
    deadline = time.time() + TIMEOUT
    while int(marker.read_text() or 0) < 3 and time.time() < deadline:  # batch 3 is being drawn
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)  # the loop is inside a 3 s wait for the next batch
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = finish(p)
    assert p.returncode == -signal.SIGINT, err[-3000:]
    assert "exiting at once" in err


@pytest.mark.slow
def test_kill_9_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    p = spawn({"workdir": str(tmp_path), "steps": 6, "checkpoint_every": 2, "kill_at_save": 4},
              devices=1)
    out, err = finish(p)
    assert p.returncode == -9, err[-3000:]
    names = sorted(x.name for x in (tmp_path / "checkpoints").iterdir())
    leftovers = [n for n in names if n.startswith("4.orbax-checkpoint-tmp")]
    assert "2" in names and "4" not in names and leftovers, names

    with pytest.warns(train.CheckpointWarning, match=r"Incomplete checkpoint .*4\.orbax-checkpoint-tmp"):
        restored = restore(tmp_path)
    assert restored.step == 2
    assert not [x for x in (tmp_path / "checkpoints").iterdir() if "tmp" in x.name]  # cleaned up

    p = spawn({"workdir": str(tmp_path), "steps": 6, "checkpoint_every": 2}, devices=1)
    out, err = finish(p)
    assert p.returncode == 0, err[-3000:]
    assert result_of(out)["step"] == 6
    assert sorted(S.losses(tmp_path)) == [1, 2, 3, 4, 5, 6]  # lines past step 2 were replaced


@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices(tmp_path):
    common = {"steps": 4, "log_every": 1, "checkpoint_every": 4}
    port = S.free_port()
    hosts = [spawn({**common, "workdir": str(tmp_path / "two"), "processes": 2, "process_id": i,
                    "port": port}, devices=2) for i in range(2)]
    single = spawn({**common, "workdir": str(tmp_path / "one"), "as_shards": 2}, devices=4)
    outputs = [finish(p) for p in (*hosts, single)]
    for p, (out, err) in zip((*hosts, single), outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert [result_of(out)["process"] for out, _ in outputs] == [0, 1, 0]

    two, one = S.losses(tmp_path / "two"), S.losses(tmp_path / "one")
    assert sorted(two) == [1, 2, 3, 4]  # one writer (process 0): each step once
    np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-6)
    data = tmp_path / "two" / "checkpoints" / "4" / "data"
    assert sorted(f.name for f in data.glob("*.json")) == ["process_0-of-2.json", "process_1-of-2.json"]
    run_meta = json.loads((tmp_path / "two" / "checkpoints" / "4" / "run" / "metadata").read_text())
    assert run_meta["process_count"] == 2 and run_meta["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}


def test_the_environment_picks_the_launcher():
    assert train.distributed_environment({}) is None
    explicit = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert train.distributed_environment(explicit) == "explicit"
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0"}
    assert train.distributed_environment({**slurm, "SLURM_NTASKS": "4"}) == "slurm"
    assert train.distributed_environment({**slurm, "SLURM_NTASKS": "1"}) is None  # one task: no
    assert train.distributed_environment({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}) == "tpu"
    assert train.distributed_environment({"TPU_WORKER_HOSTNAMES": "localhost"}) is None
    assert train.initialize_distributed() == 1  # nothing in this environment asks for more
