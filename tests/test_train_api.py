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
    "log_to_stderr", "read_metrics", "train", "WorkdirLock",
]


def test_train_public_names_are_pinned():
    assert sorted(n for n in dir(train) if not n.startswith("_")) == sorted(TRAIN_PUBLIC)


def test_every_public_name_is_documented():
    for name in TRAIN_PUBLIC:
        obj = getattr(train, name)
        if callable(obj) and not isinstance(obj, dict) and not hasattr(obj, "__origin__"):
            assert (obj.__doc__ or "").strip(), f"train.{name} has no docstring"


def test_one_batch_sharding_for_train_and_data(mesh8):
    import jax
    import pytest

    from baobab import data
    from baobab.errors import ShapeMismatchError

    assert train.batch_sharding is data.batch_sharding
    P = jax.sharding.PartitionSpec
    assert train.batch_sharding(3, mesh=mesh8).spec == P(("data", "fsdp"), None, None)  # DEFAULT_RULES
    assert train.batch_sharding(0, mesh=mesh8, rules={"batch": "data"}).spec == P("data")
    sharding = train.batch_sharding(2, mesh=mesh8, rules={"batch": "data"}, rows=6)
    assert sharding.shard_shape((6, 5)) == (3, 5)
    with pytest.raises(ShapeMismatchError, match="a global batch of 6 rows does not divide by the 4 batch shards"):
        train.batch_sharding(1, mesh=mesh8, rows=6)
    with pytest.raises(KeyError, match="does not have"):
        train.batch_sharding(1, mesh=mesh8, rules={"batch": "rows"})


def test_one_settings_type_for_configs_and_the_loop():
    import pytest

    from baobab import experiment
    from baobab.errors import ConfigError

    sections = {"trainer": train.TrainerConfig, "checkpoint": train.CheckpointConfig,
                "logging": train.LoggingConfig, "mesh": train.MeshConfig}
    for name, cls in sections.items():
        assert getattr(experiment, cls.__name__) is cls
        assert type(getattr(experiment.ExperimentConfig(), name)) is cls
    assert train.CheckpointConfig().every == 500 and train.LoggingConfig().log_every == 50
    with pytest.raises(ConfigError, match=r"trainer.steps = 0: input should be greater than 0"):
        train.TrainerConfig(steps=0)
    with pytest.raises(ConfigError, match=r"logging.profile_steps: \(3, 2\) must be \(a, b\) with 1 <= a <= b"):
        train.LoggingConfig(profile_steps=(3, 2))
    with pytest.raises(TypeError, match=r"trainer=...\) takes a train.TrainerConfig, got dict"):
        train.train(None, None, None, [], {"steps": 3})
