"""Parity with PyTorch: norms, BatchNorm (train and eval), MLP and GatedMLP.

Each test copies the same weights into both frameworks and compares the forward
output and the gradients of ``sum(y * g)`` (``g`` a fixed random cotangent) with
respect to the input and every weight, in float32. PyTorch is channels-first
(``NCHW``) where baobab is channels-last (``NHWC``): the tests transpose.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch
F = torch.nn.functional

from baobab import nn  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)


def _rand(seed, shape, scale=1.0, shift=0.0):
    return (np.random.RandomState(seed).randn(*shape) * scale + shift).astype(np.float32)


def _t(x, grad=True):
    return torch.tensor(np.asarray(x), requires_grad=grad)


def _np(t):
    return t.detach().numpy()


def _close(actual, expected, scale_tol=TOL):
    """fp32 comparison; atol scales with the reference's magnitude (sums over batches)."""
    expected = np.asarray(expected)
    atol = scale_tol["atol"] * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=scale_tol["rtol"], atol=atol)


def _jax_forward_and_grads(model, x, g):
    """Output, d/dmodel and d/dx of sum(model(x) * g), jitted."""

    def loss(m, x):
        y = m(x)
        return jnp.sum(y * g), y

    (_, y), (gm, gx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(model, x)
    return y, gm, gx


def _torch_forward_and_grads(module, x, g):
    xt = _t(x)
    y = module(xt)
    (y * torch.tensor(g)).sum().backward()
    return _np(y), xt.grad.numpy()


def _set(model, **arrays):
    for name, value in arrays.items():
        model = model.at(name).set(jnp.asarray(value))
    return model


# ----------------------------------------------------------------------------------------
# LayerNorm, RMSNorm, GroupNorm
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [8, (6, 8)])
@pytest.mark.parametrize("affine", ["scale+bias", "scale", "none"])
def test_layernorm_matches_torch(shape, affine):
    dims = (shape,) if isinstance(shape, int) else shape
    use_scale, use_bias = affine != "none", affine == "scale+bias"
    x, g = _rand(0, (4, 6, 8), 2.0, 3.0), _rand(1, (4, 6, 8))
    ours = nn.LayerNorm(shape, eps=1e-5, use_scale=use_scale, use_bias=use_bias)
    ref = torch.nn.LayerNorm(shape, eps=1e-5, elementwise_affine=use_scale, bias=use_bias)
    w, b = _rand(2, dims), _rand(3, dims)
    if use_scale:
        ours = _set(ours, weight=w)
        ref.weight.data = torch.tensor(w)
    if use_bias:
        ours = _set(ours, bias=b)
        ref.bias.data = torch.tensor(b)
    y, gm, gx = _jax_forward_and_grads(ours, x, g)
    ty, tgx = _torch_forward_and_grads(ref, x, g)
    _close(y, ty)
    _close(gx, tgx)
    if use_scale:
        _close(gm.weight, ref.weight.grad)
    if use_bias:
        _close(gm.bias, ref.bias.grad)


@pytest.mark.parametrize("shape", [8, (6, 8)])
@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("use_scale", [True, False])
def test_rmsnorm_matches_torch(shape, eps, use_scale):
    dims = (shape,) if isinstance(shape, int) else shape
    x, g = _rand(0, (4, 6, 8), 2.0, 1.0), _rand(1, (4, 6, 8))
    ours = nn.RMSNorm(shape, eps=eps, use_scale=use_scale)
    ref = torch.nn.RMSNorm(shape, eps=eps, elementwise_affine=use_scale)
    if use_scale:
        w = _rand(2, dims)
        ours = _set(ours, weight=w)
        ref.weight.data = torch.tensor(w)
    y, gm, gx = _jax_forward_and_grads(ours, x, g)
    ty, tgx = _torch_forward_and_grads(ref, x, g)
    _close(y, ty)
    _close(gx, tgx)
    if use_scale:
        _close(gm.weight, ref.weight.grad)


