"""A multi-host fine-tune: 2 real processes on localhost, launched by ``scripts/launch_ssh.py --local``.

A tiny byte-level GPT is pretrained in this process on standard-library sources, then
fine-tuned with ``finetune.init_from=`` on IDLE's prose twice through ``baobab train``:
as 2 processes x 2 CPU devices (``jax.distributed`` over gloo, the pod launcher's code
path) and as 1 process x 4 devices. Both have the global mesh data=4, so they must
log the same losses.

The fine-tune reads fixed rows (packed once, here, and written with
``data.prepare_arrays``). ``TextData`` packs each process's own documents, so its
global batch, unlike this one, depends on the process count.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import test_train_support as S
from baobab import data
from baobab.config import load_config
from baobab.commands import run_train
from baobab.experiment import TrainerConfig
from test_finetune import _second_corpus

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300
SEQ_LEN, FINETUNE_STEPS = 32, 8

CONFIG = '''"""The fine-tune of tests/test_finetune_multihost.py (written there, with the data path filled in)."""
from baobab.data import PreparedData
from baobab.experiment import (CheckpointConfig, ExperimentConfig, LoggingConfig, OptimizerConfig, ScheduleConfig,
                               TrainerConfig)
from baobab.models import GPT2Config


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="language_model",
        model=GPT2Config(vocab_size=256, max_len={seq_len}, hidden_size=32, num_layers=2, num_heads=2),
        data=PreparedData(path={data!r}, batch_size=8, eval_split=None),
        optimizer=OptimizerConfig(lr=3e-3),
        schedule=ScheduleConfig(kind="constant"),
        trainer=TrainerConfig(steps={steps}),
        checkpoint=CheckpointConfig(every=0, async_save=False),
        logging=LoggingConfig(log_every=1, progress=False),
    )
'''


def _prepare_rows(out: Path) -> Path:
    """IDLE's text files, byte-tokenised and packed into rows of SEQ_LEN + 1 (as TextData does)."""
    docs = data.text_corpus(_second_corpus()).map(data.ByteTokenize()).to_iter_dataset()
    rows = list(data.Pack(length=SEQ_LEN + 1)(docs))
    arrays = {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in rows[0]}  # (N, SEQ_LEN + 1)
    np.savez(out.with_suffix(".npz"), **arrays)
    data.prepare_arrays(out.with_suffix(".npz"), out, split="train", progress=False)
    return out


def _env(devices: int) -> dict[str, str]:
    """A clean child environment with ``devices`` CPU devices and this interpreter's ``baobab`` on PATH."""
    env = S.subprocess_env(devices)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _start(argv: list[str], *, devices: int, cwd: Path) -> subprocess.Popen:
    """``argv`` in its own process group (with the launcher's children), output captured."""
    return subprocess.Popen(argv, cwd=cwd, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _finish(p: subprocess.Popen, what: str, logs: Path | None = None) -> str:
    try:
        out, _ = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the launcher and the processes it started
        out, _ = p.communicate()
        pytest.fail(f"{what} timed out\n{out[-3000:]}{_read_logs(logs)}")
    assert p.returncode == 0, f"{what} exited {p.returncode}\n{out[-3000:]}{_read_logs(logs)}"
    return out


def _read_logs(logs: Path | None) -> str:
    if logs is None or not logs.is_dir():
        return ""
    return "".join(f"\n--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(logs.glob("*.log")))


@pytest.mark.slow
def test_two_process_finetune_matches_one_process_and_starts_from_the_pretrained_weights(tmp_path):
    assert (Path(sys.executable).parent / "baobab").is_file(), "the `baobab` command is not installed next to python"
    config_file = tmp_path / "finetune.py"
    config_file.write_text(CONFIG.format(seq_len=SEQ_LEN, data=str(_prepare_rows(tmp_path / "idle")),
                                         steps=FINETUNE_STEPS))

    # Pretrain here (8 fake devices), the same model, on the standard library's sources.
    base = load_config(config_file)
    pre_dir = tmp_path / "pre"
    run_train(base.model_copy(update={
        "data": data.TextData(seq_len=SEQ_LEN, batch_size=8, stdlib_limit=20, eval_rows=16),
        "trainer": TrainerConfig(workdir=str(pre_dir), steps=30)}))
    pre = S.losses(pre_dir)

    # Fine-tune: 2 processes x 2 devices through the launcher, and 1 process x 4 devices, side by side.
    common = ["mesh.data=4", f"finetune.init_from={pre_dir}"]
    launcher = _start([sys.executable, str(ROOT / "scripts" / "launch_ssh.py"), "--hosts", "localhost,localhost",
                       "--local", "--port", str(S.free_port()), "--workdir", str(tmp_path), "--",
                       str(config_file), f"trainer.workdir={tmp_path / 'two'}", *common], devices=2, cwd=tmp_path)
    single = _start(["baobab", "train", str(config_file), f"trainer.workdir={tmp_path / 'one'}", *common],
                    devices=4, cwd=tmp_path)
    _finish(single, "the 1-process fine-tune")
    _finish(launcher, "the 2-process fine-tune (scripts/launch_ssh.py --local)", tmp_path / "logs" / "launch_ssh")

    two, one = S.losses(tmp_path / "two"), S.losses(tmp_path / "one")
    print(f"pretrain {pre[1]:.4f} -> {pre[max(pre)]:.4f}; fine-tune 2 processes {two}; 1 process {one}")
    ckpt = tmp_path / "two" / "checkpoints" / str(FINETUNE_STEPS)
    assert sorted(f.name for f in (ckpt / "data").glob("*.json")) == ["process_0-of-2.json", "process_1-of-2.json"]
    run_meta = json.loads((ckpt / "run" / "metadata").read_text())
    assert run_meta["process_count"] == 2 and run_meta["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
    for run in ("one", "two"):
        report = json.loads((tmp_path / run / "init_from.json").read_text())
        assert report == {"init_from": str(pre_dir), "fresh": []}  # every array came from the pretrained run

    assert sorted(two) == sorted(one) == list(range(1, FINETUNE_STEPS + 1))  # one writer: each step once
    np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-5)
    # A fresh byte-level model starts at about ln(256); the fine-tune starts from what pretraining learnt.
    assert abs(pre[1] - math.log(256)) < 0.2, pre
    assert two[1] < pre[1] - 1.0, (pre, two)
    assert two[FINETUNE_STEPS] < two[1], two
