"""Tasks: what a run optimises and measures, named by the config's ``task`` key.

A ``Task`` is a record of plain functions:

* ``loss(model, batch, key) -> (loss, metrics)``: the training loss (the train
  step's ``loss_fn``);
* ``eval(model, batch) -> {name: (B,) per-example values}``: eval metrics, summed
  exactly over the eval split by ``train.evaluate``;
* ``batch(info, batch_size) -> {key: (shape, dtype)}``: the batch it reads, for
  compiling ahead of time (``baobab plan``);
* ``check(model_config, info) -> [problem, ...]``: whether a model fits the data
  (classes, image shape, vocabulary, positions), each problem naming the key to set;
* ``tokens_key``: the batch key whose size counts tokens (for tokens/s), or None.

A model config says which tasks it runs (``tasks`` on the class, e.g.
``GPT2Config.tasks == ("language_model",)``), and so does a data config. ``TASKS``
is the one table; adding a task is one file with its functions plus one entry.

>>> from baobab.tasks import TASKS
>>> sorted(TASKS)
['classification', 'language_model', 'text_classification']
>>> TASKS["language_model"].tokens_key
'tokens'
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from baobab import nn
from baobab.errors import ConfigError

__all__ = ["Task", "TASKS", "forward"]

Shapes = dict[str, tuple[tuple[int, ...], Any]]


@dataclasses.dataclass(frozen=True)
class Task:
    """One row of ``TASKS``; see the module docstring for each function's contract."""

    name: str
    loss: Callable[[nn.Module, Mapping[str, jax.Array], Optional[jax.Array]], Any]
    eval: Callable[[nn.Module, Mapping[str, jax.Array]], dict[str, jax.Array]]
    batch: Callable[[Any, int], Shapes]
    check: Callable[[Any, Any], list[str]]
    tokens_key: Optional[str] = None


def forward(model: nn.Module, *inputs: jax.Array, key: jax.Array | None, **packing: jax.Array) -> jax.Array:
    """``model(*inputs, key=key, **packing)``; the key only when the model takes one (dropout).

    ``packing`` (``segment_ids=``, ``positions=``) is what packed data produced; a model
    that cannot take it is refused, since it would attend across documents.
    """
    parameters = inspect.signature(type(model).__call__).parameters
    missing = [name for name in packing if name not in parameters]
    if missing:
        raise ConfigError(
            f"the data is packed (several documents per row) but {type(model).__name__}.__call__ takes no "
            f"{', '.join(missing)}: it would attend across documents. Give the model segment_ids= and "
            f"positions= keyword arguments, as the zoo's GPT2 and Llama have."
        )
    if key is not None and "key" in parameters:
        return model(*inputs, key=key, **packing)
    return model(*inputs, **packing)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = logits.astype(jnp.float32)  # (B, classes)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss, (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def _wrong_task(model_config: Any, task: str) -> list[str]:
    runs = getattr(type(model_config), "tasks", ())
    if task in runs:
        return []
    return [f"model.kind = {model_config.kind!r} runs {', '.join(runs) or 'no task'}, not task={task}; "
            f"choose a model for {task} or set task={runs[0] if runs else '...'}"]


# ----------------------------------------------------------------------------------------
# Image classification
# ----------------------------------------------------------------------------------------


def _image_loss(model, batch, key):
    loss, correct = _cross_entropy(forward(model, batch["image"], key=key), batch["label"])
    return loss.mean(), {"accuracy": correct.mean()}


def _image_eval(model, batch):
    loss, correct = _cross_entropy(model(batch["image"]), batch["label"])
    return {"loss": loss, "accuracy": correct}


def _image_batch(info, size: int) -> Shapes:
    return {"image": ((size, *info.image_shape), jnp.float32), "label": ((size,), jnp.int32)}


def _image_check(m, info) -> list[str]:
    problems = _wrong_task(m, "classification")
    if problems:
        return problems
    if getattr(m, "num_classes", info.num_classes) != info.num_classes:
        problems.append(f"model.num_classes = {m.num_classes} but the data has {info.num_classes} classes; "
                        f"set model.num_classes={info.num_classes}")
    if info.image_shape and hasattr(m, "image_size"):
        h, w, c = info.image_shape
        if m.image_size != h or getattr(m, "in_channels", c) != c:
            problems.append(f"model expects {m.image_size}x{m.image_size}x{getattr(m, 'in_channels', c)} "
                            f"images, the data has {h}x{w}x{c}; set model.image_size={h}"
                            + (f" model.in_channels={c}" if hasattr(m, "in_channels") else ""))
    return problems


