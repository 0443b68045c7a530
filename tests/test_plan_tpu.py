"""`baobab plan --topology`: TPU slices described by libtpu on this CPU machine, the
FLOP counter, bad input, a small two-host compile, and the pod launcher.

The big models (GPT-2 small, a ~1B Llama fine-tune, an oversized config) are in
tests/test_plan_tpu_models.py.
"""

import doctest
import importlib.util
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from baobab import cli, tpu
from baobab.config import load_config
from baobab.plan_report import format_plan
from baobab.planner import plan

REPO = Path(__file__).resolve().parents[1]
GPT_BYTES = REPO / "configs" / "gpt_bytes.py"


def test_docstring_examples():
    assert doctest.testmod(tpu).failed == 0


def test_chip_table_and_accelerator_types():
    assert {g: c.hbm_bytes // 2**30 for g, c in tpu.CHIPS.items()} == {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
    names = {"v5p:4x4x4": "v5p-128", "v5p:2x2x2": "v5p-16", "v5e:4x4": "v5litepod-16", "v4:4x4x8": "v4-256",
             "v6e:8x8": "v6e-64"}
    for name, accelerator in names.items():
        chip, shape = tpu.parse_topology(name)
        assert chip.accelerator_type(shape) == accelerator


@pytest.mark.parametrize("name, chips, hosts, kind", [
    ("v5p:2x2x2", 8, 2, "TPU v5"),
    ("v5e:4x4", 16, 4, "TPU v5 lite"),
    ("v4:2x2x1", 4, 1, "TPU v4"),  # megacore: one device per chip, as on a real v4
    ("v6e:8x8", 64, 16, "TPU v6 lite"),
])
def test_topology_devices_and_hosts(name, chips, hosts, kind):
    topo = tpu.topology(name)
    assert (topo.num_chips, topo.num_hosts, topo.devices[0].device_kind) == (chips, hosts, kind)
    assert jax.devices()[0].platform == "cpu"  # ordinary work in this process stays on the CPU


def test_matmul_flops_counts_loops_by_trip_count_and_remat():
    w = jnp.ones((64, 64))
    block = lambda y: jnp.tanh(y @ w) @ w  # noqa: E731  (8, 64) -> (8, 64): two matmuls
    mm = 2 * 8 * 64 * 64
    x = jnp.ones((8, 64))
    flops = lambda fn: tpu.matmul_flops(jax.make_jaxpr(fn)(x)) / mm  # noqa: E731
    assert flops(block) == 2
    assert flops(jax.grad(lambda x: block(x).sum())) == 4  # forward 2, backward 2 (dx only: w is a constant)
    assert flops(jax.grad(lambda x: jax.checkpoint(block)(x).sum())) == 5  # + the recomputed first matmul
    scanned = lambda x: jax.lax.scan(lambda c, _: (block(c), None), x, None, length=5)[0].sum()  # noqa: E731
    assert flops(scanned) == 10 and flops(jax.grad(scanned)) == 20  # a loop counts as often as it runs


def test_compiler_out_of_memory_messages():
    assert tpu.compiler_out_of_memory("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. Used 20.5G "
                                      "of 15.75G hbm. Exceeded hbm capacity by 4.75G.") == (
        int(20.5 * 2**30), int(15.75 * 2**30))
    assert tpu.compiler_out_of_memory("INVALID_ARGUMENT: something else") is None


# ----------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit code 2, before any compile
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--topology", "v9:2x2"], "unknown TPU topology 'v9:2x2': write GENERATION:SHAPE with GENERATION one of "
                               "v4, v5e, v5p, v6e"),
    (["--topology", "v5e-16"], "e.g. v5p:2x2x2, v5p:4x4x4, v5e:4x4, v6e:8x8, v4:4x4x8"),
    (["--topology", "v5e:3x3"], "TPU topology 'v5e:3x3' was refused by libtpu"),
    (["--topology", "v5p:2x2x2", "mesh.data=3"], "mesh data=3 fsdp=1 tensor=1 does not divide the 8 chips of "
                                                 "v5p:2x2x2: give sizes whose product is 8"),
    (["mesh.topology=v5p:2x2x2", "mesh.fsdp=3"], "mesh data=-1 fsdp=3 tensor=1 does not divide the 8 chips"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, args, message):
    assert cli.main(["plan", str(GPT_BYTES), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("baobab plan: error: ") and message in err and err.count("\n") == 1, err


def test_missing_tpu_extra_is_one_line_and_exit_code_2(capsys, monkeypatch):
    monkeypatch.setattr(tpu, "libtpu_available", lambda: False)
    assert cli.main(["plan", str(GPT_BYTES), "--topology", "v5p:2x2x2"]) == 2
    err = capsys.readouterr().err
    assert "needs libtpu" in err and "pip install -e '.[tpu]'" in err and err.count("\n") == 1, err


# ----------------------------------------------------------------------------------------
# A small model on two hosts: every figure of the report
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_plan():
    return plan(load_config(GPT_BYTES, ["mesh.topology=v5e:2x4"]))


@pytest.mark.slow
def test_small_model_on_two_hosts(small_plan):
    r = small_plan
    assert (r["topology"], r["accelerator_type"], r["devices"], r["hosts"]) == ("v5e:2x4", "v5litepod-8", 8, 2)
    assert r["fits"] and r["needed_bytes"] < 2**30 and not r["problems"]
    assert (r["global_batch"], r["per_host_batch"], r["tokens_per_step"]) == (16, 8, 16 * 128)
    rows = [set(_rows(s["rows"])) for s in r["data_shards"]]
    assert [len(x) for x in rows] == [8, 8] and rows[0] | rows[1] == set(range(16))  # disjoint, covering
    params = r["parameters"] * 4  # fp32, replicated over data=8
    assert r["param_bytes"] == params and abs(r["optimizer_bytes"] - 2 * params) < 1024  # Adam mu, nu (+ counts)
    held = r["param_bytes"] + r["optimizer_bytes"] + r["batch_bytes"]
    assert abs(r["argument_bytes"] - held) < 0.01 * held  # XLA's arguments are the state and the batch
    # Model FLOPs: 3 x forward (no remat here), all counted in the program.
    # (attention's backward runs in splash kernels, counted per grid step: near the dense figure)
    assert r["mfu_bound"] == 1.0 and 0.85 < r["counted_flops_per_device"] * 8 / r["model_flops_per_step"] <= 1.0
    assert r["step_seconds_bound"] == pytest.approx(r["counted_flops_per_device"] / 197e12)


@pytest.mark.slow
def test_small_model_report_text(small_plan):
    text = format_plan(small_plan)
    for expected in ["topology         v5e:2x4: 8 chips (TPU v5 lite), 2 hosts, gcloud accelerator type v5litepod-8",
                     "global batch     16 (per host 8, per device 2; 2,048 tokens per step)",
                     "host p of 2 reads examples p, p+2, p+4, ...", "  host 1: global rows",
                     "per device       parameters 3.2 MiB", "XLA memory       arguments", "MFU bound        1.00",
                     "fits             yes: needs"]:
        assert expected in text, text


def _rows(text: str) -> list[int]:
    out = []
    for part in text.split(", "):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


# ----------------------------------------------------------------------------------------
# The pod launcher
# ----------------------------------------------------------------------------------------


def _launcher():
    spec = importlib.util.spec_from_file_location("launch_tpu_pod", REPO / "scripts" / "launch_tpu_pod.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAUNCH = ["--tpu", "pod1", "--zone", "us-east5-a", "--topology", "v5e:2x4", str(GPT_BYTES), "trainer.steps=10"]


@pytest.mark.slow
def test_launcher_dry_run_plans_then_prints_the_gcloud_commands(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "launch_tpu_pod.py"), *LAUNCH, "--dry-run"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fits             yes" in out.stdout and "TPU_WORKER_HOSTNAMES" not in out.stderr
    commands = out.stdout.split("# dry run:")[1].strip().splitlines()[1:]
    ssh = "gcloud compute tpus tpu-vm ssh pod1 --zone us-east5-a --worker=all --command "
    assert commands[0] == ssh + "'mkdir -p ~/baobab'"
    assert commands[1].startswith("gcloud compute tpus tpu-vm scp --recurse ") and "--worker=all" in commands[1]
    assert commands[2] == ssh + """'cd ~/baobab && pip install -e ".[tpu]"'"""
    assert commands[3] == ssh + "'cd ~/baobab && baobab train configs/gpt_bytes.py trainer.steps=10'"
    assert len(commands) == 4  # no --create: the TPU VM exists


def test_launcher_refuses_a_run_that_does_not_fit_unless_forced(monkeypatch, capsys):
    launcher = _launcher()
    calls = []

    def fake_run(command, **kwargs):  # plan says "does not fit" (exit code 1); gcloud would succeed
        calls.append(command)
        return subprocess.CompletedProcess(command, 1 if "plan" in command else 0)

    monkeypatch.setattr(launcher.subprocess, "run", fake_run)
    assert launcher.main([*LAUNCH]) == 1
    assert "refused: the run does not fit v5e:2x4" in capsys.readouterr().err and len(calls) == 1
    calls.clear()
    assert launcher.main([*LAUNCH, "--force", "--create", "--version", "v2-alpha-tpuv5-lite"]) == 0
    assert calls[1][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod1"]
    assert calls[1][-4:] == ["--accelerator-type", "v5litepod-8", "--version", "v2-alpha-tpuv5-lite"]
    assert calls[-1][-1] == "cd ~/baobab && baobab train configs/gpt_bytes.py trainer.steps=10"


def test_launcher_stops_on_bad_input(monkeypatch, capsys):
    launcher = _launcher()
    monkeypatch.setattr(launcher.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 2))
    assert launcher.main([*LAUNCH, "--force"]) == 2  # --force never overrides bad input
    with pytest.raises(SystemExit):
        launcher.main([*LAUNCH, "--create"])  # --create needs --version