def test_rmsnorm_default_eps_is_float32_machine_epsilon_like_torch():
    # x = 1e-4 everywhere: y = 1e-4 / sqrt(1e-8 + eps) tells eps apart (torch uses the
    # float32 epsilon for bf16 too, because it computes in float32).
    x = np.full((1, 4), 1e-4, np.float32)
    expected = _np(torch.nn.RMSNorm(4)(torch.tensor(x)))
    _close(nn.RMSNorm(4)(jnp.asarray(x)), expected)
    low = nn.RMSNorm(4)(jnp.asarray(x, jnp.bfloat16))
    expected_low = _np(F.rms_norm(torch.tensor(x).bfloat16(), (4,)).float())
    np.testing.assert_allclose(np.asarray(low, np.float32), expected_low, rtol=1e-2)


@pytest.mark.parametrize("groups,channels", [(1, 8), (2, 8), (8, 8), (4, 16)])
@pytest.mark.parametrize("spatial", [(5, 5), (7,)])
@pytest.mark.parametrize("affine", [True, False])
def test_groupnorm_matches_torch(groups, channels, spatial, affine):
    x, g = _rand(0, (3, *spatial, channels), 2.0, 1.5), _rand(1, (3, *spatial, channels))
    ours = nn.GroupNorm(groups, channels, eps=1e-5, affine=affine)
    ref = torch.nn.GroupNorm(groups, channels, eps=1e-5, affine=affine)
    if affine:
        w, b = _rand(2, (channels,)), _rand(3, (channels,))
        ours = _set(ours, weight=w, bias=b)
        ref.weight.data, ref.bias.data = torch.tensor(w), torch.tensor(b)
    y, gm, gx = _jax_forward_and_grads(ours, x, g)
    to_cf = lambda a: np.moveaxis(a, -1, 1)  # NHWC -> NCHW
    ty, tgx = _torch_forward_and_grads(ref, to_cf(x), to_cf(g))
    _close(y, np.moveaxis(ty, 1, -1))
    _close(gx, np.moveaxis(tgx, 1, -1))
    if affine:
        _close(gm.weight, ref.weight.grad)
        _close(gm.bias, ref.bias.grad)


# ----------------------------------------------------------------------------------------
# BatchNorm
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0.0, 50.0], ids=["centred", "offset50"])
def test_batchnorm2d_train_matches_torch_over_steps(shift):
    """Outputs, gradients and running statistics agree after each of 3 training steps.

    ``offset50`` (mean 50, std 2, like unnormalised activations) catches a one-pass
    E[x^2] - E[x]^2 variance, which loses about three digits there in float32.
    """
    C = 8
    w, b = _rand(10, (C,)), _rand(11, (C,))
    ours = _set(nn.BatchNorm(C, eps=1e-5, momentum=0.1), weight=w, bias=b)
    ref = torch.nn.BatchNorm2d(C, eps=1e-5, momentum=0.1)
    ref.weight.data, ref.bias.data = torch.tensor(w), torch.tensor(b)
    ref.train()

    @jax.jit
    def step(model, x, g):
        def loss(m, x):
            y, new = nn.stateful_call(m, x)
            return jnp.sum(y * g), (y, new)

        (_, (y, new)), (gm, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(model, x)
        return y, gm, gx, new

    for i in range(3):
        x, g = _rand(20 + i, (4, 5, 5, C), 2.0, shift), _rand(30 + i, (4, 5, 5, C))
        y, gm, gx, ours = step(ours, x, g)
        ref.weight.grad = ref.bias.grad = None
        ty, tgx = _torch_forward_and_grads(ref, x.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2))
        _close(y, ty.transpose(0, 2, 3, 1))
        _close(gx, tgx.transpose(0, 2, 3, 1))
        _close(gm.weight, ref.weight.grad)
        _close(gm.bias, ref.bias.grad)
        _close(ours.running_mean, ref.running_mean)
        _close(ours.running_var, ref.running_var)
        # running statistics are state: they get no gradient
        assert not np.any(np.asarray(gm.running_mean)) and not np.any(np.asarray(gm.running_var))


