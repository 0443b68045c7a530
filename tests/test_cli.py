"""The `baobab` CLI end to end, through subprocesses: exit codes, files, metrics, resume, errors."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BAOBAB = [sys.executable, "-m", "baobab.cli"]


def user_env(extra=None):
    """The environment a user has: one CPU device unless the test asks for more."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**env, **(extra or {})}


def run(*args, cwd, env=None, timeout=600):
    return subprocess.run([*BAOBAB, *map(str, args)], cwd=cwd, env=user_env(env),
                          capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args, message", [
    (["train", "optimizer.lrr=1"], "optimizer.lrr: no such key; did you mean optimizer.lr?"),
    (["train", "trainer.steps=abc"], "trainer.steps: input should be a valid integer"),
    (["train", "missing.py"], "config file 'missing.py' does not exist"),
    (["train", "model.kind=rnn"], "model: unknown kind 'rnn'; valid kinds: 'mlp', 'cnn'"),
    (["train", "model.num_classes=7"], "model.num_classes = 7 but the data has 10 classes"),
    (["eval", "nowhere"], "'nowhere' is not a baobab run directory"),
    (["train", "task=regression"], "task: unknown task 'regression'; valid tasks: classification,"),
    (["train", "optimizer.kind=adamz"], "optimizer.kind: unknown optimizer 'adamz'; did you mean 'adam'?"),
    (["train", "task=language_model"], "data.kind = 'mnist' feeds classification, not task=language_model"),
    (["train", "data.kind=prepared", "data.path=nowhere"], "dataset folder 'nowhere' does not exist"),
    (["train", "mesh.data=3"], "mesh.data"),
    (["plot", "nowhere"], "nowhere: no metrics.jsonl"),
    (["plan", "--topology", "v9:2x2"], "unknown TPU topology 'v9:2x2'"),
    (["data", "prepare", "arrays", "missing.npz", "--out", "x"], "numpy file 'missing.npz' does not exist"),
    (["import", "hf", "nowhere_model", "runs/x"], "'nowhere_model' does not exist; pass a Hugging Face model"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


BUGGY_CONFIG = """
from baobab import models
from baobab.experiment import ExperimentConfig, TrainerConfig
import toy_extension as toy

def get_config():
    models.MODELS["toy_linear"] = models.ModelEntry(toy.ToyLinearConfig, toy.ToyLinear)
    return ExperimentConfig(model=toy.ToyLinearConfig(fail_inside=True),
                            trainer=TrainerConfig(workdir="runs/buggy", steps=2))
"""


def test_a_bug_inside_a_model_shows_the_traceback_and_exit_code_1(tmp_path):
    (tmp_path / "buggy.py").write_text(BUGGY_CONFIG)
    out = run("train", "buggy.py", cwd=tmp_path, env={"PYTHONPATH": str(REPO / "tests")})
    assert out.returncode == 1, out.stderr
    assert "Traceback (most recent call last)" in out.stderr and "toy_extension.py" in out.stderr
    assert "TypeError: object of type 'NoneType' has no len()" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("baobab train: This is a bug in baobab"), out.stderr


def test_help_everywhere_with_examples(tmp_path):
    for cmd in ["train", "eval", "plan", "generate", "plot"]:
        out = run(cmd, "--help", cwd=tmp_path)
        assert out.returncode == 0 and "examples:" in out.stdout, cmd
    out = run("data", "prepare", "--help", cwd=tmp_path)
    assert out.returncode == 0


@pytest.mark.slow
def test_train_eval_plot_and_resume_after_interrupt(tmp_path):
    workdir = tmp_path / "run"
    common = [f"trainer.workdir={workdir}", "trainer.steps=40", "checkpoint.every=10", "logging.log_every=5",
              "data.eval_batch_size=250"]
    # An interrupted run: SIGTERM once the first checkpoint exists; it saves and exits 0.
    proc = subprocess.Popen([*BAOBAB, "train", REPO / "configs" / "mnist_cnn.py", *common, "checkpoint.async_save=false"],
                            cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (workdir / "checkpoints" / "10").exists() and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    # stderr is a pipe, not a terminal: the run still says what it does, line by line
    assert " baobab.train: Training to step 40 " in err and " baobab.train: step 5/40 | loss " in err, err
    stopped = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert 10 <= stopped < 40
    # Resume: same command, continues from the checkpoint to the end.
    out = run("train", REPO / "configs" / "mnist_cnn.py", *common, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"resumed from step {stopped} (" in out.stderr and " baobab.train: step 40/40 | " in out.stderr, out.stderr
    final = last_json(out.stdout)
    assert final["step"] == 40 and final["eval/accuracy"] > 0.5
    steps = [r["step"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
             if "train/loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 40, steps  # no step logged twice
    config = json.loads((workdir / "config.json").read_text())
    assert config["trainer"]["steps"] == 40 and config["model"]["kind"] == "cnn"
    # eval reloads from the run directory alone, with no config file
    ev = run("eval", workdir, cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert abs(last_json(ev.stdout)["accuracy"] - final["eval/accuracy"]) < 1e-6
    png = tmp_path / "curves.png"
    pl = run("plot", workdir, "--out", png, cwd=tmp_path)
    assert pl.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", pl.stderr


@pytest.mark.slow
def test_gpt_bytes_trains_generates_and_runs_sharded(tmp_path):
    workdir = tmp_path / "gpt"
    out = run("train", REPO / "configs" / "gpt_bytes.py", f"trainer.workdir={workdir}", "trainer.steps=60",
              "trainer.eval_every=0", "data.stdlib_limit=40", "schedule.warmup_steps=10", "logging.log_every=5",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    losses = [r["train/loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
              if "train/loss" in r]
    assert losses[-1] < 0.8 * losses[0], losses
    gen = run("generate", workdir, "--prompt", "def ", "--steps", "20", cwd=tmp_path)
    assert gen.returncode == 0 and gen.stdout.startswith("def "), gen.stderr
    text = gen.stdout[len("def "):].rstrip("\n")
    stop = text[6:8]  # greedy is deterministic: this stop string occurs, first at text.find(stop)
    stopped = run("generate", workdir, "--prompt", "def ", "--steps", "20", "--stop", stop, cwd=tmp_path)
    assert stopped.returncode == 0 and stopped.stdout == "def " + text[:text.find(stop)] + "\n", stopped.stdout
    # The same config on 8 fake devices, fsdp=4 x tensor=2, by overrides only.
    sharded = run("train", REPO / "configs" / "gpt_bytes.py", f"trainer.workdir={tmp_path / 'gpt8'}",
                  "trainer.steps=4", "trainer.eval_every=0", "data.stdlib_limit=40", "mesh.data=1", "mesh.fsdp=4",
                  "mesh.tensor=2", cwd=tmp_path, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert sharded.returncode == 0, sharded.stderr
    assert last_json(sharded.stdout)["step"] == 4


@pytest.mark.slow
def test_char_lm_trains_on_one_text_file_of_the_users(tmp_path):
    """configs/char_lm.py on a single file: its tail is the eval split, scored whole, and the loss falls."""
    text = tmp_path / "my.txt"
    text.write_bytes(b"".join(p.read_bytes() for p in sorted((REPO / "docs").glob("*.md"))))
    workdir = tmp_path / "char"
    out = run("train", REPO / "configs" / "char_lm.py", f"data.files=('{text}',)", f"trainer.workdir={workdir}",
              "trainer.steps=60", "trainer.eval_every=60", "schedule.warmup_steps=10", "model.num_layers=2",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    evals = [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 60]
    assert evals[-1]["eval/loss"] < 0.7 * evals[0]["eval/loss"], evals
    gen = run("generate", workdir, "--prompt", "The ", "--steps", "30", "--temperature", "0.8", cwd=tmp_path)
    assert gen.returncode == 0 and gen.stdout.startswith("The "), gen.stderr


@pytest.mark.slow
def test_resnet_on_an_image_folder(tmp_path):
    subprocess.run([sys.executable, REPO / "scripts" / "make_shapes_dataset.py", tmp_path / "shapes",
                    "--train", "60", "--test", "30"], check=True)
    out = run("train", REPO / "configs" / "resnet_folder.py", f"trainer.workdir={tmp_path / 'r'}",
              f"data.train_dir={tmp_path / 'shapes' / 'train'}", f"data.eval_dir={tmp_path / 'shapes' / 'test'}",
              "trainer.steps=6", "data.batch_size=12", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    final = last_json(out.stdout)
    assert final["step"] == 6 and 0.0 <= final["eval/accuracy"] <= 1.0


@pytest.mark.slow
def test_plan_reports_without_allocating(tmp_path):
    out = run("plan", REPO / "configs" / "gpt_bytes.py", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", cwd=tmp_path,
              env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "parameters" in text and "FLOPs per step" in text and "temporaries" in text
    assert "transformer.h" in text and "P(" in text  # the shardings table
    assert "{'data': 2, 'fsdp': 2, 'tensor': 2} (8 devices)" in text


def test_the_cli_keeps_libtpu_out_when_there_is_no_accelerator(monkeypatch):
    import jax

    from baobab import cli

    calls = []
    monkeypatch.setattr(jax.config, "update", lambda *a: calls.append(a))
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(cli, "_has_accelerator", lambda: False)
    cli._cpu_when_no_accelerator()
    assert calls == [("jax_platforms", "cpu")]
    monkeypatch.setattr(cli, "_has_accelerator", lambda: True)  # a GPU or TPU: JAX chooses
    cli._cpu_when_no_accelerator()
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # the user's choice wins
    monkeypatch.setattr(cli, "_has_accelerator", lambda: False)
    cli._cpu_when_no_accelerator()
    assert calls == [("jax_platforms", "cpu")]


def test_background_thread_and_finaliser_errors_are_one_log_line_each(monkeypatch, caplog):
    import threading
    import types

    from baobab import cli

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    cli._background_errors_in_one_line()
    caplog.set_level(logging.DEBUG, logger="baobab.cli")

    def fail() -> None:
        raise ValueError("RESOURCE_EXHAUSTED: Failed to write 25 bytes: No space left on device")

    thread = threading.Thread(target=fail, name="save_worker")
    thread.start()
    thread.join()
    sys.unraisablehook(types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"), object=None))
    sys.unraisablehook(types.SimpleNamespace(exc_value=OSError(5, "Input/output error"), object="<finaliser>"))
    warnings = [(r.getMessage(), r.exc_info) for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        ("background thread save_worker failed: ValueError: RESOURCE_EXHAUSTED: Failed to write 25 bytes: No space "
         "left on device (traceback hidden; --debug shows it)", None),
        ("ignored error in '<finaliser>': OSError: [Errno 5] Input/output error (traceback hidden; --debug shows it)",
         None),
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == [
        "ignored at shutdown: RuntimeError: Event loop is closed"]
