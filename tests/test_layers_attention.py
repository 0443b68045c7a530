"""MultiHeadAttention behaviour: KV-cache decoding, packed sequences, errors; positional embeddings."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import nn

B, T, E = 2, 6, 16


def _layer(kind):
    key = jax.random.key(0)
    if kind == "mha":
        return nn.MultiHeadAttention(E, 4, key=key)
    if kind == "gqa-rotary":
        return nn.MultiHeadAttention(E, 4, num_kv_heads=2, key=key, rotary=nn.RotaryEmbedding(4))
    if kind == "mqa-llama3":
        rope = nn.RotaryEmbedding(8, scaling=nn.RopeScaling("llama3", 8.0, original_max_len=4))
        return nn.MultiHeadAttention(E, 2, num_kv_heads=1, key=key, rotary=rope)
    raise ValueError(kind)


def _x(t=T):
    return jax.random.normal(jax.random.key(1), (B, t, E))


# ----------------------------------------------------------------------------------------
# KV cache
# ----------------------------------------------------------------------------------------

_step = jax.jit(lambda m, x, c: m(x, cache=c))


def _decode(model, x, chunks, max_len):
    cache = model.init_cache(B, max_len)
    outs, start = [], 0
    for size in chunks:
        out, new = _step(model, x[:, start:start + size], cache)
        assert int(cache.index) == start  # the old cache is untouched
        cache, start = new, start + size
        outs.append(out)
    assert int(cache.index) == start
    return jnp.concatenate(outs, axis=1), cache


@pytest.mark.parametrize("kind", ["mha", "gqa-rotary", "mqa-llama3"])
@pytest.mark.parametrize("chunks", [(1,) * T, (3, 1, 2), (T,)])
def test_cached_decoding_matches_full_causal_pass(kind, chunks):
    model, x = _layer(kind), _x()
    full = jax.jit(lambda m, x: m(x, causal=True))(model, x)
    out, cache = _decode(model, x, chunks, max_len=T + 3)
    np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-5)
    assert not np.any(np.asarray(cache.k[:, T:]))  # unused slots stay empty


def test_cached_decoding_under_scan():
    model, x = _layer("gqa-rotary"), _x()
    full = model(x, causal=True)

    @jax.jit
    def decode(model, x):
        def body(cache, x_t):  # x_t: (B, F)
            out, cache = model(x_t[:, None], cache=cache)
            return cache, out[:, 0]

        cache, outs = jax.lax.scan(body, model.init_cache(B, T), jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(outs, 0, 1), cache

    out, cache = decode(model, x)
    np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-5)
    assert int(cache.index) == T


def test_cache_with_padding_mask():
    """A key mask over the cache slots (B, 1, max_len) hides a padded prompt position."""
    model, x = _layer("mha"), _x()
    keep = jnp.ones((B, T), bool).at[1, 2].set(False)  # row 1: position 2 is padding
    full = model(x, causal=True, mask=keep[:, None, :])
    max_len = T + 2
    slots = jnp.pad(keep, ((0, 0), (0, max_len - T)), constant_values=True)[:, None, :]  # (B, 1, L)
    out, _ = jax.jit(lambda m, x, c: m(x, cache=c, mask=slots))(model, x, model.init_cache(B, max_len))
    np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-5)


def test_cache_with_left_padding_by_position():
    """Padding marked with position -1 is never attended to, and real tokens keep their positions."""
    model, x = _layer("gqa-rotary"), _x()
    pad = 2  # row 1 is left-padded by 2 tokens
    real = model(x[1:, pad:], causal=True)  # (1, T - pad, F): row 1 alone, unpadded
    positions = jnp.stack([jnp.arange(T), (jnp.arange(T) - pad).clip(-1)])  # (B, T); -1 = padding
    prefill = jax.jit(lambda m, x, c, p: m(x, cache=c, positions=p))
    out, cache = prefill(model, x, model.init_cache(B, T + 1), positions)
    np.testing.assert_allclose(out[1:, pad:], real, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:1], model(x[:1], causal=True), rtol=1e-5, atol=1e-5)
    assert cache.positions[1].tolist()[:pad + 1] == [-1, -1, 0]


def test_rolling_cache_attends_to_a_sliding_window():
    """Past max_len, a rolling cache equals causal attention over the last max_len tokens."""
    model, x = _layer("gqa-rotary"), _x()
    window = 3

    def decode(model, x, cache):
        def body(cache, x_t):
            out, cache = model(x_t[:, None], cache=cache)
            return cache, out[:, 0]

        cache, outs = jax.lax.scan(body, cache, jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(outs, 0, 1)

    rolled = jax.jit(decode)(model, x, model.init_cache(B, window, rolling=True))  # T > window steps
    chunked, _ = jax.jit(lambda m, x, c: m(x, cache=c))(model, x, model.init_cache(B, window, rolling=True))
    for t in range(T):  # token t sees tokens max(0, t - window + 1) .. t, at their own positions
        lo = max(0, t - window + 1)
        alone = model(x[:, lo:t + 1], causal=True, positions=jnp.arange(lo, t + 1))[:, -1]
        np.testing.assert_allclose(rolled[:, t], alone, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(chunked[:, t], alone, rtol=1e-5, atol=1e-5)


def test_cache_overflow():
    model = _layer("mha")
    cache = model.init_cache(B, 4)
    _, cache = model(_x(3), cache=cache)
    with pytest.raises(ValueError, match="overflow.*max_len 4"):
        model(_x(2), cache=cache)
    out, _ = _step(model, _x(2), cache)  # under jit it cannot raise: the output is NaN
    assert np.all(np.isnan(out))


def test_cache_dtype_is_kept_under_bf16_policy():
    policy = nn.Policy.create("float32", "bfloat16", "bfloat16")
    model = nn.with_policy(_layer("gqa-rotary"), policy)
    cache = model.init_cache(B, T, dtype=jnp.bfloat16)
    out, new = _step(model, _x(2).astype(jnp.bfloat16), cache)
    assert out.dtype == jnp.bfloat16
    assert jax.tree.structure(new) == jax.tree.structure(cache)
    assert new.k.dtype == jnp.bfloat16 and new.index.dtype == jnp.int32


def test_cache_logical_axes():
    cache = _layer("gqa-rotary").init_cache(B, 8)
    axes = {path: meta.axes for path, _, meta in nn.iter_arrays(cache)}
    assert axes == {"k": ("batch", "length", "kv_heads", "head_dim"),
                    "v": ("batch", "length", "kv_heads", "head_dim"), "positions": ("batch", "length"),
                    "index": ()}


# ----------------------------------------------------------------------------------------
# Packed sequences
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mha", "gqa-rotary"])
@pytest.mark.parametrize("causal", [False, True])
def test_segment_ids_match_separate_sequences(kind, causal):
    model = _layer(kind)
    lengths = (3, 1, 4)  # row 0 packs three sequences; row 1 holds one sequence and padding
    seqs = [jax.random.normal(jax.random.key(10 + i), (1, n, E)) for i, n in enumerate(lengths)]
    pad = jnp.zeros((1, 4, E))
    x = jnp.concatenate([jnp.concatenate(seqs, axis=1), jnp.concatenate([seqs[0], seqs[1], pad], 1)], 0)
    segment_ids = jnp.array([[1, 1, 1, 2, 3, 3, 3, 3], [1, 1, 1, 2, 0, 0, 0, 0]])
    restart = jnp.array([[0, 1, 2, 0, 0, 1, 2, 3], [0, 1, 2, 0, 0, 1, 2, 3]])  # positions within each sequence
    call = jax.jit(lambda m, x, s, p: m(x, segment_ids=s, causal=causal, positions=p))
    packed = call(model, x, segment_ids, restart if model.rotary else None)
    starts = np.cumsum((0,) + lengths)
    for i, seq in enumerate(seqs):
        alone = model(seq, causal=causal)
        np.testing.assert_allclose(packed[0, starts[i]:starts[i + 1]], alone[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(packed[1, :3], model(seqs[0], causal=causal)[0], rtol=1e-5, atol=1e-5)
    if model.rotary is not None:  # RoPE is relative: default positions give the same result
        np.testing.assert_allclose(call(model, x, segment_ids, None), packed, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------
# Masks and errors
# ----------------------------------------------------------------------------------------


def test_mask_ranks_agree():
    model, x = _layer("gqa-rotary"), _x()
    keep = jax.random.bernoulli(jax.random.key(5), 0.7, (B, T, T)).at[:, :, 0].set(True)
    three = model(x, mask=keep)
    four = model(x, mask=keep[:, None])
    per_head = model(x, mask=jnp.broadcast_to(keep[:, None], (B, 4, T, T)))
    np.testing.assert_allclose(three, four, rtol=1e-6)
    np.testing.assert_allclose(three, per_head, rtol=1e-6)


def test_head_count_must_divide_width():
    with pytest.raises(ValueError, match="num_heads=3 does not divide features=16"):
        nn.MultiHeadAttention(16, 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="num_kv_heads=3 does not divide num_heads=4"):
        nn.MultiHeadAttention(16, 4, num_kv_heads=3, key=jax.random.key(0))
    nn.MultiHeadAttention(16, 3, head_dim=8, key=jax.random.key(0))  # explicit head_dim: fine


class _Block(nn.Module):
    attn: nn.MultiHeadAttention

    def __init__(self, *, key):
        self.attn = nn.MultiHeadAttention(E, 4, key=key)

    def __call__(self, x, mask=None):
        return self.attn(x, mask=mask)


def test_wrong_mask_shape_names_layer_and_shapes():
    block = _Block(key=jax.random.key(0))
    with pytest.raises(nn.ShapeError) as e:
        block(_x(), mask=jnp.ones((B, T, T + 1), bool))
    msg = str(e.value)
    assert "MultiHeadAttention at 'attn'" in msg
    assert f"{(B, T, T + 1)}" in msg and f"{(B, T, T)}" in msg
    with pytest.raises(nn.ShapeError, match=r"\(B, heads, T, S\) = \(2, 4, 6, 6\)"):
        block(_x(), mask=jnp.ones((B, 3, T, T), bool))
    with pytest.raises(nn.ShapeError, match=r"got|does not broadcast"):
        block(_x(), mask=jnp.ones((B, T), bool))  # a (B, S) key mask needs mask[:, None, :]
    with pytest.raises(TypeError, match="boolean"):
        block(_x(), mask=jnp.ones((B, T, T)))


def test_wrong_feature_count():
    model = _layer("mha")
    with pytest.raises(nn.ShapeError, match=r"last dimension 16 \(features\), got shape \(2, 6, 15\)"):
        model(jnp.ones((B, T, 15)))
    with pytest.raises(nn.ShapeError, match="3 dimensions"):
        model(jnp.ones((T, E)))
    cross = nn.MultiHeadAttention(E, 4, context_features=8, key=jax.random.key(0))
    with pytest.raises(nn.ShapeError, match=r"context with last dimension 8 \(context_features\)"):
        cross(_x(), jnp.ones((B, 5, 16)))


def test_unsupported_combinations_raise():
    model, x = _layer("gqa-rotary"), _x()
    with pytest.raises(NotImplementedError, match="cross-attention"):
        model(x, x)  # rotary with a context
    with pytest.raises(NotImplementedError, match="segment_ids with a cache"):
        model(x, segment_ids=jnp.zeros((B, T), int), cache=model.init_cache(B, T))
    with pytest.raises(ValueError, match="rotary=None"):
        _layer("mha")(x, positions=jnp.arange(T))
    with pytest.raises(nn.ShapeError, match="segment_ids"):
        model(x, segment_ids=jnp.zeros((B, T + 1), int))
    with pytest.raises(ValueError, match="head_dim=4"):
        nn.MultiHeadAttention(E, 4, key=jax.random.key(0), rotary=nn.RotaryEmbedding(8))


def test_implementations():
    x = _x()
    ref = _layer("mha")(x, causal=True)
    xla = nn.MultiHeadAttention(E, 4, key=jax.random.key(0), implementation="xla")
    np.testing.assert_allclose(xla(x, causal=True), ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="unknown implementation 'flash'.*'splash'"):
        nn.MultiHeadAttention(E, 4, key=jax.random.key(0), implementation="flash")
    with pytest.raises(ValueError, match="unknown implementation 'fast'"):
        nn.MultiHeadAttention(E, 4, key=jax.random.key(0), implementation="fast")
    cudnn = nn.MultiHeadAttention(E, 4, key=jax.random.key(0), implementation="cudnn")
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="needs an NVIDIA GPU.*implementation=None"):
            cudnn(x)


# ----------------------------------------------------------------------------------------
# Positional embeddings
# ----------------------------------------------------------------------------------------


def test_sinusoidal_table():
    F = 8
    got = nn.SinusoidalPositionalEmbedding(F)(jnp.arange(5))
    want = np.zeros((5, F))
    for p in range(5):
        for i in range(F // 2):
            want[p, 2 * i] = math.sin(p / 10000 ** (2 * i / F))
            want[p, 2 * i + 1] = math.cos(p / 10000 ** (2 * i / F))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.dtype == jnp.float32
    with pytest.raises(ValueError, match="even"):
        nn.SinusoidalPositionalEmbedding(7)


def test_learned_positional_embedding():
    pos = nn.LearnedPositionalEmbedding(10, 4, key=jax.random.key(0))
    np.testing.assert_array_equal(pos(jnp.array([[3, 0]])), pos.weight[jnp.array([[3, 0]])])
    assert np.all(np.isnan(pos(jnp.array([10]))))  # out of range: NaN, not a clamped row
    with pytest.raises(TypeError, match="integer positions"):
        pos(jnp.arange(3.0))


def test_rotary_is_relative_and_norm_preserving():
    rope = nn.RotaryEmbedding(8)
    q = jax.random.normal(jax.random.key(0), (1, 5, 2, 8))
    k = jax.random.normal(jax.random.key(1), (1, 5, 2, 8))
    pos = jnp.arange(5)
    scores = jnp.einsum("bthd,bshd->bhts", rope(q, pos), rope(k, pos))
    shifted = jnp.einsum("bthd,bshd->bhts", rope(q, pos + 100), rope.apply(k, pos + 100))
    np.testing.assert_allclose(scores, shifted, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(jnp.linalg.norm(rope(q, pos), axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
    batched = rope(q, pos[None])  # (B, T) positions
    np.testing.assert_allclose(batched, rope(q, pos), rtol=1e-6)
    with pytest.raises(nn.ShapeError, match="positions"):
        rope(q, jnp.arange(4))


def _llama3_reference(inv_freq, factor, low, high, old_len):
    """Llama 3.1's frequency rule written branch by branch."""
    out = []
    for f in inv_freq:
        wavelen = 2 * math.pi / f
        if wavelen < old_len / high:
            out.append(f)
        elif wavelen > old_len / low:
            out.append(f / factor)
        else:
            smooth = (old_len / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return np.array(out)


def test_rope_scaling():
    from baobab.nn._positional import _inv_freq

    plain = _inv_freq(128, 500000.0, None)
    llama = _inv_freq(128, 500000.0, nn.RopeScaling("llama3", 8.0, 1.0, 4.0, 8192))
    np.testing.assert_allclose(llama, _llama3_reference(plain, 8.0, 1.0, 4.0, 8192), rtol=1e-12)
    assert llama[0] == plain[0] and np.isclose(llama[-1], plain[-1] / 8)  # high kept, low divided
    assert np.any((llama < plain) & (llama > plain / 8))  # and a smooth band between

    x = jax.random.normal(jax.random.key(0), (1, 6, 1, 8))
    linear = nn.RotaryEmbedding(8, scaling=nn.RopeScaling("linear", 4.0))
    np.testing.assert_allclose(linear(x, jnp.arange(6)), nn.RotaryEmbedding(8)(x, jnp.arange(6) / 4.0), rtol=1e-5)

    with pytest.raises(NotImplementedError, match="'yarn'.*'linear', 'llama3'"):
        nn.RotaryEmbedding(8, scaling=nn.RopeScaling("yarn", 4.0))
    with pytest.raises(TypeError, match="nn.RopeScaling"):
        nn.RotaryEmbedding(8, scaling={"rope_type": "llama3", "factor": 8.0})


def test_doctests():
    import doctest

    from baobab.nn import _attention, _kv_cache, _positional

    for module in (_attention, _kv_cache, _positional):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("t,s,heads,kv_heads", [(150, 150, 4, 2), (130, 70, 2, 2), (70, 130, 3, 1)])
def test_cpu_attention_blocked_causal_matches_jax(t, s, heads, kv_heads):
    # Longer than nn.CAUSAL_BLOCK rows, with a ragged last block and T != S (top-left aligned).
    from baobab.nn._attention_cpu import CAUSAL_BLOCK, attention_cpu

    assert t > CAUSAL_BLOCK or s > CAUSAL_BLOCK
    kq, kk, kv, kg = jax.random.split(jax.random.key(3), 4)
    q = jax.random.normal(kq, (2, t, heads, 8))
    k = jax.random.normal(kk, (2, s, kv_heads, 8))
    v = jax.random.normal(kv, (2, s, kv_heads, 8))
    ref = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    np.testing.assert_allclose(attention_cpu(q, k, v, is_causal=True), ref, rtol=2e-5, atol=2e-6)
    g = jax.random.normal(kg, ref.shape)
    grads = jax.grad(lambda *a: jnp.vdot(attention_cpu(*a, is_causal=True), g), argnums=(0, 1, 2))(q, k, v)
    ref_grads = jax.grad(lambda *a: jnp.vdot(jax.nn.dot_product_attention(*a, is_causal=True), g),
                         argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
