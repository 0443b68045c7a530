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
* ``tokens_key``: the batch key whose size counts tokens (for tokens/s), or None;
* ``reads``: other data tasks whose batches it can train on (``image_autoencoder``
  reads ``classification`` data: it uses the images and ignores the labels).

A model config says which tasks it runs (``tasks`` on the class, e.g.
``GPT2Config.tasks == ("language_model",)``), and so does a data config. ``TASKS``
is the one table; adding a task is one file with its functions plus one entry.

>>> from baobab.tasks import TASKS
>>> sorted(TASKS)
['classification', 'image_autoencoder', 'language_model', 'text_classification', 'text_to_image']
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
    reads: tuple[str, ...] = ()


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


# ----------------------------------------------------------------------------------------
# Image autoencoder (VQGAN): images -> codes -> images
# ----------------------------------------------------------------------------------------


def _autoencoder_terms(model, images, key):
    reconstruction, codes, quantizer = forward(model, images, key=key)  # (B, H, W, C), (B, h*w), {name: ()}
    error = (reconstruction.astype(jnp.float32) - images) ** 2  # (B, H, W, C)
    return error.mean(axis=(1, 2, 3)), codes, quantizer


def _autoencoder_loss(model, batch, key):
    """Pixel MSE plus the quantiser's codebook and commitment terms (a VQ-VAE objective).

    taming's adversarial and perceptual (LPIPS) terms are not part of it.
    """
    mse, codes, quantizer = _autoencoder_terms(model, batch["image"], key)
    used = jnp.zeros(model.config.n_embed, bool).at[codes.reshape(-1)].set(True)  # codes this batch used
    metrics = {"mse": mse.mean(), **quantizer, "codes_used": used.mean()}
    return mse.mean() + sum(quantizer.values()), metrics


def _autoencoder_eval(model, batch):
    mse, _, _ = _autoencoder_terms(model, batch["image"], None)
    return {"mse": mse, "psnr": -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))}  # PSNR for images in [0, 1]


def _autoencoder_batch(info, size: int) -> Shapes:
    return {"image": ((size, *info.image_shape), jnp.float32)}


def _autoencoder_check(m, info) -> list[str]:
    problems = _wrong_task(m, "image_autoencoder")
    if problems or not info.image_shape:
        return problems
    h, w, c = info.image_shape
    if (m.in_channels, m.out_channels) != (c, c):
        problems.append(f"model.in_channels = {m.in_channels} and model.out_channels = {m.out_channels}, but the "
                        f"images have {c} channels; set model.in_channels={c} model.out_channels={c}")
    factor = 2 ** (len(m.ch_mult) - 1)
    if h % factor or w % factor:
        problems.append(f"the {h}x{w} images do not divide by the model's downsampling factor {factor} "
                        f"(len(model.ch_mult) - 1 halvings); pad them (data.pad_to) or change model.ch_mult")
    return problems


# ----------------------------------------------------------------------------------------
# Text to image (DalleBart): caption ids + mask -> the image's VQGAN codes
# ----------------------------------------------------------------------------------------


def _image_token_terms(model, batch, key):
    codes = batch["image_codes"]  # (B, image_len)
    start = jnp.full((codes.shape[0], 1), model.config.decoder_start_token_id, codes.dtype)
    inputs = jnp.concatenate([start, codes[:, :-1]], axis=1)  # teacher forcing: the codes shifted right
    logits = forward(model, batch["text_ids"], batch["text_mask"].astype(bool), inputs, key=key)  # (B, T, V + 1)
    loss, correct = _cross_entropy(logits, codes)  # (B, T)
    return loss.mean(axis=1), correct.mean(axis=1)


def _image_token_loss(model, batch, key):
    loss, correct = _image_token_terms(model, batch, key)
    return loss.mean(), {"accuracy": correct.mean()}


def _image_token_eval(model, batch):
    loss, correct = _image_token_terms(model, batch, None)
    return {"loss": loss, "accuracy": correct}


def _image_token_batch(info, size: int) -> Shapes:
    return {"text_ids": ((size, info.seq_len), jnp.int32), "text_mask": ((size, info.seq_len), jnp.bool_),
            "image_codes": ((size, info.image_len), jnp.int32), "label": ((size,), jnp.int32)}


def _image_token_check(m, info) -> list[str]:
    problems = _wrong_task(m, "text_to_image")
    if problems:
        return problems
    wanted = {"image_vocab_size": info.image_vocab_size, "image_len": info.image_len}
    problems += [f"model.{k} = {getattr(m, k)} but the data's VQGAN makes {v}; set model.{k}={v}"
                 for k, v in wanted.items() if v is not None and getattr(m, k) != v]
    if info.vocab_size and m.text_vocab_size < info.vocab_size:
        problems.append(f"model.text_vocab_size = {m.text_vocab_size} is smaller than the captions' vocabulary "
                        f"({info.vocab_size}); set model.text_vocab_size={info.vocab_size}")
    if info.seq_len and m.max_text_len < info.seq_len:
        problems.append(f"model.max_text_len = {m.max_text_len} but data.text_len = {info.seq_len}; set "
                        f"model.max_text_len={info.seq_len}")
    return problems


#: The one table from ``task`` to its functions.
TASKS: dict[str, Task] = {
    "classification": Task("classification", _image_loss, _image_eval, _image_batch, _image_check),
    "text_classification": Task("text_classification", _text_loss, _text_eval, _text_batch, _text_check,
                                "input_ids"),
    "language_model": Task("language_model", _lm_loss, _lm_eval, _lm_batch, _lm_check, "tokens"),
    "image_autoencoder": Task("image_autoencoder", _autoencoder_loss, _autoencoder_eval, _autoencoder_batch,
                              _autoencoder_check, reads=("classification",)),
    "text_to_image": Task("text_to_image", _image_token_loss, _image_token_eval, _image_token_batch,
                          _image_token_check, "image_codes"),
}