# ----------------------------------------------------------------------------------------
# Text classification: input_ids + attention_mask -> a label
# ----------------------------------------------------------------------------------------


def _text_loss(model, batch, key):
    logits = forward(model, batch["input_ids"], batch["attention_mask"], key=key)  # (B, classes)
    loss, correct = _cross_entropy(logits, batch["label"])
    return loss.mean(), {"accuracy": correct.mean()}


def _text_eval(model, batch):
    loss, correct = _cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["label"])
    return {"loss": loss, "accuracy": correct}


def _text_batch(info, size: int) -> Shapes:
    return {"input_ids": ((size, info.seq_len), jnp.int32), "attention_mask": ((size, info.seq_len), jnp.int32),
            "label": ((size,), jnp.int32)}


def _text_check(m, info) -> list[str]:
    problems = _wrong_task(m, "text_classification")
    if problems:
        return problems
    if m.num_classes != info.num_classes:
        problems.append(f"model.num_classes = {m.num_classes} but the data has {info.num_classes} classes; "
                        f"set model.num_classes={info.num_classes}")
    if m.vocab_size < (info.vocab_size or 0):
        problems.append(f"model.vocab_size = {m.vocab_size} is smaller than the tokenizer's "
                        f"{info.vocab_size}; use the model's own tokenizer.json as data.tokenizer")
    if m.max_len < (info.seq_len or 0):
        problems.append(f"the model handles {m.max_len} positions but data.seq_len = {info.seq_len}")
    return problems


# ----------------------------------------------------------------------------------------
# Language modelling: next-token prediction on packed rows
# ----------------------------------------------------------------------------------------


def _lm_terms(model, batch, key):
    """Per-token loss, correctness and weight. On packed rows the model gets the input's
    segment ids and in-document positions (documents stay apart in attention), and a
    target counts only where it continues the input's document: not padding, and not
    the first token of the next document, which nothing before it in its row can predict."""
    tokens = batch["tokens"]  # (B, T + 1)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T)
    seg, pos = batch.get("tokens_segment_ids"), batch.get("tokens_positions")
    packing = {} if seg is None else {"segment_ids": seg[:, :-1]}
    if pos is not None:
        packing["positions"] = pos[:, :-1]
    logits = forward(model, inputs, key=key, **packing).astype(jnp.float32)  # (B, T, vocab)
    if seg is None:
        weight = jnp.ones(targets.shape, jnp.float32)
    else:
        weight = ((seg[:, 1:] > 0) & (seg[:, 1:] == seg[:, :-1])).astype(jnp.float32)  # (B, T)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weight  # (B, T)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32) * weight
    return loss, correct, weight


def _lm_loss(model, batch, key):
    loss, correct, weight = _lm_terms(model, batch, key)
    n = jnp.maximum(weight.sum(), 1.0)
    return loss.sum() / n, {"token_accuracy": correct.sum() / n}


def _lm_eval(model, batch):
    loss, correct, weight = _lm_terms(model, batch, None)
    n = jnp.maximum(weight.sum(-1), 1.0)  # (B,)
    return {"loss": loss.sum(-1) / n, "token_accuracy": correct.sum(-1) / n}


def _lm_batch(info, size: int) -> Shapes:
    t = info.seq_len + 1
    return {"tokens": ((size, t), jnp.int32), "tokens_segment_ids": ((size, t), jnp.int32),
            "tokens_positions": ((size, t), jnp.int32)}


def _lm_check(m, info) -> list[str]:
    problems = _wrong_task(m, "language_model")
    if problems:
        return problems
    if m.vocab_size < (info.vocab_size or 0):
        return [f"model.vocab_size = {m.vocab_size} is smaller than the tokenizer's {info.vocab_size}; "
                f"set model.vocab_size={info.vocab_size}"]
    max_len = getattr(m, "max_len", None)
    if max_len is not None and info.seq_len and max_len < info.seq_len:
        return [f"the model handles {max_len} positions but data.seq_len = {info.seq_len}"]
    return []


#: The one table from ``task`` to its functions.
TASKS: dict[str, Task] = {
    "classification": Task("classification", _image_loss, _image_eval, _image_batch, _image_check),
    "text_classification": Task("text_classification", _text_loss, _text_eval, _text_batch, _text_check,
                                "input_ids"),
    "language_model": Task("language_model", _lm_loss, _lm_eval, _lm_batch, _lm_check, "tokens"),
}
