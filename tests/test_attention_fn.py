"""``nn.attention``: every implementation against a hand-written reference (values and
gradients), the masks it combines, its errors, and which implementation a program
compiled for each platform contains."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import nn

B, T, H, K, D = 2, 256, 4, 2, 64


def _reference(q, k, v, visible, scale, softcap=None):
    """Softmax attention written out with repeated key/value heads."""
    G = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, G, 2), jnp.repeat(v, G, 2)
    logits = jnp.einsum("bthd,bshd->bhts", q, k) * scale
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    logits = jnp.where(visible, logits, -1e30)
    return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(logits, -1), v)


def _inputs():
    r = np.random.default_rng(0)
    q = jnp.asarray(r.normal(size=(B, T, H, D)), jnp.float32)
    k = jnp.asarray(r.normal(size=(B, T, K, D)), jnp.float32)
    v = jnp.asarray(r.normal(size=(B, T, K, D)), jnp.float32)
    seg = jnp.asarray(np.stack([[1] * 100 + [2] * 100 + [3] * 56, [1] * 30 + [2] * 226]))
    return q, k, v, seg


@pytest.mark.parametrize("implementation", [None, "xla", "cpu", "splash"])
@pytest.mark.parametrize("case", ["causal", "causal+segments+window+softcap", "bidirectional+segments"])
def test_every_implementation_matches_the_reference_in_values_and_gradients(implementation, case):
    q, k, v, seg = _inputs()
    i = jnp.arange(T)
    causal = case.startswith("causal")
    kw = dict(causal=causal, implementation=implementation)
    visible = jnp.ones((B, 1, T, T), bool)
    if causal:
        visible &= (i[:, None] >= i[None, :])[None, None]
    softcap = None
    if "segments" in case:
        kw["segment_ids"] = seg
        visible &= (seg[:, :, None] == seg[:, None, :])[:, None]
    if "window" in case:
        kw["window"] = 32
        visible &= (i[:, None] - i[None, :] < 32)[None, None]
    if "softcap" in case:
        kw["softcap"] = softcap = 5.0

    def ours(q, k, v):
        return nn.attention(q, k, v, **kw)

    def ref(q, k, v):
        return _reference(q, k, v, visible, D ** -0.5, softcap)

    np.testing.assert_allclose(jax.jit(ours)(q, k, v), ref(q, k, v), atol=2e-5, rtol=1e-5)
    cot = jax.random.normal(jax.random.key(1), q.shape)
    grads = jax.jit(jax.grad(lambda *a: jnp.vdot(ours(*a), cot), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(lambda *a: jnp.vdot(ref(*a), cot), argnums=(0, 1, 2))(q, k, v)
    for got, expected in zip(grads, want):
        np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)


def test_packed_documents_see_only_themselves():
    q, k, v, _ = _inputs()
    seg = jnp.asarray([[1] * 100 + [2] * 156] * B)
    packed = nn.attention(q, k, v, causal=True, segment_ids=seg)
    alone = nn.attention(q[:, 100:], k[:, 100:], v[:, 100:], causal=True)
    np.testing.assert_allclose(packed[:, 100:], alone, atol=1e-5)
    changed = nn.attention(q, k.at[:, :100].add(1.0), v.at[:, :100].add(1.0), causal=True, segment_ids=seg)
    np.testing.assert_array_equal(changed[:, 100:], packed[:, 100:])


def test_cache_positions_and_padding_mask():
    q, k, v, _ = _inputs()
    full = nn.attention(q, k, v, causal=True)
    # the last 4 queries against all keys, placed by position as a decoding cache does
    tail = nn.attention(q[:, -4:], k, v, causal=True, q_positions=T - 4 + jnp.arange(4), kv_positions=jnp.arange(T))
    np.testing.assert_allclose(tail, full[:, -4:], atol=1e-5)
    valid = jnp.arange(T)[None, :] < jnp.asarray([[200], [T]])  # (B, S): row 0 pads its last 56 keys
    padded = nn.attention(q, k, v, mask=valid[:, None, :])
    np.testing.assert_allclose(padded[0], nn.attention(q[:1], k[:1, :200], v[:1, :200])[0], atol=1e-5)


def test_dropout_draws_from_the_key_and_keeps_the_mean():
    q, k, v, _ = _inputs()
    a = nn.attention(q, k, v, dropout_rate=0.5, key=jax.random.key(0))
    b = nn.attention(q, k, v, dropout_rate=0.5, key=jax.random.key(1))
    assert not np.allclose(a, b)
    ones = jnp.ones_like(v)
    mean = jnp.mean(nn.attention(q, k, ones, dropout_rate=0.5, key=jax.random.key(0)))
    assert abs(float(mean) - 1.0) < 0.02  # inverted dropout: weights rescaled by 1 / (1 - rate)


def test_bad_input_is_named():
    q, k, v, seg = _inputs()
    with pytest.raises(nn.ShapeError, match=r"kv_heads.*got q \(2, 256, 4, 64\), k \(2, 256, 2, 32\)"):
        nn.attention(q, k[..., :32], v[..., :32])
    with pytest.raises(nn.ShapeError, match=r"segment_ids of shape \(B, T\) = \(2, 256\)"):
        nn.attention(q, k, v, segment_ids=seg[:, :10])
    with pytest.raises(TypeError, match="boolean"):
        nn.attention(q, k, v, mask=jnp.ones((B, T, T)))
    with pytest.raises(ValueError, match="needs key="):
        nn.attention(q, k, v, dropout_rate=0.1)
    with pytest.raises(ValueError, match="unknown implementation 'flash'"):
        nn.attention(q, k, v, implementation="flash")
    with pytest.raises(NotImplementedError, match="whole blocks of 128"):
        nn.attention(q[:, :100], k[:, :100], v[:, :100], implementation="splash")
    with pytest.raises(NotImplementedError, match="no attention dropout"):
        nn.attention(q, k, v, implementation="cpu", dropout_rate=0.1, key=jax.random.key(0))
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
            nn.attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16),
                         implementation="cudnn")


def test_the_program_compiled_for_a_tpu_holds_the_splash_kernel_and_the_cpu_one_does_not():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from baobab import tpu

    if not tpu.libtpu_available():
        pytest.fail("libtpu is part of the test extra (baobab[tpu]); reinstall with pip install -e '.[test]'")
    topo = tpu.topology("v5p:2x2x2")
    mesh = Mesh(np.array(topo.devices).reshape(4, 1, 2), ("data", "fsdp", "tensor"))
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    q = jax.ShapeDtypeStruct((8, 256, 4, 128), jnp.bfloat16, sharding=rows)
    kv = jax.ShapeDtypeStruct((8, 256, 2, 128), jnp.bfloat16, sharding=rows)
    seg = jax.ShapeDtypeStruct((8, 256), jnp.int32, sharding=rows)

    def loss(q, k, v, seg):
        return nn.attention(q, k, v, causal=True, segment_ids=seg).astype(jnp.float32).sum()

    with nn.kernel_mesh(mesh), tpu.quiet_libtpu():
        tpu_program = jax.jit(jax.grad(loss)).lower(q, kv, kv, seg).compile().as_text()
    assert tpu_program.count('custom_call_target="tpu_custom_call"') >= 2  # forward and backward kernels
    cpu_args = [jnp.ones(x.shape, x.dtype) for x in (q, kv, kv, seg)]
    cpu_program = jax.jit(jax.grad(loss)).lower(*cpu_args).compile().as_text()
    assert "tpu_custom_call" not in cpu_program
