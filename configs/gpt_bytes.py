"""A byte-level GPT on a real text corpus available offline: the Python standard
library's own source files (300 of them; every 20th file held out for eval).

Command:   baobab train configs/gpt_bytes.py
           baobab generate runs/gpt_bytes --prompt "def " --steps 200
Sharded:   baobab train configs/gpt_bytes.py mesh.data=1 mesh.fsdp=4 mesh.tensor=2
           (on 8 devices, e.g. XLA_FLAGS=--xla_force_host_platform_device_count=8)
Hardware:  2-core x86_64 CPU, no GPU
Wall time: 1,094 s for 1,500 steps (0.75 s/step, 2.7k tokens/s) while other jobs loaded the
           2 cores (load average ~5); not yet measured on a quiet machine
Metric:    eval loss 2.62 nats/byte (from 5.55 at init), eval token accuracy 0.343;
           train loss 2.15. Samples are still word-salad at this size and length:
           `baobab generate runs/gpt_bytes --prompt "import os" --temperature 0.8 --top-k 40`
           gave 'import osg.""] ... ycepione intulmtintucrs tund_ttur den ingioser bthfe at in'.
"""

from baobab.data import TextData
from baobab.experiment import ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainerConfig
from baobab.models import GPT2Config


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="language_model",
        model=GPT2Config(vocab_size=256, max_len=128, hidden_size=128, num_layers=4, num_heads=4),
        data=TextData(seq_len=128, batch_size=16, stdlib_limit=300),
        optimizer=OptimizerConfig(kind="adamw", lr=2e-3, weight_decay=0.1, b2=0.99),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=100, final_fraction=0.1),
        trainer=TrainerConfig(workdir="runs/gpt_bytes", steps=1500, eval_every=500),
    )
