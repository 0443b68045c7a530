"""GPT-2 small (124M) bf16 training on one NVIDIA GPU: baobab against PyTorch (eager and torch.compile).

    python benchmarks/gpu_gpt2.py                    # on a machine with one NVIDIA GPU (jax[cuda12], torch+CUDA)
    python benchmarks/gpu_gpt2.py --batch 16         # a bigger batch if memory allows
    python benchmarks/gpu_gpt2.py --smoke            # a tiny GPT on CPU: checks the script runs (seconds)

Model: GPT-2 small (vocab 50257, 1024 positions, d=768, 12 layers, 12 heads, tied
embeddings; 124 M parameters), sequence 1024, batch 8 by default, AdamW.

* ``baobab``: ``baobab.models.GPT2`` under ``nn.with_policy`` (parameters float32,
  compute bfloat16, logits float32), attention through ``jax.nn.dot_product_attention``
  (``implementation=None``: cuDNN flash attention where available), ``optax.adamw``,
  one donating ``jax.jit`` step.
* ``torch``: the same model (``gpt_impls.torch_model``: fused q|k|v,
  ``scaled_dot_product_attention``) under ``torch.autocast(bfloat16)``, AdamW;
  ``torch_compile`` is the same through ``torch.compile``.

All start from the same weights. Reported: step time, tokens/s, baobab's speed over
each, and MFU: the model's FLOPs per step (XLA's ``cost_analysis()`` of baobab's
compiled step) over the step time and the chip's dense bf16 peak (``PEAKS`` below,
matched on ``device_kind``; ``--peak-tflops`` overrides it). The timings are
interleaved in rounds, as in the CPU benchmarks.

No GPU was lent to the session that wrote this script, so its GPU figures are not
in RESULTS.md yet; ``--smoke`` is exercised by ``tests/test_bench_gpu_smoke.py``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

# JAX would otherwise take 75 % of the GPU's memory at start-up, leaving PyTorch too little.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

sys.path.insert(0, str(Path(__file__).parent))
import _harness as H  # noqa: E402
import gpt_impls as G  # noqa: E402

#: Dense bf16 tensor-core peaks (FLOP/s, no sparsity), by a substring of ``device_kind``.
#: The first match wins, so more specific names come first.
PEAKS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM5
    ("H200", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("V100", 125e12),  # fp16 (no bf16 tensor cores)
)

SMALL = dict(vocab=50257, seq=1024, d=768, layers=12, heads=12)
SMOKE = dict(vocab=256, seq=32, d=64, layers=2, heads=2, batch=2)


def peak_for(device_kind: str) -> float | None:
    for name, flops in PEAKS:
        if name.lower() in device_kind.lower():
            return flops
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = H.parser(__doc__.split("\n")[0], name="gpu_gpt2")
    p.add_argument("--smoke", action="store_true", help="a tiny GPT on whatever device there is (CPU here)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--peak-tflops", type=float, default=None, help="the chip's dense bf16 peak, if not in PEAKS")
    p.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (slow to compile)")
    args = p.parse_args(argv)

    import jax
    from baobab import nn

    spec = G.GPTSpec(**(SMOKE if args.smoke else {**SMALL, "batch": args.batch}))
    rounds = args.rounds or (1 if args.smoke or args.quick else 5)
    steps = args.steps or (2 if args.smoke or args.quick else 10)
    device = jax.devices()[0]
    info = H.machine()
    info["device_kind"] = device.device_kind
    info["platform"] = device.platform
    if device.platform != "gpu" and not args.smoke:
        raise SystemExit(f"No GPU found (JAX's first device is {device.device_kind!r}). Run with --smoke to "
                         f"check the script on CPU, or install jax[cuda12] on a GPU machine.")
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_for(device.device_kind)
    print(f"GPT-2 d={spec.d} L={spec.layers} H={spec.heads} T={spec.seq} B={spec.batch} V={spec.vocab}, "
          f"{spec.num_params() / 1e6:.1f} M params, bf16; device {device.device_kind} "
          f"(peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s bf16); {H.describe(info)}")

    compute = nn.Policy.create("float32", "bfloat16", "bfloat16")
    weights = G.shared_weights(spec)
    torch_device = "cpu"
    names = ["baobab", "torch"] + ([] if args.no_torch_compile else ["torch_compile"])
    builders = {
        "baobab": lambda: G.build_baobab(spec, policy=compute),
        "torch": lambda: G.build_torch(spec, device=torch_device, dtype="bfloat16", weights=weights),
        "torch_compile": lambda: G.build_torch(spec, compile=True, device=torch_device, dtype="bfloat16",
                                               weights=weights),
    }
    impls, skipped, loss0, first = {}, {}, {}, {}
    for name in H.selected(names, args.only):
        reason = None
        if name.startswith("torch"):
            reason = H.missing("torch")
            if reason is None:
                import torch

                if device.platform == "gpu" and not torch.cuda.is_available():
                    reason = "torch has no CUDA here (install a CUDA build of torch)"
                torch_device = "cuda" if device.platform == "gpu" else "cpu"
        if reason is None:
            try:
                start = time.perf_counter()
                impls[name] = builders[name]()
                loss0[name] = float(impls[name].step())
                first[name] = time.perf_counter() - start
            except Exception as e:  # noqa: BLE001 - report and go on with the others
                reason = f"{type(e).__name__}: {e}"[:300]
        if reason:
            skipped[name] = reason
            print(f"skipped {name}: {reason}")
    flops = impls["baobab"].flops_per_step if "baobab" in impls else None
    timings = H.interleaved({n: i.step for n, i in impls.items()}, rounds=rounds, steps_per_round=steps)
    rows = []
    for name, impl in impls.items():
        t = timings[name].median
        row = {"implementation": name, "params": impl.num_params, "loss@0": round(loss0[name], 4),
               "first_step_s": first[name], "step_ms": 1e3 * t, "tokens_per_s": spec.tokens_per_step / t,
               "mfu": flops / t / peak if flops and peak else None}
        if name != "baobab" and "baobab" in timings:
            row["baobab_speedup"] = t / timings["baobab"].median
        rows.append(row)
    print()
    print(H.table(rows, ["implementation", "params", "loss@0", "first_step_s", "step_ms", "tokens_per_s",
                         "mfu", "baobab_speedup"]))
    if flops:
        print(f"\nmodel FLOPs per step (XLA cost analysis): {flops / 1e12:.2f} T")
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result = {"benchmark": "gpu_gpt2", "smoke": args.smoke, "spec": dataclasses.asdict(spec), "machine": info,
              "peak_flops": peak, "flops_per_step": flops, "rounds": rounds, "steps_per_round": steps,
              "rows": rows, "skipped": skipped}
    print(f"wrote {H.write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
