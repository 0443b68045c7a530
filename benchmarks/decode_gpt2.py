"""Decode speed: ``baobab.models.generate`` against transformers' ``generate`` (PyTorch, CPU).

The model is GPT-2 small's shape (124M parameters, vocabulary 50,257, 12 layers of
768) with random weights, greedy, a 32-token prompt and ``--new`` new tokens, at
batch 1 and batch 8. Each framework runs in its own process (``--worker``), so
neither's threads, allocator or JIT caches touch the other's; the processes
alternate over ``--rounds`` rounds, so a change in machine load hits both alike. A
figure is new tokens per second over a whole ``generate`` call (prefill included),
the median over the calls of all rounds after one warm-up call per process (which
for baobab includes the compile). Both use a KV cache: baobab ``nn.KVCache`` in one
jitted ``lax.scan``; transformers its ``DynamicCache``, under ``torch.inference_mode``.

    python benchmarks/decode_gpt2.py            # ~4-6 min on 2 cores
    python benchmarks/decode_gpt2.py --quick    # a smoke run: a 2-layer model, 8 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import _harness as H

PROMPT = 32
FRAMEWORKS = ("baobab", "transformers")


def _shape(quick: bool) -> dict[str, int]:
    return dict(vocab_size=50257, max_len=1024, hidden_size=768, num_layers=2 if quick else 12, num_heads=12)


def _prompt(batch: int, vocab: int) -> np.ndarray:
    return np.random.RandomState(0).randint(0, vocab, (batch, PROMPT))


class Decoder:
    """One framework's model and its greedy ``generate(prompt (B, T0) numpy, new) -> (B, T0 + new)``."""

    def __init__(self, model, generate, num_params: int):
        self.model, self.generate, self.num_params = model, generate, num_params


def build_baobab(quick: bool, model=None) -> Decoder:
    import jax

    from baobab import models, nn

    model = model or models.GPT2(models.GPT2Config(**_shape(quick)), key=jax.random.key(0))

    def generate(prompt: np.ndarray, new: int) -> np.ndarray:
        return np.asarray(models.generate(model, jax.numpy.asarray(prompt), new).block_until_ready())

    return Decoder(model, generate, nn.count_parameters(model))


def build_transformers(quick: bool) -> Decoder:
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    s = _shape(quick)
    config = transformers.GPT2Config(vocab_size=s["vocab_size"], n_positions=s["max_len"], n_embd=s["hidden_size"],
                                     n_layer=s["num_layers"], n_head=s["num_heads"])
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()

    def generate(prompt: np.ndarray, new: int) -> np.ndarray:
        ids = torch.tensor(prompt)
        with torch.inference_mode():
            return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                  do_sample=False, pad_token_id=0, use_cache=True).numpy()

    return Decoder(model, generate, sum(p.numel() for p in model.parameters()))


def _timed_calls(decoder: Decoder, batch: int, new: int, calls: int) -> list[float]:
    prompt = _prompt(batch, 50257)
    decoder.generate(prompt, new)  # warm-up (baobab: the compile)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        decoder.generate(prompt, new)
        times.append(time.perf_counter() - start)
    return times


def _worker(framework: str, batch: int, new: int, calls: int, quick: bool) -> None:
    decoder = (build_baobab if framework == "baobab" else build_transformers)(quick)
    print(json.dumps({"framework": framework, "batch": batch, "times": _timed_calls(decoder, batch, new, calls)}))


def _spawn(framework: str, batch: int, new: int, calls: int, quick: bool) -> list[float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", framework, "--batch", str(batch),
           "--new", str(new), "--calls", str(calls)] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{framework} worker (batch {batch}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["times"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = H.parser(__doc__.split("\n")[0], name="decode_gpt2")
    p.add_argument("--worker", choices=FRAMEWORKS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--new", type=int, default=None, help="new tokens per generate call (default 64)")
    p.add_argument("--calls", type=int, default=None, help="timed generate calls per process (default 2)")
    args = p.parse_args(argv)
    new = args.new or (8 if args.quick else 64)
    calls = args.calls or (1 if args.quick else 2)
    if args.worker:
        _worker(args.worker, args.batch, new, calls, args.quick)
        return {}
    rounds = args.rounds or (1 if args.quick else 3)
    frameworks = H.selected(FRAMEWORKS, args.only)
    info = H.machine()
    times: dict[tuple[str, int], list[float]] = {}
    for r in range(rounds):
        for batch in (1, 8):
            order = frameworks if r % 2 == 0 else frameworks[::-1]
            for framework in order:
                times.setdefault((framework, batch), []).extend(_spawn(framework, batch, new, calls, args.quick))
                print(f"round {r + 1}/{rounds}: {framework} batch {batch} done", flush=True)
    rows = []
    for (framework, batch), ts in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        median = float(np.median(ts))
        row = {"framework": framework, "batch": batch, "tokens_per_s": batch * new / median,
               "median_s": median, "calls": len(ts)}
        base = times.get(("transformers", batch))
        if base:
            row["vs_transformers"] = float(np.median(base)) / median
        rows.append(row)
    print(H.describe(info))
    print(f"GPT-2 small shape{' (quick: 2 layers)' if args.quick else ''}, prompt {PROMPT}, {new} new tokens, "
          f"greedy; median over {rounds} rounds x {calls} calls, one process per framework per round")
    print(H.table(rows, ["framework", "batch", "tokens_per_s", "median_s", "vs_transformers", "calls"]))
    payload = {"benchmark": "decode_gpt2", "machine": info, "prompt": PROMPT, "new_tokens": new,
               "quick": args.quick, "rows": rows}
    H.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
