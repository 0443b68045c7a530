"""A small CNN on the embedded MNIST digits: the embedded default (`baobab train` with no CONFIG).

Command:   baobab train configs/mnist_cnn.py
Hardware:  2-core x86_64 CPU, no GPU (this repository's CI machine)
Wall time: FILL
Metric:    FILL
"""

from baobab.data import MnistData
from baobab.experiment import ExperimentConfig, OptimizerConfig, TrainerConfig
from baobab.models import CNNConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=CNNConfig(channels=(32, 64), hidden=128, dropout=0.3),
        data=MnistData(batch_size=128),
        optimizer=OptimizerConfig(kind="adamw", lr=1e-3),
        trainer=TrainerConfig(workdir="runs/mnist_cnn", steps=600),
    )
