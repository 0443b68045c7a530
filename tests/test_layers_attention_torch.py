"""Parity of ``nn.MultiHeadAttention`` with PyTorch: forward and gradients, fp32 tolerance.

Two references:

* a reimplementation of the layer in torch around ``F.scaled_dot_product_attention``
  with the same weights (causal, padding, GQA, rotary), and
* ``torch.nn.MultiheadAttention(batch_first=True)`` with a ``key_padding_mask``, its
  ``in_proj_weight``/``out_proj`` copied into ``q``/``k``/``v``/``o``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch
F = torch.nn.functional

from baobab import nn  # noqa: E402

TOL = dict(rtol=2e-5, atol=2e-5)
B, T, E = 2, 7, 16


def _t(x):
    return torch.tensor(np.asarray(x), requires_grad=True)


def _torch_rope(x, positions, head_dim, base=10000.0):
    """Rotate-half RoPE on (B, H, T, D), written independently of baobab."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]  # (T, D/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)  # (T, D)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)
    x1, x2 = x[..., : head_dim // 2], x[..., head_dim // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def _torch_layer(params, x, H, K, attn_mask, rope):
    """The layer in torch: projections, heads, optional RoPE, F.sdpa, output projection."""
    D = params["q.weight"].shape[1] // H
    b, t, _ = x.shape
    q = (x @ params["q.weight"] + params["q.bias"]).view(b, t, H, D).transpose(1, 2)  # (B, H, T, D)
    k = (x @ params["k.weight"] + params["k.bias"]).view(b, t, K, D).transpose(1, 2)  # (B, K, T, D)
    v = (x @ params["v.weight"] + params["v.bias"]).view(b, t, K, D).transpose(1, 2)
    if rope:
        pos = torch.arange(t)
        q, k = _torch_rope(q, pos, D), _torch_rope(k, pos, D)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=K != H)  # (B, H, T, D)
    out = out.transpose(1, 2).reshape(b, t, H * D)
    return out @ params["o.weight"] + params["o.bias"]


def _masks(kind):
    """(jax mask or None, jax causal flag, torch boolean mask (B, 1, T, T) or None)."""
    lengths = np.array([T, 4])
    padding = np.arange(T)[None, :] < lengths[:, None]  # (B, S): True = a real key
    causal = np.tril(np.ones((T, T), bool))
    if kind == "causal":
        return None, True, torch.tensor(causal)[None, None]
    if kind == "padding":
        return jnp.asarray(padding[:, None, :]), False, torch.tensor(padding[:, None, None, :])
    if kind == "causal+padding":
        both = causal[None, None] & padding[:, None, None, :]
        return jnp.asarray(padding[:, None, None, :]), True, torch.tensor(both)
    return None, False, None


def _randomize_biases(model, key):
    """Give the (zero-initialised) biases random values so they are tested too."""
    for i, name in enumerate("qkvo"):
        bias = getattr(model, name).bias
        model = model.at(f"{name}.bias").set(jax.random.normal(jax.random.fold_in(key, i), bias.shape))
    return model


@pytest.mark.parametrize("kind", ["none", "causal", "padding", "causal+padding"])
@pytest.mark.parametrize("heads,kv_heads,rope", [(4, 4, False), (4, 2, True), (4, 1, False)])
def test_layer_matches_torch_sdpa(kind, heads, kv_heads, rope):
    key = jax.random.key(0)
    D = E // heads
    model = nn.MultiHeadAttention(E, heads, num_kv_heads=kv_heads, key=key,
                                  rotary=nn.RotaryEmbedding(D) if rope else None)
    model = _randomize_biases(model, jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (B, T, E))
    cot = jax.random.normal(jax.random.key(3), (B, T, E))
    mask, causal, torch_mask = _masks(kind)

    def loss(m, x):
        out = m(x, mask=mask, causal=causal)
        return jnp.sum(out * cot), out

    (_, out), (g_model, g_x) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(model, x)

    params = {f"{n}.{w}": _t(getattr(getattr(model, n), w)) for n in "qkvo" for w in ("weight", "bias")}
    tx = _t(x)
    tout = _torch_layer(params, tx, heads, kv_heads, torch_mask, rope)
    (tout * torch.tensor(np.asarray(cot))).sum().backward()

    np.testing.assert_allclose(np.asarray(out), tout.detach().numpy(), **TOL)
    np.testing.assert_allclose(np.asarray(g_x), tx.grad.numpy(), **TOL)
    for name, tp in params.items():
        sub, field = name.split(".")
        got = getattr(getattr(g_model, sub), field)
        np.testing.assert_allclose(np.asarray(got), tp.grad.numpy(), **TOL, err_msg=name)


