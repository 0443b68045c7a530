"""The module contract: pytree with keys, arrays-only leaves, immutability, errors."""

import dataclasses
import re
from pathlib import Path

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


# ----------------------------------------------------------------------------------------
# Subclasses without their own __init__ get dataclass construction over all fields
# ----------------------------------------------------------------------------------------


class WithX(nn.Module):
    x: int = nn.static(default=0)


class WithXY(WithX):
    y: int = nn.static(default=1)


class WithBias(nn.Module):
    bias: jax.Array | None = None
    scale: float = nn.static(default=1.0)


class WithBiasAndName(WithBias):
    name: str = nn.static(default="b")


def test_subclass_without_init_keeps_its_fields_like_a_dataclass():
    b = WithXY(x=1, y=5)
    assert (b.x, b.y) == (1, 5)
    assert (WithXY().x, WithXY().y) == (0, 1)
    assert WithXY(2, 3).y == 3  # positional, parents' fields first, as dataclasses order them
    assert jax.tree.structure(WithXY(y=5)) != jax.tree.structure(WithXY(y=6))  # y is static
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        WithXY(z=1)
    m = WithBiasAndName(bias=nn.param(jnp.zeros(3), ("embed",)), name="c")
    assert m.name == "c" and nn.array_meta(m, "bias").axes == ("embed",)
    assert jax.jit(lambda m: m)(m).name == "c"


class WrittenInit(nn.Module):
    w: jax.Array
    width: int = nn.static()

    def __init__(self, width: int):
        self.width = width
        self.w = nn.param(jnp.zeros(width), ("embed",))


class InheritsWrittenInit(WrittenInit):
    tag: str = nn.static(default="t")


def test_a_written_init_is_inherited_and_new_defaults_apply():
    m = InheritsWrittenInit(3)  # WrittenInit.__init__, not a generated one
    assert m.width == 3 and m.tag == "t" and m.w.shape == (3,)


# ----------------------------------------------------------------------------------------
# An attribute the class body does not declare is a construction error showing the fix
# ----------------------------------------------------------------------------------------


class NoAnnot(nn.Module):  # the PyTorch habit: fc1 is assigned but never declared
    fc2: nn.Linear

    def __init__(self, *, key):
        self.fc1 = nn.Linear(2, 3, key=nn.subkey(key, "fc1"))
        self.fc2 = nn.Linear(3, 1, key=nn.subkey(key, "fc2"))


class UndeclaredThings(nn.Module):
    w: jax.Array

    def __init__(self, what, value):
        self.w = nn.param(jnp.zeros(2), ("embed",))
        setattr(self, what, value)


def test_undeclared_submodule_is_an_error_naming_the_line_to_add(key):
    with pytest.raises(TypeError) as e:
        NoAnnot(key=key)
    msg = str(e.value)
    assert "NoAnnot.__init__ set self.fc1 = Linear(" in msg and "has no field 'fc1'" in msg
    assert "Add to the class body of NoAnnot:\n    fc1: Linear" in msg
    assert "pytree" in msg  # why it matters: it would vanish from jit, grad and nn.summary
    # the traceback points at the assignment in the user's __init__
    assert e.traceback[-2].name == "__init__" and "self.fc1" in str(e.traceback[-2].statement)


@pytest.mark.parametrize("value, line", [
    (nn.param(jnp.zeros(3), ("embed",)), "extra: jax.Array"),
    (jnp.zeros(3), "extra: jax.Array"),
    ((nn.Linear(2, 2, key=jax.random.key(0)),), "extra: tuple[Linear, ...]"),
    ({"a": nn.Linear(2, 2, key=jax.random.key(0))}, "extra: dict[str, Linear]"),
    (3, "extra: int = nn.static()"),
    ("gelu", "extra: str = nn.static()"),
    (jax.nn.relu, "extra: Callable = nn.static()"),
])
def test_every_undeclared_attribute_is_an_error_with_its_declaration(value, line):
    with pytest.raises(TypeError, match="UndeclaredThings has no field 'extra'") as e:
        UndeclaredThings("extra", value)
    assert f"Add to the class body of UndeclaredThings:\n    {line}" in str(e.value)


