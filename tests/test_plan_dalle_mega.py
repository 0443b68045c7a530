"""`baobab plan` of DALL·E Mega (configs/dalle_mega.py, 2.59B parameters), compiling the real
encoder-decoder train step for TPU slices on this CPU machine, from a prepared folder's
``metadata.json`` alone (the test writes one row; plan reads none):

* as configured, FSDP over the 8 chips of v5p:2x2x2: it fits, with the per-chip bytes
  checked against the parameter count (one compile, about 2-4 minutes here);
* data parallel on 16 GiB v5e chips: refused, and the fix found names ``mesh.fsdp``
  (the TPU compiler refuses in seconds; the fix that fits compiles in about 2 minutes).
"""

from pathlib import Path

import jax
import numpy as np
import pytest

from baobab import data, nn
from baobab.config import load_config
from baobab.models import DalleBart, DalleBartConfig
from baobab.plan_report import format_plan
from baobab.planner import plan

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dalle_mega.py"
MEGA_PARAMETERS = 2_587_521_024


@pytest.fixture
def metadata(tmp_path) -> str:
    """A prepared folder of DALL·E Mega's row schema: caption ids and mask (64,), 256 VQGAN codes."""
    row = {"text_ids": np.ones(64, np.int32), "text_mask": np.ones(64, bool), "image_codes": np.zeros(256, np.int32)}
    data.write_split(tmp_path / "encoded", "train", [row], info={"vocab_size": 50272, "image_vocab_size": 16415})
    return str(tmp_path / "encoded")


def test_mega_parameter_count_and_config():
    model = jax.eval_shape(lambda: DalleBart(DalleBartConfig.mega(scan_layers=True), key=jax.random.key(0)))
    assert nn.count_parameters(model) == MEGA_PARAMETERS
    config = load_config(CONFIG, ["data.path=unused"])
    assert config.model == DalleBartConfig.mega(scan_layers=True, remat="nothing_saveable")
    with pytest.raises(ValueError, match="set model.scan_layers=True"):
        DalleBartConfig.mega(remat="nothing_saveable")


@pytest.mark.slow
def test_dalle_mega_fits_v5p_with_fsdp_over_the_chips(metadata):
    r = plan(load_config(CONFIG, ["mesh.topology=v5p:2x2x2", f"data.path={metadata}", "data.batch_size=64"]))
    assert (r["devices"], r["hosts"], r["mesh"]) == (8, 2, {"data": 1, "fsdp": 8, "tensor": 1})
    assert r["parameters"] == r["trainable_parameters"] == MEGA_PARAMETERS
    assert r["fits"] and not r["problems"] and r["needed_bytes"] < 10 * 2**30  # measured 6.41 GiB of 95
    assert (r["global_batch"], r["per_host_batch"], r["tokens_per_step"]) == (64, 32, 64 * 256)  # image tokens

    # By hand: fp32 master weights split 8 ways over fsdp, except the norms' vectors (the "norm" axis has no
    # mesh axis), whole on every chip. Per encoder layer 4 D + F of them (LN0 bias, LN1 scale and bias, the
    # GLU's two bias-only norms), per decoder layer 7 D + F; each side's layernorm_embedding and final_ln 3 D.
    m = DalleBartConfig.mega()
    d, f = m.d_model, m.encoder_ffn
    norms = m.encoder_layers * (4 * d + f) + m.decoder_layers * (7 * d + f) + 2 * 3 * d
    assert r["param_bytes"] == 4 * ((MEGA_PARAMETERS - norms) // 8 + norms) == r["gradient_bytes"]  # 1.21 GiB
    assert abs(r["optimizer_bytes"] - 2 * r["param_bytes"]) < 1024
    held = r["param_bytes"] + r["optimizer_bytes"] + r["batch_bytes"]
    assert abs(r["argument_bytes"] - held) < 0.001 * held
    # remat recomputes every layer's forward: executed FLOPs are 4 forwards in the layers, 3 in the lm head
    assert 0.75 < r["mfu_bound"] < 0.85


@pytest.mark.slow
def test_dalle_mega_data_parallel_is_refused_with_the_fsdp_fix(metadata):
    overrides = ["mesh.topology=v5e:2x4", "mesh.data=8", "mesh.fsdp=1", f"data.path={metadata}", "data.batch_size=16"]
    r = plan(load_config(CONFIG, overrides))
    text = format_plan(r)
    # fp32 weights, Adam state and gradients of 2.59B parameters on every chip: ~39 GiB before activations
    assert not r["fits"] and r["needed_bytes"] > 2 * r["hbm_bytes"], text
    assert "the TPU compiler refused it; it allows 15.75 GiB" in text
    tried = [(f["overrides"], f["fits"]) for f in r["fixes"]]
    assert tried == [(["mesh.data=4", "mesh.fsdp=2"], False), (["mesh.data=2", "mesh.fsdp=4"], True)], text
    assert "mesh.data=2 mesh.fsdp=4  ->  fits: needs" in text and "re-planned with mesh.data=2 mesh.fsdp=4:" in text
    fixed = r["replan"]
    assert fixed["fits"] and fixed["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert fixed["parameters"] == MEGA_PARAMETERS and fixed["needed_bytes"] < fixed["hbm_bytes"]
