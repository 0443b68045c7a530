"""Metadata, masks, freezing, surgery, counting and flat state dicts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from baobab import nn
from models_for_tests import ResNetBN, Tower


def test_logical_axes_match_the_model_per_instance(key):
    model = Tower(key=key)
    axes = nn.logical_axes(model)
    assert jax.tree.structure(axes) == jax.tree.structure(model)
    # the same Linear class, different names per instance
    assert axes.blocks[0].attn.q.weight == P("embed", "heads")
    assert axes.blocks[0].attn.o.weight == P("heads", "embed")
    assert axes.blocks[0].fc.bias == P("mlp")


def test_trainable_and_state_masks_plug_into_optax(key):
    model = ResNetBN(8, 16, 4, key=key)
    train_mask, state_mask = nn.trainable(model), nn.is_state(model)
    assert train_mask.blocks[0].bn.weight and not train_mask.blocks[0].bn.running_mean
    assert state_mask.blocks[0].bn.running_var and not state_mask.stem.weight
    opt = optax.masked(optax.adamw(1e-2, weight_decay=0.5), train_mask)
    opt_state = opt.init(model)
    # masked-out leaves carry no optimizer state
    mu = opt_state.inner_state[0].mu
    assert isinstance(mu.blocks[0].bn.running_mean, optax.MaskedNode)
    assert mu.blocks[0].bn.weight.shape == (16,)
    # multi_transform with nn.labels also zeroes the updates of state and frozen leaves
    zero = optax.set_to_zero()
    opt = optax.multi_transform({"trainable": optax.adamw(1e-2, weight_decay=0.5), "frozen": zero,
                                 "state": zero}, nn.labels)
    grads = jax.tree.map(jnp.ones_like, model)
    updates, _ = opt.update(grads, opt.init(model), model)
    assert float(jnp.abs(updates.blocks[0].bn.running_var).max()) == 0.0
    assert float(jnp.abs(updates.blocks[0].bn.weight).max()) > 0.0


def test_freeze_by_path_pattern(key):
    model = Tower(key=key)
    frozen = nn.freeze(model, "blocks[0].*", "embed")
    mask = nn.trainable(frozen)
    assert not mask.blocks[0].attn.q.weight and not mask.embed.bias
    assert mask.blocks[1].attn.q.weight and mask.head.weight
    assert nn.count_parameters(frozen, trainable_only=True) < nn.count_parameters(frozen)
    zero = optax.set_to_zero()
    opt = optax.multi_transform({"trainable": optax.adam(1e-2), "frozen": zero, "state": zero},
                                nn.labels)
    updates, _ = opt.update(jax.tree.map(jnp.ones_like, frozen), opt.init(frozen), frozen)
    assert float(jnp.abs(updates.blocks[0].fc.weight).max()) == 0.0
    assert all(jax.tree.leaves(nn.trainable(nn.unfreeze(frozen))))
    with pytest.raises(ValueError, match=r"matched no array.*Paths look like"):
        nn.freeze(model, "encoder.*")


def test_path_matches():
    assert nn.path_matches("encoder.*", "encoder.layers[0].weight")
    assert nn.path_matches("encoder", "encoder.layers[0].weight")
    assert nn.path_matches("blocks[1].*", "blocks[1].fc.bias")
    assert not nn.path_matches("blocks[1].*", "blocks[2].fc.bias")
    assert not nn.path_matches("enc", "encoder.w")


def test_surgery_get_and_set(key):
    model = Tower(key=key)
    new_fc = nn.Linear(16, 16, key=jax.random.key(9), axes=("embed", "mlp"))
    edited = model.at("blocks[2].fc").set(new_fc)
    assert edited.blocks[2].fc is new_fc and model.blocks[2].fc is not new_fc  # original untouched
    assert edited.at("blocks.2.fc.weight").get() is new_fc.weight
    zeros = edited.at("head.bias").set(jnp.zeros(8))
    assert float(jnp.abs(zeros.head.bias).sum()) == 0.0
    with pytest.raises(ValueError, match=r"'head.bias' has shape \(8,\), the replacement has \(9,\)"):
        model.at("head.bias").set(jnp.zeros(9))
    with pytest.raises(KeyError, match=r"No 'mlp' under 'blocks\[2\]'.*Valid next steps: \['attn', 'fc'\]"):
        model.at("blocks[2].mlp").get()
    with pytest.raises(KeyError, match=r"No 7 under 'blocks'"):
        model.at("blocks[7]").get()


def test_named_parameters_and_count(key):
    model = ResNetBN(8, 16, 4, key=key)
    named = dict(nn.named_parameters(model))
    assert "blocks[1].bn.weight" in named and "blocks[1].bn.running_mean" not in named
    assert "stacked.layer.fc1.weight" in named and named["stacked.layer.fc1.weight"].shape == (2, 16, 16)
    expected = sum(int(np.prod(v.shape)) for v in named.values())
    assert nn.count_parameters(model) == expected
    # hand count: stem 8*16+16, 4 residual blocks of 2*(16*16+16) + 2*16 (bn), head 16*4+4
    assert expected == (8 * 16 + 16) + 4 * (2 * (16 * 16 + 16) + 2 * 16) + (16 * 4 + 4)


def test_state_dict_round_trip(key):
    a, b = Tower(key=key), Tower(key=jax.random.key(42))
    loaded = nn.load_state_dict(b, nn.state_dict(a))
    jax.tree.map(np.testing.assert_array_equal, loaded, a)
    assert isinstance(loaded, Tower) and jax.tree.structure(loaded) == jax.tree.structure(b)


def test_load_state_dict_reports_every_problem_at_once(key):
    model = Tower(key=key)
    d = {k: np.asarray(v) for k, v in nn.state_dict(model).items()}
    del d["head.bias"]
    d["head.biass"] = np.zeros(8, np.float32)
    d["embed.weight"] = np.zeros((9, 16), np.float32)
    d["embed.bias"] = np.zeros(16, np.float16)
    with pytest.raises(ValueError) as e:
        nn.load_state_dict(model, d)
    msg = str(e.value)
    assert "missing keys (1): ['head.bias']" in msg
    assert "head.biass (did you mean head.bias?)" in msg
    assert "embed.weight: shape mismatch, model has (8, 16), got (9, 16)" in msg
    assert "embed.bias: dtype mismatch, model has float32, got float16 (pass cast=True" in msg
    # non-strict: missing/unexpected tolerated; cast converts dtypes; shapes still checked
    d["embed.weight"] = np.zeros((8, 16), np.float32)
    out = nn.load_state_dict(model, d, strict=False, cast=True)
    assert out.embed.bias.dtype == jnp.float32 and float(jnp.abs(out.embed.weight).sum()) == 0.0
    np.testing.assert_array_equal(out.head.bias, model.head.bias)
