"""Per-step framework overhead: an MLP 64 -> 512 -> 512 -> 10 (ReLU), batch 128, AdamW.

    python benchmarks/mlp_overhead.py            # ~1 minute on 2 CPU cores
    python benchmarks/mlp_overhead.py --quick    # smoke run

The model is small enough (about 0.6 M multiply-adds per example) that a step
takes a few hundred microseconds, so the figure is mostly what each framework
spends around the computation: flattening the model, dispatch, donation,
optimizer plumbing. Every implementation starts from the same weights (copied
from the baobab model), takes the same batch, and runs AdamW(lr 1e-3, weight
decay 0.01 on every parameter, eps 1e-8), so their losses agree step for step
(``tests/test_bench_mlp.py``).

* ``baobab``: ``nn.Linear`` layers in an ``nn.Module``, ``optax.adamw``, one plain
  ``jax.jit`` step with the model and optimizer state donated.
* ``raw_jax``: the same step written by hand on a dict of arrays.
* ``equinox``: ``eqx.nn.MLP``, ``eqx.filter_value_and_grad`` and ``eqx.filter_jit``
  (model and optimizer state donated with ``donate="all-except-first"``).
* ``nnx_jit``: ``flax.nnx.Linear`` layers, ``nnx.Optimizer``, ``nnx.jit`` with donation.
* ``nnx_cached``: the same step through ``nnx.cached_partial`` (cached graph traversal).
* ``torch``: ``torch.nn.Linear`` layers and ``torch.optim.AdamW``, eager.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _harness as H  # noqa: E402

SIZES = (64, 512, 512, 10)
BATCH = 128
LR, WEIGHT_DECAY, EPS = 1e-3, 0.01, 1e-8
IMPLEMENTATIONS = ("baobab", "raw_jax", "equinox", "nnx_jit", "nnx_cached", "torch")
NEEDS = {"equinox": "equinox", "nnx_jit": "flax", "nnx_cached": "flax", "torch": "torch"}


@dataclasses.dataclass
class Impl:
    """One implementation: ``step()`` runs one blocking train step and returns the loss before it."""

    name: str
    step: Callable[[], Any]
    num_params: int


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH).astype(np.int32)
    return x, y


# ---------------------------------------------------------------------------------------------
# baobab: the source of the shared weights
# ---------------------------------------------------------------------------------------------

def _baobab_model(seed: int = 0):
    import jax
    from baobab import nn

    class MLP(nn.Module):
        """``(B, 64) -> (B, 10)`` through two hidden ReLU layers of 512."""

        layers: tuple[nn.Linear, ...]

        def __init__(self, sizes: tuple[int, ...], *, key: jax.Array):
            self.layers = tuple(nn.Linear(a, b, key=nn.subkey(key, f"layers[{i}]"))
                                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)))

        def __call__(self, x: jax.Array) -> jax.Array:
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))  # (B, hidden)
            return self.layers[-1](x)  # (B, classes)

    return MLP(SIZES, key=jax.random.key(seed))


def weights(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The shared initial weights: ``[(W (in, out), b (out,)), ...]`` from the baobab model."""
    model = _baobab_model(seed)
    return [(np.asarray(l.weight), np.asarray(l.bias)) for l in model.layers]


def _adamw():
    import optax

    return optax.adamw(LR, b1=0.9, b2=0.999, eps=EPS, weight_decay=WEIGHT_DECAY)


def _xent(logits, y):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def build_baobab(seed: int = 0) -> Impl:
    import jax
    import optax

    model = _baobab_model(seed)
    opt = _adamw()
    opt_state = opt.init(model)

    def loss_fn(model, x, y):
        return _xent(model(x), y)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(model, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(model, x, y)
        updates, opt_state = opt.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state, loss

    x, y = map(jax.numpy.asarray, batch())
    state = [model, opt_state]

    def step():
        state[0], state[1], loss = train_step(state[0], state[1], x, y)
        return loss.block_until_ready()

    return Impl("baobab", step, sum(a.size for a in jax.tree.leaves(model)))


def build_raw_jax(seed: int = 0) -> Impl:
    import jax
    import jax.numpy as jnp
    import optax

    params = [{"w": jnp.asarray(w), "b": jnp.asarray(b)} for w, b in weights(seed)]
    opt = _adamw()
    opt_state = opt.init(params)

    def loss_fn(params, x, y):
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        return _xent(x @ params[-1]["w"] + params[-1]["b"], y)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    x, y = map(jnp.asarray, batch())
    state = [params, opt_state]

    def step():
        state[0], state[1], loss = train_step(state[0], state[1], x, y)
        return loss.block_until_ready()

    return Impl("raw_jax", step, sum(a.size for a in jax.tree.leaves(params)))


def build_equinox(seed: int = 0) -> Impl:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    model = eqx.nn.MLP(SIZES[0], SIZES[-1], SIZES[1], depth=len(SIZES) - 2, activation=jax.nn.relu,
                       key=jax.random.key(seed))
    for i, (w, b) in enumerate(weights(seed)):  # Equinox stores weights (out, in)
        model = eqx.tree_at(lambda m, i=i: (m.layers[i].weight, m.layers[i].bias), model,
                            (jnp.asarray(w.T), jnp.asarray(b)))
    step = H.equinox_step(model, _adamw(), tuple(map(jnp.asarray, batch())), _xent)
    n = sum(a.size for a in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    return Impl("equinox", step, n)


def _nnx_model(seed: int):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(SIZES[:-1], SIZES[1:])])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return self.layers[-1](x)

    model = MLP(nnx.Rngs(seed))
    for layer, (w, b) in zip(model.layers, weights(seed), strict=True):  # NNX stores kernels (in, out)
        layer.kernel.set_value(jnp.asarray(w))
        layer.bias.set_value(jnp.asarray(b))
    return model