def test_batchnorm1d_train_matches_torch():
    x, g = _rand(0, (16, 8), 3.0, 2.0), _rand(1, (16, 8))
    ref = torch.nn.BatchNorm1d(8)

    def loss(m, x):
        y, new = nn.stateful_call(m, x)
        return jnp.sum(y * g), (y, new)

    (_, (y, new)), (gm, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(nn.BatchNorm(8), x)
    ty, tgx = _torch_forward_and_grads(ref, x, g)
    _close(y, ty)
    _close(gx, tgx)
    _close(gm.weight, ref.weight.grad)
    _close(new.running_mean, ref.running_mean)
    _close(new.running_var, ref.running_var)


def test_batchnorm2d_eval_matches_torch():
    C = 8
    w, b = _rand(10, (C,)), _rand(11, (C,))
    mean, var = _rand(12, (C,), 1.0, 2.0), np.abs(_rand(13, (C,))) + 0.5
    ours = nn.eval_mode(_set(nn.BatchNorm(C), weight=w, bias=b, running_mean=mean, running_var=var))
    ref = torch.nn.BatchNorm2d(C)
    ref.weight.data, ref.bias.data = torch.tensor(w), torch.tensor(b)
    ref.running_mean.data, ref.running_var.data = torch.tensor(mean), torch.tensor(var)
    ref.eval()
    x, g = _rand(0, (4, 5, 5, C), 2.0, 1.0), _rand(1, (4, 5, 5, C))
    y, gm, gx = _jax_forward_and_grads(ours, x, g)  # plain call: eval mode records nothing
    ty, tgx = _torch_forward_and_grads(ref, x.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2))
    _close(y, ty.transpose(0, 2, 3, 1))
    _close(gx, tgx.transpose(0, 2, 3, 1))
    _close(gm.weight, ref.weight.grad)
    _close(gm.bias, ref.bias.grad)


# ----------------------------------------------------------------------------------------
# bf16: statistics in float32, output in the input dtype
# ----------------------------------------------------------------------------------------

_BF16 = nn.Policy.create(param_dtype="float32", compute_dtype="bfloat16", output_dtype="bfloat16")


def _train_bn(m, x):
    return nn.stateful_call(m, x)[0]


@pytest.mark.parametrize("ours,ref,call", [
    (lambda: nn.LayerNorm(8), lambda: torch.nn.LayerNorm(8), None),
    (lambda: nn.RMSNorm(8), lambda: torch.nn.RMSNorm(8), None),
    (lambda: nn.GroupNorm(2, 8), lambda: torch.nn.GroupNorm(2, 8), "cf"),
    (lambda: nn.BatchNorm(8), lambda: torch.nn.BatchNorm2d(8), "cf-train"),
], ids=["LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm-train"])
def test_norms_in_bf16_keep_float32_statistics(ours, ref, call):
    """bf16 in and out, offset input (mean 50, std 2): close to float32 torch on the same input."""
    x = jnp.asarray(_rand(0, (4, 5, 5, 8), 2.0, 50.0), jnp.bfloat16)
    x32 = np.asarray(x, np.float32)  # the bf16-rounded input, as the reference sees it
    model = nn.with_policy(ours(), _BF16)
    y = jax.jit(_train_bn if call == "cf-train" else (lambda m, x: m(x)))(model, x)
    assert y.dtype == jnp.bfloat16
    if call is None:
        expected = _np(ref()(torch.tensor(x32)))
    else:
        expected = _np(ref()(torch.tensor(x32.transpose(0, 3, 1, 2)))).transpose(0, 2, 3, 1)
    # bf16 output rounding is ~0.4% of |y| <= ~3; a bf16 variance would be off by far more
    np.testing.assert_allclose(np.asarray(y, np.float32), expected, atol=5e-2)


# ----------------------------------------------------------------------------------------
# MLP and GatedMLP
# ----------------------------------------------------------------------------------------


def _copy_linear(ours, ref):
    """Copy a baobab Linear into a torch.nn.Linear (torch stores weight transposed)."""
    ref.weight.data = torch.tensor(np.asarray(ours.weight).T.copy())
    if ours.bias is not None:
        ref.bias.data = torch.tensor(np.asarray(ours.bias))


