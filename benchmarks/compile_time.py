"""Compile time of a 24-layer GPT: layers scanned (``nn.Stacked``) against unrolled (a tuple of blocks).

    python benchmarks/compile_time.py            # ~2-4 minutes on 2 CPU cores (the unrolled compile dominates)
    python benchmarks/compile_time.py --quick    # 4 layers, smoke run

The model is ``baobab.models.GPT2`` with d=256, 4 heads, 24 layers, seq 128,
vocab 256 (built with ``scan_layers=True``; the unrolled model holds the same weights as
a tuple of blocks, ``Stacked.unstacked()``),
trained with AdamW in one donating ``jax.jit`` step on a batch of 8 sequences.

Reported for each: the time to trace (``lower``), to compile, and to run the first
step, their sum (the first-step time a user waits for), then the steady step time
(median, interleaved rounds). The scanned model is compiled first, so anything
the unrolled compile gains from warm caches (JAX's tracing caches) favours the
unrolled one. Goal: scanned first step <= 0.3 x unrolled, and equal step times.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import _harness as H  # noqa: E402
import gpt_impls as G  # noqa: E402


def build(spec: G.GPTSpec, *, scan_layers: bool) -> dict[str, Any]:
    """Build, trace, compile and run one step; return the timings and a ``step()``."""
    import jax
    import jax.numpy as jnp
    import optax

    start = time.perf_counter()
    model = G.baobab_model(spec, scan_layers=True)
    if not scan_layers:  # the same weights, as a tuple of separate blocks
        model = model.at("transformer.h").set(model.transformer.h.unstacked())
    opt = optax.adamw(spec.lr, weight_decay=spec.weight_decay)
    opt_state = opt.init(model)
    x, y = (jnp.asarray(a) for a in G.batch(spec))
    jax.block_until_ready((model, opt_state))
    built = time.perf_counter()

    def loss_fn(model, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(model, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(model, x, y)
        updates, opt_state = opt.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state, loss

    lowered = train_step.lower(model, opt_state, x, y)
    traced = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    state = list(compiled(model, opt_state, x, y))
    loss0 = float(state[2])
    ran = time.perf_counter()

    def step():
        state[0], state[1], state[2] = compiled(state[0], state[1], x, y)
        return state[2].block_until_ready()

    return {"build_s": built - start, "trace_s": traced - built, "compile_s": compiled_at - traced,
            "first_run_s": ran - compiled_at, "first_step_s": ran - built, "loss@0": loss0, "step": step}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = H.parser(__doc__.split("\n")[0], name="compile_time")
    p.add_argument("--layers", type=int, default=None)
    args = p.parse_args(argv)
    layers = args.layers or (4 if args.quick else 24)
    spec = G.GPTSpec(layers=layers, batch=8)
    rounds = args.rounds or (1 if args.quick else 3)
    steps = args.steps or (1 if args.quick else 3)
    info = H.machine()
    print(f"GPT d={spec.d} L={spec.layers} H={spec.heads} T={spec.seq} B={spec.batch}; {H.describe(info)}")
    results = {}
    for name, scan in (("scanned", True), ("unrolled", False)):
        results[name] = build(spec, scan_layers=scan)
        r = results[name]
        print(f"  {name:8s}: trace {r['trace_s']:6.2f} s, compile {r['compile_s']:6.2f} s, "
              f"first run {r['first_run_s']:5.2f} s -> first step {r['first_step_s']:6.2f} s")
    timings = H.interleaved({n: r["step"] for n, r in results.items()}, rounds=rounds, steps_per_round=steps)
    rows = []
    for name, r in results.items():
        rows.append({"layers": name, "loss@0": round(r["loss@0"], 5), "trace_s": r["trace_s"],
                     "compile_s": r["compile_s"], "first_step_s": r["first_step_s"],
                     "step_ms": 1e3 * timings[name].median})
    first_ratio = results["scanned"]["first_step_s"] / results["unrolled"]["first_step_s"]
    step_ratio = timings["scanned"].median / timings["unrolled"].median
    print()
    print(H.table(rows, ["layers", "loss@0", "trace_s", "compile_s", "first_step_s", "step_ms"]))
    print(f"\nscanned / unrolled: first step {first_ratio:.3f} (goal <= 0.3), step time {step_ratio:.3f} "
          f"(goal ~1)")
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result = {"benchmark": "compile_time", "spec": dataclasses.asdict(spec), "machine": info, "rows": rows,
              "first_step_ratio": first_ratio, "step_time_ratio": step_ratio, "rounds": rounds,
              "steps_per_round": steps}
    print(f"wrote {H.write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
