"""The optimizer and schedule registry: any optax optimizer by name, bf16 moments, schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pydantic
import pytest

from baobab import nn
from baobab.config import ConfigError
from baobab.optimizers import OPTIMIZERS, OptimizerConfig, ScheduleConfig, build_optimizer, build_schedule

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), "v": jnp.linspace(0.5, 2.0, 12).reshape(3, 4)}
GRADS = jax.tree.map(lambda p: jnp.cos(3.0 * p), PARAMS)


def two_updates(opt: optax.GradientTransformation):
    state = opt.init(PARAMS)
    params = PARAMS
    for _ in range(2):
        updates, state = opt.update(GRADS, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("kind, reference", [
    ("adamw", lambda: optax.adamw(0.1, weight_decay=0.0)),  # weight_decay=0 is none, not optax's 1e-4
    ("adafactor", lambda: optax.adafactor(0.1, weight_decay_rate=0.0)),
    ("lion", lambda: optax.lion(0.1, weight_decay=0.0)),
    ("sgd", lambda: optax.sgd(0.1, momentum=0.9)),  # baobab's sgd default: momentum 0.9
    ("lamb", lambda: optax.lamb(0.1)),
    ("rmsprop", lambda: optax.rmsprop(0.1)),
    ("muon", lambda: optax.contrib.muon(0.1)),
])
def test_each_optimizer_by_name_matches_optax(kind, reference):
    ours, _ = two_updates(build_optimizer(OptimizerConfig(kind=kind, lr=0.1, clip_norm=None), 0.1))
    theirs, _ = two_updates(reference())
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.allclose(ours["w"], PARAMS["w"])  # it did update


def test_every_optax_optimizer_name_is_reachable():
    for name in ("adamw", "adafactor", "lion", "sgd", "lamb", "lars", "nadamw", "radam", "yogi", "adan", "muon"):
        assert name in OPTIMIZERS
    for name in sorted(OPTIMIZERS):  # each builds and takes a step
        opt = build_optimizer(OptimizerConfig(kind=name, lr=1e-2), 1e-2)
        params, _ = two_updates(opt)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params)), name


def test_keywords_and_options_reach_the_optimizer():
    cfg = OptimizerConfig(kind="sgd", lr=0.1, clip_norm=None, momentum=0.5, options={"nesterov": True})
    ours, _ = two_updates(build_optimizer(cfg, 0.1))
    theirs, _ = two_updates(optax.sgd(0.1, momentum=0.5, nesterov=True))
    np.testing.assert_allclose(ours["w"], theirs["w"], rtol=1e-6)
    cfg = OptimizerConfig(kind="adamw", lr=0.1, clip_norm=None, b1=0.8, b2=0.9, eps=1e-3)
    ours, _ = two_updates(build_optimizer(cfg, 0.1))
    theirs, _ = two_updates(optax.adamw(0.1, b1=0.8, b2=0.9, eps=1e-3, weight_decay=0.0))
    np.testing.assert_allclose(ours["w"], theirs["w"], rtol=1e-6)


def test_a_keyword_the_optimizer_lacks_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"optimizer.options.betas: optax.adamw takes no such keyword; "
                                          r"it takes b1, b2, eps"):
        build_optimizer(OptimizerConfig(kind="adamw", options={"betas": (0.9, 0.95)}), 1e-3)
    with pytest.raises(ConfigError, match=r"optimizer.momentum: optax.adamw takes no such keyword"):
        build_optimizer(OptimizerConfig(kind="adamw", momentum=0.9), 1e-3)
    with pytest.raises(pydantic.ValidationError, match="unknown optimizer 'adamz'; did you mean 'adam'"):
        OptimizerConfig(kind="adamz")


def test_mu_dtype_stores_the_first_moment_in_bfloat16():
    _, state = two_updates(build_optimizer(OptimizerConfig(kind="adamw", mu_dtype="bfloat16"), 1e-3))
    adam = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
            if isinstance(s, optax.ScaleByAdamState)][0]
    assert {x.dtype for x in jax.tree.leaves(adam.mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(adam.nu)} == {jnp.dtype(jnp.float32)}
    with pytest.raises(ConfigError, match="optimizer.mu_dtype: rprop keeps no moment"):
        build_optimizer(OptimizerConfig(kind="rprop", mu_dtype="bfloat16"), 1e-3)
    with pytest.raises(pydantic.ValidationError, match="'bf17' is not a dtype"):
        OptimizerConfig(mu_dtype="bf17")


def test_weight_decay_skips_biases():
    model = nn.Linear(3, 2, key=jax.random.key(0))
    opt = build_optimizer(OptimizerConfig(kind="adamw", lr=0.1, weight_decay=0.5, clip_norm=None), 0.1)
    zeros = jax.tree.map(jnp.zeros_like, model)
    updates, _ = opt.update(zeros, opt.init(model), model)
    np.testing.assert_allclose(updates.weight, -0.1 * 0.5 * model.weight, rtol=1e-6)  # decoupled decay
    np.testing.assert_array_equal(updates.bias, 0.0)


@pytest.mark.parametrize("kind, expected", [
    # steps=100, warmup 10, peak 1.0: values at steps 0, 5, 10, 55, 100
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0]),
    ("linear", [0.0, 0.5, 1.0, 0.5, 0.0]),
    ("cosine", [0.0, 0.5, 1.0, 0.5, 0.0]),
    ("inverse_sqrt", [0.0, 0.5, 1.0, (10 / 55) ** 0.5, (10 / 100) ** 0.5]),  # peak * sqrt(warmup / step)
    ("wsd", [0.0, 0.5, 1.0, 1.0, 0.0]),  # stable to step 80, then linear to 0
])
def test_schedules_by_hand(kind, expected):
    sched = build_schedule(ScheduleConfig(kind=kind, warmup_steps=10, decay_fraction=0.2), 1.0, steps=100)
    got = [float(sched(s)) for s in (0, 5, 10, 55, 100)]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    if kind == "wsd":
        np.testing.assert_allclose([float(sched(80)), float(sched(90))], [1.0, 0.5], atol=1e-6)


def test_the_learning_rate_is_visible_to_the_loop():
    from baobab import train

    opt = build_optimizer(OptimizerConfig(lr=0.1), build_schedule(ScheduleConfig(kind="linear"), 0.1, steps=10))
    state = opt.init(PARAMS)
    assert float(train.learning_rate_of(state)) == pytest.approx(0.1)
