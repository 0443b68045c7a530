"""benchmarks/decode_gpt2.py times the same computation in both frameworks.

On the benchmark's own (quick, 2-layer) GPT-2-small shape: the parameter counts agree,
and with transformers' weights loaded into the baobab model both greedy decoders
produce the same tokens. No timing here.
"""

import sys
from pathlib import Path

import jax
import numpy as np

from baobab import models
from baobab.models import hf

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import decode_gpt2 as D  # noqa: E402


def test_both_decoders_are_gpt2_small_shaped_and_agree_on_the_same_weights():
    theirs = D.build_transformers(quick=True)
    ours = D.build_baobab(quick=True)
    assert ours.num_params == theirs.num_params
    tensors = {k: v.detach().numpy() for k, v in theirs.model.state_dict().items()}
    config = models.GPT2Config(**D._shape(quick=True))
    same = D.build_baobab(True, hf.load_hf(models.GPT2(config, key=jax.random.key(1)), tensors, hf.names_for(config)))
    prompt = D._prompt(2, config.vocab_size)
    np.testing.assert_array_equal(same.generate(prompt, 6), theirs.generate(prompt, 6))
