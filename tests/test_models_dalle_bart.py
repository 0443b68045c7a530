"""DalleBart against min-dalle (``DalleBartEncoder`` / ``DalleBartDecoder``, random weights, reduced sizes).

min-dalle is the reference: its encoder output, its teacher-forced decoder (T > 1)
and its cached one-token path (T == 1). Our model is built by importing min-dalle's
state dict, so the parity tests also check ``dalle_bart_io.import_min_dalle``; the
msgpack tests write dalle-mini's Flax names (converted here by an independent table)
and check the imported model against min-dalle with the same weights.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from min_dalle_reference import import_min_dalle

from baobab import nn
from baobab.errors import CheckpointError, ShapeMismatchError
from baobab.models import DalleBart, DalleBartConfig, dalle_bart_io

import torch  # noqa: E402  (the test extra installs torch and min-dalle: the references)

D, HEADS, FFN, LAYERS, TEXT_VOCAB, IMAGE_VOCAB, TEXT_LEN = 32, 4, 48, 2, 97, 64, 8
IMAGE_LEN = 256  # min-dalle hard-codes 256 image positions
TEXT = np.array([[0, 2, 1, 1, 1, 1, 1, 1],  # the empty prompt (unconditional row), padded with 1
                 [0, 5, 9, 33, 71, 2, 1, 1]])  # a prompt, padded
HEADS_KW = dict(encoder_heads=HEADS, decoder_heads=HEADS)
TOL = 1e-4


@pytest.fixture(scope="module")
def min_dalle_models():
    """min-dalle's model classes (``min_dalle_reference`` undoes its import's side effects)."""
    module = import_min_dalle("min_dalle.models")
    return module.DalleBartEncoder, module.DalleBartDecoder


def _bias_only(name: str) -> bool:
    """The torch LayerNorm weights that dalle-mini's bias-only norms do not have."""
    return bool(re.search(r"(pre_self_attn_layer_norm|pre_encoder_attn_layer_norm|glu\.ln[01]|final_ln)\.weight$",
                          name))


@pytest.fixture(scope="module")
def reference(min_dalle_models):
    """min-dalle's encoder and decoder with random weights (bias-only norms keep weight 1)."""
    Encoder, Decoder = min_dalle_models
    torch.manual_seed(0)
    enc = Encoder(layer_count=LAYERS, embed_count=D, attention_head_count=HEADS, text_vocab_count=TEXT_VOCAB,
                  text_token_count=TEXT_LEN, glu_embed_count=FFN, device="cpu")
    dec = Decoder(image_vocab_count=IMAGE_VOCAB, embed_count=D, attention_head_count=HEADS, glu_embed_count=FFN,
                  layer_count=LAYERS, device="cpu")
    with torch.no_grad():
        for module in (enc, dec):
            for name, p in module.named_parameters():
                if _bias_only(name):
                    continue
                if name.endswith("norm.weight") or name.endswith("embedding.weight"):
                    p.copy_(1 + 0.2 * torch.randn_like(p))  # a scaled norm's weight
                else:
                    p.copy_(0.3 * torch.randn_like(p))
    return enc.eval(), dec.eval()


def _state(module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def model(reference):
    enc, dec = reference
    return dalle_bart_io.import_min_dalle(enc.state_dict(), dec.state_dict(), **HEADS_KW)


def _ref_encode(reference) -> np.ndarray:
    with torch.no_grad():
        return reference[0](torch.tensor(TEXT)).numpy()


def _ref_decode(reference, states: np.ndarray, tokens: np.ndarray, index: np.ndarray, cache=None):
    """min-dalle's decoder on [uncond; cond] states: prev_tokens (1, T) at positions ``index``."""
    dec = reference[1]
    if cache is None:
        cache = torch.zeros(LAYERS, 4, IMAGE_LEN, D)
    mask = torch.tensor(TEXT != 1)[:, None, None, :]
    with torch.no_grad():
        logits, cache = dec(mask, torch.tensor(states), cache, torch.tensor(tokens), torch.tensor(index))
    return logits.numpy(), cache


def _image_tokens(T: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, IMAGE_VOCAB, size=(1, T))
    tokens[0, 0] = IMAGE_VOCAB  # the start token
    return tokens


# ----------------------------------------------------------------------------------------
# Forward parity
# ----------------------------------------------------------------------------------------


def test_config_read_off_the_state_dicts(model):
    c = model.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_ffn, c.text_vocab_size, c.image_vocab_size,
            c.max_text_len, c.image_len) == (D, LAYERS, LAYERS, FFN, TEXT_VOCAB, IMAGE_VOCAB, TEXT_LEN, IMAGE_LEN)
    assert c.use_glu and not c.use_bias and c.ln_positions == "normformer"
    assert model.encoder.layers[0].pre_self_attn_layer_norm.weight is None  # bias-only
    assert model.encoder.layers[0].self_attn_layer_norm.weight is not None


