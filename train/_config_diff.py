"""What changed between a checkpoint's config and a resumed run's, and what follows from it.

Every checkpoint stores the run's resolved config (JSON). When a run resumes with a
different one, the loop logs each changed field by dotted path with its old and new
value, and what the change means for the run from the restored step on: a longer
``trainer.steps`` stretches the learning-rate schedule, a new ``data.batch_size``
changes what a step and a data position mean, a changed ``model.*`` will likely not
restore at all, and so on. Keys are those of ``baobab.experiment.ExperimentConfig``;
any other key gets the generic "takes effect from the restored step on".

>>> from baobab.train._config_diff import changes, describe
>>> old = {"trainer": {"steps": 400}, "optimizer": {"lr": 0.002, "kind": "adamw"}}
>>> new = {"trainer": {"steps": 800}, "optimizer": {"lr": 0.001, "kind": "adamw"}}
>>> changes(old, new)
[('optimizer.lr', 0.002, 0.001), ('trainer.steps', 400, 800)]
>>> print(describe(old, new, step=400)[1][:80] + " ...")
trainer.steps: 400 -> 800: the learning-rate schedule is recomputed over the new ...
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

__all__ = ["changes", "consequence", "describe", "ABSENT"]

#: Shown for a key that one of the two configs does not have.
ABSENT = "(absent)"

_LIKELY_FAILS = "restoring the checkpoint will likely fail (use a new trainer.workdir to start over)"

# (key or key prefix ending in ".", consequence). The first match wins; "{step}" is the restored step.
_RULES: tuple[tuple[str, str | Callable[[Any, Any], str]], ...] = (
    ("trainer.steps", "the learning-rate schedule is recomputed over the new step count (stretched or squeezed): "
                      "from step {step} on the learning rate follows the new schedule, not the one the run "
                      "started with"),
    ("schedule.", "the learning-rate schedule is rebuilt with the new setting: from step {step} on the learning "
                  "rate follows it"),
    ("optimizer.kind", "another optimizer keeps another state: " + _LIKELY_FAILS),
    ("optimizer.", "the optimizer keeps its saved state (moments, counts) and uses the new setting from step "
                   "{step} on"),
    ("model.", "the model's parameters may have other shapes or names: " + _LIKELY_FAILS + "; if it restores, "
               "the saved weights run under the new setting"),
    ("finetune.", "the trainable parameters or LoRA adapters may differ from the saved state: " + _LIKELY_FAILS),
    ("task", "the loss changes from step {step} on; a model built for another task may not restore"),
    ("data.batch_size", "a step now holds another number of examples: the saved data position and the step -> "
                        "examples mapping no longer match (baobab.data loaders refuse the saved position), and "
                        "examples/s and tokens/s are not comparable across the change"),
    ("data.", "the data stream differs from the saved one: baobab.data loaders refuse the saved position; other "
              "iterators continue wherever their restored state points"),
    ("trainer.seed", "the model and RNG key come from the checkpoint; only what is built anew uses the new seed "
                     "(in `baobab train`, the data order, which baobab.data loaders refuse to change mid-run)"),
    ("trainer.ema_decay", lambda old, new: (
        "an EMA appears in or disappears from the train state: " + _LIKELY_FAILS
        if old is None or new is None or ABSENT in (old, new) else
        "the EMA continues from its saved value with the new decay")),
    ("trainer.microbatches", "each batch is split into another number of microbatches: the same mean gradient "
                             "up to rounding, with another peak memory"),
    ("trainer.precision", "the step computes in the new precision from step {step} on; if the parameter dtype "
                          "changed, " + _LIKELY_FAILS),
    ("trainer.workdir", "the run continues in the new directory"),
    ("mesh.", "the state is resharded onto the new mesh as it is restored (values unchanged)"),
)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):  # an empty section has no leaves
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, old value, new value)]`` of every leaf that differs, sorted by key.

    A key present in only one config has ``ABSENT`` on the other side; lists are
    compared whole.
    """
    a, b = _flatten(old), _flatten(new)
    return [(key, a.get(key, ABSENT), b.get(key, ABSENT)) for key in sorted(set(a) | set(b))
            if a.get(key, ABSENT) != b.get(key, ABSENT)]


def _matches(key: str, pattern: str) -> bool:
    return key.startswith(pattern) if pattern.endswith(".") else key == pattern or key.startswith(pattern + ".")


def consequence(key: str, old: Any, new: Any, *, step: int) -> str:
    """What changing ``key`` from ``old`` to ``new`` means for a run resumed at ``step``."""
    for pattern, what in _RULES:
        if _matches(key, pattern):
            text = what(old, new) if callable(what) else what
            return text.format(step=step)
    return f"it takes effect from step {step} on"


def _show(value: Any) -> str:
    return value if value is ABSENT else json.dumps(value)


def describe(old: Mapping[str, Any], new: Mapping[str, Any], *, step: int) -> list[str]:
    """One line per changed key: ``key: old -> new: what follows``."""
    return [f"{key}: {_show(a)} -> {_show(b)}: {consequence(key, a, b, step=step)}"
            for key, a, b in changes(old, new)]
