"""The loop: exact resume, what a user sees, NaN handling, bad checkpoints, resharding."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import test_train_support as S
from baobab import nn, train
from baobab.errors import CheckpointError

RULES = nn.DEFAULT_RULES


@pytest.fixture(scope="module")
def one_device():
    return train.make_mesh(devices=jax.devices()[:1])


def run(workdir: Path, steps: int, mesh, data=None, *, log_every=1, checkpoint_every=0, progress=False,
        ema_decay=0.9, **kw) -> train.TrainResult:
    data = S.grain_batches() if data is None else data
    return train.train(S.make_net(), S.loss_fn, S.optimizer(), data,
                       train.TrainerConfig(workdir=str(workdir), steps=steps, ema_decay=ema_decay),
                       checkpoint=train.CheckpointConfig(every=checkpoint_every),
                       logging=train.LoggingConfig(log_every=log_every, progress=progress),
                       mesh=mesh, config={"steps": steps}, **kw)


def params(result: train.TrainResult) -> dict[str, np.ndarray]:
    return jax.device_get(nn.state_dict(result.state.model))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, one_device):
    """8 steps in one go, checkpoints at 4, 6, 8: the reference for the resumes below."""
    workdir = tmp_path_factory.mktemp("reference")
    result = run(workdir, 8, one_device, checkpoint_every=2)
    return S.losses(workdir), params(result), workdir


def copy_of(workdir: Path, tmp_path: Path) -> Path:
    """A copy of a finished run directory, to damage or resume without touching the original."""
    return Path(shutil.copytree(workdir, tmp_path / "run"))


# --------------------------------------------------------------------------------------
# Exact resume
# --------------------------------------------------------------------------------------


def test_resume_is_bit_identical_with_a_grain_iterator(tmp_path, one_device, uninterrupted):
    ref_losses, ref_params, _ = uninterrupted
    first = run(tmp_path, 3, one_device)
    assert first.step == 3 and not first.preempted
    second = run(tmp_path, 8, one_device, data=S.grain_batches())  # a fresh iterator, at 0
    assert second.step == 8
    assert S.losses(tmp_path) == ref_losses  # every step's loss, bit for bit (data order too)
    for path, value in params(second).items():
        np.testing.assert_array_equal(value, ref_params[path], err_msg=path)


@pytest.mark.slow
def test_resume_is_bit_identical_with_a_plain_stateful_iterator(tmp_path, one_device):
    def steps(workdir, n):
        return run(workdir, n, one_device, data=S.NumpyBatches())

    steps(tmp_path / "a", 6)
    steps(tmp_path / "b", 2)
    steps(tmp_path / "b", 6)
    assert S.losses(tmp_path / "b") == S.losses(tmp_path / "a")
    saved = json.loads((tmp_path / "b" / "checkpoints" / "2" / "data" / "process_0-of-1.json").read_text())
    assert saved == {"index": 2, "seed": 0}  # JSON, through grain's orbax handler
    with pytest.raises(ValueError, match="refused the saved position.*seed 0"):
        run(tmp_path / "b", 8, one_device, data=S.NumpyBatches(seed=1))  # not skipped as corrupt


@pytest.mark.slow
def test_resume_is_bit_identical_with_a_baobab_data_loader(tmp_path, one_device):
    """baobab.data loaders: JSON-bytes state, already-global jax.Array batches."""
    from baobab import data

    x, y = S.dataset()
    loader = data.train_loader(data.from_arrays({"x": x, "y": y}), batch_size=32, seed=0,
                               mesh=one_device, rules=RULES)
    for workdir, steps in ((tmp_path / "a", 5), (tmp_path / "b", 2), (tmp_path / "b", 5)):
        with iter(loader) as batches:
            run(workdir, steps, one_device, data=batches)
    assert S.losses(tmp_path / "b") == S.losses(tmp_path / "a")


@pytest.mark.slow
def test_an_iterator_without_state_is_fast_forwarded(tmp_path, one_device):
    def plain(n):  # no get_state: the loop skips the batches already used
        it = S.NumpyBatches()
        return (next(it) for _ in range(n))

    run(tmp_path / "a", 4, one_device, data=plain(4))
    run(tmp_path / "b", 2, one_device, data=plain(4))
    with pytest.warns(train.CheckpointWarning, match="skipping 2 batches"):
        run(tmp_path / "b", 4, one_device, data=plain(4))
    assert S.losses(tmp_path / "b") == S.losses(tmp_path / "a")


# --------------------------------------------------------------------------------------
# What a user sees
# --------------------------------------------------------------------------------------


class Recording:
    """Wraps an iterator and records XLA compilations from the second batch on."""

    def __init__(self, inner):
        self.inner, self.drawn = inner, 0
        self.compiles = S.count_compiles()

    def __iter__(self):
        return self

    def __next__(self):
        self.drawn += 1
        if self.drawn == 2:
            self.compiles.__enter__()
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def test_metrics_eval_profile_and_progress(tmp_path, one_device, capsys, caplog):
    data = Recording(S.grain_batches())
    with caplog.at_level(logging.INFO, logger="baobab.train"):
        result = train.train(S.make_net(), S.loss_fn, S.optimizer(), data,
                             train.TrainerConfig(workdir=str(tmp_path), steps=6, eval_every=3),
                             checkpoint=train.CheckpointConfig(every=0),
                             logging=train.LoggingConfig(log_every=2, profile_steps=(2, 3), progress=True),
                             tokens_key="x", eval_fn=S.eval_fn, eval_data=lambda: S.eval_batches(100, 32),
                             mesh=one_device)
    data.compiles.__exit__()
    # The eval step compiles at the first eval; the train step never again.
    assert "train_step" not in data.compiles.names, data.compiles.names

    records = train.read_metrics(tmp_path)
    # Train metrics are recorded at log_every multiples and the last step only (not at evals).
    assert [r["step"] for r in records if "train/loss" in r] == [2, 4, 6]
    assert [r["step"] for r in records if "eval/accuracy" in r] == [3, 6]
    first = records[0]
    assert first["step"] == 1 and first["perf/compile_s"] > 0 and first["perf/first_step_s"] > 0
    last = [r for r in records if "train/loss" in r][-1]
    for key in ("train/learning_rate", "train/examples_per_s", "train/tokens_per_s",
                "train/grad_norm", "train/accuracy"):
        assert math.isfinite(last[key]), key
    assert last["train/tokens_per_s"] == pytest.approx(last["train/examples_per_s"] * S.D_IN)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))

    # Eval is exact over the 100 examples, the 28 padded rows masked out.
    x, y = S.dataset()
    logits = np.asarray(nn.eval_mode(result.state.model)(x[:100]))
    assert result.eval_metrics["eval/accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == y[:100]))

    assert "loss" in capsys.readouterr().err  # the tqdm bar
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "Compiled the train step" in messages and "First step took" in messages


def test_eval_at_start_measures_the_starting_model_once(tmp_path, one_device):
    settings = dict(checkpoint=train.CheckpointConfig(every=0), logging=train.LoggingConfig(log_every=2))
    start_model = S.make_net()
    x, y = S.dataset()
    before = np.mean(np.asarray(nn.eval_mode(start_model)(x[:100])).argmax(-1) == y[:100])
    first = train.train(start_model, S.loss_fn, S.optimizer(), S.grain_batches(),
                        train.TrainerConfig(workdir=str(tmp_path), steps=3, eval_at_start=True), **settings,
                        eval_fn=S.eval_fn, eval_data=lambda: S.eval_batches(100, 32), mesh=one_device)
    assert first.start_eval_metrics["eval/accuracy"] == pytest.approx(before)
    assert first.eval_metrics["eval/loss"] < first.start_eval_metrics["eval/loss"]  # it trained in between
    resumed = train.train(S.make_net(), S.loss_fn, S.optimizer(), S.grain_batches(),
                          train.TrainerConfig(workdir=str(tmp_path), steps=5, eval_at_start=True), **settings,
                          eval_fn=S.eval_fn, eval_data=lambda: S.eval_batches(100, 32), mesh=one_device)
    assert resumed.start_eval_metrics == {}  # a resumed run does not start over
    evals = [r["step"] for r in train.read_metrics(tmp_path) if "eval/accuracy" in r]
    assert evals == [0, 3, 5]


def test_plain_log_lines_when_not_interactive(tmp_path, one_device, caplog):
    with caplog.at_level(logging.INFO, logger="baobab.train"):
        run(tmp_path, 2, one_device, log_every=1, progress=None)  # stderr is not a tty here
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == 2 and "loss" in lines[-1] and "eta" in lines[-1]


# --------------------------------------------------------------------------------------
# Non-finite losses and gradients
# --------------------------------------------------------------------------------------


def poisoned(step: int):
    """Batches with a ``poison`` flag set on the 1-based ``step``."""
    it = S.grain_batches()
    i = 0
    while True:
        i += 1
        b = next(it)
        yield dict(b, poison=np.full(len(b["y"]), float(i == step), np.float32))


def poisoned_loss(model, batch, key):
    loss, metrics = S.loss_fn(model, batch, key)
    bad = jax.numpy.where(batch["poison"][0] > 0, jax.numpy.nan, 0.0)
    return loss + bad * jax.numpy.sum(model.head.weight), metrics


def test_nan_stops_the_run_naming_the_parameter_and_step(tmp_path, one_device):
    with pytest.raises(train.NonFiniteError, match=r"Step 4: .*head\.weight") as info:
        train.train(S.make_net(), poisoned_loss, S.optimizer(), poisoned(4),
                    train.TrainerConfig(workdir=str(tmp_path), steps=10), checkpoint=train.CheckpointConfig(every=3),
                    logging=train.LoggingConfig(log_every=10, progress=False), mesh=one_device)
    assert info.value.step == 4 and info.value.path == "head.weight"
    assert info.value.last_checkpoint == 3
    ckpt = train.Checkpointer(tmp_path / "checkpoints")
    assert ckpt.all_steps() == [3]  # nothing after the bad step was saved
    ckpt.close()


def test_nan_skip_policy_drops_the_step_and_goes_on(tmp_path, one_device):
    result = train.train(S.make_net(), poisoned_loss, S.optimizer(), poisoned(4),
                         train.TrainerConfig(workdir=str(tmp_path), steps=6, on_nonfinite="skip"),
                         checkpoint=train.CheckpointConfig(every=0),
                         logging=train.LoggingConfig(log_every=3, progress=False), mesh=one_device)
    assert result.step == 6 and result.skipped_steps == [4]
    assert all(np.isfinite(v).all() for v in params(result).values())
    assert train.read_metrics(tmp_path)[-1]["train/skipped_steps"] == 1


# --------------------------------------------------------------------------------------
# Bad checkpoints, refusals, resharding
# --------------------------------------------------------------------------------------


def corrupt(step_dir: Path, item: str = "state") -> None:
    """Truncate every file of one item of a checkpoint (the arrays, or the data position)."""
    for f in (step_dir / item).rglob("*"):
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(b"{" if item == "data" else b"")


@pytest.mark.parametrize("item", ["state", "data"])
def test_a_corrupt_checkpoint_is_skipped_with_a_warning(tmp_path, one_device, uninterrupted, item):
    ref_losses, ref_params, reference = uninterrupted
    workdir = copy_of(reference, tmp_path)
    corrupt(workdir / "checkpoints" / "8", item)
    with pytest.warns(train.CheckpointWarning, match=str(workdir / "checkpoints" / "8")):
        result = run(workdir, 8, one_device, checkpoint_every=2)
    assert (workdir / "checkpoints_skipped" / "8").is_dir()
    assert result.step == 8
    assert S.losses(workdir) == ref_losses  # resumed from step 6, then exactly as before
    for path, value in params(result).items():
        np.testing.assert_array_equal(value, ref_params[path], err_msg=path)
    ckpt = train.Checkpointer(workdir / "checkpoints")
    assert ckpt.all_steps() == [4, 6, 8]
    ckpt.close()


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path, one_device, uninterrupted):
    workdir = copy_of(uninterrupted[2], tmp_path)
    for step in ("4", "6", "8"):
        corrupt(workdir / "checkpoints" / step)
    with pytest.warns(train.CheckpointWarning), pytest.raises(CheckpointError, match="None of the 3"):
        run(workdir, 10, one_device)


def test_resume_false_refuses_a_workdir_with_checkpoints(tmp_path, one_device, uninterrupted):
    workdir = copy_of(uninterrupted[2], tmp_path)
    with pytest.raises(ValueError, match="resume=False"):
        run(workdir, 10, one_device, resume=False)


def test_a_process_count_mismatch_is_refused(tmp_path, one_device, uninterrupted):
    workdir = copy_of(uninterrupted[2], tmp_path)
    meta = workdir / "checkpoints" / "8" / "run" / "metadata"
    meta.write_text(meta.read_text().replace('"process_count": 1', '"process_count": 2'))
    with pytest.raises(ValueError, match="written by 2 processes"):
        run(workdir, 10, one_device)


def test_restore_onto_a_different_mesh_without_pickle(tmp_path, monkeypatch):
    import pickle

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle was used in the checkpoint path")

    for name in ("dump", "dumps", "load", "loads"):
        monkeypatch.setattr(pickle, name, no_pickle)
    opt = S.optimizer()
    fsdp8 = train.make_mesh(train.MeshConfig(data=1, fsdp=8))
    state = train.create_state(S.make_net(), opt, mesh=fsdp8, rules=RULES, ema=True)
    saved = [S.raw(x) for x in jax.tree.leaves(state)]
    batches = S.grain_batches()
    next(batches)
    ckpt = train.Checkpointer(tmp_path)
    ckpt.save(0, state, data_iterator=batches, config={"mesh": "fsdp=8"})
    ckpt.wait()

    dp2_tp4 = train.make_mesh(train.MeshConfig(data=2, fsdp=1, tensor=4))
    target = train.abstract_state(S.make_net(), opt, mesh=dp2_tp4, rules=RULES, ema=True)
    fresh = S.grain_batches()
    restored = ckpt.restore(target, data_iterator=fresh)
    ckpt.close()
    assert fresh.get_state() == batches.get_state() and restored.config == {"mesh": "fsdp=8"}
    for a, b in zip(saved, jax.tree.leaves(restored.state), strict=True):
        np.testing.assert_array_equal(a, S.raw(b))  # bit for bit
    up = restored.state.model.blocks.layer.up.weight  # (layers, embed, mlp): mlp over tensor=4
    assert up.sharding.mesh.shape == dp2_tp4.shape
    assert up.sharding.shard_shape(up.shape) == (2, 16, 8)
    for x, t in zip(jax.tree.leaves(restored.state), jax.tree.leaves(target), strict=True):
        assert x.sharding == t.sharding


def test_preservation_keeps_the_last_n_plus_every_kth(tmp_path):
    mesh = train.make_mesh(devices=jax.devices()[:1])
    state = train.create_state(nn.Linear(2, 2, key=jax.random.key(0)), train.adamw(0.1),
                               mesh=mesh, rules=RULES)
    ckpt = train.Checkpointer(tmp_path, keep_last=2, keep_every=4)
    for step in range(1, 10):
        ckpt.save(step, state)
    ckpt.wait()
    assert ckpt.all_steps() == [4, 8, 9]  # 4 and 8 kept as multiples of 4; 8 and 9 are the last 2
    ckpt.close()