def test_encoder_matches_min_dalle_with_padding(model, reference):
    ours = jax.jit(lambda m, ids, mask: m.encode(ids, mask))(model, jnp.asarray(TEXT), jnp.asarray(TEXT != 1))
    np.testing.assert_allclose(np.asarray(ours), _ref_encode(reference), atol=TOL, rtol=0)


def test_teacher_forced_decoder_matches_min_dalle(model, reference):
    T = 12
    tokens = _image_tokens(T)
    want, _ = _ref_decode(reference, _ref_encode(reference), tokens, np.arange(T))
    ours = jax.jit(lambda m, t, mk, im: m(t, mk, im))(model, jnp.asarray(TEXT), jnp.asarray(TEXT != 1),
                                                       jnp.asarray(np.repeat(tokens, 2, axis=0)))
    assert ours.shape == (2, T, IMAGE_VOCAB + 1)
    np.testing.assert_allclose(np.asarray(ours), want, atol=TOL, rtol=0)


def test_cached_steps_match_min_dalle_and_compile_once(model, reference):
    T = 8
    tokens = _image_tokens(T, seed=2)
    states_ref = _ref_encode(reference)
    ids, mask = jnp.asarray(TEXT), jnp.asarray(TEXT != 1)
    traces = []

    @jax.jit
    def step(m, token, cache):
        traces.append(1)
        return m.decode(token, cache)

    states = model.encode(ids, mask)
    cache = model.init_cache(states, mask)
    assert cache.layers[0].cross_k.shape == (2, TEXT_LEN, HEADS, D // HEADS)
    assert cache.layers[0].self_attn.k.shape == (2, IMAGE_LEN, HEADS, D // HEADS)
    ref_cache = None
    for i in range(T):
        want, ref_cache = _ref_decode(reference, states_ref, tokens[:, i:i + 1], np.array([i]), ref_cache)
        got, cache = step(model, jnp.asarray(np.repeat(tokens[:, i:i + 1], 2, axis=0)), cache)
        np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0, err_msg=f"step {i}")
    assert int(cache.index) == T
    assert len(traces) == 1, f"the decode step was traced {len(traces)} times; cache shapes must not change"


def test_prefill_then_steps_equal_the_teacher_forced_logits(model):
    tokens = jnp.asarray(np.repeat(_image_tokens(6, seed=3), 2, axis=0))
    ids, mask = jnp.asarray(TEXT), jnp.asarray(TEXT != 1)
    full = model(ids, mask, tokens)
    cache = model.init_cache(model.encode(ids, mask), mask, max_len=6)
    first, cache = model.decode(tokens[:, :4], cache)
    rest, cache = model.decode(tokens[:, 4:], cache)
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="overflow"):  # beyond max_len: an error outside jit ...
        model.decode(tokens[:, :1], cache)
    past, _ = jax.jit(lambda m, t, c: m.decode(t, c))(model, tokens[:, :1], cache)  # ... NaN under jit
    assert bool(jnp.isnan(past).all())


