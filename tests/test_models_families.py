"""Mistral, Qwen2, Qwen3 (options of the Llama blocks) and Gemma 3 against Hugging Face ``transformers``.

Each reference is a small non-default config (GQA, odd head counts, head_dim != hidden /
heads, other RoPE bases and epsilons; Mistral's window and Gemma 3's local layers shorter
than the logits sequence), with seeded random weights (norm weights and biases perturbed
too, so a missing bias or a wrong norm shows), saved with ``save_pretrained`` and brought
in through ``models.hf`` as the importer does. Then: fp32 logits, 20 greedy tokens (prompt
+ steps inside the window), a bit-exact export, config.json both ways, packing and errors.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
from test_models_lm import _ids, _import

from baobab import models, nn
from baobab.errors import ConfigError
from baobab.models import hf, hf_config, hf_io

import safetensors.numpy as safetensors_numpy  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

PROMPT_LEN, STEPS = 5, 20
WINDOW = 28  # >= PROMPT_LEN + STEPS: greedy decoding stays inside the window
LONG = 40  # the logits sequence, longer than WINDOW: the window binds there
ATOL = 2e-5
forward = jax.jit(lambda model, ids: model(ids))

# No eos: transformers would keep it from being picked before min_new_tokens, where an argmax may pick it.
COMMON = dict(vocab_size=101, hidden_size=48, intermediate_size=72, max_position_embeddings=64,
              initializer_range=0.1, bos_token_id=0, eos_token_id=None, pad_token_id=0, attn_implementation="eager")
FAMILIES = {
    # sliding window, 6 query heads over 2 kv heads, head_dim 10 != 48 / 6, untied head
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM,
                dict(num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, head_dim=10,
                     sliding_window=WINDOW, rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    # q/k/v biases (no o_proj bias), 3 layers, tied embeddings, linear RoPE scaling
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, rope_theta=2000.0,
                   rms_norm_eps=1e-5, tie_word_embeddings=True, rope_scaling={"rope_type": "linear", "factor": 2.0})),
    # q/k norms, multi-query, head_dim 16 != 48 / 4, all four biases (attention_bias), untied
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
              dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                   attention_bias=True, rope_theta=300.0, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    # local/local/global/local, two RoPE bases (global linearly scaled), final soft-cap, scalar != head_dim
    # (no attention soft-cap: transformers' Gemma 3 ignores attn_logit_softcapping; ours is tested below)
    "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
               dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    sliding_window=WINDOW, rope_theta=5000.0, rope_local_base_freq=300.0,
                    rope_scaling={"rope_type": "linear", "factor": 2.0},
                    layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
                    query_pre_attn_scalar=20, final_logit_softcapping=6.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True)),
}


def _ref(family: str):
    config_class, model_class, options = FAMILIES[family]
    torch.manual_seed(0)
    ref = model_class(config_class(**COMMON, **options)).eval()
    with torch.no_grad():  # biases start at 0 and norms at 1 (Gemma: 0): perturb everything
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ref


def _window_off(config):
    """The same config with a window as long as any sequence (Gemma's local layers keep their RoPE)."""
    return config.model_copy(update={"sliding_window": config.max_len})


# ----------------------------------------------------------------------------------------
# Parity: logits and greedy tokens
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_matches_transformers(family, tmp_path):
    ref = _ref(family)
    model = _import(ref, tmp_path)
    assert model.config.kind == family and type(model) is models.MODELS[family].model
    ids = _ids(101, (2, LONG))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    got = np.asarray(forward(model, jnp.asarray(ids)))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=ATOL)

    if family in ("mistral", "gemma3"):  # the window binds past WINDOW tokens, and only there
        plain = hf.load_hf(models.build_model(_window_off(model.config), key=jax.random.key(0)),
                           hf.hf_state_dict(model, hf.names_for(model.config)), hf.names_for(model.config))
        unwindowed = np.asarray(forward(plain, jnp.asarray(ids)))
        np.testing.assert_allclose(unwindowed[:, :WINDOW], got[:, :WINDOW], atol=1e-5)
        assert not np.allclose(unwindowed[:, WINDOW:], got[:, WINDOW:], atol=1e-3)

    prompt = _ids(101, (2, PROMPT_LEN), seed=1)
    with torch.no_grad():
        ref_tokens = ref.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                                  max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False).numpy()
    ours = np.asarray(models.generate(model, jnp.asarray(prompt), STEPS))
    assert ours.shape == ref_tokens.shape == (2, PROMPT_LEN + STEPS) and PROMPT_LEN + STEPS <= WINDOW
    np.testing.assert_array_equal(ours, ref_tokens)


