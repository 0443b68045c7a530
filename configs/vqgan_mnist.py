"""A small VQGAN on the embedded MNIST digits, padded to 32x32: 8x8 codes from a 128-entry codebook.

Command:   baobab train configs/vqgan_mnist.py
Hardware:  2-core x86_64 CPU, no GPU (this repository's CI machine)
Wall time: 9 min 47 s for 1,500 steps, compile and evals included (load average ~5 from other jobs)
Metric:    eval MSE 0.0021 (PSNR 27.2 dB) on the 1,000 test digits, pixels in [0, 1];
           codebook: 101 of the 128 codes appear in the test digits' codes (perplexity 81.8),
           75 % of them in each training batch of 32 (train/codes_used)

The objective is a VQ-VAE's (task ``image_autoencoder``): pixel MSE plus the
quantiser's codebook and commitment terms, on images in [0, 1]. Its codes feed
``configs/dalle_mnist.py``.
"""

from baobab.data import MnistData
from baobab.experiment import ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainerConfig
from baobab.models import VQGANConfig
from baobab.train import CheckpointConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="image_autoencoder",
        model=VQGANConfig(resolution=32, in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1,
                          attn_resolutions=(), z_channels=32, embed_dim=16, n_embed=128, norm_groups=8),
        data=MnistData(batch_size=32, pad_to=32),
        optimizer=OptimizerConfig(kind="adamw", lr=2e-3),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=50),
        trainer=TrainerConfig(workdir="runs/vqgan_mnist", steps=1500, eval_every=500),
        checkpoint=CheckpointConfig(every=500),
    )
