"""BART against Hugging Face ``transformers``' ``BartForConditionalGeneration``.

The reference is a small non-default config (d_model 32, 2 encoder and 3 decoder layers,
4 and 2 heads, FFN widths 48 and 40, vocab 99, 40 positions) with seeded random weights
(norms, biases and ``final_logits_bias`` perturbed too, so a missing bias or a wrong norm
shows), saved with ``save_pretrained`` and imported with ``models.hf_io.import_hf``.
Then: encoder states, decoder states and logits to fp32 tolerance with a padded batch,
cached decoding against teacher forcing, 20 greedy tokens, export back to
transformers, a bit-exact round trip, and config.json errors by name.
"""

import contextlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import models, nn
from baobab.errors import ConfigError
from baobab.models import Bart, BartConfig, generate_seq2seq, hf, hf_io
from baobab.models import seq2seq

import safetensors.numpy as safetensors_numpy  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

ATOL = 1e-5
VOCAB, PAD, EOS, START = 99, 1, 2, 2
HF_CONFIG = dict(vocab_size=VOCAB, max_position_embeddings=40, d_model=32, encoder_layers=2, decoder_layers=3,
                 encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=40,
                 activation_function="gelu", init_std=0.1, pad_token_id=PAD, bos_token_id=0, eos_token_id=EOS,
                 decoder_start_token_id=START, forced_eos_token_id=None, attn_implementation="eager")


@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(transformers.BartConfig(**HF_CONFIG)).eval()
    with torch.no_grad():  # norms start at 1 and biases at 0: perturb every parameter and the logits bias
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.final_logits_bias.add_(0.5 * torch.randn_like(model.final_logits_bias))
    return model


@pytest.fixture(scope="module")
def folder(ref, tmp_path_factory):
    path = tmp_path_factory.mktemp("bart") / "src"
    ref.save_pretrained(path, safe_serialization=True)
    return path