def test_eval_shape_agrees_and_params_carry_logical_axes(model):
    ids, mask = jnp.asarray(TEXT), jnp.asarray(TEXT != 1)
    abstract = jax.eval_shape(lambda: DalleBart(model.config, key=jax.random.key(0)))
    states = jax.eval_shape(lambda m: m.encode(ids, mask), abstract)
    cache = jax.eval_shape(lambda m, s: m.init_cache(s, mask), abstract, states)
    logits, _ = jax.eval_shape(lambda m, c: m.decode(jnp.zeros((2, 1), jnp.int32), c), abstract, cache)
    assert states.shape == (2, TEXT_LEN, D) and logits.shape == (2, 1, IMAGE_VOCAB + 1)
    for path, x, meta in nn.iter_arrays(abstract):
        assert len(meta.axes) == len(x.shape), path
        assert all(a is None or a in nn.DEFAULT_RULES for a in meta.axes), (path, meta.axes)


# ----------------------------------------------------------------------------------------
# Imports
# ----------------------------------------------------------------------------------------


def _logits(m: DalleBart) -> np.ndarray:
    tokens = jnp.asarray(np.repeat(_image_tokens(5, seed=4), 2, axis=0))
    return np.asarray(jax.jit(lambda m: m(jnp.asarray(TEXT), jnp.asarray(TEXT != 1), tokens))(m))


def test_min_dalle_safetensors_files_import_like_the_mapping(model, reference, tmp_path):
    from safetensors.numpy import save_file

    enc, dec = (_state(m) for m in reference)
    # min-dalle's released files omit the bias-only norms' weights: both forms load
    enc = {k: v for k, v in enc.items() if not _bias_only(k)}
    save_file(enc, tmp_path / "encoder.safetensors")
    save_file({k: v.astype(np.float16) for k, v in dec.items()}, tmp_path / "decoder.safetensors")
    again = dalle_bart_io.import_min_dalle(tmp_path / "encoder.safetensors", tmp_path / "decoder.safetensors",
                                           **HEADS_KW)
    np.testing.assert_array_equal(again.encoder.embed_tokens.weight, model.encoder.embed_tokens.weight)
    assert again.lm_head.weight.dtype == jnp.float32
    np.testing.assert_allclose(again.lm_head.weight, model.lm_head.weight.astype(np.float16).astype(np.float32))
    stacked = dalle_bart_io.import_min_dalle(enc, dec, scan_layers=True, **HEADS_KW)
    assert stacked.encoder.layers.layer.glu.fc0.weight.shape == (LAYERS, D, FFN)
    np.testing.assert_allclose(_logits(stacked), _logits(model), atol=1e-5, rtol=0)


def test_a_pickle_file_is_refused_with_the_conversion_hint(tmp_path):
    path = tmp_path / "encoder.pt"
    path.write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="safetensors") as err:
        dalle_bart_io.import_min_dalle(path, path)
    assert "torch.load" in str(err.value)


def test_a_mismatch_lists_every_bad_name_together(reference):
    enc, dec = (_state(m) for m in reference)
    del enc["layers.1.glu.fc2.weight"]
    dec["layers.0.encoder_attn.extra.weight"] = np.zeros((2, 2), np.float32)
    dec["layers.1.self_attn.v_proj.weight"] = np.zeros((D, D + 1), np.float32)
    enc["layers.0.glu.ln1.weight"] = np.full(FFN, 2.0, np.float32)  # a trained scale on a bias-only norm
    with pytest.raises(ShapeMismatchError) as err:
        dalle_bart_io.import_min_dalle(enc, dec, **HEADS_KW)
    text = str(err.value)
    for name in ("encoder:layers.1.glu.fc2.weight", "decoder:layers.0.encoder_attn.extra.weight",
                 "decoder:layers.1.self_attn.v_proj.weight", "encoder:layers.0.glu.ln1.weight", "force_ln_scale"):
        assert name in text, name


def test_unimplemented_variants_raise_naming_the_option():
    small = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2, encoder_ffn=8,
                 decoder_ffn=8, text_vocab_size=8, image_vocab_size=8, decoder_start_token_id=8)
    for option, value in (("ln_positions", "swinv2"), ("use_cosine_attention", True), ("sinkhorn_iters", 3),
                          ("activation", "smelu"), ("use_head_scale", True)):
        with pytest.raises(NotImplementedError, match=option):
            DalleBart(DalleBartConfig(**small, **{option: value}), key=jax.random.key(0))


