"""Fine-tune the byte-level GPT of configs/gpt_bytes.py (pretrained on Python source) on English prose.

Second corpus: IDLE's own text files that ship with Python (NEWS, HISTORY, README,
TODO, ...: 118 KB of English release notes and documentation). Every third file is
held out for eval (CREDITS, NEWS2x, extend: 33 KB); the other four (85 KB) are trained on.

Commands:  baobab train configs/gpt_bytes.py                 # pretrain (runs/gpt_bytes)
           baobab train configs/gpt_bytes_idle.py            # fine-tune (runs/gpt_bytes_idle)
           baobab generate runs/gpt_bytes_idle --prompt "IDLE now " --steps 120
Baseline:  the same steps from random weights:
           baobab train configs/gpt_bytes_idle.py finetune.init_from=null trainer.workdir=runs/gpt_bytes_idle_scratch
Hardware:  2-core x86_64 CPU, no GPU
Wall time: 300 steps in 1.5-3 min (0.2-0.55 s/step, with other jobs on the 2 cores)
Metric:    eval loss on the held-out IDLE text, nats/byte (token accuracy), measured
           2026-11-27 from the 1,500-step runs/gpt_bytes (its docstring's run):
             before fine-tuning (step 0, eval_at_start):  3.124  (0.211)
             after 300 steps:                             2.687  (0.265)
             baseline, same 300 steps from random init:   2.741  (0.240)
           lr 5e-4 instead of 1e-3 gave 2.729 (from scratch: 2.774).
"""

import pathlib

import idlelib

from baobab.data import TextData
from baobab.experiment import ExperimentConfig, FinetuneConfig, OptimizerConfig, ScheduleConfig, TrainerConfig
from baobab.models import GPT2Config


def idle_text_files() -> tuple[str, ...]:
    return tuple(sorted(str(p) for p in pathlib.Path(idlelib.__file__).parent.glob("*.txt")))


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="language_model",
        # The architecture of configs/gpt_bytes.py, so every pretrained array fits.
        model=GPT2Config(vocab_size=256, max_len=128, hidden_size=128, num_layers=4, num_heads=4),
        data=TextData(files=idle_text_files(), stdlib_limit=None, eval_fraction=0.34, seq_len=128, batch_size=16),
        optimizer=OptimizerConfig(kind="adamw", lr=1e-3, weight_decay=0.1, b2=0.99),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=20, final_fraction=0.1),
        trainer=TrainerConfig(workdir="runs/gpt_bytes_idle", steps=300, eval_every=100, eval_at_start=True),
        finetune=FinetuneConfig(init_from="runs/gpt_bytes"),
    )