def _batch(seed=0):
    """Source ids (2, 9), the second row right-padded to 6 tokens, and decoder inputs (2, 7)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, VOCAB, (2, 9))
    ids[:, -1] = EOS
    ids[1, 5], ids[1, 6:] = EOS, PAD
    mask = (ids != PAD).astype(np.int64)
    decoder_ids = np.concatenate([np.full((2, 1), START), rng.randint(3, VOCAB, (2, 6))], axis=1)
    return ids, mask, decoder_ids


def _import(folder, **overrides):
    model, report = hf_io.import_hf(folder, **overrides)
    assert report.kind == "bart" and report.fresh == []
    return nn.eval_mode(model)


forward = jax.jit(lambda model, ids, mask, dec: model(ids, mask, dec))


# ----------------------------------------------------------------------------------------
# Parity with transformers
# ----------------------------------------------------------------------------------------


def test_states_and_logits_match_transformers(ref, folder):
    model = _import(folder)
    c = model.config
    assert (c.hidden_size, c.encoder_layers, c.decoder_layers, c.encoder_heads, c.decoder_heads,
            c.encoder_ffn_size, c.decoder_ffn_size, c.max_len, c.dropout) == (32, 2, 3, 4, 2, 48, 40, 40, 0.1)
    ids, mask, dec = _batch()
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  decoder_input_ids=torch.tensor(dec), output_hidden_states=True)
    states = np.asarray(jax.jit(lambda m, i, a: m.encode(i, a))(model, ids, mask))
    np.testing.assert_allclose(states, out.encoder_last_hidden_state.numpy(), atol=ATOL, rtol=ATOL)
    hidden = np.asarray(jax.jit(lambda m, s, a, d: m.decoder_hidden(s, a, d))(model, states, mask, dec))
    np.testing.assert_allclose(hidden, out.decoder_hidden_states[-1].numpy(), atol=ATOL, rtol=ATOL)
    logits = np.asarray(forward(model, ids, mask, dec))
    assert logits.shape == (2, 7, VOCAB)
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=ATOL, rtol=ATOL)
    # the padding mask matters: without it the padded row's logits change
    unmasked = np.asarray(forward(model, ids, np.ones_like(mask), dec))
    np.testing.assert_allclose(unmasked[0], logits[0], atol=ATOL)
    assert not np.allclose(unmasked[1], logits[1], atol=1e-3)


def test_scaled_embeddings_and_tanh_gelu_match_transformers(tmp_path):
    options = {**HF_CONFIG, "encoder_layers": 1, "decoder_layers": 1, "scale_embedding": True,
               "activation_function": "gelu_new"}
    torch.manual_seed(1)
    other = transformers.BartForConditionalGeneration(transformers.BartConfig(**options)).eval()
    other.save_pretrained(tmp_path, safe_serialization=True)
    model = _import(tmp_path)
    assert model.config.scale_embedding and model.config.activation == "gelu_tanh"
    ids, mask, dec = _batch(seed=7)
    with torch.no_grad():
        want = other(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     decoder_input_ids=torch.tensor(dec)).logits.numpy()
    np.testing.assert_allclose(np.asarray(forward(model, ids, mask, dec)), want, atol=ATOL, rtol=ATOL)


def test_greedy_tokens_match_transformers(ref, folder):
    model = _import(folder)
    ids, mask, _ = _batch(seed=1)
    config = ref.generation_config
    with torch.no_grad():  # plain greedy: no forced tokens, no stopping, no n-gram bans
        want = ref.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), num_beams=1, do_sample=False,
                            max_new_tokens=20, min_length=0, forced_bos_token_id=None, forced_eos_token_id=None,
                            no_repeat_ngram_size=0, eos_token_id=None, pad_token_id=PAD,
                            generation_config=config).numpy()
    got = np.asarray(generate_seq2seq(model, ids, mask, max_new_tokens=20))
    assert got.shape == want.shape == (2, 21)
    np.testing.assert_array_equal(got, want)
    assert len(set(got[:, 1:].ravel().tolist())) > 3  # not a degenerate repeat of one token


@pytest.mark.parametrize("scan", [False, True])
def test_cached_decoding_equals_teacher_forcing(folder, scan):
    model = _import(folder, scan_layers=scan)
    assert isinstance(model.model.decoder.layers, nn.Stacked) == scan
    ids, mask, dec = _batch(seed=2)
    want = np.asarray(forward(model, ids, mask, dec))  # (B, T, V)
    states = model.encode(ids, mask)
    cache = model.init_cache(states, mask, max_len=10)
    step = jax.jit(lambda m, t, c: m.decode(t, c))
    logits, cache = step(model, jnp.asarray(dec[:, :3]), cache)  # a prefill of 3 ...
    parts = [np.asarray(logits)]
    for t in range(3, dec.shape[1]):  # ... then one token at a time
        logits, cache = step(model, jnp.asarray(dec[:, t:t + 1]), cache)
        parts.append(np.asarray(logits))
    assert int(cache.index) == dec.shape[1]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), want, atol=ATOL, rtol=ATOL)


def test_generation_compiles_once_and_samples(folder):
    model = _import(folder)
    ids, mask, _ = _batch(seed=3)
    seq2seq._generate.clear_cache()
    a = generate_seq2seq(model, ids, mask, max_new_tokens=8)
    b = generate_seq2seq(model, ids[::-1].copy(), mask[::-1].copy(), max_new_tokens=8)
    assert seq2seq._generate._cache_size() == 1  # new inputs, same shapes: no recompilation
    np.testing.assert_array_equal(np.asarray(a)[::-1], np.asarray(b))
    stopped = np.asarray(generate_seq2seq(model, ids, mask, max_new_tokens=8, eos_token_id=int(a[0, 2])))
    assert (stopped[0, 2:] == a[0, 2]).all()  # the row repeats eos once it has emitted it
    s1, s2 = (np.asarray(generate_seq2seq(model, ids, mask, max_new_tokens=8, temperature=1.0, top_k=20,
                                          key=jax.random.key(k))) for k in (1, 2))
    assert s1.shape == (2, 9) and not np.array_equal(s1, s2)
    with pytest.raises(ValueError, match="needs key"):
        generate_seq2seq(model, ids, mask, max_new_tokens=8, temperature=1.0)
    with pytest.raises(ValueError, match="max_len=40"):
        generate_seq2seq(model, ids, mask, max_new_tokens=41)


def test_training_mode_drops_with_a_key(folder):
    model, _ = hf_io.import_hf(folder)  # config.json's dropout 0.1, training mode
    ids, mask, dec = _batch(seed=6)
    train = jax.jit(lambda m, k: m(ids, mask, dec, key=k))
    a, b = train(model, jax.random.key(1)), train(model, jax.random.key(2))
    assert not np.allclose(np.asarray(a), np.asarray(b), atol=1e-3)
    with pytest.raises(ValueError, match="training mode but was called without a key"):
        forward(model, ids, mask, dec)


def test_eval_shape_and_logical_axes(folder):
    model = _import(folder, scan_layers=True)
    ids, mask, dec = _batch(seed=5)
    abstract = jax.eval_shape(lambda m: m(ids, mask, dec), model)
    assert abstract.shape == forward(model, ids, mask, dec).shape == (2, 7, VOCAB)
    metas = {path: meta for path, _, meta in nn.iter_arrays(model)}
    for path, x, meta in nn.iter_arrays(model):
        assert len(meta.axes) == x.ndim, path
        assert all(a is None or a in nn.DEFAULT_RULES for a in meta.axes), (path, meta.axes)
    assert metas["final_logits_bias"].kind == "state" and metas["final_logits_bias"].axes == (None, "vocab")
    assert metas["model.decoder.layers.layer.encoder_attn.k_proj.weight"].axes == ("layers", "embed", "kv_heads")


# ----------------------------------------------------------------------------------------
# Import / export
# ----------------------------------------------------------------------------------------


def test_export_reloads_in_transformers_and_round_trips_bit_exactly(ref, folder, tmp_path):
    model = _import(folder, scan_layers=True)  # stacked on the way in, split on the way out
    out = hf_io.export_hf(model, tmp_path / "out", base_config=json.loads((folder / "config.json").read_text()))
    theirs = safetensors_numpy.load_file(folder / "model.safetensors")
    ours = safetensors_numpy.load_file(out / "model.safetensors")
    tied = {"lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}
    assert sorted(ours) == sorted(set(theirs) - tied)
    for name, x in ours.items():
        assert x.dtype == theirs[name].dtype and x.tobytes() == theirs[name].tobytes(), name

    back = transformers.BartForConditionalGeneration.from_pretrained(out, attn_implementation="eager").eval()
    ids, mask, dec = (torch.tensor(a) for a in _batch(seed=4))
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits,
                           ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits)

    again, _ = hf_io.import_hf(out, scan_layers=True)
    for (p, a), (q, b) in zip(nn.state_dict(model).items(), nn.state_dict(again).items(), strict=True):
        assert p == q and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=p)
    assert hf.config_from_hf(hf_io.config_to_hf(model.config), scan_layers=True) == model.config


def test_tied_aliases_may_be_present_and_bad_config_values_are_named(folder, tmp_path):
    tensors = safetensors_numpy.load_file(folder / "model.safetensors")
    shared = tensors["model.shared.weight"]
    with_aliases = {**tensors, "lm_head.weight": shared, "model.encoder.embed_tokens.weight": shared,
                    "model.decoder.embed_tokens.weight": shared}
    config = hf.config_from_hf(json.loads((folder / "config.json").read_text()))
    model = hf.load_hf(models.build_model(config, key=jax.random.key(1)), with_aliases, hf.names_for(config))
    np.testing.assert_array_equal(np.asarray(model.model.shared.weight), shared)
    # a BartModel file: no "model." prefix and no final_logits_bias, which stays fresh when allowed
    base = {n[len("model."):]: x for n, x in tensors.items() if n.startswith("model.")}
    fresh = hf.load_hf(model, base, hf.names_for(config), allow_missing=["final_logits_bias"])
    np.testing.assert_array_equal(np.asarray(fresh.model.decoder.layers[2].fc2.weight), np.asarray(
        model.model.decoder.layers[2].fc2.weight))
    with pytest.raises(ValueError, match=r"missing \(1\).*final_logits_bias"):
        hf.load_hf(model, base, hf.names_for(config))

    legacy = {"model_type": "bart", "normalize_before": False, "add_final_layer_norm": False,
              "extra_pos_embeddings": 2, "static_position_embeddings": False, "add_bias_logits": False,
              "normalize_embedding": True, "encoder_layerdrop": 0.1, "num_labels": 3}
    assert hf.config_from_hf(legacy) == BartConfig(dropout=0.1)  # old keys at BART's values: accepted
    with pytest.raises(NotImplementedError, match=r"normalize_before=True.*add_final_layer_norm=True"):
        hf.config_from_hf({**legacy, "normalize_before": True, "add_final_layer_norm": True})  # mBART
    with pytest.raises(NotImplementedError, match="tie_word_embeddings=False"):
        hf.config_from_hf({"model_type": "bart", "tie_word_embeddings": False})

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "d_model": "wide"}))
    with pytest.raises(ConfigError, match=r"config.json.*d_model='wide'.*hidden_size"):
        hf_io.import_hf(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "encoder_attention_heads": 5}))
    with pytest.raises(ConfigError, match="encoder_heads=5 does not divide hidden_size=32"):
        hf_io.import_hf(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "encoder_ffn_dim": 50}))
    with pytest.raises(ValueError, match=r"model.encoder.layers.0.fc1.weight \(48, 32\)"):
        hf_io.import_hf(bad)


def test_inputs_are_checked_by_name():
    config = BartConfig(vocab_size=20, max_len=8, hidden_size=8, encoder_layers=1, decoder_layers=1,
                        encoder_heads=2, decoder_heads=2, encoder_ffn_size=8, decoder_ffn_size=8)
    model = jax.eval_shape(lambda k: Bart(config, key=k), jax.random.key(0))  # inputs are checked first
    ids = jnp.ones((2, 5), jnp.int32)
    with pytest.raises(nn.ShapeError, match=r"attention_mask must be shaped like input_ids \(2, 5\)"):
        model.encode(ids, jnp.ones((2, 4), bool))
    with pytest.raises(nn.ShapeError, match="input_ids has 9 tokens but the model has max_len=8"):
        model.encode(jnp.ones((1, 9), jnp.int32), jnp.ones((1, 9), bool))
    with pytest.raises(ValueError, match=r"max_len=9 must be an int in \[1, 8\]"):
        model.init_cache(jnp.zeros((2, 5, 8)), ids > 0, max_len=9)
    with pytest.raises(nn.ShapeError, match=r"encoder_states \(2, 5, 4\) and attention_mask \(2, 5\) do not fit"):
        model.init_cache(jnp.zeros((2, 5, 4)), ids > 0, max_len=4)
    with pytest.raises(ValueError, match="decoder_start_token_id=30 is not below vocab_size=20"):
        BartConfig(vocab_size=20, decoder_start_token_id=30)


def test_baobab_import_hf_refuses_a_model_no_task_runs_with_a_named_error(folder, tmp_path):
    from baobab import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["import", "hf", str(folder), str(tmp_path / "run")])
    assert code == 2, err.getvalue()
    assert "a 'bart' model runs no baobab task yet" in err.getvalue() and "hf_io.import_hf" in err.getvalue()
    assert not (tmp_path / "run").exists()  # nothing written
