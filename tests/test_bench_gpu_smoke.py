"""``benchmarks/gpu_gpt2.py --smoke`` runs end to end on CPU, with baobab and PyTorch agreeing.

The GPU benchmark itself needs an NVIDIA GPU; its smoke configuration (a tiny GPT,
bf16 compute) runs wherever JAX runs, so the script cannot rot unnoticed.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import gpu_gpt2  # noqa: E402

import torch  # noqa: E402,F401  (test extra; the PyTorch side of the benchmark)


def test_smoke_run(tmp_path):
    out = tmp_path / "gpu.json"
    gpu_gpt2.main(["--smoke", "--no-torch-compile", "--json", str(out)])
    result = json.loads(out.read_text())
    rows = {r["implementation"]: r for r in result["rows"]}
    assert set(rows) == {"baobab", "torch"}, result["skipped"]
    assert rows["baobab"]["params"] == rows["torch"]["params"]
    assert rows["baobab"]["loss@0"] == pytest.approx(rows["torch"]["loss@0"], abs=0.05)  # bf16 compute
    assert result["flops_per_step"] > 0


def test_peak_table():
    assert gpu_gpt2.peak_for("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_gpt2.peak_for("NVIDIA H100 PCIe") == 756e12
    assert gpu_gpt2.peak_for("NVIDIA H200") == 989e12
    assert gpu_gpt2.peak_for("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_gpt2.peak_for("cpu") is None