def _nnx_step():
    from flax import nnx

    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return _xent(model(x), y)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return train_step


def build_nnx_jit(seed: int = 0) -> Impl:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model = _nnx_model(seed)
    optimizer = nnx.Optimizer(model, _adamw(), wrt=nnx.Param)
    train_step = nnx.jit(_nnx_step(), donate_argnames=("model", "optimizer"))
    x, y = map(jnp.asarray, batch())

    def step():
        return train_step(model, optimizer, x, y).block_until_ready()

    n = sum(a.size for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return Impl("nnx_jit", step, n)


def build_nnx_cached(seed: int = 0) -> Impl:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model = _nnx_model(seed)
    optimizer = nnx.Optimizer(model, _adamw(), wrt=nnx.Param)
    jitted = nnx.jit(_nnx_step(), donate_argnames=("model", "optimizer"), graph=True, graph_updates=True)
    with nnx.set_graph_mode(True), nnx.set_graph_updates(True):
        cached = nnx.cached_partial(jitted, model, optimizer)
    x, y = map(jnp.asarray, batch())

    def step():
        return cached(x, y).block_until_ready()

    n = sum(a.size for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return Impl("nnx_cached", step, n)


def build_torch(seed: int = 0) -> Impl:
    import torch

    layers = []
    for i, (w, b) in enumerate(weights(seed)):
        linear = torch.nn.Linear(*w.shape)
        with torch.no_grad():  # torch stores weights (out, in)
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.copy_(torch.from_numpy(np.array(b)))
        layers += [linear] if i == len(SIZES) - 2 else [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=EPS, weight_decay=WEIGHT_DECAY)
    x, y = (torch.from_numpy(a) for a in batch())
    step = H.torch_classifier_step(model, opt, x, y.long())
    return Impl("torch", step, sum(p.numel() for p in model.parameters()))


BUILDERS: dict[str, Callable[..., Impl]] = {
    "baobab": build_baobab, "raw_jax": build_raw_jax, "equinox": build_equinox,
    "nnx_jit": build_nnx_jit, "nnx_cached": build_nnx_cached, "torch": build_torch,
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = H.parser(__doc__.split("\n")[0], name="mlp_overhead")
    args = p.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 10)
    steps = args.steps or (2 if args.quick else 50)
    info = H.machine()
    print(f"MLP {' -> '.join(map(str, SIZES))}, batch {BATCH}, AdamW; {H.describe(info)}")

    impls, skipped = {}, {}
    for name in H.selected(IMPLEMENTATIONS, args.only):
        reason = H.missing(NEEDS[name]) if name in NEEDS else None
        if reason:
            skipped[name] = reason
            continue
        impls[name] = BUILDERS[name]()
    first_loss = {name: float(impl.step()) for name, impl in impls.items()}  # compiles
    timings = H.interleaved({n: i.step for n, i in impls.items()}, rounds=rounds, steps_per_round=steps,
                            warmup=5)

    ref = {n: timings[n].median for n in ("raw_jax", "equinox", "nnx_jit", "nnx_cached", "torch") if n in timings}
    rows = []
    for name, impl in impls.items():
        t = timings[name]
        row = {"implementation": name, "params": impl.num_params, "loss@0": round(first_loss[name], 6),
               "median_us": 1e6 * t.median, "p25_us": 1e6 * t.spread[0], "p75_us": 1e6 * t.spread[1]}
        if name == "baobab":
            row.update({f"baobab/{n}": t.median / r for n, r in ref.items()})
        rows.append(row)
    print()
    print(H.table(rows, ["implementation", "params", "loss@0", "median_us", "p25_us", "p75_us"]))
    if "baobab" in timings:
        print("\nbaobab step time / anchor step time (< 1: baobab is faster):")
        for n, r in ref.items():
            print(f"  / {n:11s} {timings['baobab'].median / r:5.3f}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    info["load_average_after"] = [round(x, 2) for x in __import__("os").getloadavg()]
    result = {"benchmark": "mlp_overhead", "machine": info, "rounds": rounds, "steps_per_round": steps,
              "rows": rows, "skipped": skipped}
    print(f"\nwrote {H.write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
