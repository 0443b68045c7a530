"""baobab.train: one jitted, donating train step and one readable loop around it.

Start with ``_core.py``: its docstring is the contract (what a step is) that the
rest builds on. ``_loop.py`` holds ``train``, the loop itself, read top to bottom.
The public names are re-exported explicitly below and pinned by
``tests/test_train_api.py``.
"""

# The contract: state, loss and eval functions.
from ._core import Batch as Batch
from ._core import EvalFn as EvalFn
from ._core import LossFn as LossFn
from ._core import TrainState as TrainState
from ._core import call_loss as call_loss

# The run's settings: the trainer, checkpoint, logging and mesh config sections.
from ._settings import CheckpointConfig as CheckpointConfig
from ._settings import LoggingConfig as LoggingConfig
from ._settings import MeshConfig as MeshConfig
from ._settings import TrainerConfig as TrainerConfig

# Meshes, rules and batches.
from ._mesh import STRATEGY_RULES as STRATEGY_RULES
from ._mesh import batch_sharding as batch_sharding
from ._mesh import local_rows as local_rows
from ._mesh import make_mesh as make_mesh
from ._mesh import put_batch as put_batch
from ._distributed import distributed_environment as distributed_environment
from ._distributed import initialize_distributed as initialize_distributed

# Optimizers, the state and the step.
from ._optim import adamw as adamw
from ._optim import learning_rate_of as learning_rate_of
from ._optim import only_trainable as only_trainable
from ._optim import weight_decay_mask as weight_decay_mask
from ._state import abstract_state as abstract_state
from ._state import create_state as create_state
from ._state import state_shardings as state_shardings
from ._step import jit_step as jit_step
from ._step import make_train_step as make_train_step
from ._nonfinite import NonFiniteError as NonFiniteError
from ._nonfinite import leaf_paths as leaf_paths
from ._eval import evaluate as evaluate
from ._eval import make_eval_step as make_eval_step

# Checkpoints, metrics and the loop.
from ._checkpoint import Checkpointer as Checkpointer
from ._checkpoint import CheckpointWarning as CheckpointWarning
from ._checkpoint import Restored as Restored
from ._checkpoint_read import finished_steps as finished_steps
from ._checkpoint_read import read_model as read_model
from ._workdir_lock import WorkdirLock as WorkdirLock
from ._metrics import MetricWriter as MetricWriter
from ._metrics import read_metrics as read_metrics
from ._report import TrainResult as TrainResult
from ._report import log_to_stderr as log_to_stderr
from ._loop import train as train
