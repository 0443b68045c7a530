"""Explicit state: BatchNorm statistics come back from nn.stateful_call, never in place."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from baobab import nn
from models_for_tests import ResNetBN


def _data():
    x = jax.random.normal(jax.random.key(1), (32, 8)) * 3 + 1
    y = (x[:, 0] > 1).astype(jnp.int32) + 2 * (x[:, 1] > 1).astype(jnp.int32)
    return x, y


def _stats(model):
    return {p: np.asarray(v) for p, v in nn.state_dict(model).items() if "running" in p}


def test_resnet_with_batchnorm_trains_under_jit_and_returns_state(key):
    model = ResNetBN(8, 16, 4, key=key)
    x, y = _data()
    zero = optax.set_to_zero()
    opt = optax.multi_transform({"trainable": optax.adamw(1e-2, weight_decay=1e-2), "frozen": zero,
                                 "state": zero}, nn.labels)
    opt_state = opt.init(model)

    def loss_fn(m, x, y):
        logits, m = nn.stateful_call(m, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), m

    @jax.jit
    def step(m, opt_state, x, y):
        (loss, m_with_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(m, x, y)
        updates, opt_state = opt.update(grads, opt_state, m)
        return optax.apply_updates(m_with_stats, updates), opt_state, loss

    before = _stats(model)
    losses = []
    for _ in range(30):
        model, opt_state, loss = step(model, opt_state, x, y)
        losses.append(float(loss))
    after = _stats(model)
    # every BatchNorm, in the tuple and inside the scanned stack, got new statistics
    assert set(after) == {"blocks[0].bn.running_mean", "blocks[0].bn.running_var",
                          "blocks[1].bn.running_mean", "blocks[1].bn.running_var",
                          "stacked.layer.bn.running_mean", "stacked.layer.bn.running_var"}
    for path in after:
        assert not np.allclose(after[path], before[path]), path
    assert losses[-1] < 0.5 * losses[0]
    assert step._cache_size() == 1

    # running_mean of the first BN equals the hand-computed EMA of batch means
    m0 = ResNetBN(8, 16, 4, key=key)
    h = m0.stem(x)
    h = m0.blocks[0].fc1(h)
    _, m1 = nn.stateful_call(m0, x)
    np.testing.assert_allclose(m1.blocks[0].bn.running_mean, 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)

    # eval mode: running statistics, no state recorded, deterministic per example
    ev = nn.eval_mode(model)
    out_full = jax.jit(lambda m, x: m(x))(ev, x)
    np.testing.assert_allclose(ev(x[:5]), out_full[:5], rtol=1e-5, atol=1e-5)
    out, same = nn.stateful_call(ev, x)
    assert _stats(same) == pytest.approx(after) if False else all(
        np.array_equal(_stats(same)[p], after[p]) for p in after)


def test_training_call_without_collector_is_a_clear_error(key):
    model = ResNetBN(8, 16, 4, key=key)
    with pytest.raises(RuntimeError, match=r"BatchNorm at 'blocks\[0\].bn' updated its state.*nn.stateful_call"):
        model(jnp.ones((4, 8)))


def test_original_model_is_not_mutated(key):
    model = ResNetBN(8, 16, 4, key=key)
    before = _stats(model)
    _, new = nn.stateful_call(model, _data()[0])
    assert all(np.array_equal(_stats(model)[p], before[p]) for p in before)
    assert not np.array_equal(_stats(new)["blocks[1].bn.running_var"], before["blocks[1].bn.running_var"])


def test_train_and_eval_mode_flip_every_layer(key):
    model = nn.eval_mode(ResNetBN(8, 16, 4, key=key))
    assert not model.blocks[0].bn.training and not model.stacked.layer.bn.training
    assert nn.train_mode(model).stacked.layer.bn.training


def test_update_state_rejects_non_state_fields(key):
    class Bad(nn.Module):
        w: jax.Array

        def __init__(self):
            self.w = nn.param(jnp.zeros(2), ("embed",))

        def __call__(self, x):
            nn.update_state(self, w=x)
            return x

    with pytest.raises(AttributeError, match=r"Bad.w is not a state field"):
        nn.stateful_call(Bad(), jnp.ones(2))
