"""Logical axes -> mesh shardings, and models created directly sharded (fake 8-device mesh)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from baobab import nn
from models_for_tests import Tower

RULES = {"batch": ("data", "fsdp"), "embed": "fsdp", "mlp": "tensor", "heads": "tensor",
         "vocab": "tensor", "layers": None, "classes": None}


def test_every_parameter_lands_with_the_expected_spec(mesh8, key):
    model = nn.create_sharded(lambda k: Tower(key=k), key, mesh=mesh8, rules=RULES)
    expected = {
        "embed.weight": P(None, "fsdp"),
        "embed.bias": P("fsdp"),
        "blocks[0].attn.q.weight": P("fsdp", "tensor"),
        "blocks[0].attn.q.bias": P("tensor"),
        "blocks[3].attn.o.weight": P("tensor", "fsdp"),
        "blocks[3].fc.weight": P("fsdp", "tensor"),
        "blocks[3].fc.bias": P("tensor"),
        "head.weight": P("fsdp", None),
        "head.bias": P(None),
    }
    got = nn.state_dict(model)
    for path, spec in expected.items():
        assert got[path].sharding.spec == spec, path
        assert got[path].sharding.mesh.shape == mesh8.shape
    # each device holds only its slice of a 2-way x 2-way sharded weight
    q = got["blocks[0].attn.q.weight"]
    assert {s.data.shape for s in q.addressable_shards} == {(8, 8)}
    # identical values to an unsharded init with the same key
    plain = Tower(key=key)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), model, plain)


def test_shardings_from_abstract_model(mesh8, key):
    abstract = jax.eval_shape(lambda k: Tower(key=k), key)
    sh = nn.shardings(abstract, mesh8, RULES)
    assert sh.blocks[1].attn.q.weight.spec == P("fsdp", "tensor")


def test_stacked_layers_gain_the_layers_axis(mesh8, key):
    rules = dict(RULES, layers="data")
    stack = nn.create_sharded(
        lambda k: nn.Stacked(lambda kk: nn.Linear(16, 16, key=kk), 2, key=k), key, mesh=mesh8, rules=rules)
    assert stack.layer.weight.sharding.spec == P("data", "fsdp", "tensor")


def test_rule_errors_are_explicit(mesh8, key):
    model = Tower(key=key)
    with pytest.raises(KeyError, match=r"logical axis 'classes' has no sharding rule"):
        nn.shardings(model, mesh8, {k: v for k, v in RULES.items() if k != "classes"})
    with pytest.raises(KeyError, match=r"names mesh axes \['model'\] that the mesh does not have"):
        nn.shardings(model, mesh8, dict(RULES, mlp="model"))
    odd = nn.Linear(16, 6, key=key)
    with pytest.raises(ValueError, match=r"weight: dimension 1 \('mlp'\) has size 6.*total size 4"):
        nn.shardings(odd, mesh8, dict(RULES, mlp=("tensor", "data")))


def test_a_mesh_axis_is_used_once_per_array():
    assert nn.logical_to_mesh(("embed", "mlp"), {"embed": "fsdp", "mlp": ("fsdp", "tensor")}) == P("fsdp", "tensor")


def test_jit_step_keeps_shardings(mesh8, key):
    model = nn.create_sharded(lambda k: Tower(key=k), key, mesh=mesh8, rules=RULES)
    sh = nn.shardings(model, mesh8, RULES)
    x_sh = jax.sharding.NamedSharding(mesh8, nn.logical_to_mesh(("batch", None), RULES, mesh8))
    x = jax.device_put(jnp.ones((8, 8)), x_sh)

    @jax.jit
    def sgd(m, x):
        g = jax.grad(lambda m: jnp.mean(m(x) ** 2))(m)
        return jax.tree.map(lambda p, gp: p - 0.1 * gp, m, g)

    new = jax.jit(sgd, out_shardings=sh)(model, x)
    assert new.blocks[2].fc.weight.sharding.spec == P("fsdp", "tensor")
