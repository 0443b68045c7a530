"""A ~1.2B-parameter Llama (Llama-3.2-1B shape: GQA, RoPE with llama3 scaling,
RMSNorm, SwiGLU, tied embeddings), sized for real hardware; it does not train here.

Plan:      XLA_FLAGS=--xla_force_host_platform_device_count=8 baobab plan configs/llama_1b.py mesh.data=1 mesh.fsdp=8
Hardware:  plan runs on a 2-core CPU with 8 fake devices; training wants GPUs/TPUs
Measured:  see docs/tpu_pods.md for real `baobab plan --topology` output of this config
           (v5e:4x4: data-parallel needs 17.55 GiB per 16 GiB chip and does not fit;
           mesh.data=8 mesh.fsdp=2 fits at 9.26 GiB). The 8-fake-CPU-device plan was not run.
"""

from baobab.data import TextData
from baobab.experiment import ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainerConfig
from baobab.models import LlamaConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="language_model",
        model=LlamaConfig(vocab_size=128256, max_len=131072, hidden_size=2048, num_layers=16, num_heads=32,
                          num_kv_heads=8, intermediate_size=8192, scan_layers=True, remat="nothing_saveable"),
        data=TextData(seq_len=2048, batch_size=32),
        optimizer=OptimizerConfig(kind="adamw", lr=3e-4, weight_decay=0.1, b2=0.95),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=2000, final_fraction=0.1),
        trainer=TrainerConfig(workdir="runs/llama_1b", steps=250_000,
                              precision="params=float32,compute=bfloat16,output=float32"),
    )
