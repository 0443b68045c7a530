"""Stacked layers: vmap init, lax.scan apply, remat, equal to the unrolled model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from baobab import nn
from models_for_tests import Block


def _unrolled(layers, x):
    for layer in layers:
        x = layer(x)
    return x


@pytest.mark.parametrize("remat", [None, "full", "dots_saveable"])
def test_stacked_equals_unrolled(key, remat):
    stack = nn.Stacked(lambda k: Block(16, key=k), 3, key=key, remat=remat)
    x = jax.random.normal(jax.random.key(1), (4, 16))
    layers = stack.unstacked()
    assert len(layers) == 3 and layers[0].attn.q.weight.shape == (16, 16)
    np.testing.assert_allclose(jax.jit(lambda s, x: s(x))(stack, x), _unrolled(layers, x), rtol=1e-5, atol=1e-5)
    g_stack = jax.grad(lambda s: jnp.sum(s(x) ** 2))(stack)
    g_layers = jax.grad(lambda ls: jnp.sum(_unrolled(ls, x) ** 2))(layers)
    np.testing.assert_allclose(g_stack.layer.fc.weight[2], g_layers[2].fc.weight, rtol=1e-4, atol=1e-5)


def test_from_layers_round_trip(key):
    layers = tuple(Block(16, key=jax.random.key(i)) for i in range(3))
    stack = nn.Stacked.from_layers(layers)
    x = jnp.ones((2, 16))
    np.testing.assert_allclose(stack(x), _unrolled(layers, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="differ"):
        nn.Stacked.from_layers([nn.Linear(4, 4, key=key), nn.Linear(4, 8, key=key)])


def test_layers_axis_and_errors(key):
    stack = nn.Stacked(lambda k: Block(16, key=k), 2, key=key)
    assert nn.logical_axes(stack).layer.attn.q.weight == P("layers", "embed", "heads")
    with pytest.raises(ValueError, match="Unknown remat policy 'everything'"):
        nn.Stacked(lambda k: Block(16, key=k), 2, key=key, remat="everything")
    with pytest.raises(ValueError, match="positive int"):
        nn.Stacked(lambda k: Block(16, key=k), 0, key=key)


def test_scan_compiles_one_layer(key):
    """The scanned stack's HLO holds one copy of the layer body; the unrolled one holds N."""
    depth = 6
    stack = nn.Stacked(lambda k: Block(16, key=k), depth, key=key)
    x = jnp.ones((2, 16))
    count = lambda f, *a: jax.jit(f).lower(*a).as_text().count("tanh")
    assert count(lambda s, x: s(x), stack, x) == 1
    assert count(lambda ls, x: _unrolled(ls, x), stack.unstacked(), x) == depth


def test_stacked_under_a_policy_whose_output_dtype_differs_from_compute(key):
    """fp32 master weights, bf16 compute, fp32 outputs: the scan carry keeps one dtype."""
    stack = nn.Stacked(lambda k: Block(16, key=k), 3, key=key)
    mixed = nn.with_policy(stack, nn.Policy.create("float32", "bfloat16", "float32"))
    x = jax.random.normal(jax.random.key(1), (4, 16))
    out = jax.jit(lambda s, x: s(x))(mixed, x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, stack(x), atol=0.1, rtol=0.05)
    grads = jax.grad(lambda s: jnp.sum(s(x)))(mixed)
    assert grads.layer.fc.weight.dtype == jnp.float32
