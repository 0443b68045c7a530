"""TensorBoard's own reader reads what train/_tensorboard.py writes: scalars, steps, and purge on resume."""

import math

import pytest
from tensorboard.backend.event_processing import event_accumulator

from baobab.train import _tensorboard
from baobab.train._metrics import MetricWriter


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_read_back_with_their_steps_and_values(tmp_path):
    writer = _tensorboard.EventWriter(tmp_path)
    for step in range(1, 4):
        writer.add_scalar("train/loss", 1.0 / step, global_step=step)
        writer.add_scalar("train/lr", 3e-4 * step, global_step=step)
    writer.add_scalar("big/step", 7, global_step=2**40)  # int64 steps, int values
    writer.close()
    got = _scalars(tmp_path)
    assert sorted(got) == ["big/step", "train/loss", "train/lr"]
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3]
    assert [v for _, v in got["train/loss"]] == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-6)  # float32
    assert [v for _, v in got["train/lr"]] == pytest.approx([3e-4, 6e-4, 9e-4], rel=1e-6)
    assert got["big/step"] == [(2**40, 7.0)]


def test_metric_writer_resume_purges_the_steps_past_the_checkpoint(tmp_path):
    first = MetricWriter(tmp_path)
    for step in (1, 2, 3, 4):
        first.write(step, {"train/loss": float(step), "note": "text is not a scalar", "flag": True})
    first.close()
    resumed = MetricWriter(tmp_path, resume_step=2)  # steps 3 and 4 are run again, differently
    for step in (3, 4, 5):
        resumed.write(step, {"train/loss": 10.0 * step, "train/nan": math.nan})
    resumed.close()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    got = _scalars(tmp_path / "tensorboard")
    assert sorted(got) == ["train/loss"]  # strings, bools and non-finite values (null in metrics.jsonl) are skipped
    assert got["train/loss"] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0), (5, 50.0)]


def test_records_are_checksummed_as_tfrecords(tmp_path):
    """A flipped byte in a record is caught by the reader's CRC check, so the checksums are real."""
    writer = _tensorboard.EventWriter(tmp_path)
    writer.add_scalar("a", 1.0, global_step=1)
    writer.add_scalar("b", 2.0, global_step=2)
    writer.close()
    assert sorted(_scalars(tmp_path)) == ["a", "b"]
    data = bytearray(writer.path.read_bytes())
    data[-6] ^= 0xFF  # inside the last record's payload
    writer.path.write_bytes(bytes(data))
    assert sorted(_scalars(tmp_path)) == ["a"]  # the corrupt last record is dropped, not misread
