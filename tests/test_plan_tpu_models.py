"""`baobab plan --topology` on real model sizes, each compiling the real train step for a
TPU pod on this CPU machine (about 0.5-3 minutes each on 2 shared cores):

* GPT-2 small on v5p:2x2x2 (8 chips, 2 hosts), with the FLOP counter checked against
  the analytic count;
* a ~1B Llama FSDP fine-tune (frozen embeddings) on v5e:4x4 (16 chips, 4 hosts), with
  the per-device memory checked against a hand calculation;
* a deliberately oversized config, reported as not fitting, with a fix that fits.
"""

from pathlib import Path

import pytest

from baobab import cli
from baobab.config import load_config
from baobab.planner import plan

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.mark.slow
def test_gpt2_small_train_step_compiles_for_v5p_2x2x2():
    config = load_config(CONFIGS / "gpt2_small.py", ["mesh.topology=v5p:2x2x2", "data.batch_size=8"])
    r = plan(config)
    assert (r["devices"], r["hosts"], r["accelerator_type"], r["device_kind"]) == (8, 2, "v5p-16", "TPU v5")
    assert r["fits"] and not r["problems"] and r["parameters"] == 124_475_904
    assert (r["global_batch"], r["per_host_batch"], r["tokens_per_step"]) == (8, 4, 8 * 1024)
    # The compiled program attends with the TPU's splash kernel (forward and backward in each layer's
    # scanned body), not the CPU layout of the machine that compiled it.
    assert r["kernel_calls"].get("tpu_custom_call", 0) >= 2, r["kernel_calls"]

    # Every matmul of the step, counted: 3 x the forward pass (dots_saveable recomputes no matmul).
    m, t, b = config.model, config.data.seq_len, config.data.batch_size
    d, layers, vocab = m.hidden_size, m.num_layers, m.vocab_size
    forward = 2 * b * t * 12 * layers * d * d + 4 * b * t * t * d * layers + 2 * b * t * d * vocab
    assert r["model_flops_per_step"] == 3 * forward and r["mfu_bound"] == 1.0  # the forward kernel: T x T blocks
    # The attention matmuls run inside the splash kernels, counted per grid step from their block
    # bodies; their backward kernels are not the dense reference's two matmuls per product, so the
    # count of the compiled program is near, not equal to, the dense 3 x forward.
    assert 0.85 < r["counted_flops_per_device"] / (3 * forward / 8) <= 1.0
    assert r["flops_per_step"] < r["counted_flops_per_device"] / 2  # XLA sees the 12 scanned layers once

    params = r["parameters"] * 4  # fp32 master weights, replicated over data=8
    assert r["param_bytes"] == params and abs(r["optimizer_bytes"] - 2 * params) < 1024
    held = r["param_bytes"] + r["optimizer_bytes"] + r["batch_bytes"]
    assert abs(r["argument_bytes"] - held) < 0.001 * held
    assert r["needed_bytes"] < r["hbm_bytes"]


LLAMA_FINETUNE = ["mesh.topology=v5e:4x4", "mesh.data=1", "mesh.fsdp=16", "data.seq_len=512", "data.batch_size=16",
                  "finetune.freeze=('model.embed_tokens',)"]


@pytest.mark.slow
def test_llama_1b_fsdp_finetune_on_v5e_4x4_matches_a_hand_calculation():
    config = load_config(CONFIGS / "llama_1b.py", LLAMA_FINETUNE)
    r = plan(config)
    assert (r["devices"], r["hosts"], r["per_host_batch"], r["mesh"]["fsdp"]) == (16, 4, 4, 16)
    assert r["fits"] and not r["problems"]
    held = [set(_rows(s["rows"])) for s in r["data_shards"]]  # 4 rows each, together the whole batch
    assert [len(h) for h in held] == [4] * 4 and set().union(*held) == set(range(16))

    # By hand: Llama-3.2-1B's arrays; norm scales are replicated (the "norm" axis has no
    # mesh axis), everything else is split 16 ways over fsdp.
    m = config.model
    d, ff, layers, vocab = m.hidden_size, m.intermediate_size, m.num_layers, m.vocab_size
    kv = m.num_kv_heads * d // m.num_heads
    embed = vocab * d  # tied with the LM head; frozen here
    norms = layers * 2 * d + d
    total = embed + layers * (2 * d * d + 2 * d * kv + 3 * d * ff) + norms
    assert r["parameters"] == total == 1_235_814_400
    assert r["trainable_parameters"] == total - embed
    fp32 = 4
    param_bytes = fp32 * ((total - norms) // 16 + norms)
    optimizer_bytes = 2 * fp32 * ((total - embed - norms) // 16 + norms)  # Adam mu and nu, trainable only
    assert r["param_bytes"] == param_bytes  # 296.4 MiB
    assert 0 <= r["optimizer_bytes"] - optimizer_bytes < 1024  # 464.8 MiB, plus Adam's step counts
    assert abs(r["argument_bytes"] - (param_bytes + optimizer_bytes + r["batch_bytes"])) < 0.001 * param_bytes
    assert r["gradient_bytes"] == fp32 * ((total - embed - norms) // 16 + norms)


OVERSIZED = [str(CONFIGS / "gpt_bytes.py"), "--topology", "v5e:2x2", "mesh.data=4", "model.hidden_size=4096",
             "model.num_layers=6", "model.scan_layers=True"]  # ~1.2B parameters, data parallel on 16 GiB chips


@pytest.mark.slow
def test_an_oversized_run_is_refused_with_a_fix_that_fits(capsys):
    assert cli.main(["plan", *OVERSIZED]) == 1
    text = capsys.readouterr().out
    report, _, replanned = text.partition("re-planned with mesh.data=2 mesh.fsdp=2:")
    assert "fits             NO: needs" in report and "over by" in report, text
    assert "the TPU compiler refused it; it allows 15.75 GiB" in report
    assert "mesh.data=2 mesh.fsdp=2  ->  fits: needs" in report
    assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 1} (4 devices)" in replanned.replace("    mesh             ",
                                                                                     "mesh ")
    assert "    fits             yes: needs" in replanned and "    XLA memory       arguments" in replanned


def _rows(text: str) -> list[int]:
    """``"0-1, 5"`` -> ``[0, 1, 5]``."""
    out = []
    for part in text.split(", "):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out
