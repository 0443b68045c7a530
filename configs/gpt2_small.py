"""GPT-2 small (124M parameters), sized for real hardware; it does not train here.

Plan:      XLA_FLAGS=--xla_force_host_platform_device_count=8 baobab plan configs/gpt2_small.py mesh.data=2 mesh.fsdp=4
Hardware:  plan runs on a 2-core CPU with 8 fake devices; training wants GPUs/TPUs
Measured:  `baobab plan` on the 8 fake CPU devices (data=2 x fsdp=4): 124,475,904 parameters;
           per device 119 MiB parameters, 238 MiB Adam state, 119 MiB gradients; 2.6e12 FLOPs
           per device per step by XLA's cost analysis (7.0e12 executed, loops and remat counted);
           compile 21 s. The CPU backend reports 40 GiB of temporaries per device: plan for the
           real chip with `--topology` (docs/tpu_pods.md: 12.15 GiB per chip on v5p:2x2x2, fits).
"""

from baobab.data import TextData
from baobab.experiment import ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainerConfig
from baobab.models import GPT2Config


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="language_model",
        model=GPT2Config(vocab_size=50304, max_len=1024, hidden_size=768, num_layers=12, num_heads=12,
                         scan_layers=True, remat="dots_saveable"),
        data=TextData(seq_len=1024, batch_size=64),
        optimizer=OptimizerConfig(kind="adamw", lr=6e-4, weight_decay=0.1, b2=0.95),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=2000, final_fraction=0.1),
        trainer=TrainerConfig(workdir="runs/gpt2_small", steps=600_000,
                              precision="params=float32,compute=bfloat16,output=float32"),
    )