@pytest.mark.parametrize("family, steps", [("mistral", 70), ("gemma3", 50)])
def test_greedy_past_the_window_equals_transformers(family, steps, tmp_path):
    """Past the sliding window (28). Mistral also past max_len (64), where baobab's cache rolls and,
    every layer being windowed, loses nothing. (Gemma 3's global layers would then see only the
    last max_len tokens, where transformers' see all: no parity claimed there.)"""
    ref = _ref(family)
    model = _import(ref, tmp_path)
    prompt = _ids(101, (2, PROMPT_LEN), seed=2)
    with torch.no_grad():
        want = ref.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                            max_new_tokens=steps, min_new_tokens=steps, do_sample=False).numpy()
    got = np.asarray(models.generate(model, jnp.asarray(prompt), steps))
    assert PROMPT_LEN + steps > WINDOW and (family != "mistral" or PROMPT_LEN + steps > model.config.max_len)
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------
# Export: HF -> baobab -> HF is bit-exact; config.json both ways
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_import_export_is_bit_exact_and_configs_translate_both_ways(family, tmp_path):
    ref = _ref(family)
    src, out = tmp_path / "src", tmp_path / "out"
    ref.save_pretrained(src, safe_serialization=True)
    theirs = json.loads((src / "config.json").read_text())
    model, report = hf_io.import_hf(src, scan_layers=True)  # read into stacked layers ...
    assert report.kind == family and report.fresh == []
    assert isinstance(model.model.layers, nn.Stacked)
    hf_io.export_hf(model, out, base_config=theirs)  # ... and split again on the way out
    before = safetensors_numpy.load_file(src / "model.safetensors")
    after = safetensors_numpy.load_file(out / "model.safetensors")
    assert sorted(after) == sorted(before)
    for name, x in before.items():  # same dtype, shape and bytes
        assert after[name].dtype == x.dtype and after[name].tobytes() == x.tobytes(), name

    ours = json.loads((out / "config.json").read_text())
    config = hf.config_from_hf(theirs)
    assert hf.config_from_hf(ours) == config == model.config.model_copy(update={"scan_layers": False})
    assert hf.config_from_hf(hf_config.config_to_hf(config)) == config
    back = type(ref).from_pretrained(out, attn_implementation="eager").eval()  # our config.json, read as theirs
    ids = torch.tensor(_ids(101, (2, LONG)))
    with torch.no_grad():
        np.testing.assert_array_equal(back(ids).logits.numpy(), ref(ids).logits.numpy())


@pytest.mark.parametrize("kind", ["mistral", "qwen2", "qwen3", "gemma3"])
def test_default_configs_translate_both_ways(kind):
    config = models.MODELS[kind].config()  # a released model's config
    cfg = hf_config.config_to_hf(config)
    assert hf.config_from_hf(cfg) == config
    theirs = transformers.AutoConfig.for_model(**cfg)  # transformers reads the same architecture
    head_dim = getattr(theirs, "head_dim", None) or theirs.hidden_size // theirs.num_attention_heads
    ours = config.head_dim if kind == "gemma3" else config.dims_per_head
    assert (theirs.num_key_value_heads, head_dim) == (config.num_kv_heads, ours)
    assert (theirs.tie_word_embeddings, theirs.max_position_embeddings) == (config.tie_embeddings, config.max_len)
    if kind in ("mistral", "gemma3"):
        assert theirs.sliding_window == config.sliding_window
    if kind == "gemma3":
        assert theirs.layer_types == cfg["layer_types"] and theirs.layer_types.count("full_attention") == 4


