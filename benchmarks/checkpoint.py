"""Checkpointing: how long an async save blocks the training loop, against a synchronous save.

    python benchmarks/checkpoint.py              # ~1-2 minutes on 2 CPU cores
    python benchmarks/checkpoint.py --quick      # smoke run

The state is a ``baobab.train.TrainState`` of a GPT (d=256, 12 layers, vocab 256,
9.6 M parameters) with its AdamW moments: about 115 MB of float32. It is saved with
``baobab.train.Checkpointer`` (orbax ``CheckpointManager``), once with
``async_save=True`` and once with ``async_save=False``, to a temporary directory,
alternating over several rounds. Reported per round (medians):

* ``blocked_s``: the time ``Checkpointer.save`` keeps the caller waiting (the
  async save returns once a copy of the state is dispatched, on the CPU, or copied
  off the device, on accelerators; the copy runs before the next step, so its
  time shows in ``loop_cost_s``; the sync save returns once the files are written);
* ``durable_s``: the time until the checkpoint is on disk (for the async save,
  with the loop's steps running meanwhile; for the sync save, ``blocked_s``);
* ``loop_cost_s``: the extra wall time of 6 train steps with a save issued before
  the first of them, over the same 6 steps without a save (the background write
  competes with the steps for the 2 cores).

The goal is async ``blocked_s`` <= 0.15 x sync ``blocked_s``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _harness as H  # noqa: E402

LOOP_STEPS = 6


def build(layers: int = 12, batch: int = 8):
    import jax
    import optax
    from baobab import nn, train
    from baobab.models import GPT2, GPT2Config

    config = GPT2Config(vocab_size=256, max_len=128, hidden_size=256, num_layers=layers, num_heads=4,
                        scan_layers=True)
    mesh = train.make_mesh(devices=jax.devices()[:1])
    optimizer = optax.adamw(3e-4, weight_decay=0.01)
    state = train.create_state(lambda k: GPT2(config, key=k), optimizer, mesh=mesh, rules=nn.DEFAULT_RULES)

    def loss_fn(model, batch, key):
        logits = model(batch["ids"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

    step = train.jit_step(train.make_train_step(loss_fn, optimizer), state, mesh=mesh, rules=nn.DEFAULT_RULES)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, (batch, 129)).astype(np.int32)
    data = train.put_batch({"ids": ids[:, :-1], "targets": ids[:, 1:]}, mesh=mesh, rules=nn.DEFAULT_RULES)
    step = step.lower(state, data).compile()
    return state, step, data


def _steps(step, state, data, n: int):
    for _ in range(n):
        state, metrics = step(state, data)
    metrics["loss"].block_until_ready()
    return state


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import jax
    from baobab import train

    p = H.parser(__doc__.split("\n")[0], name="checkpoint")
    args = p.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 5)
    info = H.machine()
    state, step, data = build(layers=2 if args.quick else 12)
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    print(f"TrainState of a GPT, {nbytes / 1e6:.0f} MB; {H.describe(info)}")
    state = _steps(step, state, data, 2)  # warm
    root = Path(tempfile.mkdtemp(prefix="baobab_ckpt_bench_"))
    rows: dict[str, list[dict[str, float]]] = {"async": [], "sync": []}
    n = 0
    try:
        checkpointers = {"async": train.Checkpointer(root / "async", keep_last=2, async_save=True),
                         "sync": train.Checkpointer(root / "sync", keep_last=2, async_save=False)}
        for r in range(rounds):
            for kind in (("async", "sync") if r % 2 == 0 else ("sync", "async")):
                ckpt = checkpointers[kind]
                start = time.perf_counter()
                state = _steps(step, state, data, LOOP_STEPS)
                plain = time.perf_counter() - start
                n += 1
                start = time.perf_counter()
                blocked = ckpt.save(n, state)
                state = _steps(step, state, data, LOOP_STEPS)
                with_save = time.perf_counter() - start
                ckpt.wait()
                durable = time.perf_counter() - start if kind == "async" else blocked
                rows[kind].append({"blocked_s": blocked, "durable_s": durable,
                                   "loop_cost_s": with_save - plain, "steps_s": plain / LOOP_STEPS})
                print(f"  round {r + 1} {kind:5s}: save blocked {blocked:6.3f} s, on disk after "
                      f"{durable:6.3f} s, loop +{with_save - plain:6.3f} s over {LOOP_STEPS} steps")
        for ckpt in checkpointers.values():
            ckpt.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    summary = {kind: {k: float(np.median([row[k] for row in rs])) for k in rs[0]} for kind, rs in rows.items()}
    ratio = summary["async"]["blocked_s"] / summary["sync"]["blocked_s"]
    table = [{"save": kind, **{k: v for k, v in s.items()}} for kind, s in summary.items()]
    print()
    print(H.table(table, ["save", "blocked_s", "durable_s", "loop_cost_s", "steps_s"]))
    print(f"\nasync blocked / sync blocked = {ratio:.3f} (goal <= 0.15)")
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result = {"benchmark": "checkpoint", "machine": info, "state_bytes": nbytes, "rounds": rounds,
              "summary": summary, "per_round": rows, "async_over_sync_blocked": ratio}
    print(f"wrote {H.write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
