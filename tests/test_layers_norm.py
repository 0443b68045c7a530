"""Norms, Dropout and MLPs: bad inputs, dropout semantics, cross-device BatchNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from baobab import nn

AUTO = jax.sharding.AxisType.Auto


class _Parent(nn.Module):
    """A model with a norm at path ``norm``, so errors can name the path."""

    norm: nn.Module

    def __init__(self, norm):
        self.norm = norm

    def __call__(self, x):
        return self.norm(x)


# ----------------------------------------------------------------------------------------
# Bad inputs: the error names the layer (and its path), the expected and the received value
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer,x,expected", [
    (nn.LayerNorm(8), jnp.ones((4, 7)), "LayerNorm (the root module): expected input with last dimension 8 (normalized_shape), got shape (4, 7)."),
    (nn.LayerNorm((6, 8)), jnp.ones((4, 5, 8)), "LayerNorm (the root module): expected input whose last 2 dimensions are (6, 8) (normalized_shape), got shape (4, 5, 8)."),
    (nn.RMSNorm(8), jnp.ones((4, 16)), "RMSNorm (the root module): expected input with last dimension 8 (normalized_shape), got shape (4, 16)."),
    (nn.GroupNorm(2, 8), jnp.ones((2, 4, 6)), "GroupNorm (the root module): expected input with last dimension 8 (num_channels (channels last)), got shape (2, 4, 6)."),
    (nn.GroupNorm(2, 8), jnp.ones((8,)), "GroupNorm (the root module): expected input (N, ..., C) with a leading batch axis"),
    (nn.BatchNorm(8, training=False), jnp.ones((4, 6)), "BatchNorm (the root module): expected input with last dimension 8 (num_features (channels last)), got shape (4, 6)."),
    (nn.MLP(8, 16, 4, key=jax.random.key(0)), jnp.ones((2, 7)), "Linear at 'fc1': expected input with last dimension 8 (in_features), got shape (2, 7)."),
    (nn.GatedMLP(8, 16, key=jax.random.key(0)), jnp.ones((2, 7)), "Linear at 'gate': expected input with last dimension 8 (in_features), got shape (2, 7)."),
], ids=["LayerNorm", "LayerNorm-2d", "RMSNorm", "GroupNorm", "GroupNorm-ndim", "BatchNorm", "MLP", "GatedMLP"])
def test_wrong_feature_count_names_layer_expected_and_received(layer, x, expected):
    with pytest.raises(nn.ShapeError) as info:
        layer(x)
    assert str(info.value).startswith(expected), str(info.value)


def test_error_inside_a_model_names_the_path():
    with pytest.raises(nn.ShapeError, match=r"LayerNorm at 'norm': expected input with last dimension 8"):
        _Parent(nn.LayerNorm(8))(jnp.ones((2, 5)))
    with pytest.raises(nn.ShapeError, match=r"GroupNorm at 'norm'.*\(2, 3, 4\)"):
        jax.jit(lambda m, x: m(x))(_Parent(nn.GroupNorm(2, 8)), jnp.ones((2, 3, 4)))


def test_groupnorm_groups_must_divide_channels_at_construction():
    with pytest.raises(ValueError, match=r"num_channels=8 is not divisible by num_groups=3"):
        nn.GroupNorm(3, 8)
    with pytest.raises(ValueError, match=r"num_groups must be a positive int, got 0"):
        nn.GroupNorm(0, 8)


@pytest.mark.parametrize("rate", [1.0, 1, -0.1, 1.5, True, "0.1", None])
def test_dropout_rate_out_of_range_is_rejected(rate):
    with pytest.raises(ValueError, match=r"0 <= rate < 1, got " + repr(rate).replace(".", r"\.")):
        nn.Dropout(rate)


def test_dropout_rate_one_says_what_it_would_do():
    with pytest.raises(ValueError, match="drop every element"):
        nn.Dropout(1.0)


def test_other_bad_configurations():
    with pytest.raises(ValueError, match="normalized_shape must be non-empty with positive sizes"):
        nn.LayerNorm(0)
    with pytest.raises(TypeError, match="normalized_shape must be an int or a tuple of ints"):
        nn.RMSNorm("8")
    with pytest.raises(ValueError, match=r"eps must be a float >= 0, got -1"):
        nn.LayerNorm(8, eps=-1)
    with pytest.raises(TypeError, match="activation must be a callable"):
        nn.MLP(4, 8, 4, key=jax.random.key(0), activation="gelu")
    with pytest.raises(TypeError, match="LayerNorm .*expected a floating-point input, got dtype int32"):
        nn.LayerNorm(4)(jnp.ones((2, 4), jnp.int32))


# ----------------------------------------------------------------------------------------
# Dropout semantics
# ----------------------------------------------------------------------------------------


def test_dropout_is_identity_in_eval_mode_or_at_rate_zero():
    x = jax.random.normal(jax.random.key(0), (16, 8))
    assert nn.eval_mode(nn.Dropout(0.5))(x) is x
    assert nn.eval_mode(nn.Dropout(0.5))(x, key=jax.random.key(1)) is x  # the key is ignored
    assert nn.Dropout(0.5, training=False)(x, key=jax.random.key(1)) is x
    assert nn.Dropout(0.0)(x) is x  # nothing to drop: no key needed, even in training
    np.testing.assert_array_equal(nn.Dropout(0.0)(x, key=jax.random.key(1)), x)


def test_dropout_follows_the_training_flag_and_needs_a_key_in_training():
    drop = nn.Dropout(0.5)
    assert drop.training  # the default, as BatchNorm's and PyTorch's
    x = jnp.ones((4, 64))
    with pytest.raises(ValueError, match=r"(?s)Dropout \(the root module\) \(rate=0.5\) is in training mode.*"
                                         r"key=.*nn.eval_mode"):
        drop(x)
    with pytest.raises(ValueError, match="training mode"):
        jax.jit(lambda d, x: d(x))(drop, x)  # under jit too: the missing key is static
    assert nn.train_mode(nn.eval_mode(drop)).training
    assert float(jnp.mean(nn.train_mode(nn.eval_mode(drop))(x, key=jax.random.key(0)) == 0)) > 0.3


def test_dropout_drops_rate_fraction_and_rescales():
    rate = 0.3
    y = nn.Dropout(rate)(jnp.ones(200_000), key=jax.random.key(0))
    dropped = float(jnp.mean(y == 0))
    assert abs(dropped - rate) < 0.005, dropped  # rate is the DROP probability
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / (1 - rate)], rtol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 0.01  # inverted dropout keeps the expectation


def test_dropout_keys_dtype_and_gradient():
    drop = nn.Dropout(0.5)
    x = jnp.ones((4, 8), jnp.bfloat16)
    a, b = drop(x, key=jax.random.key(0)), drop(x, key=jax.random.key(0))
    c = drop(x, key=jax.random.key(1))
    assert a.dtype == jnp.bfloat16
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    g = jax.grad(lambda x: drop(x, key=jax.random.key(0)).sum())(jnp.ones((4, 8)))
    np.testing.assert_array_equal(g, np.asarray(a, np.float32))  # mask / (1 - rate)


def test_dropout_under_vmap_with_split_keys_gives_each_example_its_own_mask():
    drop = nn.Dropout(0.5)
    x = jnp.ones((4, 64))
    out = jax.jit(jax.vmap(lambda x, k: drop(x, key=k)))(x, jax.random.split(jax.random.key(0), 4))
    masks = {tuple(np.asarray(o != 0)) for o in out}
    assert len(masks) == 4


def test_mlp_dropout_follows_training_mode_and_the_key():
    x = jax.random.normal(jax.random.key(0), (4, 8))
    mlp = nn.MLP(8, 32, 8, key=jax.random.key(1), dropout=0.5)
    plain = nn.MLP(8, 32, 8, key=jax.random.key(1))
    np.testing.assert_array_equal(nn.eval_mode(mlp)(x, key=jax.random.key(2)), plain(x))
    np.testing.assert_array_equal(plain(x, key=jax.random.key(2)), plain(x))
    assert not np.allclose(mlp(x, key=jax.random.key(2)), plain(x))
    with pytest.raises(ValueError, match=r"Dropout at 'dropout' \(rate=0.5\) is in training mode"):
        mlp(x)
    # a stack of MLPs gets one key per layer from nn.Stacked
    stack = nn.Stacked(lambda k: nn.MLP(8, 16, 8, key=k, dropout=0.5), 2, key=jax.random.key(3))
    assert not np.allclose(stack(x, key=jax.random.key(4)), nn.eval_mode(stack)(x))
    with pytest.raises(ValueError, match="training mode"):
        stack(x)


def test_mlp_and_gated_mlp_structure():
    mlp = nn.MLP(4, 8, 2, key=jax.random.key(0))
    assert nn.logical_axes(mlp).fc1.weight == P("embed", "mlp")
    assert nn.logical_axes(mlp).fc2.weight == P("mlp", "embed")
    ffn = nn.GatedMLP(4, 8, key=jax.random.key(0))
    assert ffn.gate.bias is None and ffn.up.bias is None and ffn.down.bias is None
    assert nn.logical_axes(ffn).down.weight == P("mlp", "embed")
    # submodule keys come from names: gate and up differ
    assert not np.allclose(ffn.gate.weight, ffn.up.weight)
    assert sorted(nn.state_dict(ffn)) == ["down.weight", "gate.weight", "up.weight"]


# ----------------------------------------------------------------------------------------
# Cross-device BatchNorm
# ----------------------------------------------------------------------------------------


def _bn_and_data():
    bn = nn.BatchNorm(8, momentum=0.1)
    bn = bn.at("weight").set(jax.random.normal(jax.random.key(5), (8,)))
    bn = bn.at("bias").set(jax.random.normal(jax.random.key(6), (8,)))
    x = jax.random.normal(jax.random.key(7), (32, 3, 3, 8)) * 2 + 3  # (N, H, W, C)
    g = jax.random.normal(jax.random.key(8), (32, 3, 3, 8))
    return bn, x, g


def _assert_same(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["1x8", "2x2x2"])
def test_batchnorm_shard_map_with_axis_name_equals_one_global_batch(layout, mesh8):
    """Statistics averaged over the named axes equal those of the whole batch."""
    if layout == "1x8":
        mesh = jax.make_mesh((8,), ("batch",), axis_types=(AUTO,))
        names, batch_spec = "batch", P("batch")
    else:  # batch split over data x fsdp (4 shards), replicated over tensor
        mesh = mesh8
        names, batch_spec = ("data", "fsdp"), P(("data", "fsdp"))
    bn, x, g = _bn_and_data()
    local = nn.replace(bn, axis_name=names)

    def per_device(m, x):
        y, new = nn.stateful_call(m, x)
        return y, new.running_mean, new.running_var

    sharded = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), batch_spec),
                                    out_specs=(batch_spec, P(), P())))
    y, mean, var = sharded(local, x)
    y_ref, new_ref = nn.stateful_call(bn, x)
    _assert_same(y, y_ref)
    _assert_same(mean, new_ref.running_mean)
    _assert_same(var, new_ref.running_var)

    # gradients through the sharded computation equal the global ones
    def loss_sharded(m, x):
        return jnp.sum(sharded(m, x)[0] * g)

    def loss_global(m, x):
        return jnp.sum(nn.stateful_call(m, x)[0] * g)

    gm, gx = jax.jit(jax.grad(loss_sharded, argnums=(0, 1)))(local, x)
    gm_ref, gx_ref = jax.grad(loss_global, argnums=(0, 1))(bn, x)
    _assert_same(gx, gx_ref)
    _assert_same(gm.weight, gm_ref.weight)
    _assert_same(gm.bias, gm_ref.bias)


def test_batchnorm_plain_jit_on_batch_sharded_input_needs_no_axis_name(mesh8):
    bn, x, _ = _bn_and_data()
    sharded_x = jax.device_put(x, NamedSharding(mesh8, P(("data", "fsdp", "tensor"))))
    assert len(sharded_x.sharding.device_set) == 8
    step = jax.jit(lambda m, x: nn.stateful_call(m, x))
    y, new = step(bn, sharded_x)
    y_ref, new_ref = step(bn, x)
    _assert_same(y, y_ref)
    _assert_same(new.running_mean, new_ref.running_mean)
    _assert_same(new.running_var, new_ref.running_var)
