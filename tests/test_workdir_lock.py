"""One trainer per workdir: a second refuses naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import pytest

import test_train_support as S
from baobab import train
from baobab.cli import main
from baobab.errors import WorkdirLockedError
from baobab.train import _workdir_lock
from baobab.train._workdir_lock import LOCK_FILE, WorkdirLock

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
HOLD = textwrap.dedent("""
    import sys, time
    from baobab.train._workdir_lock import WorkdirLock
    WorkdirLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path):
    """Another live process holding the lock of ``tmp_path``."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                         env=S.subprocess_env(1))
    assert p.stdout.readline().strip() == "held"
    yield p
    p.kill()
    p.wait()


def test_a_second_lock_is_refused_naming_pid_and_host(tmp_path, holder):
    with pytest.raises(WorkdirLockedError, match=rf"{tmp_path} is being trained by pid {holder.pid} on host "
                                                 rf"{socket.gethostname()}, started .*another trainer.workdir"):
        WorkdirLock(tmp_path).acquire()


def test_a_killed_holders_lock_is_taken_over_and_said(tmp_path, holder, caplog):
    holder.kill()  # kill -9: no cleanup ran, the record still names it
    holder.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="baobab.train"):
        lock = WorkdirLock(tmp_path).acquire()
    assert f"stale lock {tmp_path / LOCK_FILE} of pid {holder.pid}" in caplog.text
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: free, and no stale record for the next one


def test_another_hosts_recent_lock_is_respected_and_an_old_one_taken_over(tmp_path, monkeypatch):
    path = tmp_path / LOCK_FILE
    path.write_text(json.dumps({"pid": 4242, "host": "node-7", "started": "yesterday"}))
    with pytest.raises(WorkdirLockedError, match=r"pid 4242 on host node-7.*renewed \d+s ago"):
        WorkdirLock(tmp_path).acquire()
    old = time.time() - _workdir_lock.STALE_AFTER_S - 5
    os.utime(path, (old, old))
    WorkdirLock(tmp_path).acquire().release()


def test_the_lock_is_reentrant_within_a_process_and_freed_by_the_outermost(tmp_path):
    outer = WorkdirLock(tmp_path).acquire()
    inner = WorkdirLock(tmp_path).acquire()
    inner.release()
    assert another_process_tries(tmp_path).startswith("refused")
    outer.release()
    assert another_process_tries(tmp_path) == "acquired\n"


def test_the_holder_renews_its_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(_workdir_lock, "HEARTBEAT_S", 0.05)
    lock = WorkdirLock(tmp_path).acquire()
    path = tmp_path / LOCK_FILE
    os.utime(path, (0, 0))
    for _ in range(600):  # until the heartbeat touches it (every 0.05 s here), for at most 30 s
        if path.stat().st_mtime > 0:
            break
        time.sleep(0.05)
    assert path.stat().st_mtime > 0  # renewed: another host would not take it over as stale
    lock.release()


TRY = textwrap.dedent("""
    import sys
    from baobab.errors import WorkdirLockedError
    from baobab.train._workdir_lock import WorkdirLock
    try:
        WorkdirLock(sys.argv[1]).acquire()
        print("acquired")
    except WorkdirLockedError as e:
        print("refused:", e)
""")


def another_process_tries(workdir) -> str:
    return subprocess.run([sys.executable, "-c", TRY, str(workdir)], capture_output=True, text=True,
                          env=S.subprocess_env(1), timeout=120).stdout


def test_train_holds_the_lock_while_it_runs_and_frees_it_on_error(tmp_path):
    mesh = train.make_mesh(devices=jax.devices()[:1])
    seen = []

    def data():
        for batch in S.NumpyBatches():
            if not seen:  # checked from inside the running loop
                seen.append(another_process_tries(tmp_path))
            yield batch

    train.train(S.make_net(), S.loss_fn, S.optimizer(), data(), train.TrainerConfig(workdir=str(tmp_path), steps=2),
                mesh=mesh)
    assert seen[0].startswith(f"refused: {tmp_path} is being trained by pid {os.getpid()}")
    WorkdirLock(tmp_path).acquire().release()  # freed after a normal return
    with pytest.raises(ValueError, match="empty"):
        train.train(S.make_net(), S.loss_fn, S.optimizer(), iter([]), train.TrainerConfig(workdir=str(tmp_path / "b"),
                    steps=2), mesh=mesh)
    WorkdirLock(tmp_path / "b").acquire().release()  # and after an error


def test_baobab_train_on_a_held_workdir_exits_2_naming_the_holder(tmp_path, holder, capsys):
    code = main(["train", str(CONFIGS / "mnist_mlp.py"), f"trainer.workdir={tmp_path}", "trainer.steps=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("baobab train: error: ") and f"pid {holder.pid}" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]  # nothing else written
