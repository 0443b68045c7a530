"""A small CNN on the embedded MNIST digits: the embedded default (`baobab train` with no CONFIG).

Command:   baobab train configs/mnist_cnn.py
Hardware:  2-core x86_64 CPU, no GPU (this repository's CI machine)
Wall time: 71 s for 400 steps, compile and eval included (load average ~5 from other jobs)
Metric:    eval accuracy 0.975 on the 1,000 held-out digits (train accuracy 0.987)
"""

from baobab.data import MnistData
from baobab.experiment import ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainerConfig
from baobab.models import CNNConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="classification",
        model=CNNConfig(channels=(32, 64), hidden=128, dropout=0.3),
        data=MnistData(batch_size=64),
        optimizer=OptimizerConfig(kind="adamw", lr=2e-3),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=40),
        trainer=TrainerConfig(workdir="runs/mnist_cnn", steps=400),
    )