# ----------------------------------------------------------------------------------------
# Gemma 3's own paths: stacked layers, cached decoding past the window
# ----------------------------------------------------------------------------------------


def _small_gemma3(**kw):
    return models.Gemma3Config(**{**dict(vocab_size=64, max_len=40, hidden_size=32, num_layers=3, num_heads=4,
                                          num_kv_heads=2, head_dim=8, intermediate_size=48, sliding_window=4,
                                          layer_types=("sliding_attention", "full_attention", "sliding_attention"),
                                          attn_softcap=10.0, final_softcap=20.0), **kw})


def _randomised(model):
    """``model`` with every array drawn at random (Gemma's norms start at zero, its biases too)."""
    leaves = nn.state_dict(model)
    keys = dict(zip(leaves, jax.random.split(jax.random.key(7), len(leaves)), strict=True))
    return nn.map_arrays(lambda p, x, m: 0.3 * jax.random.normal(keys[p], x.shape, x.dtype), model)


def test_gemma3_scanned_layers_and_cached_decoding_past_the_window():
    plain = _randomised(models.build_model(_small_gemma3(), key=jax.random.key(0)))
    table = hf.names_for(plain.config)
    scanned = hf.load_hf(models.build_model(_small_gemma3(scan_layers=True, remat="full"), key=jax.random.key(1)),
                         hf.hf_state_dict(plain, table), table)
    ids = jnp.asarray(_ids(64, (2, 16)))  # 16 tokens, a window of 4
    full = forward(plain, ids)  # (B, T, V)
    np.testing.assert_allclose(forward(scanned, ids), full, atol=1e-5)
    assert not np.allclose(forward(_randomised(models.build_model(_window_off(plain.config), key=jax.random.key(0))),
                                   ids)[:, 4:], full[:, 4:], atol=1e-3)
    step = jax.jit(lambda m, x, c: m.decode(x, c))
    for model in (plain, scanned):
        logits, cache = step(model, ids[:, :5], model.init_cache(2, 20))  # prefill 5
        pieces = [logits]
        for t in range(5, 16):  # then one token at a time, well past the window
            logits, cache = step(model, ids[:, t:t + 1], cache)
            pieces.append(logits)
        np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5)
    grads = jax.grad(lambda m: forward(m, ids).sum())(scanned)  # the scanned, rematerialised layers train
    assert float(jnp.abs(grads.model.layers.layer.self_attn.q_norm.weight).sum()) > 0


def _left_pad(rows, pad_id=0):
    width = max(map(len, rows))
    ids = np.array([[pad_id] * (width - len(r)) + list(r) for r in rows])
    return ids, np.array([[False] * (width - len(r)) + [True] * len(r) for r in rows])


def test_gemma3_left_padded_prompts_as_transformers_and_as_alone_past_max_len(tmp_path):
    ref = _ref("gemma3")
    rows = [[5, 6, 7, 8, 9, 10, 11], [3, 4, 5], [12, 13, 14, 15, 16]]
    ids, mask = _left_pad(rows)  # 7 + 20 tokens: inside the window
    with torch.no_grad():
        want = ref.generate(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)), max_new_tokens=20,
                            do_sample=False, pad_token_id=0).numpy()
    model = _import(ref, tmp_path)
    got = np.asarray(models.generate(model, jnp.asarray(ids), 20, prompt_mask=jnp.asarray(mask)))
    np.testing.assert_array_equal(got, want)

    model = _randomised(models.build_model(_small_gemma3(max_len=12), key=jax.random.key(0)))
    ids, mask = _left_pad([[5, 6, 7, 8, 9], [3, 4]])
    batched = np.asarray(models.generate(model, jnp.asarray(ids), 14, prompt_mask=jnp.asarray(mask)))  # past 12
    for row, out in zip(([5, 6, 7, 8, 9], [3, 4]), batched, strict=True):
        alone = np.asarray(models.generate(model, jnp.asarray([row]), 14))[0]  # a rolling cache, unpadded
        np.testing.assert_array_equal(out[-14:], alone[-14:])


