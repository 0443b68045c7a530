"""The public surface of baobab.train, pinned: a change here is a deliberate API change."""

from baobab import train

TRAIN_PUBLIC = [
    # the contract
    "Batch", "EvalFn", "LossFn", "TrainState", "call_loss",
    # the run's settings (the config sections)
    "CheckpointConfig", "LoggingConfig", "MeshConfig", "TrainerConfig",
    # meshes, rules, batches, processes
    "STRATEGY_RULES", "batch_sharding", "distributed_environment",
    "initialize_distributed", "local_rows", "make_mesh", "put_batch",
    # optimizers, state, step, eval
    "NonFiniteError", "abstract_state", "adamw", "create_state", "evaluate", "jit_step",
    "leaf_paths", "learning_rate_of", "make_eval_step", "make_train_step", "only_trainable",
    "state_shardings", "weight_decay_mask",
    # checkpoints, metrics, the loop
    "CheckpointWarning", "Checkpointer", "MetricWriter", "Restored", "TrainResult", "finished_steps", "read_model",
    "log_to_stderr", "read_metrics", "train",
]


def test_train_public_names_are_pinned():
    assert sorted(n for n in dir(train) if not n.startswith("_")) == sorted(TRAIN_PUBLIC)


def test_every_public_name_is_documented():
    for name in TRAIN_PUBLIC:
        obj = getattr(train, name)
        if callable(obj) and not isinstance(obj, dict) and not hasattr(obj, "__origin__"):
            assert (obj.__doc__ or "").strip(), f"train.{name} has no docstring"
