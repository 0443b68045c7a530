"""``baobab.runs``: the public run-directory API, and that reading a run never writes to it."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from baobab import runs
from baobab.commands import run_train
from baobab.data import MnistData
from baobab.errors import CheckpointError
from baobab.experiment import CheckpointConfig, ExperimentConfig, TrainerConfig
from baobab.models import MLPConfig


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = ExperimentConfig(model=MLPConfig(hidden=(16,)), data=MnistData(batch_size=16, eval_batch_size=200),
                              trainer=TrainerConfig(workdir=str(workdir), steps=4),
                              checkpoint=CheckpointConfig(every=2, async_save=False))
    result = run_train(config)
    return workdir, result


def test_load_run_and_restore_model_leave_the_run_as_it_was(finished_run):
    workdir, result = finished_run
    before = tree_snapshot(workdir)
    config = runs.load_run(workdir)
    assert config.trainer.steps == 4 and config.model.hidden == (16,)
    model, step = runs.restore_model(config)
    assert step == 4
    for ours, final in zip(jax.tree.leaves(model), jax.tree.leaves(result.state.model)):
        np.testing.assert_array_equal(ours, final)
    early, step = runs.restore_model(config, step=2)
    assert step == 2 and not np.array_equal(early.head.weight, model.head.weight)
    assert tree_snapshot(workdir) == before  # nothing created, deleted, moved or touched


def test_a_missing_step_or_run_is_a_checkpoint_error(finished_run, tmp_path):
    workdir, _ = finished_run
    with pytest.raises(CheckpointError, match=r"no finished checkpoint at step 3; it has steps \[2, 4\]"):
        runs.restore_model(runs.load_run(workdir), step=3)
    with pytest.raises(Exception, match="is not a baobab run directory"):
        runs.load_run(tmp_path)
    assert not runs.has_checkpoint(tmp_path) and runs.has_checkpoint(workdir)


def test_a_moved_run_directory_reads_its_own_checkpoints(finished_run, tmp_path):
    import shutil

    workdir, result = finished_run
    moved = Path(shutil.copytree(workdir, tmp_path / "moved"))
    config = runs.load_run(moved)
    assert config.trainer.workdir == str(moved)
    shutil.rmtree(moved / "checkpoints" / "4")  # only the copy loses its newest step
    model, step = runs.restore_model(config)
    assert step == 2  # the original still has step 4: reading it would say 4
    assert runs.load_run(moved, [f"trainer.workdir={workdir}"]).trainer.workdir == str(workdir)
