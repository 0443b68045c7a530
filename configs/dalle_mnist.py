"""A small DalleBart from captions ("a handwritten seven", "the digit 7") to the codes of configs/vqgan_mnist.py.

Command:   baobab train configs/vqgan_mnist.py && baobab train configs/dalle_mnist.py
           baobab generate runs/dalle_mnist --prompt "number seven, written by hand" --num-images 16 --out grid.png
Hardware:  2-core x86_64 CPU, no GPU (this repository's CI machine)
Wall time: (measuring)
Metric:    (measuring)

Training pairs each of the 4,000 training digits with each of ten phrasings; the eval
loss is on the 1,000 test digits with three phrasings training never sees
(``data.CaptionedMnistData``). The image tokens are the 8x8 codes of the VQGAN run
named by ``data.vqgan_run``.
"""

from baobab.data import CaptionedMnistData
from baobab.experiment import ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainerConfig
from baobab.models import DalleBartConfig
from baobab.train import CheckpointConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="text_to_image",
        model=DalleBartConfig(text_vocab_size=64, image_vocab_size=128, max_text_len=12, image_len=64, d_model=128,
                              encoder_layers=2, decoder_layers=3, encoder_heads=4, decoder_heads=4,
                              encoder_ffn=256, decoder_ffn=256, decoder_start_token_id=128),
        data=CaptionedMnistData(vqgan_run="runs/vqgan_mnist", batch_size=64),
        optimizer=OptimizerConfig(kind="adamw", lr=1e-3),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=100),
        trainer=TrainerConfig(workdir="runs/dalle_mnist", steps=2000, eval_every=1000),
        checkpoint=CheckpointConfig(every=1000),
    )
