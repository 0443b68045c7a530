"""What a run says: the banner, a changed config on resume, a finished rerun, log lines on stderr,
and metric windows carried through checkpoints so a resumed metrics.jsonl equals an uninterrupted one."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import test_train_support as S
from baobab import nn, train
from baobab.train._window import TIMING

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_device():
    return train.make_mesh(devices=jax.devices()[:1])


def run(workdir, steps, mesh, data=None, *, log_every=4, every=6, config=None, **kw) -> train.TrainResult:
    return train.train(S.make_net(), S.loss_fn, S.optimizer(), S.grain_batches() if data is None else data,
                       train.TrainerConfig(workdir=str(workdir), steps=steps),
                       checkpoint=train.CheckpointConfig(every=every, async_save=False),
                       logging=train.LoggingConfig(log_every=log_every, progress=False), mesh=mesh,
                       config={"trainer": {"steps": steps}} if config is None else config, **kw)


def messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("baobab"))


def train_records(workdir) -> list[dict]:
    """metrics.jsonl's train/* records without the timing fields (those measure this machine)."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in train.read_metrics(workdir)
            if any(k.startswith("train/") for k in r)]


class Ending:
    """The first ``n`` batches of a stateful iterator, then StopIteration (the data runs out)."""

    def __init__(self, inner, n):
        self.inner, self.n, self.drawn = inner, n, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.drawn == self.n:
            raise StopIteration
        self.drawn += 1
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


class SignalAt(Ending):
    """Sends SIGTERM to this process while drawing batch ``n``: the run stops after step ``n``."""

    def __next__(self):
        self.drawn += 1
        if self.drawn == self.n:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.inner)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, one_device):
    workdir = tmp_path_factory.mktemp("whole")
    run(workdir, 12, one_device)
    return workdir


@pytest.mark.parametrize("stop", ["data_ends", "signal"])
def test_a_resumed_run_records_the_same_train_metrics_bit_for_bit(tmp_path, one_device, uninterrupted, stop):
    # log_every=4 does not divide checkpoint.every=6: the checkpoint at 6 holds steps 5 and 6 of the
    # window that the record at 8 averages.
    data = Ending(S.grain_batches(), 6) if stop == "data_ends" else SignalAt(S.grain_batches(), 6)
    first = run(tmp_path, 12, one_device, data=data)
    assert first.step == 6 and first.preempted == (stop == "signal")
    assert [r["step"] for r in train_records(tmp_path)] == [4]  # no partial record at the stop
    second = run(tmp_path, 12, one_device)
    assert second.step == 12
    whole, resumed = train_records(uninterrupted), train_records(tmp_path)
    assert [r["step"] for r in whole] == [4, 8, 12]
    assert resumed == whole  # every train/* value equal, exactly (timing fields excluded)
    assert second.metrics["train/loss"] == whole[-1]["train/loss"]


def test_the_banner_says_devices_mesh_parameters_steps_and_where_it_resumed(tmp_path, one_device, caplog):
    with caplog.at_level(logging.INFO, logger="baobab.train"):
        run(tmp_path, 4, one_device, data=Ending(S.grain_batches(), 2))
    fresh = messages(caplog)
    params = f"{nn.count_parameters(S.make_net()):,} parameters"
    assert f"Training to step 4 in {tmp_path}: a fresh run | 1 cpu device(s) in 1 process(es), " \
           f"mesh data=1 fsdp=1 tensor=1 | {params}" in fresh
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="baobab.train"):
        run(tmp_path, 4, one_device)
    assert f"resumed from step 2 ({tmp_path / 'checkpoints' / '2'})" in messages(caplog)


def test_a_resume_with_another_config_names_each_changed_field(tmp_path, one_device, caplog):
    config = {"trainer": {"steps": 4}, "optimizer": {"lr": 0.002}, "data": {"batch_size": 32}}
    run(tmp_path, 4, one_device, config=config)
    changed = {"trainer": {"steps": 6}, "optimizer": {"lr": 0.001}, "data": {"batch_size": 32}}
    with caplog.at_level(logging.INFO, logger="baobab.train"):
        run(tmp_path, 6, one_device, config=changed)
    said = messages(caplog)
    assert "The config differs from the one saved at step 4, in 2 field(s):" in said
    assert "optimizer.lr: 0.002 -> 0.001: the optimizer keeps its saved state" in said
    assert "trainer.steps: 4 -> 6: the learning-rate schedule is recomputed over the new step count " \
           "(stretched or squeezed): from step 4 on" in said
    assert "data.batch_size" not in said  # unchanged fields are not listed
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="baobab.train"):
        run(tmp_path, 6, one_device, config=changed)  # the same config again: nothing to say
    assert "config differs" not in messages(caplog)


def test_rerunning_a_finished_run_says_so_and_does_not_compile(tmp_path, one_device, caplog):
    first = run(tmp_path, 4, one_device, log_every=2)
    lines_before = (tmp_path / "metrics.jsonl").read_text()
    with S.count_compiles() as compiles, caplog.at_level(logging.INFO, logger="baobab.train"):
        again = run(tmp_path, 4, one_device, log_every=2)
    assert "train_step" not in compiles.names, compiles.names
    said = messages(caplog)
    assert f"The run in {tmp_path} is already complete: step 4 of trainer.steps = 4" in said
    assert f"train/loss {first.metrics['train/loss']:.4g}" in said and "raise trainer.steps" in said
    assert "Training to step" not in said  # no banner: nothing is trained
    assert again.step == 4 and not again.preempted
    assert again.metrics["train/loss"] == first.metrics["train/loss"]  # read back from metrics.jsonl
    assert (tmp_path / "metrics.jsonl").read_text() == lines_before  # untouched


def test_one_plain_log_line_per_record_with_loss_lr_and_throughput(tmp_path, one_device, caplog):
    with caplog.at_level(logging.INFO, logger="baobab.train"):
        run(tmp_path, 6, one_device, log_every=2, every=3, tokens_key="x")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(" | ")[0] for line in lines] == ["step 2/6", "step 4/6", "step 6/6"]  # not at step 3
    for line in lines:
        fields = dict(part.split(" ", 1) for part in line.split(" | ")[1:])
        assert set(fields) == {"loss", "lr", "examples/s", "tokens/s", "eta"}, line
        assert float(fields["examples/s"].replace(",", "")) > 0


def test_log_to_stderr_shows_the_lines_of_a_script(tmp_path):
    script = f"""
import sys
sys.path.insert(0, {str(REPO / 'tests')!r})
import test_train_support as S
from baobab import nn, train
train.log_to_stderr()
train.train(S.make_net(), S.loss_fn, S.optimizer(), S.grain_batches(),
            train.TrainerConfig(workdir={str(tmp_path)!r}, steps=4),
            logging=train.LoggingConfig(log_every=2))
"""
    out = subprocess.run([sys.executable, "-c", script], env=S.subprocess_env(1), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    err = out.stderr
    assert " baobab.train: Training to step 4 in " in err and "a fresh run" in err
    assert " baobab.train: step 2/4 | loss " in err and "examples/s" in err and " baobab.train: step 4/4 |" in err
    assert "Checkpoint at step 4" in err


def test_log_to_stderr_keeps_a_user_error_to_one_line(capsys):
    from baobab import cli

    handler = train.log_to_stderr()
    try:
        assert cli.main(["train", "mesh.data=3"]) == 2
    finally:
        logging.getLogger("baobab").removeHandler(handler)
        logging.getLogger("baobab").setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mesh.data = 3, mesh.fsdp = 1, mesh.tensor = 1 needs 3 devices" in err, err
