"""Async saves on the CPU: the state copy, ordering against donation, failures, saves in flight."""

from __future__ import annotations

import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_train_support as S
from baobab import nn, train
from baobab.errors import DiskFullError
from baobab.train._cpu_copy import _copy_tree as _copy_state

RULES = nn.DEFAULT_RULES
ZERO = jnp.zeros((), jnp.uint8)


def small_state(mesh) -> train.TrainState:
    return train.create_state(S.make_net(), S.optimizer(), mesh=mesh, rules=RULES, ema=True)


@jax.jit
def _bump(state: train.TrainState) -> train.TrainState:
    def bump(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.split(x, 1)[0]
        return x + jnp.ones((), x.dtype)
    return jax.tree.map(bump, state)


# Overwrites every buffer of the state it is given, like a train step does.
bump_donating = jax.jit(_bump, donate_argnums=0)


def test_the_state_copy_is_bit_exact_for_every_dtype():
    tree = {
        "f32": jnp.array([1.0, -0.0, np.nan, 1e-40, -np.inf], jnp.float32),  # 1e-40 is denormal
        "bf16": jnp.array([1.5, -0.0, 1e-40], jnp.bfloat16),
        "f8": jnp.array([1.0, -0.5], jnp.float8_e4m3fn),
        "i4": jnp.array([1, -2], jnp.int4),
        "u8": jnp.array([255, 0], jnp.uint8),
        "i32": jnp.array([-(2**31), 7], jnp.int32),
        "bool": jnp.array([True, False]),
        "c64": jnp.array([1 + 2j], jnp.complex64),
        "key": jax.random.key(3),
    }
    out = _copy_state(tree, ZERO)
    for name, x in tree.items():
        y = out[name]
        assert y.dtype == x.dtype, name
        assert S.raw(y).tobytes() == S.raw(x).tobytes(), name


def test_the_state_copy_is_not_run_inline_on_the_calling_thread():
    # XLA:CPU executes programs it counts under 1,000 FLOPs on the caller's thread;
    # the copy must count at least one op per element to be dispatched asynchronously.
    tree = {"w": jnp.zeros((64, 64)), "b": jnp.zeros((64,), jnp.bfloat16), "n": jnp.zeros((), jnp.int32)}
    flops = _copy_state.lower(tree, ZERO).compile().cost_analysis()["flops"]
    assert flops >= 64 * 64 + 64 >= 1000


@pytest.mark.parametrize("fsdp", [1, 8], ids=["1dev", "fsdp8"])
def test_an_async_save_keeps_its_step_when_the_next_steps_donate_the_state(tmp_path, fsdp):
    mesh = train.make_mesh(train.MeshConfig(data=1, fsdp=fsdp), devices=jax.devices()[:fsdp])
    state = _bump(small_state(mesh))
    saved = [S.raw(x) for x in jax.tree.leaves(state)]
    ckpt = train.Checkpointer(tmp_path, async_save=True)
    blocked = ckpt.save(3, state)
    assert blocked >= 0.0
    for _ in range(3):  # donated at once: the save must read the copy, not these buffers
        state = bump_donating(state)
    ckpt.wait()
    restored = ckpt.restore(train.abstract_state(S.make_net(), S.optimizer(), mesh=mesh, rules=RULES,
                                                 ema=True))
    ckpt.close()
    assert restored.step == 3
    for a, b in zip(saved, jax.tree.leaves(restored.state), strict=True):
        np.testing.assert_array_equal(a, S.raw(b))  # bit for bit
    assert not np.array_equal(saved[0], S.raw(jax.tree.leaves(state)[0]))  # the steps did change it


def test_saves_in_flight_are_listed_and_not_repeated(tmp_path):
    mesh = train.make_mesh(devices=jax.devices()[:1])
    state = small_state(mesh)
    ckpt = train.Checkpointer(tmp_path, async_save=True)
    release, real_save = threading.Event(), ckpt.manager.save
    calls = []

    def held_save(step, **kw):
        calls.append(step)
        release.wait(timeout=60)
        return real_save(step, **kw)

    ckpt.manager.save = held_save
    try:
        ckpt.save(5, state)
        assert ckpt.all_steps() == [5] and ckpt.latest_step == 5  # queued, not on disk yet
        assert ckpt.save(5, state) == 0.0  # the same step again is left alone
    finally:
        release.set()
    ckpt.wait()
    assert calls == [5]
    assert ckpt.manager.all_steps() == [5] and (tmp_path / "5" / "state").is_dir()
    ckpt.close()


def saved_once_then_failing(tmp_path, error: OSError) -> tuple[train.Checkpointer, Any, Any]:
    """A checkpointer with step 1 on disk whose next orbax saves raise ``error``; ``(ckpt, state, real save)``."""
    state = small_state(train.make_mesh(devices=jax.devices()[:1]))
    ckpt = train.Checkpointer(tmp_path, async_save=True)
    ckpt.save(1, state)
    ckpt.wait()
    real_save = ckpt.manager.save

    def failing(step, **kw):
        raise error

    ckpt.manager.save = failing
    return ckpt, state, real_save


def test_a_failed_background_save_is_reported_naming_step_and_directory(tmp_path):
    ckpt, state, real_save = saved_once_then_failing(tmp_path, OSError(28, "No space left on device"))
    ckpt.save(2, state)  # fails in the background
    size = sum(x.nbytes for x in jax.tree.leaves(state))
    with pytest.raises(DiskFullError, match=rf"step 2 in {tmp_path}: it needs up to .*"
                                            rf"the checkpoints of steps \[1\] are intact"):
        ckpt.wait()
    assert size > 0
    with pytest.raises(DiskFullError, match="step 2"):  # and again on the next save, not silently dropped
        ckpt.save(3, state)
    ckpt.manager.save = real_save
    assert ckpt.manager.all_steps() == [1]
    with pytest.raises(DiskFullError, match="step 2"):
        ckpt.close()


def test_any_other_failed_save_names_step_cause_and_what_is_intact(tmp_path):
    ckpt, state, _ = saved_once_then_failing(tmp_path, PermissionError(13, "Permission denied"))
    ckpt.save(2, state)
    with pytest.raises(RuntimeError, match=r"step 2 to .* failed \(PermissionError.*steps \[1\] are intact"):
        ckpt.close()
