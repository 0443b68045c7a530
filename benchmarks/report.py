"""Print the tables of RESULTS.md (markdown) from the JSON files the benchmarks wrote.

    python benchmarks/report.py                  # reads benchmarks/results/*.json
    python benchmarks/report.py --dir /tmp/out   # another results folder

Only formatting: every figure comes from a JSON file, so a table can be pasted
into RESULTS.md right after a run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import _harness as H


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def md_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_fmt(r.get(key)) for key, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def machine_line(result: dict) -> str:
    m = result["machine"]
    after = m.get("load_average_after")
    usable = m.get("usable_cores")
    pinned = f", pinned to {usable} of {m['cores']} cores" if usable and usable != m["cores"] else ""
    memory = m.get("host_memory")
    return (f"{m['date']}{pinned}, load average {m['load_average']} before"
            + (f", {after} after" if after else "") + (f", XLA_FLAGS={m['xla_flags']!r}" if m["xla_flags"] else "")
            + (f", host memory: {memory}" if memory else ""))


def report(folder: Path) -> str:
    out = []
    load = lambda name: json.loads((folder / f"{name}.json").read_text())  # noqa: E731
    files = {p.stem for p in folder.glob("*.json")}
    if "mlp_overhead" in files:
        r = load("mlp_overhead")
        base = {row["implementation"]: row["median_us"] for row in r["rows"]}
        rows = [{**row, "ratio": base["baobab"] / row["median_us"] if "baobab" in base else None}
                for row in r["rows"]]
        out += [f"### Per-step overhead ({machine_line(r)})", "",
                md_table(rows, [("implementation", "implementation"), ("params", "params"),
                                ("loss@0", "loss at step 0"), ("median_us", "median step (µs)"),
                                ("p25_us", "p25"), ("p75_us", "p75"),
                                ("ratio", "baobab time / this time")]), ""]
    for stem in sorted(f for f in files if f.startswith("gpt_cpu")):  # gpt_cpu, and e.g. gpt_cpu_1core
        r = load(stem)
        label = "" if stem == "gpt_cpu" else f" [{stem}]"
        out += [f"### GPT training on CPU{label} ({machine_line(r)})", "",
                f"Model FLOPs per step (XLA cost analysis of baobab's step): {r['flops_per_step'] / 1e9:.1f} G; "
                f"peak (best jitted 2048³ fp32 matmul, same process): {r['peak_flops'] / 1e9:.0f} GFLOP/s.", "",
                md_table(r["rows"], [("implementation", "implementation"), ("params", "params"),
                                     ("loss@0", "loss at step 0"), ("first_step_s", "first step (s)"),
                                     ("step_ms", "median step (ms)"), ("tokens_per_s", "tokens/s"),
                                     ("mfu", "MFU"), ("baobab_speedup", "baobab tokens/s ÷ this")]), ""]
    if "resnet_cpu" in files:
        r = load("resnet_cpu")
        out += [f"### ResNet-18, 32×32, CPU ({machine_line(r)})", "",
                md_table(r["rows"], [("implementation", "implementation"), ("params", "params"),
                                     ("loss@0", "loss at step 0"), ("first_step_s", "first step (s)"),
                                     ("step_ms", "median step (ms)"), ("images_per_s", "images/s"),
                                     ("baobab_speedup", "baobab images/s ÷ this")]), ""]
    for stem in sorted(f for f in files if f.startswith("compile_time")):
        r = load(stem)
        label = "" if stem == "compile_time" else f" [{stem}]"
        out += [f"### Compile time, 24-layer GPT{label} ({machine_line(r)})", "",
                md_table(r["rows"], [("layers", "layers"), ("loss@0", "loss at step 0"), ("trace_s", "trace (s)"),
                                     ("compile_s", "compile (s)"), ("first_step_s", "first step (s)"),
                                     ("step_ms", "median step (ms)")]), "",
                f"Scanned ÷ unrolled: first step {r['first_step_ratio']:.3f}, step time {r['step_time_ratio']:.3f}.", ""]
    if "checkpoint" in files:
        r = load("checkpoint")
        rows = [{"save": k, **v} for k, v in r["summary"].items()]
        out += [f"### Checkpointing, {r['state_bytes'] / 1e6:.0f} MB TrainState ({machine_line(r)})", "",
                md_table(rows, [("save", "save"), ("blocked_s", "blocks the loop (s)"),
                                ("durable_s", "on disk after (s)"), ("loop_cost_s", "loop cost over 6 steps (s)"),
                                ("steps_s", "step (s)")]), "",
                f"Async blocked ÷ sync blocked: {r['async_over_sync_blocked']:.3f}.", ""]
    if "data_pipeline" in files:
        r = load("data_pipeline")
        out += [f"### Input pipeline ({machine_line(r)})", "",
                f"MNIST-style examples/s: {', '.join(f'{k} {v:,.0f}' for k, v in r['mnist_examples_per_s'].items())}; "
                f"packed text rows/s: baobab {r['text_rows_per_s']['baobab']:,.0f}, torch "
                f"{r['text_rows_per_s']['torch']:,.0f}; data wait {100 * r['data_wait_fraction']:.2f} % of step time.", ""]
    for stem in sorted(f for f in files if f.startswith("soak_mnist_mlp")):  # soak_mnist_mlp, and e.g. _no_ckpt
        r = load(stem)
        label = "" if stem == "soak_mnist_mlp" else f" [{stem}]"
        out += [f"### Soak, host RSS of `baobab train configs/mnist_mlp.py`{label} ({machine_line(r)})", "",
                f"`{r['command']}`; RSS sampled every {r['interval_s']} s ({r['samples']} samples); "
                f"warm-up: the first {r['warmup_steps']:,} steps ({r['warmup_end_s']} s); eval accuracy "
                f"{_fmt(r['eval_accuracy'])}.", "",
                md_table([r], [("steps", "steps"), ("wall_s", "wall (s)"),
                               ("rss_warmup_end_mb", "RSS at warm-up end (MB)"),
                               ("rss_train_end_mb", "before the final eval (MB)"), ("rss_final_mb", "final (MB)"),
                               ("rss_peak_mb", "peak sampled (MB)"), ("vm_hwm_mb", "VmHWM (MB)"),
                               ("slope_mb_per_1k_steps", "slope after warm-up (MB / 1k steps)"),
                               ("slope_second_half_mb_per_1k_steps", "slope, 2nd half")]), ""]
    if "gpu_gpt2" in files:
        r = load("gpu_gpt2")
        out += [f"### GPT-2 small, bf16, {r['machine'].get('device_kind')} ({'smoke' if r['smoke'] else 'full'}; "
                f"{machine_line(r)})", "",
                md_table(r["rows"], [("implementation", "implementation"), ("params", "params"),
                                     ("loss@0", "loss at step 0"), ("step_ms", "median step (ms)"),
                                     ("tokens_per_s", "tokens/s"), ("mfu", "MFU"),
                                     ("baobab_speedup", "baobab tokens/s ÷ this")]), ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default=str(H.RESULTS_DIR))
    print(report(Path(p.parse_args().dir)))


if __name__ == "__main__":
    main()
