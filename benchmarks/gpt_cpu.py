"""GPT training throughput on CPU: d=256, 4 layers, 4 heads, seq 128, batch 16, vocab 256, AdamW.

    python benchmarks/gpt_cpu.py                 # ~3-4 minutes on 2 CPU cores (torch.compile: ~1 min of it)
    python benchmarks/gpt_cpu.py --quick         # smoke run
    python benchmarks/gpt_cpu.py --only baobab,raw_jax,torch

Implementations (``gpt_impls.py``, all from the same weights and batch): baobab
(``baobab.models.GPT2``, the model zoo's GPT-2 that ``baobab train`` builds, attending
through ``nn.attention``), ``baobab_nn`` (the same GPT assembled from ``baobab.nn``
layers: ``nn.MultiHeadAttention``, ``nn.MLP``, ``nn.LayerNorm``, ``nn.Embedding``),
raw JAX, Equinox, Flax NNX (``nnx.jit`` and ``nnx.cached_partial``), PyTorch eager
and ``torch.compile``.

Reported per implementation: the median step time, tokens/s, baobab's throughput
over the anchor's (> 1: baobab is faster), and MFU: the model's FLOPs per step
(XLA's ``cost_analysis()`` of baobab's compiled step; the same model for every
row) divided by the step time and by the peak, the best FLOP/s of a jitted
2048^3 fp32 matmul measured in the same process (before and after the timing).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import _harness as H  # noqa: E402
import gpt_impls as G  # noqa: E402

IMPLEMENTATIONS = ("baobab", "baobab_nn", "raw_jax", "equinox", "nnx_jit", "nnx_cached", "torch", "torch_compile")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = H.parser(__doc__.split("\n")[0], name="gpt_cpu")
    args = p.parse_args(argv)
    spec = G.GPTSpec()
    rounds = args.rounds or (1 if args.quick else 5)
    steps = args.steps or (1 if args.quick else 4)
    info = H.machine()
    print(f"GPT d={spec.d} L={spec.layers} H={spec.heads} T={spec.seq} B={spec.batch} V={spec.vocab}, "
          f"{spec.num_params():,} params; {H.describe(info)}")
    peak = H.matmul_peak()
    print(f"matmul peak (2048^3 fp32, jitted): {peak / 1e9:.0f} GFLOP/s")

    impls, skipped, loss0, compile_s = {}, {}, {}, {}
    for name in H.selected(IMPLEMENTATIONS, args.only):
        reason = H.missing(G.NEEDS[name]) if name in G.NEEDS else None
        if reason is None:
            try:
                start = time.perf_counter()
                impl = G.builders(spec)[name]()
                loss0[name] = float(impl.step())  # the first step compiles (jit, torch.compile)
                compile_s[name] = time.perf_counter() - start
                impls[name] = impl
            except Exception as e:  # noqa: BLE001 - e.g. torch.compile without a working compiler
                reason = f"{type(e).__name__}: {e}"[:300]
        if reason:
            skipped[name] = reason
            print(f"skipped {name}: {reason}")
    flops = impls["baobab"].flops_per_step if "baobab" in impls else next(
        (i.flops_per_step for i in impls.values() if i.flops_per_step), None)
    timings = H.interleaved({n: i.step for n, i in impls.items()}, rounds=rounds, steps_per_round=steps)
    peak = max(peak, H.matmul_peak())

    rows = []
    for name, impl in impls.items():
        t = timings[name].median
        row = {"implementation": name, "params": impl.num_params, "loss@0": round(loss0[name], 5),
               "first_step_s": compile_s[name], "step_ms": 1e3 * t,
               "tokens_per_s": spec.tokens_per_step / t,
               "mfu": flops / t / peak if flops else None}
        if name != "baobab" and "baobab" in timings:
            row["baobab_speedup"] = t / timings["baobab"].median  # baobab tokens/s over this one's
        rows.append(row)
    print()
    print(H.table(rows, ["implementation", "params", "loss@0", "first_step_s", "step_ms", "tokens_per_s",
                         "mfu", "baobab_speedup"]))
    print(f"\nmodel FLOPs per step (XLA cost analysis): {flops / 1e9:.1f} G; peak {peak / 1e9:.0f} GFLOP/s"
          if flops else "")
    print("baobab_speedup = baobab tokens/s / that row's tokens/s (>= 1: baobab at least as fast)")
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result = {"benchmark": "gpt_cpu", "spec": vars(spec), "machine": info, "peak_flops": peak,
              "flops_per_step": flops, "rounds": rounds, "steps_per_round": steps, "rows": rows,
              "skipped": skipped}
    print(f"wrote {H.write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