def _check_linear_grads(g_ours, ref):
    _close(g_ours.weight, ref.weight.grad.numpy().T)
    if g_ours.bias is not None:
        _close(g_ours.bias, ref.bias.grad)


@pytest.mark.parametrize("activation,torch_act", [
    (jax.nn.gelu, torch.nn.GELU(approximate="tanh")),
    (functools.partial(jax.nn.gelu, approximate=False), torch.nn.GELU()),
    (jax.nn.relu, torch.nn.ReLU()),
], ids=["gelu-tanh", "gelu-exact", "relu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_mlp_matches_torch_sequential(activation, torch_act, use_bias):
    ours = nn.MLP(16, 32, 8, key=jax.random.key(0), activation=activation, use_bias=use_bias)
    ref = torch.nn.Sequential(torch.nn.Linear(16, 32, bias=use_bias), torch_act,
                              torch.nn.Linear(32, 8, bias=use_bias))
    _copy_linear(ours.fc1, ref[0])
    _copy_linear(ours.fc2, ref[2])
    x, g = _rand(0, (4, 5, 16)), _rand(1, (4, 5, 8))
    y, gm, gx = _jax_forward_and_grads(ours, x, g)
    ty, tgx = _torch_forward_and_grads(ref, x, g)
    _close(y, ty)
    _close(gx, tgx)
    _check_linear_grads(gm.fc1, ref[0])
    _check_linear_grads(gm.fc2, ref[2])


class _TorchGLU(torch.nn.Module):
    """Hand-written SwiGLU / GeGLU, as in Llama: w_down(act(w_gate(x)) * w_up(x))."""

    def __init__(self, d, h, act, bias):
        super().__init__()
        self.w_gate = torch.nn.Linear(d, h, bias=bias)
        self.w_up = torch.nn.Linear(d, h, bias=bias)
        self.w_down = torch.nn.Linear(h, d, bias=bias)
        self.act = act

    def forward(self, x):
        return self.w_down(self.act(self.w_gate(x)) * self.w_up(x))


@pytest.mark.parametrize("activation,torch_act", [
    (jax.nn.silu, F.silu),
    (jax.nn.gelu, functools.partial(F.gelu, approximate="tanh")),
], ids=["swiglu", "geglu"])
@pytest.mark.parametrize("use_bias", [False, True])
def test_gated_mlp_matches_torch_glu(activation, torch_act, use_bias):
    ours = nn.GatedMLP(16, 40, key=jax.random.key(0), activation=activation, use_bias=use_bias)
    ref = _TorchGLU(16, 40, torch_act, use_bias)
    _copy_linear(ours.gate, ref.w_gate)
    _copy_linear(ours.up, ref.w_up)
    _copy_linear(ours.down, ref.w_down)
    x, g = _rand(0, (4, 5, 16)), _rand(1, (4, 5, 16))
    y, gm, gx = _jax_forward_and_grads(ours, x, g)
    ty, tgx = _torch_forward_and_grads(ref, x, g)
    _close(y, ty)
    _close(gx, tgx)
    _check_linear_grads(gm.gate, ref.w_gate)
    _check_linear_grads(gm.up, ref.w_up)
    _check_linear_grads(gm.down, ref.w_down)


def test_default_inits_match_torch_distributions():
    """Norm weights 1, biases 0; MLP weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch."""
    ln, gn, rms = nn.LayerNorm(8), nn.GroupNorm(2, 8), nn.RMSNorm(8)
    for w in (ln.weight, gn.weight, rms.weight):
        np.testing.assert_array_equal(w, np.ones(8))
    for b in (ln.bias, gn.bias):
        np.testing.assert_array_equal(b, np.zeros(8))
    mlp = nn.MLP(64, 256, 64, key=jax.random.key(0))
    for lin, fan_in in ((mlp.fc1, 64), (mlp.fc2, 256)):
        bound = 1 / np.sqrt(fan_in)
        w = np.asarray(lin.weight)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
        np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.05)
