"""Generation beyond one fixed-length greedy batch: left-padded prompts, past max_len, streaming.

References are written out with the full forward (``model(ids)``), and for padding
with ``transformers``' own ``generate`` on the same weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import models
from baobab.errors import ConfigError

import torch
import transformers

from test_models_lm import _import, _llama_ref, _gpt2_ref

MAX_LEN = 12
forward = jax.jit(lambda model, ids, positions: model(ids, positions=positions))


def _small(kind):
    if kind == "gpt2":
        return models.GPT2Config(vocab_size=64, max_len=MAX_LEN, hidden_size=32, num_layers=2, num_heads=4)
    return models.LlamaConfig(vocab_size=64, max_len=MAX_LEN, hidden_size=32, num_layers=2, num_heads=4,
                              num_kv_heads=2, intermediate_size=48, rope_scaling=None, tie_embeddings=False)


def _greedy_by_full_forward(model, prompt, steps):
    """The written-out reference: each new token from a full forward.

    GPT-2 (learned positions): over the last max_len tokens, positions restarting at the
    window. Llama (RoPE): over the whole sequence, every layer attending to the max_len
    most recent positions (sliding-window attention), which a rolling cache computes."""
    ids = np.asarray(prompt)
    if isinstance(model, models.Llama):
        model = models.build_model(model.config.model_copy(update={"sliding_window": MAX_LEN}), key=jax.random.key(0))
    for _ in range(steps):
        begin = max(0, ids.shape[1] - MAX_LEN) if isinstance(model, models.GPT2) else 0
        window = ids[:, begin:]
        positions = np.broadcast_to(np.arange(window.shape[1]), window.shape)
        logits = forward(model, jnp.asarray(window), jnp.asarray(positions))
        ids = np.concatenate([ids, np.asarray(jnp.argmax(logits[:, -1], -1))[:, None]], axis=1)
    return ids


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("prompt_len", [4, 15])  # 15 > max_len: the prompt itself is longer than the window
def test_greedy_past_max_len_equals_a_sliding_window_of_full_forwards(kind, prompt_len):
    model = models.build_model(_small(kind), key=jax.random.key(0))
    prompt = np.random.RandomState(0).randint(1, 64, (2, prompt_len))
    steps = 3 * MAX_LEN - prompt_len  # well past the window
    want = _greedy_by_full_forward(model, prompt, steps)
    got = np.asarray(models.generate(model, jnp.asarray(prompt), steps))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_streamed_tokens_are_generate_tokens_past_the_window_too(kind):
    model = models.build_model(_small(kind), key=jax.random.key(0))
    prompt = jnp.asarray(np.random.RandomState(1).randint(1, 64, (2, 5)))
    kwargs = dict(temperature=0.9, top_k=20, key=jax.random.key(3))
    full = np.asarray(models.generate(model, prompt, 20, **kwargs))
    streamed = np.stack(list(models.generate_stream(model, prompt, 20, **kwargs)), axis=1)  # (B, 20)
    np.testing.assert_array_equal(streamed, full[:, 5:])


def _left_pad(rows, pad_id=0):
    width = max(map(len, rows))
    ids = np.array([[pad_id] * (width - len(r)) + list(r) for r in rows])
    return ids, np.array([[False] * (width - len(r)) + [True] * len(r) for r in rows])


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_left_padded_rows_continue_as_they_would_alone(kind):
    model = models.build_model(_small(kind), key=jax.random.key(0))
    rows = [[5, 6, 7, 8, 9], [3, 4], [10, 11, 12]]
    ids, mask = _left_pad(rows)
    batched = np.asarray(models.generate(model, jnp.asarray(ids), 14, prompt_mask=jnp.asarray(mask)))  # past 12
    for row, out in zip(rows, batched):
        alone = np.asarray(models.generate(model, jnp.asarray([row]), 14))[0]
        np.testing.assert_array_equal(out[-14:], alone[-14:])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_left_padded_greedy_equals_transformers(family, tmp_path):
    ref = _gpt2_ref(tie=True) if family == "gpt2" else _llama_ref("gqa-llama3-untied")
    model = _import(ref, tmp_path)
    rows = [[5, 6, 7, 8, 9, 10, 11], [3, 4, 5], [12, 13, 14, 15, 16]]
    ids, mask = _left_pad(rows)
    with torch.no_grad():
        want = ref.generate(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)), max_new_tokens=20,
                            min_new_tokens=20, do_sample=False, pad_token_id=0).numpy()
    got = np.asarray(models.generate(model, jnp.asarray(ids), 20, prompt_mask=jnp.asarray(mask)))
    np.testing.assert_array_equal(got, want)


def test_bad_prompt_masks_are_refused():
    model = models.build_model(_small("gpt2"), key=jax.random.key(0))
    ids = jnp.ones((2, 4), jnp.int32)
    with pytest.raises(ConfigError, match="row 1 is not left-padded"):
        models.generate(model, ids, 3, prompt_mask=jnp.array([[True] * 4, [True, True, True, False]]))
    with pytest.raises(ConfigError, match="prompt_mask must be bool"):
        models.generate(model, ids, 3, prompt_mask=jnp.ones((2, 3), bool))
