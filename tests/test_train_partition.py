"""The step differentiates only what trains: fewer FLOPs under LoRA, the same gradients and losses.

``reference_step`` is the step as it was before: ``value_and_grad`` of the whole
model, the non-finite check over every gradient leaf. The step must match it on a
fully trainable model, give the same trainable gradients on a frozen one, and
compile to substantially fewer FLOPs when most of the model is frozen.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import test_train_support as S
from baobab import models, nn, train
from baobab.train._core import call_loss
from baobab.train._partition import merge, split_trainable

RULES = nn.DEFAULT_RULES


def reference_step(loss_fn, optimizer):
    """The old step (one microbatch, no EMA): gradients of every leaf, every leaf checked."""
    optimizer = train.only_trainable(optimizer)
    grad_fn = jax.value_and_grad(functools.partial(call_loss, loss_fn), has_aux=True)

    def step(state, batch):
        key = jax.random.fold_in(state.rng, state.step)
        (loss, (_, model)), grads = grad_fn(state.model, batch, key)
        ok = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.model)
        new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), optax.apply_updates(model, updates), state.model)
        opt_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), opt_state, state.opt_state)
        return state.replace(model=new, opt_state=opt_state, step=state.step + 1), {"loss": loss}

    return step


def _gpt():
    return models.build_model(models.GPT2Config(vocab_size=64, max_len=32, hidden_size=64, num_layers=2,
                                                num_heads=4, tie_embeddings=False, scan_layers=False),
                              key=jax.random.key(0))


def _lora(model):
    return nn.lora(model, "transformer.h*.attn.*", "transformer.h*.mlp.*", rank=4, key=jax.random.key(1))


def _lm_loss(model, batch, key):
    logits = model(batch["tokens"][:, :-1])  # (B, T, V)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["tokens"][:, 1:]).mean()


def _tokens():
    return {"tokens": jnp.asarray(np.random.RandomState(0).randint(0, 64, (8, 33)))}


def _mesh():
    return train.make_mesh(devices=jax.devices()[:1])


def _step_flops(make_step, model, opt, batch) -> float:
    mesh = _mesh()
    state = train.abstract_state(lambda k: model, opt, mesh=mesh, rules=RULES)
    step = train.jit_step(make_step(_lm_loss, opt), state, mesh=mesh, rules=RULES)
    cost = step.lower(state, batch).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def test_split_and_merge_give_the_model_back():
    model = S.make_net()
    frozen = nn.freeze(model, "stem", "blocks")
    trainable, rest = split_trainable(frozen)
    assert len(jax.tree.leaves(trainable)) == 4  # bn.scale, bn.offset, head.weight, head.bias
    assert jax.tree.structure(merge(trainable, rest)) == jax.tree.structure(frozen)
    for a, b in zip(jax.tree.leaves(merge(trainable, rest)), jax.tree.leaves(frozen), strict=True):
        assert a is b


def test_lora_step_compiles_to_far_fewer_flops():
    opt, batch = optax.adam(1e-3), _tokens()
    tuned = _lora(_gpt())
    full = _step_flops(train.make_train_step, nn.unfreeze(tuned), opt, batch)
    lora = _step_flops(train.make_train_step, tuned, opt, batch)
    before = _step_flops(reference_step, tuned, opt, batch)  # the same LoRA model, every gradient computed
    assert lora < 0.75 * full, (lora, full)  # ~0.69 here: no weight gradients for the frozen bases
    assert lora < 0.8 * before, (lora, before)
    assert before > 0.95 * full  # the old step differentiated frozen weights too


def test_trainable_gradients_equal_full_differentiation():
    tuned = _lora(_gpt())
    tuned = tuned.at("transformer.h[0].attn.c_attn.lora_b").set(  # nonzero, so lora_a gets a gradient
        0.1 * jax.random.normal(jax.random.key(2), tuned.transformer.h[0].attn.c_attn.lora_b.shape))
    batch, mesh = _tokens(), _mesh()
    state = train.create_state(tuned, optax.sgd(1.0), mesh=mesh, rules=RULES)
    key = jax.random.fold_in(state.rng, state.step)
    grads = jax.grad(lambda m: call_loss(_lm_loss, m, batch, key)[0])(state.model)  # every leaf
    step = train.jit_step(train.make_train_step(_lm_loss, optax.sgd(1.0)), state, mesh=mesh, rules=RULES)
    old = jax.device_get(nn.state_dict(state.model))
    new_state, metrics = step(state, batch)
    new, flat_grads = nn.state_dict(new_state.model), nn.state_dict(grads)
    trainable = {p for p, _, m in nn.iter_arrays(tuned) if m.kind == "param" and not m.frozen}
    assert trainable and all(p.endswith(("lora_a", "lora_b")) for p in trainable)
    for path, x in old.items():  # sgd(1.0): new = old - grad on trainables, frozen untouched
        if path in trainable:
            np.testing.assert_allclose(old[path] - np.asarray(new[path]), flat_grads[path], rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(np.asarray(new[path]), x)
    norm = np.sqrt(sum(float(jnp.sum(flat_grads[p] ** 2)) for p in trainable))
    assert float(metrics["grad_norm"]) == pytest.approx(norm, rel=1e-5)


@pytest.mark.parametrize("frozen", [False, True], ids=["all-trainable", "stem-frozen"])
def test_losses_and_updates_match_the_old_step(frozen):
    model = nn.freeze(S.make_net(), "stem") if frozen else S.make_net()
    it = S.grain_batches(32)
    batches = [next(it) for _ in range(3)]
    mesh, opt = _mesh(), optax.adam(1e-2)
    results = []
    for make in (train.make_train_step, reference_step):
        state = train.create_state(model, opt, mesh=mesh, rules=RULES)
        init_layout = jax.tree.structure(state.opt_state)
        step = jax.jit(make(S.loss_fn, opt))
        losses = []
        for b in batches:
            state, m = step(state, train.put_batch(b, mesh=mesh, rules=RULES))
            losses.append(float(m["loss"]))
        assert jax.tree.structure(state.opt_state) == init_layout  # checkpoints keep their layout
        results.append((losses, jax.device_get(nn.state_dict(state.model)), jax.device_get(state.opt_state)))
    (losses, params, opt_state), (ref_losses, ref_params, ref_opt_state) = results
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    for path in ref_params:  # BatchNorm statistics included
        np.testing.assert_allclose(params[path], ref_params[path], rtol=1e-5, atol=1e-6, err_msg=path)
    for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(ref_opt_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def nan_grad_loss(model, batch, key):
    """The loss plus 0 * sum(sqrt(w - w)) for w = head.weight: the loss is finite, d/dw is NaN."""
    loss, metrics = S.loss_fn(model, batch, key)
    w = model.head.weight
    return loss + 0.0 * jnp.sum(jnp.sqrt(w - jax.lax.stop_gradient(w))), metrics


@pytest.mark.parametrize("microbatches", [1, 2])
def test_a_nan_gradient_in_a_frozen_part_does_not_matter(microbatches):
    mesh, opt = _mesh(), optax.adam(1e-2)
    batch = train.put_batch(next(S.grain_batches(32)), mesh=mesh, rules=RULES)
    for frozen in (False, True):
        model = nn.freeze(S.make_net(), "head") if frozen else S.make_net()
        state = train.create_state(model, opt, mesh=mesh, rules=RULES)
        before = jax.device_get(nn.state_dict(state.model))
        step = train.jit_step(train.make_train_step(nan_grad_loss, opt, microbatches=microbatches), state,
                              mesh=mesh, rules=RULES)
        state, m = step(state, batch)
        assert np.isfinite(float(m["loss"]))
        moved = not np.array_equal(np.asarray(nn.state_dict(state.model)["blocks.layer.up.weight"]),
                                   before["blocks.layer.up.weight"])
        if frozen:  # only trainable gradients are read: the step goes through
            assert int(m["nonfinite"]) == 0 and int(m["first_nonfinite_grad"]) == -1 and moved
            np.testing.assert_array_equal(np.asarray(state.model.head.weight), before["head.weight"])
        else:  # the same NaN in a trainable gradient drops the update and is named
            assert int(m["nonfinite"]) == 1 and not moved
            assert train.leaf_paths(state.model)[int(m["first_nonfinite_grad"])] == "head.weight"
