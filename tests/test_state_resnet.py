"""Explicit state on a small ResNet: Conv + BatchNorm + skip, trained under jit with optax.

What the design promises, checked end to end:

* ``nn.stateful_call`` returns the new running statistics from a jitted step;
* ``optax.masked(..., nn.trainable(model))`` updates parameters and never state;
* ``nn.eval_mode`` switches every BatchNorm to its running statistics, after which
  outputs are deterministic and per-example (no dependence on the rest of the batch).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from baobab import nn


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), as ResNet's basic block."""

    conv1: nn.Conv
    bn1: nn.BatchNorm
    conv2: nn.Conv
    bn2: nn.BatchNorm
    proj: nn.Conv | None
    proj_bn: nn.BatchNorm | None

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, key):
        self.conv1 = nn.Conv(c_in, c_out, (3, 3), stride=stride, padding=1, use_bias=False,
                             key=nn.subkey(key, "conv1"))
        self.bn1 = nn.BatchNorm(c_out)
        self.conv2 = nn.Conv(c_out, c_out, (3, 3), padding=1, use_bias=False, key=nn.subkey(key, "conv2"))
        self.bn2 = nn.BatchNorm(c_out)
        if stride != 1 or c_in != c_out:  # projection shortcut
            self.proj = nn.Conv(c_in, c_out, (1, 1), stride=stride, use_bias=False, key=nn.subkey(key, "proj"))
            self.proj_bn = nn.BatchNorm(c_out)
        else:
            self.proj = self.proj_bn = None

    def __call__(self, x):  # (N, H, W, C_in) -> (N, H/stride, W/stride, C_out)
        h = jax.nn.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        skip = x if self.proj is None else self.proj_bn(self.proj(x))
        return jax.nn.relu(h + skip)


class TinyResNet(nn.Module):
    stem: nn.Conv
    stem_bn: nn.BatchNorm
    blocks: tuple
    pool: nn.GlobalAvgPool
    head: nn.Linear

    def __init__(self, classes: int = 4, *, key):
        self.stem = nn.Conv(3, 8, (3, 3), padding=1, use_bias=False, key=nn.subkey(key, "stem"))
        self.stem_bn = nn.BatchNorm(8)
        self.blocks = (BasicBlock(8, 8, key=nn.subkey(key, "blocks[0]")),
                       BasicBlock(8, 16, stride=2, key=nn.subkey(key, "blocks[1]")))
        self.pool = nn.GlobalAvgPool()
        self.head = nn.Linear(16, classes, key=nn.subkey(key, "head"), axes=("embed", "classes"))

    def __call__(self, x):  # (N, 8, 8, 3) -> (N, classes)
        h = jax.nn.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            h = block(h)
        return self.head(self.pool(h))


def _data(n=32):
    """Class c brightens quadrant c of channel 0 (mean offset 2: BatchNorm has work to do)."""
    kx, ky = jax.random.split(jax.random.key(42))
    y = jax.random.randint(ky, (n,), 0, 4)
    x = jax.random.normal(kx, (n, 8, 8, 3)) + 2.0
    rows, cols = (y // 2) * 4, (y % 2) * 4
    quadrant = ((jnp.arange(8)[None, :, None] >= rows[:, None, None]) & (jnp.arange(8)[None, :, None] < rows[:, None, None] + 4)
                & (jnp.arange(8)[None, None, :] >= cols[:, None, None]) & (jnp.arange(8)[None, None, :] < cols[:, None, None] + 4))
    x = x.at[..., 0].add(1.5 * quadrant)
    return x, y


def _by_kind(model, kind):
    return {p: np.asarray(x) for p, x, meta in nn.iter_arrays(model) if meta.kind == kind}


def _loss(model, x, y):
    logits, model = nn.stateful_call(model, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), model


def test_resnet_trains_with_explicit_state_then_evaluates_deterministically():
    model = nn.train_mode(TinyResNet(key=jax.random.key(0)))
    opt = optax.masked(optax.adamw(3e-3, weight_decay=1e-2), nn.trainable(model))
    opt_state = opt.init(model)
    traces = []

    @jax.jit
    def step(model, opt_state, x, y):
        traces.append(1)
        (loss, with_stats), grads = jax.value_and_grad(_loss, has_aux=True)(model, x, y)
        updates, opt_state = opt.update(grads, opt_state, model)
        return optax.apply_updates(with_stats, updates), with_stats, updates, opt_state, loss

    x, y = _data()
    params0, state0 = _by_kind(model, "param"), _by_kind(model, "state")
    assert len(state0) == 12  # running_mean and running_var of 6 BatchNorms
    losses = []
    for _ in range(25):
        model, with_stats, updates, opt_state, loss = step(model, opt_state, x, y)
        losses.append(float(loss))
    assert len(traces) == 1, "the step recompiled"
    assert losses[-1] < 0.5 * losses[0], losses

    params, state = _by_kind(model, "param"), _by_kind(model, "state")
    for path in params0:  # every parameter was trained
        assert not np.allclose(params[path], params0[path]), path
    for path in state0:  # every running statistic moved, through nn.stateful_call only
        assert not np.allclose(state[path], state0[path]), path
    # the optimizer left state alone: the applied model's state is exactly what
    # stateful_call returned, and the state's update is exactly zero
    np.testing.assert_equal(state, _by_kind(with_stats, "state"))
    for path, u in _by_kind(updates, "state").items():
        assert not np.any(u), path

    # evaluation: running statistics, no state recorded, deterministic and per-example
    with pytest.raises(RuntimeError, match="stateful_call"):
        model(x)  # training mode outside stateful_call would drop the update
    evaluated = nn.eval_mode(model)
    out, unchanged = nn.stateful_call(evaluated, x)
    assert unchanged is evaluated
    eval_fn = jax.jit(lambda m, x: m(x))
    np.testing.assert_array_equal(eval_fn(evaluated, x), eval_fn(evaluated, x))
    np.testing.assert_allclose(eval_fn(evaluated, x[:5]), out[:5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(eval_fn(evaluated, x), out, rtol=1e-5, atol=1e-5)
    # the running statistics are a usable estimate: eval loss is far below the first loss
    eval_loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    assert float(eval_loss) < 0.7 * losses[0], (float(eval_loss), losses[0])
    # and back to training mode for more steps
    assert all(bn.training for bn in _batchnorms(nn.train_mode(evaluated)))
    assert not any(bn.training for bn in _batchnorms(evaluated))


def _batchnorms(model):
    return [m for _, m in nn.iter_modules(model) if isinstance(m, nn.BatchNorm)]
