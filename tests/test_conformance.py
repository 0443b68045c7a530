"""Every layer in ``tests/conformance.py`` passes the same contract checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from baobab import nn
from conformance import CASES

ids = [c.name for c in CASES]


def _keys():
    return jax.random.split(jax.random.key(1))


def _setup(case):
    k1, k2 = _keys()
    return case.make(k1), case.inputs(k2)


def _floating(x):
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


def _sum_out(out):
    return sum(jnp.sum(jnp.asarray(o, jnp.float64)) for o in jax.tree.leaves(out))  # x64 only


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_jit_matches_eager(case):
    model, args = _setup(case)
    eager = model(*args, **case.kwargs)
    jitted = jax.jit(lambda m, *a: m(*a, **case.kwargs))(model, *args)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), eager, jitted)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_vmap_matches_loop(case):
    model, args = _setup(case)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x * 0 + x[::-1] if x.ndim else x]), args)
    out = jax.vmap(lambda *a: model(*a, **case.kwargs))(*stacked)
    for i in range(2):
        one = model(*jax.tree.map(lambda x: x[i], stacked), **case.kwargs)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-5), out, one)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_eval_shape_matches_output(case):
    model, args = _setup(case)
    abstract = jax.eval_shape(lambda m, *a: m(*a, **case.kwargs), model, *args)
    real = model(*args, **case.kwargs)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), abstract) == jax.tree.map(lambda x: (x.shape, x.dtype), real)
    abstract_model = jax.eval_shape(case.make, _keys()[0])
    assert jax.tree.structure(abstract_model) == jax.tree.structure(model)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_check_grads(case):
    """Analytic gradients (params and inputs) agree with finite differences, in float64."""
    with jax.enable_x64(True):
        model, args = _setup(case)
        to64 = lambda x: x.astype(jnp.float64) if _floating(x) else x
        model = jax.tree.map(to64, model)
        args = jax.tree.map(to64, args)
        first, rest = args[0], args[1:]
        has_params = any(jax.tree.leaves(nn.trainable(model)))
        wrt_input = case.grad_inputs and _floating(first)
        assert has_params or wrt_input, f"{case.name}: nothing to differentiate"
        if has_params and wrt_input:
            f = lambda m, x: _sum_out(m(x, *rest, **case.kwargs))
            check_grads(f, (model, first), order=1, modes=("rev",), atol=1e-4, rtol=1e-4)
        elif has_params:
            f = lambda m: _sum_out(m(first, *rest, **case.kwargs))
            check_grads(f, (model,), order=1, modes=("rev",), atol=1e-4, rtol=1e-4)
        else:
            f = lambda x: _sum_out(model(x, *rest, **case.kwargs))
            check_grads(f, (first,), order=1, modes=("rev",), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_bf16_compute_under_policy(case):
    model, args = _setup(case)
    ref = model(*args, **case.kwargs)
    policy = nn.Policy.create(param_dtype="float32", compute_dtype="bfloat16", output_dtype="bfloat16")
    low = jax.jit(lambda m, *a: m(*a, **case.kwargs))(nn.with_policy(model, policy), *args)
    for r, l in zip(jax.tree.leaves(ref), jax.tree.leaves(low), strict=True):
        if _floating(r):
            assert l.dtype == jnp.bfloat16
            scale = float(jnp.max(jnp.abs(r))) + 1e-6
            np.testing.assert_allclose(np.asarray(l, np.float32), np.asarray(r), atol=case.bf16_tol * scale)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_logical_axes_on_every_array(case):
    model, _ = _setup(case)
    arrays = list(nn.iter_arrays(model))
    for path, x, meta in arrays:
        assert len(meta.axes) == x.ndim, (path, meta.axes, x.shape)
        for name in meta.axes:
            assert name is None or name in nn.DEFAULT_RULES, (path, name)
    n_leaves = len(jax.tree.leaves(model))
    assert n_leaves == len(arrays), "every leaf must be an array with metadata"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_sharded_init(case, mesh8):
    model, _ = _setup(case)
    sharded = nn.create_sharded(case.make, _keys()[0], mesh=mesh8, rules=nn.DEFAULT_RULES)
    for (path, x, meta), (_, y, _) in zip(nn.iter_arrays(sharded), nn.iter_arrays(model), strict=True):
        expected = nn.logical_to_mesh(meta.axes, nn.DEFAULT_RULES, mesh8, x.shape)
        assert x.sharding.spec == expected, (path, x.sharding.spec, expected)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
