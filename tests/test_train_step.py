"""The train step: same losses on every mesh, accumulation, masks, EMA, NaN, precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import test_train_support as S
from baobab import nn, train
from baobab.errors import ConfigError

RULES = nn.DEFAULT_RULES
MESHES = {
    "data=8": train.MeshConfig(data=8),
    "fsdp=8": train.MeshConfig(data=1, fsdp=8),
    "data=2,fsdp=2,tensor=2": train.MeshConfig(data=2, fsdp=2, tensor=2),
}
UP = "blocks.layer.up.weight"  # (layers=2, embed=16, mlp=32)
# Local shard shape of UP on each mesh: embed splits over fsdp, mlp over tensor.
UP_SHARD = {"1 device": (2, 16, 32), "data=8": (2, 16, 32), "fsdp=8": (2, 2, 32),
            "data=2,fsdp=2,tensor=2": (2, 8, 16)}


def mesh_for(name: str):
    if name == "1 device":
        return train.make_mesh(devices=jax.devices()[:1])
    return train.make_mesh(MESHES[name])


def run_steps(model, opt, mesh, batches, *, loss=S.loss_fn, ema=False, **step_kw):
    state = train.create_state(model, opt, mesh=mesh, rules=RULES, ema=ema)
    step = train.jit_step(train.make_train_step(loss, opt, **step_kw), state, mesh=mesh, rules=RULES)
    metrics = []
    for b in batches:
        state, m = step(state, train.put_batch(b, mesh=mesh, rules=RULES))
        metrics.append(m)
    return jax.device_get(metrics), state, step


def opt_leaves_for(state, path: str):
    """Optimizer-state leaves that mirror the parameter at ``path`` (Adam's mu and nu)."""
    return [x for p, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
            if jax.tree_util.keystr(p).endswith("." + path)]


@pytest.fixture(scope="module")
def batches():
    it = S.grain_batches(32)
    return [next(it) for _ in range(4)]


@pytest.fixture(scope="module")
def reference(batches):
    metrics, state, _ = run_steps(S.make_net(), S.optimizer(), mesh_for("1 device"), batches)
    return [float(m["loss"]) for m in metrics], jax.device_get(nn.state_dict(state.model))


@pytest.mark.parametrize("name", list(MESHES))
def test_same_losses_and_placement_on_every_mesh(name, batches, reference):
    ref_losses, ref_params = reference
    mesh = mesh_for(name)
    metrics, state, _ = run_steps(S.make_net(), S.optimizer(), mesh, batches)
    np.testing.assert_allclose([float(m["loss"]) for m in metrics], ref_losses, rtol=2e-5)
    for path, value in nn.state_dict(state.model).items():
        np.testing.assert_allclose(np.asarray(value), ref_params[path], atol=2e-5, err_msg=path)

    # Where things live: parameters by their logical axes, Adam's mu/nu with them.
    up = state.model.blocks.layer.up.weight
    assert up.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert up.sharding.shard_shape(up.shape) == UP_SHARD[name]
    moments = opt_leaves_for(state, UP)
    assert len(moments) == 2  # mu and nu
    for m in moments:
        assert m.sharding.spec == up.sharding.spec
        assert m.sharding.shard_shape(m.shape) == UP_SHARD[name]
    bias = state.model.blocks.layer.up.bias  # (layers, mlp): mlp over tensor
    assert bias.sharding.spec == jax.sharding.PartitionSpec(None, "tensor")
    assert state.step.sharding.is_fully_replicated and state.rng.sharding.is_fully_replicated


def test_gradient_accumulation_equals_the_big_batch(batches):
    # BatchNorm in eval mode: with batch statistics, microbatches would normalise differently.
    net = nn.eval_mode(S.make_net())
    opt = optax.sgd(0.1)
    big, big_state, _ = run_steps(net, opt, mesh_for("1 device"), batches)
    for name, k in (("1 device", 4), ("fsdp=8", 2)):
        acc, acc_state, _ = run_steps(net, opt, mesh_for(name), batches, microbatches=k)
        np.testing.assert_allclose([float(m["loss"]) for m in acc], [float(m["loss"]) for m in big],
                                   rtol=2e-5)
        np.testing.assert_allclose([float(m["accuracy"]) for m in acc],
                                   [float(m["accuracy"]) for m in big], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(acc_state.model.head.weight),
                                   np.asarray(big_state.model.head.weight), atol=1e-6)


def test_microbatches_must_divide_the_batch(batches):
    with pytest.raises(ValueError, match="microbatches=5"):
        run_steps(S.make_net(), optax.sgd(0.1), mesh_for("1 device"), batches[:1], microbatches=5)


def test_frozen_params_and_layer_state_get_no_optimizer_state(batches):
    net = nn.freeze(S.make_net(), "stem")
    metrics, state, _ = run_steps(net, optax.adam(1e-2), mesh_for("1 device"), batches[:2])
    assert opt_leaves_for(state, "stem.weight") == []
    assert opt_leaves_for(state, "bn.running_mean") == []
    assert len(opt_leaves_for(state, "head.weight")) == 2
    trainable = nn.count_parameters(net, trainable_only=True)
    assert sum(x.size for x in jax.tree.leaves(state.opt_state)) == 2 * trainable + 1  # + count
    np.testing.assert_array_equal(np.asarray(state.model.stem.weight), np.asarray(net.stem.weight))
    assert not np.allclose(np.asarray(state.model.bn.running_mean), 0.0)  # state still flows
    assert not np.allclose(np.asarray(state.model.head.weight), np.asarray(net.head.weight))


def test_weight_decay_mask_skips_biases_and_norms():
    net = S.make_net()
    mask = nn.state_dict(train.weight_decay_mask(net))
    assert mask == {
        "stem.weight": True, "bn.weight": False, "bn.bias": False,
        "bn.running_mean": False, "bn.running_var": False,
        "blocks.layer.up.weight": True, "blocks.layer.up.bias": False,  # bias is (layers, mlp)
        "blocks.layer.down.weight": True, "blocks.layer.down.bias": False,
        "head.weight": True, "head.bias": False,
    }


def test_adamw_decays_only_the_masked_params(batches):
    def zero_loss(model, batch, key):  # zero gradients: the update is decay alone
        return 0.0 * jnp.sum(model(batch["x"]))

    net = nn.eval_mode(S.make_net())
    opt = train.adamw(0.1, weight_decay=0.5)
    _, state, _ = run_steps(net, opt, mesh_for("1 device"), batches[:1], loss=zero_loss)
    before, after = nn.state_dict(net), nn.state_dict(state.model)
    for path, decays in nn.state_dict(train.weight_decay_mask(net)).items():
        expected = np.asarray(before[path]) * (1 - 0.1 * 0.5 if decays else 1.0)
        np.testing.assert_allclose(np.asarray(after[path]), expected, rtol=1e-6, err_msg=path)


def test_ema_follows_the_weights(batches):
    mesh = mesh_for("1 device")
    opt = optax.sgd(0.1)
    state = train.create_state(S.make_net(), opt, mesh=mesh, rules=RULES, ema=True)
    step = train.jit_step(train.make_train_step(S.loss_fn, opt, ema_decay=0.5), state, mesh=mesh,
                          rules=RULES)
    expected = np.asarray(state.model.head.weight)
    for b in batches[:3]:
        state, _ = step(state, train.put_batch(b, mesh=mesh, rules=RULES))
        expected = 0.5 * expected + 0.5 * np.asarray(state.model.head.weight)
    np.testing.assert_allclose(np.asarray(state.ema.head.weight), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="ema_decay"):
        train.make_train_step(S.loss_fn, opt, ema_decay=1.5)


def poisoned_loss(model, batch, key):
    """The loss, plus NaN * sum(head.weight) when batch["poison"] is set: NaN reaches only that gradient."""
    loss, metrics = S.loss_fn(model, batch, key)
    bad = jnp.where(batch["poison"][0] > 0, jnp.nan, 0.0)
    return loss + bad * jnp.sum(model.head.weight), metrics


def test_a_nonfinite_step_changes_nothing_and_names_the_leaf(batches):
    mesh = mesh_for("1 device")
    poisoned = [dict(b, poison=np.full(32, float(i == 1), np.float32)) for i, b in enumerate(batches[:3])]
    opt = optax.adam(1e-2)
    state = train.create_state(S.make_net(), opt, mesh=mesh, rules=RULES)
    step = train.jit_step(train.make_train_step(poisoned_loss, opt), state, mesh=mesh, rules=RULES)
    state, m0 = step(state, train.put_batch(poisoned[0], mesh=mesh, rules=RULES))
    before = jax.device_get((state.model, state.opt_state))
    state, m1 = step(state, train.put_batch(poisoned[1], mesh=mesh, rules=RULES))
    assert int(m0["nonfinite"]) == 0 and int(m0["first_nonfinite_grad"]) == -1
    assert int(m1["nonfinite"]) == 1 and int(state.step) == 2
    assert train.leaf_paths(state.model)[int(m1["first_nonfinite_grad"])] == "head.weight"
    after = jax.device_get((state.model, state.opt_state))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
    state, m2 = step(state, train.put_batch(poisoned[2], mesh=mesh, rules=RULES))
    assert int(m2["nonfinite"]) == 0


def test_mixed_precision_keeps_fp32_master_weights(batches):
    mesh = mesh_for("1 device")
    opt = optax.sgd(0.1)
    # output=bfloat16 too: nn.Stacked's scan carry must keep one dtype (an output=float32
    # policy on the scanned layer breaks the carry; reported to the nn owners).
    policy = "params=float32,compute=bfloat16,output=bfloat16"
    state = train.create_state(S.make_net(), opt, mesh=mesh, rules=RULES, precision=policy)
    step = train.jit_step(train.make_train_step(S.loss_fn, opt), state, mesh=mesh, rules=RULES)
    b = train.put_batch(batches[0], mesh=mesh, rules=RULES)
    assert "bf16" in step.lower(state, b).compile().as_text()  # the matmuls run in bf16
    fp32_metrics, _, _ = run_steps(S.make_net(), opt, mesh, batches[:2])
    losses = []
    for batch in batches[:2]:
        state, m = step(state, train.put_batch(batch, mesh=mesh, rules=RULES))
        losses.append(float(m["loss"]))
    assert {np.dtype(x.dtype) for x in jax.tree.leaves(state.model)} == {np.dtype("float32")}
    np.testing.assert_allclose(losses, [float(m["loss"]) for m in fp32_metrics], rtol=3e-2)


def test_the_step_compiles_once(batches):
    mesh = mesh_for("fsdp=8")
    _, state, step = run_steps(S.make_net(), S.optimizer(), mesh, batches[:1])
    with S.count_compiles() as compiles:
        for b in batches[1:]:
            state, _ = step(state, train.put_batch(b, mesh=mesh, rules=RULES))
        jax.block_until_ready(state)
    assert compiles.n == 0


def test_metrics_include_learning_rate_and_grad_norm(batches):
    metrics, _, _ = run_steps(S.make_net(), S.optimizer(), mesh_for("1 device"), batches[:1])
    m = metrics[0]
    assert {"loss", "accuracy", "grad_norm", "learning_rate", "nonfinite",
            "first_nonfinite_grad"} <= set(m)
    assert float(m["learning_rate"]) == pytest.approx(3e-3)
    assert float(m["grad_norm"]) > 0


def test_loss_fn_must_return_a_scalar(batches):
    def per_example(model, batch, key):
        return optax.softmax_cross_entropy_with_integer_labels(model(batch["x"]), batch["y"])

    with pytest.raises(TypeError, match="jnp.mean"):
        run_steps(S.make_net(), optax.sgd(0.1), mesh_for("1 device"), batches[:1], loss=per_example)


def test_mesh_config_and_batch_errors_are_explained():
    assert train.MeshConfig(data=-1, tensor=2).resolve(8) == (4, 1, 2)
    with pytest.raises(ConfigError, match="mesh.data and mesh.fsdp are both -1; at most one axis"):
        train.MeshConfig(data=-1, fsdp=-1)
    with pytest.raises(ConfigError, match=r"mesh.data = 2, mesh.fsdp = 8, mesh.tensor = 1 needs 16 devices, "
                                          r"but there are 8: .* -1 for one axis"):
        train.MeshConfig(data=2, fsdp=8).resolve(8)
    with pytest.raises(ConfigError, match=r"mesh.tensor = 3: the 8 devices do not divide"):
        train.make_mesh(train.MeshConfig(tensor=3))
    with pytest.raises(ConfigError, match="mesh.fsdp: 0 is not a size"):
        train.MeshConfig(fsdp=0)
    mesh = mesh_for("data=8")
    with pytest.raises(ValueError, match=r"batch\['x'\]: a global batch of 12 rows does not divide .* multiple of 8"):
        train.put_batch({"x": np.zeros((12, 3))}, mesh=mesh, rules=RULES)
    with pytest.raises(TypeError, match="dict"):
        train.put_batch([np.zeros((8, 3))], mesh=mesh, rules=RULES)


def test_strategy_rules_are_tables_over_one_code_path(batches):
    """DP / FSDP / TP rule tables place the same model differently and train it the same."""
    mesh = mesh_for("data=2,fsdp=2,tensor=2")
    ref = None
    placements = {}
    for name in ("data_parallel", "fsdp", "tensor_parallel"):
        rules = train.STRATEGY_RULES[name]
        state = train.create_state(S.make_net(), optax.sgd(0.1), mesh=mesh, rules=rules)
        step = train.jit_step(train.make_train_step(S.loss_fn, optax.sgd(0.1)), state, mesh=mesh,
                              rules=rules)
        state, m = step(state, train.put_batch(batches[0], mesh=mesh, rules=rules))
        placements[name] = state.model.blocks.layer.up.weight.sharding.spec
        ref = float(m["loss"]) if ref is None else ref
        assert float(m["loss"]) == pytest.approx(ref, rel=1e-6)
    P = jax.sharding.PartitionSpec
    assert placements == {"data_parallel": P(None, None, None), "fsdp": P(None, "fsdp", None),
                          "tensor_parallel": P(None, None, "tensor")}
