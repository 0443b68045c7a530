"""What a resumed run says about its changed config: the diff and its consequences, on hand-made dicts."""

from baobab.train._config_diff import ABSENT, changes, consequence, describe

OLD = {
    "task": "classification",
    "trainer": {"steps": 400, "seed": 0, "ema_decay": None, "workdir": "runs/a"},
    "optimizer": {"kind": "adamw", "lr": 0.002, "betas": [0.9, 0.999]},
    "schedule": {"kind": "cosine", "warmup_steps": 40},
    "data": {"kind": "mnist", "batch_size": 64},
    "model": {"kind": "cnn", "width": 32},
    "mesh": {"data": -1, "fsdp": 1},
    "logging": {"log_every": 50},
}


def changed(**sections):
    new = {k: (dict(v) if isinstance(v, dict) else v) for k, v in OLD.items()}
    for dotted, value in sections.items():
        section, key = dotted.split("__")
        new[section][key] = value
    return new


def test_no_change_is_no_line():
    assert changes(OLD, OLD) == [] and describe(OLD, OLD, step=400) == []


def test_every_changed_leaf_is_named_by_dotted_path_with_both_values():
    new = changed(trainer__steps=800, optimizer__lr=0.001, optimizer__betas=[0.9, 0.95])
    assert changes(OLD, new) == [("optimizer.betas", [0.9, 0.999], [0.9, 0.95]), ("optimizer.lr", 0.002, 0.001),
                                 ("trainer.steps", 400, 800)]
    lines = describe(OLD, new, step=400)
    assert lines[0].startswith("optimizer.betas: [0.9, 0.999] -> [0.9, 0.95]: ")
    assert lines[1].startswith("optimizer.lr: 0.002 -> 0.001: the optimizer keeps its saved state")
    assert lines[2].startswith("trainer.steps: 400 -> 800: the learning-rate schedule is recomputed over the new "
                               "step count (stretched")
    assert "from step 400 on" in lines[2]


def test_added_and_removed_keys_are_shown_as_absent():
    new = changed()
    del new["logging"]["log_every"]
    new["trainer"]["precision"] = "params=float32,compute=bfloat16,output=float32"
    assert changes(OLD, new) == [("logging.log_every", 50, ABSENT),
                                 ("trainer.precision", ABSENT, "params=float32,compute=bfloat16,output=float32")]
    assert describe(OLD, new, step=1)[0] == "logging.log_every: 50 -> (absent): it takes effect from step 1 on"


def test_each_kind_of_change_says_what_follows():
    def said(key, old, new):
        return consequence(key, old, new, step=400)

    assert "stretched" in said("trainer.steps", 400, 800)
    assert "schedule is rebuilt" in said("schedule.warmup_steps", 40, 80)
    assert "will likely fail" in said("optimizer.kind", "adamw", "sgd")
    assert "will likely fail" in said("model.width", 32, 64)
    assert "will likely fail" in said("finetune.lora.rank", 4, 8)
    batch = said("data.batch_size", 64, 128)
    assert "data position" in batch and "examples/s" in batch
    assert "refuse the saved position" in said("data.kind", "mnist", "prepared")
    assert "resharded" in said("mesh.fsdp", 1, 8)
    assert "will likely fail" in said("trainer.ema_decay", None, 0.999)  # an EMA appears in the state
    assert "continues" in said("trainer.ema_decay", 0.99, 0.999)
    assert said("logging.log_every", 50, 10) == "it takes effect from step 400 on"
    assert said("steps", 6, 12) == "it takes effect from step 400 on"  # a flat config, not an experiment's


def test_a_prefix_matches_whole_segments_only():
    assert "schedule" not in consequence("trainer.stepsize", 1, 2, step=3)  # not trainer.steps
    assert "loss changes" in consequence("task", "a", "b", step=3)
    assert "loss changes" not in consequence("tasks_extra", "a", "b", step=3)
