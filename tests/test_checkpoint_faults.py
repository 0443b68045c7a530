"""Restore semantics: only a corrupt checkpoint is skipped; any other failure is retried or raised.

And nothing but a skip changes the checkpoint directory: an I/O error, a permission
or an out-of-memory during a restore leaves every step where it was.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import test_train_support as S
from baobab import nn, train
from baobab.errors import CheckpointReadError
from baobab.train import _checkpoint
from baobab.train._checkpoint_faults import classify


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A directory with checkpoints at steps 1 and 2 (step 2's weights differ), and a restore target."""
    mesh = train.make_mesh(devices=jax.devices()[:1])
    directory = tmp_path_factory.mktemp("ckpts") / "checkpoints"
    state = train.create_state(S.make_net(), S.optimizer(), mesh=mesh, rules=nn.DEFAULT_RULES)
    ckpt = train.Checkpointer(directory, async_save=False)
    ckpt.save(1, state, config={"n": 1})
    ckpt.save(2, state.replace(step=state.step + 2), config={"n": 2})
    ckpt.close()
    target = train.abstract_state(S.make_net(), S.optimizer(), mesh=mesh, rules=nn.DEFAULT_RULES)
    return directory, target


@pytest.fixture
def run_dir(saved, tmp_path):
    directory, target = saved
    copy = tmp_path / "run" / "checkpoints"
    shutil.copytree(directory, copy)
    return copy, target


@pytest.fixture(autouse=True)
def no_retry_pauses(monkeypatch):
    monkeypatch.setattr(_checkpoint, "READ_RETRIES", (0.0, 0.0, 0.0))


def failing_reads(ckpt: train.Checkpointer, error: BaseException, times: int) -> list[int]:
    """Make the manager's next ``times`` reads raise ``error``; returns a list counting the reads."""
    real, calls = ckpt.manager.restore, []

    def restore(step, *a, **kw):
        calls.append(step)
        if len(calls) <= times:
            raise error
        return real(step, *a, **kw)

    ckpt.manager.restore = restore
    return calls


def flip_a_byte_of_the_arrays(step_dir: Path) -> None:
    for f in (step_dir / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0xFF
            f.write_bytes(bytes(data))


def test_a_transient_io_error_is_retried_and_the_newest_step_restored(run_dir, caplog):
    directory, target = run_dir
    before = tree_snapshot(directory.parent)
    ckpt = train.Checkpointer(directory)
    calls = failing_reads(ckpt, OSError(errno.EIO, "Input/output error"), times=2)
    with caplog.at_level(logging.WARNING, logger="baobab.train"):
        restored = ckpt.restore(target)
    ckpt.close()
    assert restored.step == 2 and int(restored.state.step) == 2 and restored.config == {"n": 2}
    assert calls[:3] == [2, 2, 2]  # the same step, read again
    assert caplog.text.count("retrying") == 2
    assert tree_snapshot(directory.parent) == before


@pytest.mark.parametrize("error, tries", [
    (OSError(errno.EIO, "Input/output error"), 4),  # persistent: retried, then raised
    (PermissionError(errno.EACCES, "Permission denied"), 1),
    (MemoryError(), 1),
    (ValueError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.0GiB"), 1),
], ids=["eio", "permission", "memory", "xla-oom"])
def test_other_failures_fail_loudly_and_move_nothing(run_dir, error, tries):
    directory, target = run_dir
    before = tree_snapshot(directory.parent)
    ckpt = train.Checkpointer(directory)
    calls = failing_reads(ckpt, error, times=100)
    with pytest.raises(CheckpointReadError, match=rf"{directory / '2'} \(step 2\) could not be read.*"
                                                  r"not a damaged checkpoint, so it was not skipped"):
        ckpt.restore(target)
    ckpt.close()
    assert len(calls) == tries and set(calls) == {2}  # step 1 was never tried: no silent older resume
    assert tree_snapshot(directory.parent) == before
    assert not (directory.parent / "checkpoints_skipped").exists()


def test_a_bit_flip_is_corrupt_skipped_named_and_kept_aside(run_dir, caplog):
    directory, target = run_dir
    flip_a_byte_of_the_arrays(directory / "2")
    files_of_2 = sorted(str(p.relative_to(directory / "2")) for p in (directory / "2").rglob("*"))
    ckpt = train.Checkpointer(directory)
    with caplog.at_level(logging.WARNING, logger="baobab.train"), \
            pytest.warns(train.CheckpointWarning, match=r"checkpoints/2 \(step 2\) is corrupt .*DATA_LOSS.*checksum"):
        restored = ckpt.restore(target)
    ckpt.close()
    assert restored.step == 1
    aside = directory.parent / "checkpoints_skipped" / "2"
    assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*")) == files_of_2  # kept whole
    assert f"to {aside}" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "missing-file", "missing-item", "json"])
def test_each_kind_of_corruption_is_classified_corrupt(run_dir, damage):
    directory, target = run_dir
    state = directory / "2" / "state"
    arrays = [f for f in state.rglob("*") if f.is_file() and f.parent.name == "d"]
    if damage == "truncated":
        for f in arrays:
            f.write_bytes(f.read_bytes()[:10])
    elif damage == "missing-file":
        for f in arrays:
            f.unlink()
    elif damage == "missing-item":
        shutil.rmtree(state)
    else:
        (state / "_METADATA").write_text("{not json")
    ckpt = train.Checkpointer(directory)
    with pytest.raises(Exception) as info:
        ckpt._restore_step(2, target, None)
    assert classify(info.value) == "corrupt", repr(info.value)[:300]
    with pytest.warns(train.CheckpointWarning, match=r"\(step 2\) is corrupt"):
        assert ckpt.restore(target).step == 1
    ckpt.close()


def test_a_failing_config_read_is_not_taken_for_corruption(run_dir):
    directory, _ = run_dir
    ckpt = train.Checkpointer(directory)
    failing_reads(ckpt, PermissionError(errno.EACCES, "Permission denied"), times=100)
    with pytest.raises(CheckpointReadError, match="step 2"):
        ckpt.newest_config()
    ckpt.close()