def test_presets_are_the_released_sizes():
    for preset, n_layers, d, vocab in ((DalleBartConfig.mini(), 12, 1024, 16384), (DalleBartConfig.mega(), 24, 2048,
                                                                                     16415)):
        assert (preset.encoder_layers, preset.d_model, preset.image_vocab_size) == (n_layers, d, vocab)
        assert preset.ln_positions == "normformer" and preset.use_glu and not preset.use_bias
    assert DalleBartConfig.mini().encoder_ffn == 2730 and DalleBartConfig.mega().encoder_ffn == 4096


# ----------------------------------------------------------------------------------------
# dalle-mini Flax msgpack
# ----------------------------------------------------------------------------------------

# min-dalle name -> dalle-mini Flax name within a layer, written out by hand (as min-dalle's converter maps them)
_FLAX_IN_LAYER = {
    "pre_self_attn_layer_norm": "LayerNorm_0", "self_attn_layer_norm": "LayerNorm_1",
    "pre_encoder_attn_layer_norm": "LayerNorm_2", "encoder_attn_layer_norm": "LayerNorm_3",
    "self_attn": "FlaxBartAttention_0", "encoder_attn": "FlaxBartAttention_1",
    "glu.ln0": "GLU_0/LayerNorm_0", "glu.ln1": "GLU_0/LayerNorm_1",
    "glu.fc0": "GLU_0/Dense_0", "glu.fc1": "GLU_0/Dense_1", "glu.fc2": "GLU_0/Dense_2",
}


def _flax_tree(reference, *, scanned: bool) -> dict[str, np.ndarray]:
    """min-dalle's weights under dalle-mini's Flax names, as a released ``flax_model.msgpack`` holds them."""
    flat: dict[str, np.ndarray] = {}
    per_layer: dict[str, dict[int, np.ndarray]] = {}
    for side, module in zip(("encoder", "decoder"), reference, strict=True):
        kind = "Encoder" if side == "encoder" else "Decoder"
        for name, x in _state(module).items():
            if _bias_only(name):
                continue  # Flax has no scale there
            *path, leaf = name.split(".")
            linear = leaf == "weight" and (path[-1].endswith("_proj") or path[-1].startswith("fc")
                                           or path[-1] == "lm_head")
            if linear:
                x, leaf = x.T, "kernel"
            elif leaf == "weight":
                leaf = "embedding" if path[-1].startswith("embed_") else "scale"
            if path[0] == "lm_head":
                flat["lm_head/kernel"] = x
            elif path[0] == "layers":
                i, inner = int(path[1]), ".".join(path[2:])
                sub = _FLAX_IN_LAYER.get(inner) or f"{_FLAX_IN_LAYER[path[2]]}/{path[3]}"
                if scanned:
                    per_layer.setdefault(f"model/{side}/layers/FlaxBart{kind}Layers/{sub}/{leaf}", {})[i] = x
                else:
                    flat[f"model/{side}/layers/FlaxBart{kind}Layer_{i}/{sub}/{leaf}"] = x
            else:
                flat[f"model/{side}/{path[0]}/{leaf}"] = x
    for name, rows in per_layer.items():
        flat[name] = np.stack([rows[i] for i in sorted(rows)])
    return flat


@pytest.mark.parametrize("scanned", [True, False], ids=["scanned", "unscanned"])
def test_flax_msgpack_imports_and_matches_min_dalle(reference, tmp_path, scanned):
    from baobab.models.flax_msgpack import write_flax_msgpack

    tree = _flax_tree(reference, scanned=scanned)
    assert ("model/encoder/layers/FlaxBartEncoderLayers/GLU_0/Dense_0/kernel" in tree) == scanned
    path = tmp_path / "flax_model.msgpack"
    write_flax_msgpack(path, {k: v.astype(np.float16) if "embed_tokens" in k else v for k, v in tree.items()})
    imported = dalle_bart_io.import_flax(path, scan_layers=scanned, **HEADS_KW)
    assert imported.config.scan_layers == scanned and imported.config.decoder_start_token_id == IMAGE_VOCAB
    assert imported.encoder.embed_tokens.weight.dtype == jnp.float32
    states = imported.encode(jnp.asarray(TEXT), jnp.asarray(TEXT != 1))
    np.testing.assert_allclose(np.asarray(states), _ref_encode(reference), atol=2e-2, rtol=0)  # fp16 embeddings
    exact = dalle_bart_io.import_flax(tree, **HEADS_KW)  # full precision: tight
    T = 6
    tokens = _image_tokens(T, seed=5)
    want, _ = _ref_decode(reference, _ref_encode(reference), tokens, np.arange(T))
    got = exact(jnp.asarray(TEXT), jnp.asarray(TEXT != 1), jnp.asarray(np.repeat(tokens, 2, axis=0)))
    np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)


