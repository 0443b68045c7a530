"""Precision policy by path: fp32 master weights, bf16 compute, chosen outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import nn
from models_for_tests import ResNetBN, Tower


def test_policy_casts_compute_and_output(key):
    model = Tower(key=key)
    x = jax.random.normal(jax.random.key(1), (4, 8))
    seen = []

    class Spy(nn.Module):
        inner: nn.Linear

        def __init__(self, inner):
            self.inner = inner

        def __call__(self, x):
            seen.append((x.dtype, self.inner.weight.dtype))
            return self.inner(x)

    mixed = nn.with_policy(model.at("head").set(Spy(model.head)),
                           nn.Policy.create("float32", "bfloat16", "bfloat16"))
    # the root module (path "") returns float32
    mixed = nn.with_policy(mixed, nn.Policy.create("float32", "bfloat16", "float32"), where="")
    out = jax.jit(lambda m, x: m(x))(mixed, x)
    assert seen == [(jnp.bfloat16, jnp.float32)]  # the head saw bf16 input; its own weights cast later
    assert out.dtype == jnp.float32
    assert mixed.blocks[0].fc.weight.dtype == jnp.float32  # master weights stay fp32
    np.testing.assert_allclose(out, model(x), atol=0.1, rtol=0.05)
    grads = jax.grad(lambda m: jnp.sum(m(x)))(mixed)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_later_policy_overrides_by_path(key):
    model = ResNetBN(8, 16, 4, key=key)
    bf16 = nn.Policy.create("bfloat16", "bfloat16")
    fp32 = nn.Policy.create("float32", "float32")
    m = nn.with_policy(nn.with_policy(model, bf16), fp32, where="*bn")
    assert m.blocks[0].fc1.weight.dtype == jnp.bfloat16
    assert m.blocks[0].bn.weight.dtype == jnp.float32
    assert m.blocks[0].bn.running_mean.dtype == jnp.float32  # state keeps its dtype
    out, m2 = nn.stateful_call(m, jnp.ones((4, 8)))
    assert out.dtype == jnp.bfloat16
    assert m2.blocks[0].bn.running_var.dtype == jnp.float32


def test_policy_errors():
    with pytest.raises(TypeError, match="not a dtype"):
        nn.Policy.create("float32", "bfloat17")
    with pytest.raises(ValueError, match="unknown key 'param'"):
        nn.Policy.from_string("param=float32")
    p = nn.Policy.from_string("params=float32,compute=bfloat16,output=float32")
    assert p == nn.Policy(jnp.dtype("float32"), jnp.dtype("bfloat16"), jnp.dtype("float32"))
    with pytest.raises(ValueError, match="matched no module"):
        nn.with_policy(nn.Linear(2, 2, key=jax.random.key(0)), p, where="encoder*")
