"""Parity with PyTorch: same weights, same inputs; outputs and gradients agree in fp32.

PyTorch is channels-first and stores weights ``(out, in, *kernel)``; baobab is
channels-last with ``(*kernel, in, out)`` weights. Each test copies the torch
layer's weights into the baobab layer, runs both on the same input, backpropagates
the same random cotangent, and compares the output and the gradients with respect
to the input and to every weight. The JAX side runs under ``jit``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baobab import nn

torch.set_default_dtype(torch.float32)
TOL = dict(rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


def rng(seed=0):
    return np.random.default_rng(seed)


def to_first(a, batched=True):
    """Channels-last numpy array -> channels-first torch tensor that requires grad."""
    a = np.moveaxis(np.asarray(a), -1, 1 if batched else 0)
    return torch.tensor(np.ascontiguousarray(a), requires_grad=True)


def to_last(t, batched=True):
    """Channels-first torch tensor -> channels-last numpy array."""
    return np.moveaxis(t.detach().numpy(), 1 if batched else 0, -1)


def kernel_last(w):
    """torch conv weight (out, in/g, *k) -> ours (*k, in/g, out)."""
    return jnp.asarray(np.moveaxis(w.detach().numpy(), (0, 1), (-1, -2)))


def transpose_kernel_last(w):
    """torch transposed-conv weight (in, out/g, *k) -> ours (*k, in, out/g)."""
    return jnp.asarray(np.moveaxis(w.detach().numpy(), (0, 1), (-2, -1)))


def shell(make):
    """The layer ``make()`` builds, with abstract arrays: its weights come from torch, so
    this skips compiling a random init for every shape (the slow part of these tests)."""
    return jax.eval_shape(make)


def jax_run(model, x, cot):
    """Jitted output and gradients of ``sum(model(x) * cot)`` w.r.t. the model and x."""
    def loss(m, x):
        out = m(x)
        return jnp.sum(out * cot), out

    argnums = (0, 1) if jnp.issubdtype(x.dtype, jnp.floating) else (0,)
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))(model, x)
    return out, grads


def torch_run(fn, xt, cot_first):
    out = fn(xt)
    out.backward(torch.tensor(np.ascontiguousarray(cot_first)))
    return out


def close(actual, expected, what, **tol):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), err_msg=what, **(tol or TOL))


# ----------------------------------------------------------------------------------------
# Linear and Embedding
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False])
def test_linear(use_bias):
    r = rng(1)
    ref = torch.nn.Linear(12, 7, bias=use_bias)
    lin = shell(lambda: nn.Linear(12, 7, key=jax.random.key(0), use_bias=use_bias))
    lin = lin.at("weight").set(jnp.asarray(ref.weight.detach().numpy().T))
    if use_bias:
        lin = lin.at("bias").set(jnp.asarray(ref.bias.detach().numpy()))
    x = r.standard_normal((3, 5, 12), np.float32)
    cot = r.standard_normal((3, 5, 7), np.float32)
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch_run(ref, xt, cot)
    out, (gm, gx) = jax_run(lin, jnp.asarray(x), cot)
    close(out, out_t.detach().numpy(), "output")
    close(gx, xt.grad.numpy(), "grad input")
    close(gm.weight, ref.weight.grad.numpy().T, "grad weight")
    if use_bias:
        close(gm.bias, ref.bias.grad.numpy(), "grad bias")


def test_embedding_and_tied_attend():
    r = rng(2)
    ref = torch.nn.Embedding(50, 16)
    emb = shell(lambda: nn.Embedding(50, 16, key=jax.random.key(0))).at("weight").set(jnp.asarray(ref.weight.detach().numpy()))
    ids = r.integers(0, 50, (4, 9))  # repeats ids, so the weight gradient accumulates
    cot = r.standard_normal((4, 9, 16), np.float32)
    out_t = torch_run(ref, torch.tensor(ids), cot)
    out, (gm,) = jax_run(emb, jnp.asarray(ids, jnp.int32), cot)
    close(out, out_t.detach().numpy(), "output")
    close(gm.weight, ref.weight.grad.numpy(), "grad weight")

    # Tied unembedding: logits = x @ weight.T, as F.linear(x, weight).
    ref.weight.grad = None
    x = r.standard_normal((4, 9, 16), np.float32)
    cot = r.standard_normal((4, 9, 50), np.float32)
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch_run(lambda h: F.linear(h, ref.weight), xt, cot)
    (_, out), (gm, gx) = jax.jit(jax.value_and_grad(
        lambda m, h: (jnp.sum(m.attend(h) * cot), m.attend(h)), argnums=(0, 1), has_aux=True))(emb, jnp.asarray(x))
    close(out, out_t.detach().numpy(), "attend output")
    close(gx, xt.grad.numpy(), "attend grad input")
    close(gm.weight, ref.weight.grad.numpy(), "attend grad weight")


def test_embedding_init_is_standard_normal():
    w = nn.Embedding(1000, 64, key=jax.random.key(0)).weight
    assert abs(float(w.mean())) < 0.01 and abs(float(w.std()) - 1.0) < 0.01


# ----------------------------------------------------------------------------------------
# Conv
# ----------------------------------------------------------------------------------------

TORCH_CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TORCH_CONVT = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}

# (id, spatial shape, in, out, kernel_size, ours kwargs, torch padding: kwarg or ("pad", pairs))
CONV_CASES = [
    ("1d-stride-pad", (11,), 4, 6, 3, dict(stride=2, padding=1), 1),
    ("1d-depthwise-dilated-same", (13,), 4, 8, 5, dict(dilation=2, groups=4, padding="same"), "same"),
    ("1d-causal", (10,), 3, 5, 3, dict(dilation=3, padding="CAUSAL"), ("pad", [(6, 0)])),
    ("1d-valid-nobias", (9,), 3, 2, 4, dict(padding="VALID", use_bias=False), 0),
    ("2d-all", (9, 8), 4, 6, (3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2), (1, 0)),
    ("2d-depthwise-same", (7, 7), 6, 6, 3, dict(groups=6), "same"),
    ("2d-explicit-pairs", (8, 9), 3, 4, (3, 3), dict(padding=((1, 2), (0, 1)), stride=2), ("pad", [(1, 2), (0, 1)])),
    ("3d-stride-pad", (5, 7, 6), 3, 4, (2, 3, 3), dict(stride=(1, 2, 2), padding=1), 1),
    ("3d-groups-dilation", (6, 6, 7), 4, 4, 3, dict(dilation=(1, 2, 1), groups=2, padding="VALID"), 0),
]


def _torch_padded(x, pairs):
    flat = [v for lo_hi in reversed(pairs) for v in lo_hi]  # F.pad lists the last dim first
    return F.pad(x, flat)


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv(case):
    _, spatial, cin, cout, k, kwargs, torch_pad = case
    n = len(spatial)
    ks = (k,) * n if isinstance(k, int) else k
    conv = shell(lambda: nn.Conv(cin, cout, k if n == 1 else ks, key=jax.random.key(0), **kwargs))  # int: 1D
    tkw = {k_: v for k_, v in kwargs.items() if k_ in ("stride", "dilation", "groups")}
    use_bias = kwargs.get("use_bias", True)
    if isinstance(torch_pad, tuple) and torch_pad[0] == "pad":
        ref = TORCH_CONV[n](cin, cout, ks, padding=0, bias=use_bias, **tkw)
        fn = lambda x: ref(_torch_padded(x, torch_pad[1]))
    else:
        ref = TORCH_CONV[n](cin, cout, ks, padding=torch_pad, bias=use_bias, **tkw)
        fn = ref
    conv = conv.at("weight").set(kernel_last(ref.weight))
    if use_bias:
        conv = conv.at("bias").set(jnp.asarray(ref.bias.detach().numpy()))

    r = rng(3)
    x = r.standard_normal((2, *spatial, cin), np.float32)
    xt = to_first(x)
    out_shape = tuple(fn(xt).shape)
    cot = r.standard_normal((out_shape[0], *out_shape[2:], out_shape[1]), np.float32)
    out_t = torch_run(fn, xt, np.moveaxis(cot, -1, 1))
    out, (gm, gx) = jax_run(conv, jnp.asarray(x), cot)
    close(out, to_last(out_t), "output")
    close(gx, to_last(xt.grad), "grad input")
    close(gm.weight, kernel_last(ref.weight.grad), "grad weight")
    if use_bias:
        close(gm.bias, ref.bias.grad.numpy(), "grad bias")


def test_conv_init_bounds_match_torch():
    """Weight and bias lie in U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in/groups * prod(k)."""
    conv = nn.Conv(16, 32, (3, 3), key=jax.random.key(0), groups=4)
    bound = 1 / np.sqrt(16 // 4 * 9)
    for w in (conv.weight, conv.bias):
        assert float(jnp.max(jnp.abs(w))) <= bound and float(jnp.max(jnp.abs(w))) > 0.9 * bound
    ref = torch.nn.Conv2d(16, 32, 3, groups=4)
    assert float(ref.weight.detach().abs().max()) <= bound  # the same bound in torch


# ----------------------------------------------------------------------------------------
# ConvTranspose
# ----------------------------------------------------------------------------------------

# (id, spatial, in, out, kernel, stride, padding, output_padding, dilation, groups)
CONVT_CASES = [
    ("2d-s2-p1-op1", (5, 6), 4, 6, 3, 2, 1, 1, 1, 1),
    ("2d-anisotropic", (4, 5), 3, 5, (3, 4), (2, 3), (0, 1), (1, 2), 1, 1),
    ("2d-dilation-groups", (5, 4), 6, 4, 3, 2, 2, 1, 2, 2),
    ("2d-negative-overhang", (4, 4), 4, 4, 1, 3, 1, 0, 1, 1),
    ("1d", (7,), 3, 4, 4, 3, 1, 2, 1, 1),
    ("3d", (3, 4, 3), 4, 2, (2, 3, 2), (2, 1, 2), (0, 1, 1), (1, 0, 0), 1, 2),
]


@pytest.mark.parametrize("case", CONVT_CASES, ids=[c[0] for c in CONVT_CASES])
def test_conv_transpose(case):
    _, spatial, cin, cout, k, s, p, op, d, g = case
    n = len(spatial)
    ks = (k,) * n if isinstance(k, int) else k
    ref = TORCH_CONVT[n](cin, cout, ks, stride=s, padding=p, output_padding=op, dilation=d, groups=g)
    layer = shell(lambda: nn.ConvTranspose(cin, cout, k if n == 1 else ks, key=jax.random.key(0), stride=s,
                                           padding=p, output_padding=op, dilation=d, groups=g))
    layer = layer.at("weight").set(transpose_kernel_last(ref.weight)).at("bias").set(jnp.asarray(ref.bias.detach().numpy()))

    r = rng(5)
    x = r.standard_normal((2, *spatial, cin), np.float32)
    xt = to_first(x)
    out_shape = tuple(ref(xt).shape)
    cot = r.standard_normal((out_shape[0], *out_shape[2:], out_shape[1]), np.float32)
    out_t = torch_run(ref, xt, np.moveaxis(cot, -1, 1))
    out, (gm, gx) = jax_run(layer, jnp.asarray(x), cot)
    close(out, to_last(out_t), "output")
    close(gx, to_last(xt.grad), "grad input")
    close(gm.weight, transpose_kernel_last(ref.weight.grad), "grad weight")
    close(gm.bias, ref.bias.grad.numpy(), "grad bias")


def test_conv_transpose_init_fan_in_matches_torch():
    """PyTorch's fan_in for a transposed conv is out_channels // groups * prod(kernel)."""
    layer = nn.ConvTranspose(64, 8, (3, 3), key=jax.random.key(0), groups=2)
    bound = 1 / np.sqrt(8 // 2 * 9)
    assert 0.9 * bound < float(jnp.max(jnp.abs(layer.weight))) <= bound


# ----------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------


def _pool_parity(layer, fn, spatial, channels=3, seed=6):
    r = rng(seed)
    x = r.standard_normal((2, *spatial, channels), np.float32)
    xt = to_first(x)
    out_shape = tuple(fn(xt).shape)
    cot = r.standard_normal((out_shape[0], *out_shape[2:], out_shape[1]), np.float32)
    out_t = torch_run(fn, xt, np.moveaxis(cot, -1, 1))
    out, (gm, gx) = jax_run(layer, jnp.asarray(x), cot)
    close(out, to_last(out_t), "output")
    close(gx, to_last(xt.grad), "grad input")


# (id, spatial, kwargs for both: window/kernel_size, stride, padding, dilation, ceil_mode)
MAXPOOL_CASES = [
    ("k2", (8, 8), dict(window=(2, 2))),
    ("k3-s2-p1", (9, 10), dict(window=(3, 3), stride=2, padding=1)),
    ("anisotropic-dilated", (9, 11), dict(window=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    ("ceil", (8, 7), dict(window=(3, 3), stride=2, ceil_mode=True)),
    ("ceil-pad-drop-last", (6, 6), dict(window=(2, 2), stride=2, padding=1, ceil_mode=True)),
]


@pytest.mark.parametrize("case", MAXPOOL_CASES, ids=[c[0] for c in MAXPOOL_CASES])
def test_max_pool_2d(case):
    _, spatial, kw = case
    kw = dict(kw)
    window = kw.pop("window")
    ref = torch.nn.MaxPool2d(window, **{"stride": None, **kw})
    _pool_parity(nn.MaxPool(window, **kw), ref, spatial)


AVGPOOL_CASES = [
    ("k2", (8, 8), dict(window=(2, 2))),
    ("k3-s2-p1-include", (9, 10), dict(window=(3, 3), stride=2, padding=1)),
    ("k3-s2-p1-exclude", (9, 10), dict(window=(3, 3), stride=2, padding=1, count_include_pad=False)),
    ("ceil-include", (8, 7), dict(window=(3, 3), stride=2, padding=1, ceil_mode=True)),
    ("ceil-exclude", (8, 7), dict(window=(3, 3), stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("anisotropic", (7, 9), dict(window=(2, 3), stride=(1, 2), padding=(1, 1))),
]


@pytest.mark.parametrize("case", AVGPOOL_CASES, ids=[c[0] for c in AVGPOOL_CASES])
def test_avg_pool_2d(case):
    _, spatial, kw = case
    kw = dict(kw)
    window = kw.pop("window")
    ref = torch.nn.AvgPool2d(window, **{"stride": None, **kw})
    _pool_parity(nn.AvgPool(window, **kw), ref, spatial)


@pytest.mark.parametrize("spatial,out", [((5, 7), (3, 4)), ((10, 9), (4, None)), ((8, 8), (4, 4)),
                                         ((7, 7), (1, 1)), ((3, 5), (5, 7))])
def test_adaptive_avg_pool_2d(spatial, out):
    _pool_parity(nn.AdaptiveAvgPool(out), torch.nn.AdaptiveAvgPool2d(out), spatial)


def test_adaptive_avg_pool_1d_and_3d():
    _pool_parity(nn.AdaptiveAvgPool(4), torch.nn.AdaptiveAvgPool1d(4), (11,))
    _pool_parity(nn.AdaptiveAvgPool((2, 3, 2)), torch.nn.AdaptiveAvgPool3d((2, 3, 2)), (5, 7, 3))


def test_pool_1d_and_3d():
    _pool_parity(nn.MaxPool(3, stride=2, padding=1), torch.nn.MaxPool1d(3, stride=2, padding=1), (12,))
    _pool_parity(nn.AvgPool((2, 2, 2)), torch.nn.AvgPool3d(2), (4, 6, 4))


def test_global_avg_pool():
    ref = lambda x: torch.nn.AdaptiveAvgPool2d(1)(x).flatten(1)
    r = rng(7)
    x = r.standard_normal((2, 5, 7, 6), np.float32)
    xt = to_first(x)
    cot = r.standard_normal((2, 6), np.float32)
    out_t = torch_run(ref, xt, cot)
    layer = nn.GlobalAvgPool()
    out, (_, gx) = jax_run(layer, jnp.asarray(x), cot)
    close(out, out_t.detach().numpy(), "output")
    close(gx, to_last(xt.grad), "grad input")
    assert nn.GlobalAvgPool(keepdims=True)(jnp.asarray(x)).shape == (2, 1, 1, 6)
    assert nn.GlobalAvgPool(1)(jnp.asarray(x)).shape == (2, 5, 6)
