"""The LoRA benchmark's two variants compute the same model.

``benchmarks/lora_finetune.py`` times a LoRA and a full fine-tune of the MiniLM
config from the same weights and batch. ``lora_b`` starts at zero, so the loss
before the first update must agree; the counts must be what each variant trains.
No timing here.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import lora_finetune as L  # noqa: E402

MINILM_PARAMS = 22_716_296  # all-MiniLM-L6-v2 with an 8-class head


@pytest.mark.slow
def test_lora_and_full_start_from_the_same_model():
    full, lora = (L.build(name, batch_size=4) for name in L.VARIANTS)
    assert full["params"] == full["trainable"] == MINILM_PARAMS
    adapters = 6 * 2 * 8 * (384 + 384)  # 6 layers x (query, value) x rank 8 x (in + out)
    assert lora["params"] == MINILM_PARAMS + adapters
    assert lora["trainable"] == adapters + 384 * 8 + 8  # the adapters and the classifier head
    assert lora["step"]() == pytest.approx(full["step"](), rel=1e-6)  # step 0: the same function
    assert lora["flops"] < full["flops"]  # no weight gradients for the frozen base
