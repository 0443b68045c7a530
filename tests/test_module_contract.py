"""The module contract: pytree with keys, arrays-only leaves, immutability, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import nn
from models_for_tests import Block, Tower


def test_tree_paths_read_like_attribute_access(key):
    model = Tower(key=key)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(model)[0]]
    assert ".blocks[3].attn.q.weight" in paths
    assert ".head.bias" in paths
    assert [p for p, _ in nn.named_parameters(model)][:3] == ["embed.weight", "embed.bias", "blocks[0].attn.q.weight"]


def test_every_leaf_is_an_array(key):
    model = Tower(key=key)
    leaves = jax.tree.leaves(model)
    assert leaves and all(isinstance(x, jax.Array) for x in leaves)
    assert len(leaves) == len(nn.state_dict(model))


class HoldsInt(nn.Module):
    weight: jax.Array
    width: int

    def __init__(self):
        self.weight = nn.param(jnp.zeros(2), ("embed",))
        self.width = 3


def test_non_array_in_dynamic_field_is_a_construction_error():
    with pytest.raises(TypeError) as e:
        HoldsInt()
    msg = str(e.value)
    assert "HoldsInt.width" in msg and "int 3" in msg and "width: int = nn.static()" in msg


class BareArray(nn.Module):
    weight: jax.Array

    def __init__(self):
        self.weight = jnp.zeros(2)


class WrongAxes(nn.Module):
    weight: jax.Array

    def __init__(self):
        self.weight = nn.param(jnp.zeros((2, 3)), ("embed",))


class UnhashableStatic(nn.Module):
    sizes: dict = nn.static()

    def __init__(self):
        self.sizes = {"a": 1}


def test_other_construction_errors_name_class_field_and_fix():
    with pytest.raises(TypeError, match=r"(?s)BareArray.weight was assigned a bare array.*nn.param"):
        BareArray()
    with pytest.raises(ValueError, match=r"WrongAxes.weight has shape \(2, 3\).*1 logical axes"):
        WrongAxes()
    with pytest.raises(TypeError, match=r"UnhashableStatic.sizes is static, so it must be hashable"):
        UnhashableStatic()
    with pytest.raises(TypeError, match=r"tuple of names.*trailing comma"):
        nn.param(jnp.zeros(2), "embed")


def test_modules_are_frozen(key):
    lin = nn.Linear(2, 3, key=key)
    with pytest.raises(AttributeError, match=r"immutable.*at\('weight'\).set"):
        lin.weight = jnp.zeros((2, 3))
    assert dataclasses.is_dataclass(lin)


def test_static_fields_are_in_the_treedef_not_the_leaves(key):
    a, b = nn.Linear(2, 3, key=key), nn.Linear(2, 3, key=jax.random.key(5))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert jax.tree.structure(a) != jax.tree.structure(nn.Linear(2, 4, key=key))


def test_repr_is_short(key):
    text = repr(Tower(key=key))
    assert "f32[16,16]" in text and "Array(" not in text and len(text) < 3000


def test_subkey_is_deterministic_and_distinct(key):
    data = lambda k: np.asarray(jax.random.key_data(k))
    np.testing.assert_array_equal(data(nn.subkey(key, "attn.q")), data(nn.subkey(key, "attn.q")))
    assert not np.array_equal(data(nn.subkey(key, "attn.q")), data(nn.subkey(key, "attn.k")))
    # same name, different parent: different key
    assert not np.array_equal(data(nn.subkey(key, "q")), data(nn.subkey(jax.random.key(1), "q")))
    # submodules get different weights
    blk = Block(8, key=key)
    assert not np.allclose(blk.attn.q.weight, blk.attn.o.weight)
    with pytest.raises(ValueError, match="non-empty path"):
        nn.subkey(key, "")


def test_shape_error_names_the_module_path(key):
    model = Tower(key=key)
    bad = model.at("blocks[2].fc").set(nn.Linear(8, 16, key=key))  # wrong in_features inside
    with pytest.raises(nn.ShapeError) as e:
        bad(jnp.ones((4, 8)))
    assert "Linear at 'blocks[2].fc'" in str(e.value)
    assert "last dimension 8 (in_features), got shape (4, 16)" in str(e.value)


class Broken(nn.Module):
    inner: nn.Linear

    def __init__(self, *, key):
        self.inner = nn.Linear(2, 2, key=key)

    def __call__(self, x):
        return self.inner(x) @ jnp.ones((3, 3))  # a shape bug inside the model


def test_errors_from_jax_get_a_note_naming_the_module(key):
    with pytest.raises(TypeError) as e:
        Broken(key=key)(jnp.ones((1, 2)))
    assert any("Broken (the root module)" in n for n in getattr(e.value, "__notes__", []))
