"""A small DalleBart from captions ("a handwritten seven", "the digit 7") to the codes of configs/vqgan_mnist.py.

Command:   baobab train configs/vqgan_mnist.py
           baobab data encode-images runs/vqgan_mnist      # the digits as codes: runs/vqgan_mnist/mnist_codes
           baobab train configs/dalle_mnist.py
           baobab generate runs/dalle_mnist --prompt "number seven, written by hand" --num-images 16 --out grid.png
Hardware:  2-core x86_64 CPU, no GPU (this repository's CI machine)
Wall time: 9 min 50 s for 2,000 steps, encoding the digits with the VQGAN and evals included
           (load average ~5 from other jobs)
Metric:    eval loss 2.21 / token accuracy 0.36 on the test digits with the held-out phrasings.
           Generated digits named correctly by the configs/mnist_cnn.py run (16 images per digit
           and phrasing, top-k off, temperature 1; scripts/dalle_mnist_accuracy.py):

           condition_scale     1      2      3      5
           seen phrasings      0.917  0.952  0.951  0.877
           held-out phrasings  0.913  0.942  0.956  0.871

           Guidance helps up to about 3, then costs variety and legibility (1s, 6s and 9s first).
           docs/images/dalle_mnist_grid.png: one row per digit, "number {word}, written by hand"
           (held out), scale 3.

Training pairs each of the 4,000 training digits with each of ten phrasings; the eval
loss is on the 1,000 test digits with three phrasings training never sees
(``data.CaptionedMnistData``). The image tokens are the 8x8 codes in ``data.codes``;
generation decodes them with the VQGAN run that folder names.
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
        data=CaptionedMnistData(codes="runs/vqgan_mnist/mnist_codes", batch_size=64),
        optimizer=OptimizerConfig(kind="adamw", lr=1e-3),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=100),
        trainer=TrainerConfig(workdir="runs/dalle_mnist", steps=2000, eval_every=1000),
        checkpoint=CheckpointConfig(every=1000),
    )