def test_flax_export_round_trips_and_a_bad_tree_is_reported_by_name(model):
    tree = dalle_bart_io.to_flax(model)
    np.testing.assert_array_equal(_logits(dalle_bart_io.import_flax(tree, **HEADS_KW)), _logits(model))
    unscanned = dalle_bart_io.to_flax(model, scanned=False)
    assert "model/decoder/layers/FlaxBartDecoderLayer_1/LayerNorm_3/scale" in unscanned
    del tree["model/decoder/final_ln/bias"]
    tree["model/decoder/layers/FlaxBartDecoderLayers/GLU_0/Dense_1/kernel"] = np.zeros((LAYERS, D, FFN + 1))
    tree["model/encoder/unknown/kernel"] = np.zeros(3)
    with pytest.raises(ShapeMismatchError) as err:
        dalle_bart_io.import_flax(tree, use_final_ln_decoder=True, **HEADS_KW)
    for name in ("model/decoder/final_ln/bias", "GLU_0/Dense_1/kernel", "model/encoder/unknown/kernel"):
        assert name in str(err.value), name


# ----------------------------------------------------------------------------------------
# Variants beyond the released layout (no reference: self-consistency and name round trips)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [dict(use_bias=True), dict(use_glu=False), dict(ln_type="rmsnorm"),
                                     dict(ln_positions="preln"), dict(force_ln_scale=True, scale_embedding=True)],
                         ids=lambda o: ",".join(o))
def test_variants_decode_consistently_and_round_trip_through_both_formats(options):
    config = DalleBartConfig(text_vocab_size=TEXT_VOCAB, image_vocab_size=IMAGE_VOCAB, max_text_len=TEXT_LEN,
                             image_len=16, d_model=D, encoder_layers=LAYERS, decoder_layers=LAYERS,
                             encoder_ffn=FFN, decoder_ffn=FFN, decoder_start_token_id=IMAGE_VOCAB, **HEADS_KW,
                             **options)
    model = DalleBart(config, key=jax.random.key(0))
    leaves, tree = jax.tree.flatten(model)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    model = jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    ids, mask = jnp.asarray(TEXT), jnp.asarray(TEXT != 1)
    tokens = jnp.asarray(np.repeat(_image_tokens(5, seed=6), 2, axis=0))
    full = model(ids, mask, tokens)
    cache = model.init_cache(model.encode(ids, mask), mask)
    steps = []
    for i in range(5):
        logits, cache = model.decode(tokens[:, i:i + 1], cache)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)
    for scanned in (True, False):
        not_in_shapes = {k: v for k, v in options.items() if k == "scale_embedding"}
        imported = dalle_bart_io.import_flax(dalle_bart_io.to_flax(model, scanned=scanned), **HEADS_KW,
                                             **not_in_shapes)
        assert imported.config == config, (scanned, imported.config)
        np.testing.assert_array_equal(imported(ids, mask, tokens), full)
    again = dalle_bart_io.import_min_dalle(*dalle_bart_io.to_min_dalle(model), config=config.model_copy(
        update={"scan_layers": True}))
    np.testing.assert_allclose(again(ids, mask, tokens), full, atol=1e-5, rtol=0)
    logits, _ = again.decode(tokens[:, :2], again.init_cache(again.encode(ids, mask), mask))  # scanned decode
    np.testing.assert_allclose(logits, full[:, :2], atol=1e-5, rtol=0)
