"""GPT-2 and Llama against Hugging Face ``transformers``: logits, greedy tokens, KV cache, sharding.

Each reference is built with random weights and a non-default config, saved with
``save_pretrained`` (safetensors + config.json), and brought into baobab through
``models.hf`` (config translation + name table), as the importer will.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import models, nn
from baobab.models import hf

import torch
import transformers
import safetensors.numpy as safetensors_numpy

PROMPT_LEN, STEPS = 5, 20
forward = jax.jit(lambda model, ids: model(ids))  # compiled once per model structure and shape


def _import(ref, tmp_path, **overrides):
    """save_pretrained -> (config.json, safetensors) -> a baobab model with the same weights,
    in evaluation mode like the ``.eval()`` reference (HF configs carry dropout 0.1)."""
    ref.save_pretrained(tmp_path)
    config = hf.config_from_hf(json.loads((tmp_path / "config.json").read_text()), **overrides)
    tensors = safetensors_numpy.load_file(tmp_path / "model.safetensors")
    model = models.build_model(config, key=jax.random.key(1))
    return nn.eval_mode(hf.load_hf(model, tensors, hf.names_for(config)))


# No eos (eos_token_id=None): with min_new_tokens, transformers would keep an eos from being picked
# early where a plain argmax may pick it, and the greedy tokens would differ for that reason alone.
def _gpt2_ref(tie: bool):
    config = transformers.GPT2Config(
        vocab_size=97, n_positions=48, n_embd=48, n_layer=2, n_head=3, n_inner=80,  # odd head count
        layer_norm_epsilon=1e-4, tie_word_embeddings=tie, initializer_range=0.1,
        bos_token_id=0, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


LLAMA_VARIANTS = {
    # GQA (6 query heads over 2 kv heads), head_dim != hidden/heads, llama3 RoPE scaling, untied head
    "gqa-llama3-untied": dict(num_attention_heads=6, num_key_value_heads=2, head_dim=10, tie_word_embeddings=False,
                              rope_theta=500.0, rms_norm_eps=1e-5,
                              rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    # multi-query attention with biases, linear RoPE scaling, tied embeddings
    "mqa-linear-bias-tied": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                                 attention_bias=True, mlp_bias=True, rms_norm_eps=1e-6,
                                 rope_scaling={"rope_type": "linear", "factor": 2.0}),
}


def _llama_ref(variant: str):
    config = transformers.LlamaConfig(
        vocab_size=101, hidden_size=48, num_hidden_layers=2, intermediate_size=72, max_position_embeddings=64,
        initializer_range=0.1, bos_token_id=0, eos_token_id=None, pad_token_id=0, **LLAMA_VARIANTS[variant])
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _ids(vocab, shape, seed=0):
    return np.random.RandomState(seed).randint(1, vocab, shape)


def _check_against_reference(ref, model, tmp_path):
    vocab = model.config.vocab_size
    ids = _ids(vocab, (2, 17))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    got = np.asarray(forward(model, jnp.asarray(ids)))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

    prompt = _ids(vocab, (2, PROMPT_LEN), seed=1)
    with torch.no_grad():
        ref_tokens = ref.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                                  max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False).numpy()
    ours = np.asarray(models.generate(model, jnp.asarray(prompt), STEPS))
    assert ref_tokens.shape == ours.shape == (2, PROMPT_LEN + STEPS)
    np.testing.assert_array_equal(ours, ref_tokens)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_gpt2_matches_transformers(tie, tmp_path):
    ref = _gpt2_ref(tie)
    model = _import(ref, tmp_path)
    assert (model.lm_head is None) == tie
    _check_against_reference(ref, model, tmp_path)


@pytest.mark.parametrize("variant", sorted(LLAMA_VARIANTS))
def test_llama_matches_transformers(variant, tmp_path):
    ref = _llama_ref(variant)
    model = _import(ref, tmp_path)
    assert model.config.rope_scaling is not None
    _check_against_reference(ref, model, tmp_path)


# ----------------------------------------------------------------------------------------
# Stacked layers, the KV cache and generation
# ----------------------------------------------------------------------------------------


def _small(kind, **kw):
    if kind == "gpt2":
        return models.GPT2Config(vocab_size=64, max_len=40, hidden_size=32, num_layers=2, num_heads=4, **kw)
    return models.LlamaConfig(vocab_size=64, max_len=40, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                              intermediate_size=48, rope_scaling=None, tie_embeddings=False, **kw)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_scanned_layers_compute_the_same_and_import_by_stacking(kind, tmp_path):
    plain = models.build_model(_small(kind), key=jax.random.key(0))
    scanned = models.build_model(_small(kind, scan_layers=True), key=jax.random.key(1))
    table = hf.names_for(plain.config)
    tensors = hf.hf_state_dict(plain, table)  # per-layer upstream names ...
    scanned = hf.load_hf(scanned, tensors, table)  # ... stacked on the way in
    stacked_path = "transformer.h.layer.ln_1.weight" if kind == "gpt2" else "model.layers.layer.mlp.up_proj.weight"
    assert stacked_path in nn.state_dict(scanned)
    assert nn.state_dict(scanned)[stacked_path].shape[0] == 2
    ids = jnp.asarray(_ids(64, (2, 12)))
    np.testing.assert_allclose(forward(scanned, ids), forward(plain, ids), atol=1e-5)
    # and back: exporting the scanned model gives the same upstream tensors
    again = hf.hf_state_dict(scanned, table)
    assert sorted(again) == sorted(tensors)
    for name in tensors:
        np.testing.assert_array_equal(again[name], tensors[name])


# The unscanned models' cache path is checked against transformers' greedy tokens above.
@pytest.mark.parametrize("kind,scan", [("gpt2", True), ("llama", True), ("llama", False)])
def test_cached_decoding_equals_the_full_forward(kind, scan):
    model = models.build_model(_small(kind, scan_layers=scan), key=jax.random.key(0))
    ids = jnp.asarray(_ids(64, (2, 10)))
    full = forward(model, ids)  # (B, T, V)
    step = jax.jit(lambda m, x, c: m.decode(x, c))
    logits, cache = step(model, ids[:, :6], model.init_cache(2, 16))  # prefill 6
    pieces = [logits]
    for t in range(6, 10):  # then one token at a time, reusing one compiled step
        logits, cache = step(model, ids[:, t:t + 1], cache)
        pieces.append(logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5)
    assert step._cache_size() == 2  # prefill shape + step shape, no recompilation per position

    # greedy generation: every new token is the argmax of the full forward at the position before
    tokens = models.generate(model, ids[:, :4], 6)  # (B, 10), the shape `forward` is compiled for
    np.testing.assert_array_equal(tokens[:, :4], ids[:, :4])
    np.testing.assert_array_equal(jnp.argmax(forward(model, tokens)[:, 3:9], -1), tokens[:, 4:])


def test_cache_overflow_gives_nan_under_jit_and_raises_eagerly():
    model = models.build_model(_small("llama"), key=jax.random.key(0))
    ids = jnp.ones((1, 3), jnp.int32)
    logits, cache = jax.jit(lambda m, x, c: m.decode(x, c))(model, ids, model.init_cache(1, 4))
    logits, _ = jax.jit(lambda m, x, c: m.decode(x, c))(model, ids, cache)  # 6 > 4 positions
    assert bool(jnp.isnan(logits).all())
    with pytest.raises(ValueError, match="KVCache overflow"):
        model.decode(ids, cache)


def test_sampling_options():
    model = models.build_model(_small("gpt2"), key=jax.random.key(0))
    prompt = jnp.asarray(_ids(64, (3, 4)))
    a = models.generate(model, prompt, 6, temperature=1.0, top_k=5, top_p=0.9, key=jax.random.key(1))
    b = models.generate(model, prompt, 6, temperature=1.0, top_k=5, top_p=0.9, key=jax.random.key(1))
    np.testing.assert_array_equal(a, b)  # same key, same tokens
    assert a.shape == (3, 10) and bool((a[:, :4] == prompt).all())
    # eos: once emitted, repeated
    greedy = models.generate(model, prompt, 6, eos_id=int(a[0, 4]))
    assert bool(jnp.all((greedy[:, 4:] == a[0, 4]) | (jnp.cumsum(greedy[:, 4:] == a[0, 4], 1) == 0)))
    with pytest.raises(ValueError, match="needs key"):
        models.generate(model, prompt, 3, temperature=0.7)

    logits = jax.random.normal(jax.random.key(4), (2000, 64))  # (B, V)
    top3 = jax.lax.top_k(logits, 3)[1]
    picks = models.sample_logits(logits, jax.random.key(5), temperature=1.0, top_k=3)
    assert bool((top3 == picks[:, None]).any(-1).all())  # top-k picks among the k most likely
    assert len(set(picks.tolist())) > 3  # and still samples
    np.testing.assert_array_equal(models.sample_logits(logits, jax.random.key(6), temperature=5.0, top_p=1e-6),
                                  jnp.argmax(logits, -1))  # a tiny nucleus is the argmax
    probs = jax.nn.softmax(logits, -1)
    picks = models.sample_logits(logits, jax.random.key(7), temperature=1.0, top_p=0.5)
    more_likely = (probs > probs[jnp.arange(2000), picks][:, None]).astype(float)
    assert bool(((more_likely * probs).sum(-1) < 0.5).all())  # the tokens before each pick weigh < top_p


@pytest.mark.parametrize("scan", [False, True], ids=["tuple", "scan"])
def test_dropout_needs_a_key_in_training_and_generation_runs_in_eval_mode(scan):
    model = models.build_model(_small("gpt2", dropout=0.5, scan_layers=scan), key=jax.random.key(0))
    ids = jnp.asarray(_ids(64, (2, 5)))
    with pytest.raises(ValueError, match=r"Dropout at 'transformer.drop' \(rate=0.5\) is in training mode"):
        model(ids)  # training mode (the default) with dropout: a key is needed
    a, b = model(ids, key=jax.random.key(1)), model(ids, key=jax.random.key(2))
    assert not np.allclose(a, b)  # the key reaches the dropout layers
    evaluated = nn.eval_mode(model)
    np.testing.assert_array_equal(evaluated(ids), evaluated(ids, key=jax.random.key(1)))  # no dropout
    # generate is inference: the training-mode model decodes as its eval-mode copy, without a key
    np.testing.assert_array_equal(models.generate(model, ids, 4), models.generate(evaluated, ids, 4))


# ----------------------------------------------------------------------------------------
# Sharding on the fake 8-device mesh (data x fsdp x tensor = 2 x 2 x 2)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,scan", [("gpt2", True), ("llama", False)])
def test_sharded_init_and_forward(kind, scan, mesh8):
    config = _small(kind, scan_layers=scan)
    model = nn.create_sharded(lambda k: models.build_model(config, key=k), jax.random.key(0),
                              mesh=mesh8, rules=nn.DEFAULT_RULES)
    specs = {p: x.sharding.spec for p, x in nn.state_dict(model).items()}
    if kind == "gpt2":
        assert specs["transformer.wte.weight"] == jax.sharding.PartitionSpec("tensor", "fsdp")
        assert specs["transformer.h.layer.attn.c_attn.weight"] == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
        assert specs["transformer.h.layer.mlp.c_proj.weight"] == jax.sharding.PartitionSpec(None, "tensor", "fsdp")
    else:
        assert specs["model.layers[0].self_attn.k_proj.weight"] == jax.sharding.PartitionSpec("fsdp", "tensor")
        assert specs["model.layers[0].self_attn.o_proj.weight"] == jax.sharding.PartitionSpec("tensor", "fsdp")
        assert specs["lm_head.weight"] == jax.sharding.PartitionSpec("fsdp", "tensor")
    # the same weights, unsharded, compute the same logits; every device holds a slice only
    local = models.build_model(config, key=jax.random.key(0))
    for path, x in nn.state_dict(local).items():
        np.testing.assert_allclose(np.asarray(nn.state_dict(model)[path]), x, atol=1e-6)  # jit vs eager rounding
    ids = jnp.asarray(_ids(64, (4, 8)))
    np.testing.assert_allclose(forward(model, ids), forward(local, ids), atol=1e-5)
    cache = model.init_cache(4, 16)
    cache_shardings = nn.shardings(cache, mesh8, nn.DEFAULT_RULES)  # caches carry logical axes too
    assert len(jax.tree.leaves(cache_shardings)) == len(jax.tree.leaves(cache))


# ----------------------------------------------------------------------------------------
# Packed documents: segment ids and positions keep them apart
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,scan", [("gpt2", False), ("gpt2", True), ("llama", False), ("llama", True)])
def test_a_packed_document_depends_on_itself_alone(kind, scan):
    model = models.build_model(_small(kind, scan_layers=scan), key=jax.random.key(0))
    a, b, c = (jnp.asarray(_ids(64, (n,), seed=s)) for n, s in ((11, 1), (13, 2), (13, 3)))
    row = jnp.concatenate([a, b])[None]  # (1, 24): document a, then document b
    seg = jnp.asarray([[1] * 11 + [2] * 13])
    pos = jnp.asarray([list(range(11)) + list(range(13))])
    run = jax.jit(lambda m, x, s, p: m(x, segment_ids=s, positions=p))
    packed = run(model, row, seg, pos)
    np.testing.assert_allclose(packed[:, 11:], model(b[None]), atol=1e-5)  # b as if alone
    np.testing.assert_allclose(packed[:, :11], model(a[None]), atol=1e-5)
    other = run(model, jnp.concatenate([a, c])[None], seg, pos)  # change the other document
    np.testing.assert_array_equal(other[:, :11], packed[:, :11])
    unpacked = model(row)  # without them, b attends to a and sits at positions 11..23
    assert not np.allclose(unpacked[:, 11:], packed[:, 11:], atol=1e-3)


def test_the_language_model_task_feeds_packing_to_the_model_and_skips_cross_document_targets():
    from baobab.tasks import TASKS

    model = nn.eval_mode(models.build_model(_small("llama"), key=jax.random.key(0)))
    a, b = jnp.asarray(_ids(64, (9,), seed=4)), jnp.asarray(_ids(64, (8,), seed=5))
    batch = {"tokens": jnp.concatenate([a, b])[None], "tokens_segment_ids": jnp.asarray([[1] * 9 + [2] * 8]),
             "tokens_positions": jnp.asarray([list(range(9)) + list(range(8))])}
    loss, _ = TASKS["language_model"].loss(model, batch, None)

    def doc_loss(doc):  # summed next-token loss of one document run alone
        logits = model(doc[None, :-1])
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), doc[None, 1:, None], -1).sum()

    np.testing.assert_allclose(loss, (doc_loss(a) + doc_loss(b)) / (8 + 7), rtol=1e-5)