def test_undeclared_attribute_that_looks_like_a_typo_says_so():
    with pytest.raises(TypeError, match=r"no field 'ww' \(did you mean 'w'\?\)"):
        UndeclaredThings("ww", nn.param(jnp.zeros(2), ("embed",)))


# ----------------------------------------------------------------------------------------
# nn.replace checks values as construction does; metadata through nn.array_meta
# ----------------------------------------------------------------------------------------


def test_replace_rejects_what_construction_rejects(key):
    lin = nn.Linear(2, 3, key=key)
    with pytest.raises(TypeError, match=r"(?s)Linear.bias holds float 1.0, which is not an array.*nn.static"):
        nn.replace(lin, bias=1.0)
    with pytest.raises(TypeError, match=r"Linear.in_features is static, so it must be hashable"):
        nn.replace(lin, in_features={"a": 1})
    with pytest.raises(TypeError, match=r"Linear.in_features is declared nn.static\(\) but holds array"):
        nn.replace(lin, in_features=jnp.zeros(2))
    with pytest.raises(TypeError, match=r"nn.replace: Linear has no field 'wieght' \(did you mean 'weight'\?\)"):
        nn.replace(lin, wieght=lin.weight)
    with pytest.raises(ValueError, match=r"Linear.weight has 2 dims \(logical axes \('embed', 'mlp'\)\)"):
        nn.replace(lin, weight=jnp.zeros(6))
    with pytest.raises(ValueError, match=r"Linear.weight has shape \(6,\) \(1 dims\) but 2 logical axes"):
        nn.replace(lin, weight=nn.param(jnp.zeros(6), ("embed", "mlp")))
    no_bias = nn.replace(lin, bias=None)
    assert no_bias.bias is None and "bias" not in nn.state_dict(no_bias)
    with pytest.raises(TypeError, match=r"(?s)Linear.bias was assigned a bare array.*nn.param"):
        nn.replace(no_bias, bias=jnp.zeros(3))  # no metadata to keep: say what it is
    with pytest.raises(TypeError, match="expects an nn.Module"):
        nn.replace({"weight": 1}, weight=2)


def test_replace_keeps_or_sets_array_metadata(key):
    lin = nn.freeze(nn.Linear(2, 3, key=key), "weight")
    kept = nn.replace(lin, weight=jnp.ones((4, 5)))  # same rank, new shape: metadata kept
    assert nn.array_meta(kept, "weight") == nn.ArrayMeta("param", ("embed", "mlp"), frozen=True)
    new = nn.replace(lin, weight=nn.param(jnp.ones((2, 3)), ("mlp", None)))
    assert nn.array_meta(new, "weight") == nn.ArrayMeta("param", ("mlp", None))
    assert nn.replace(lin, in_features=[2]).in_features == (2,)  # a list static becomes a tuple
    assert nn.array_meta(lin, "weight").frozen  # the original is untouched


def test_array_meta_reads_one_field_and_names_the_array_fields(key):
    bn = nn.BatchNorm(4)
    assert nn.array_meta(bn, "running_mean") == nn.ArrayMeta("state", ("channels",))
    assert nn.array_meta(jax.jit(lambda m: m)(bn), "weight").kind == "param"  # survives transforms
    with pytest.raises(ValueError, match=r"BatchNorm.momentum holds float 0.1, not an array; the array "
                                         r"fields of BatchNorm are \['weight', 'bias', 'running_mean'"):
        nn.array_meta(bn, "momentum")
    with pytest.raises(ValueError, match=r"BatchNorm.nope is not a field"):
        nn.array_meta(bn, "nope")


def test_only_the_pytree_file_touches_the_stored_metadata():
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".", "build/")) or "egg-info" in rel or rel == "nn/_pytree.py":
            continue
        text = path.read_text(errors="replace")
        if "_baobab" + "_meta" in text or re.search(r"__dict__\[\s*_?META\s*\]|\bimport\b[^\n]*\b_?META\b", text):
            offenders.append(rel)
    assert offenders == [], f"read metadata with nn.array_meta / nn.iter_arrays instead: {offenders}"
