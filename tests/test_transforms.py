"""Plain jax transforms take a model as it is: no filtered transforms, no split/merge."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from baobab import nn
from models_for_tests import Tower


@pytest.fixture
def model(key):
    return Tower(key=key)


@pytest.fixture
def x():
    return jax.random.normal(jax.random.key(7), (4, 8))


def loss(m, x):
    return jnp.mean(m(x) ** 2)


def test_jit(model, x):
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(model, x), model(x), rtol=1e-5, atol=1e-6)


def test_grad_and_value_and_grad(model, x):
    g = jax.grad(loss)(model, x)
    assert isinstance(g, Tower) and jax.tree.structure(g) == jax.tree.structure(model)
    v, g2 = jax.value_and_grad(loss)(model, x)
    np.testing.assert_allclose(v, loss(model, x), rtol=1e-6)
    # finite difference along one coordinate of one leaf
    eps = 1e-3
    bumped = model.at("blocks[1].fc.bias").apply(lambda b: b.at[0].add(eps))
    fd = (loss(bumped, x) - loss(model, x)) / eps
    np.testing.assert_allclose(g.blocks[1].fc.bias[0], fd, rtol=2e-2, atol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), g, g2)


def test_vmap_over_inputs_and_over_models(model, x):
    per_example = jax.vmap(lambda xi: model(xi))(x)
    np.testing.assert_allclose(per_example, model(x), rtol=1e-5, atol=1e-6)
    ensemble = jax.vmap(lambda k: Tower(key=k))(jax.random.split(jax.random.key(3), 3))
    assert ensemble.head.weight.shape == (3, 16, 8)
    out = jax.vmap(lambda m: m(x))(ensemble)
    one = jax.tree.map(lambda a: a[1], ensemble)
    np.testing.assert_allclose(out[1], one(x), rtol=1e-5, atol=1e-6)


def test_scan_carries_a_model(model, x):
    def step(m, _):
        g = jax.grad(loss)(m, x)
        return jax.tree.map(lambda p, gp: p - 0.1 * gp, m, g), loss(m, x)

    final, losses = jax.lax.scan(step, model, None, length=5)
    assert isinstance(final, Tower)
    assert losses[-1] < losses[0]


def test_eval_shape_builds_an_abstract_model(key):
    abstract = jax.eval_shape(lambda k: Tower(key=k), key)
    assert isinstance(abstract.blocks[0].attn.q.weight, jax.ShapeDtypeStruct)
    assert abstract.blocks[0].attn.q.weight.shape == (16, 16)
    # metadata survives: logical axes are known without allocating anything
    assert nn.logical_axes(abstract).blocks[0].attn.q.weight == jax.sharding.PartitionSpec("embed", "heads")


def test_checkpoint(model, x):
    g_remat = jax.grad(jax.checkpoint(loss))(model, x)
    g = jax.grad(loss)(model, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g, g_remat)


def test_tree_map(model):
    doubled = jax.tree.map(lambda a: 2 * a, model)
    assert isinstance(doubled, Tower)
    np.testing.assert_allclose(doubled.head.weight, 2 * model.head.weight)
    assert doubled.width == model.width


def test_no_recompilation_on_second_step(model, x):
    traces = []
    opt = optax.adamw(1e-2)

    @jax.jit
    def step(m, opt_state, x):
        traces.append(1)
        l, g = jax.value_and_grad(loss)(m, x)
        updates, opt_state = opt.update(g, opt_state, m)
        return optax.apply_updates(m, updates), opt_state, l

    opt_state = opt.init(model)
    losses = []
    for _ in range(3):
        model, opt_state, l = step(model, opt_state, x)
        losses.append(float(l))
    assert len(traces) == 1, "the jitted step was traced more than once"
    assert step._cache_size() == 1
    assert losses[-1] < losses[0]