# ----------------------------------------------------------------------------------------
# Packed documents
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_a_packed_document_depends_on_itself_alone(family):
    if family == "gemma3":
        config = _small_gemma3()
    else:
        config = models.Qwen3Config(vocab_size=64, max_len=40, hidden_size=32, num_layers=2, num_heads=4,
                                    num_kv_heads=2, head_dim=16, intermediate_size=48)
    model = _randomised(models.build_model(config, key=jax.random.key(0)))
    a, b, c = (jnp.asarray(_ids(64, (n,), seed=s)) for n, s in ((11, 1), (13, 2), (13, 3)))
    row = jnp.concatenate([a, b])[None]  # (1, 24): document a, then document b
    seg = jnp.asarray([[1] * 11 + [2] * 13])
    pos = jnp.asarray([list(range(11)) + list(range(13))])
    run = jax.jit(lambda m, x, s, p: m(x, segment_ids=s, positions=p))
    packed = run(model, row, seg, pos)
    np.testing.assert_allclose(packed[:, 11:], forward(model, b[None]), atol=1e-5)  # b as if alone
    np.testing.assert_allclose(packed[:, :11], forward(model, a[None]), atol=1e-5)
    other = run(model, jnp.concatenate([a, c])[None], seg, pos)  # change the other document
    np.testing.assert_array_equal(other[:, :11], packed[:, :11])
    assert not np.allclose(forward(model, row)[:, 11:], packed[:, 11:], atol=1e-3)  # unpacked, b sees a


# ----------------------------------------------------------------------------------------
# Bad configs: errors by name
# ----------------------------------------------------------------------------------------


def test_bad_configs_are_refused_by_name():
    for bad in (lambda: models.MistralConfig(sliding_window=0), lambda: models.Gemma3Config(sliding_window=-4)):
        with pytest.raises(pydantic.ValidationError, match=r"sliding_window\n  Input should be greater than 0"):
            bad()
    with pytest.raises(pydantic.ValidationError, match="num_kv_heads=4 does not divide num_heads=14"):
        models.Qwen2Config(num_kv_heads=4)
    with pytest.raises(pydantic.ValidationError, match="num_kv_heads=3 does not divide num_heads=4"):
        models.Gemma3Config(num_kv_heads=3)
    with pytest.raises(pydantic.ValidationError, match="num_heads=5 does not divide hidden_size=48; set head_dim"):
        models.MistralConfig(hidden_size=48, num_heads=5, num_kv_heads=1)
    with pytest.raises(pydantic.ValidationError, match="layer_types has 2 entries for num_layers=3"):
        models.Gemma3Config(num_layers=3, layer_types=("sliding_attention", "full_attention"))
    with pytest.raises(pydantic.ValidationError, match="layer_types"):
        models.Gemma3Config(num_layers=1, layer_types=("chunked_attention",))

    with pytest.raises(NotImplementedError, match=r"use_sliding_window=True \(supported: \[False\]\)"):
        hf.config_from_hf({"model_type": "qwen2", "use_sliding_window": True})
    with pytest.raises(NotImplementedError, match=r"hidden_activation='gelu'.*use_bidirectional_attention=True"
                                                  r".*attn_logit_softcapping=50.0"):
        hf.config_from_hf({"model_type": "gemma3_text", "hidden_activation": "gelu",
                           "use_bidirectional_attention": True, "attn_logit_softcapping": 50.0})
    with pytest.raises(ConfigError, match="does not apply attention soft-capping"):
        hf_config.config_to_hf(models.Gemma3Config(attn_softcap=50.0))
    with pytest.raises(NotImplementedError, match=r"model_type 'gemma2' is not supported; supported: \[.*'qwen3'"):
        hf.config_from_hf({"model_type": "gemma2"})
    with pytest.raises(ConfigError, match=r"MistralForCausalLM has no place for qkv_bias=True, qk_norm=True"):
        hf_config.config_to_hf(models.MistralConfig(qkv_bias=True, qk_norm=True))
    with pytest.raises(ConfigError, match=r"LlamaForCausalLM has no place for sliding_window=64.*mistral"):
        hf_config.config_to_hf(models.LlamaConfig(sliding_window=64))