def _from_torch_mha(tm, H):
    """Copy torch.nn.MultiheadAttention's weights into an nn.MultiHeadAttention."""
    e = tm.embed_dim
    w = tm.in_proj_weight.detach().numpy()  # (3E, E), rows q | k | v, torch stores (out, in)
    b = tm.in_proj_bias.detach().numpy()
    m = nn.MultiHeadAttention(e, H, key=jax.random.key(0))
    for i, name in enumerate("qkv"):
        m = m.at(f"{name}.weight").set(jnp.asarray(w[i * e:(i + 1) * e].T))
        m = m.at(f"{name}.bias").set(jnp.asarray(b[i * e:(i + 1) * e]))
    m = m.at("o.weight").set(jnp.asarray(tm.out_proj.weight.detach().numpy().T))
    return m.at("o.bias").set(jnp.asarray(tm.out_proj.bias.detach().numpy()))


@pytest.mark.parametrize("cross", [False, True])
def test_matches_torch_multihead_attention(cross):
    torch.manual_seed(0)
    H, S = 4, 9 if cross else T
    tm = torch.nn.MultiheadAttention(E, H, batch_first=True)
    with torch.no_grad():  # torch initialises both biases to zero; make them matter
        tm.in_proj_bias.normal_()
        tm.out_proj.bias.normal_()
    model = _from_torch_mha(tm, H)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, E)).astype(np.float32)
    ctx = rng.standard_normal((B, S, E)).astype(np.float32) if cross else x
    cot = rng.standard_normal((B, T, E)).astype(np.float32)
    key_padding = np.arange(S)[None, :] >= np.array([S, 5])[:, None]  # (B, S): True = ignore (torch)

    tx = torch.tensor(x, requires_grad=True)
    tctx = torch.tensor(ctx, requires_grad=True) if cross else tx
    tout, _ = tm(tx, tctx, tctx, key_padding_mask=torch.tensor(key_padding), need_weights=False)
    (tout * torch.tensor(cot)).sum().backward()

    mask = jnp.asarray(~key_padding)[:, None, :]  # (B, 1, S): True = attend

    def loss(m, x, c):
        out = m(x, c if cross else None, mask=mask)
        return jnp.sum(out * cot), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        model, jnp.asarray(x), jnp.asarray(ctx))
    g_model, g_x, g_ctx = grads

    np.testing.assert_allclose(np.asarray(out), tout.detach().numpy(), **TOL)
    np.testing.assert_allclose(np.asarray(g_x), tx.grad.numpy(), **TOL)
    if cross:
        np.testing.assert_allclose(np.asarray(g_ctx), tctx.grad.numpy(), **TOL)
    w_grad = np.concatenate([np.asarray(getattr(g_model, n).weight).T for n in "qkv"])
    b_grad = np.concatenate([np.asarray(getattr(g_model, n).bias) for n in "qkv"])
    np.testing.assert_allclose(w_grad, tm.in_proj_weight.grad.numpy(), **TOL)
    np.testing.assert_allclose(b_grad, tm.in_proj_bias.grad.numpy(), **TOL)
    np.testing.assert_allclose(np.asarray(g_model.o.weight).T, tm.out_proj.weight.grad.numpy(), **TOL)
    np.testing.assert_allclose(np.asarray(g_model.o.bias), tm.out_proj.bias.grad.numpy(), **TOL)


def test_init_matches_torch_multihead_attention():
    """Same distributions as torch: Glorot over the stacked in_proj, Linear default for out_proj."""
    e, H = 64, 8
    tm = torch.nn.MultiheadAttention(e, H, batch_first=True)
    m = nn.MultiHeadAttention(e, H, key=jax.random.key(0))
    in_bound = (6 / (e + 3 * e)) ** 0.5
    stacked = np.concatenate([np.asarray(getattr(m, n).weight) for n in "qkv"], axis=1)
    for ours, theirs, bound in ((stacked, tm.in_proj_weight, in_bound), (m.o.weight, tm.out_proj.weight, e ** -0.5)):
        ours, theirs = np.abs(np.asarray(ours)), np.abs(theirs.detach().numpy())
        assert ours.max() <= bound and theirs.max() <= bound
        np.testing.assert_allclose(ours.mean(), theirs.mean(), rtol=0.05)  # both ~ bound / 2
    for n in "qkvo":
        assert not np.any(np.asarray(getattr(m, n).bias))
