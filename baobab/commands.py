"""The commands that run an experiment: train, eval and generate, as Python functions.

``baobab train CONFIG`` is ``run_train(load_config(CONFIG))``; ``baobab eval RUN``
is ``run_eval(load_run(RUN))``; ``baobab generate RUN --prompt ...`` is
``generate_text``. Each takes a resolved ``ExperimentConfig``.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from baobab import data as bdata
from baobab import models, nn
from baobab import train as btrain
from baobab.config import to_json
from baobab.errors import ConfigError
from baobab.experiment import (ExperimentConfig, build_optimizer, check_fits, make_mesh, model_constructor, rules,
                               task_of)
from baobab.init_from import check_source as check_init_from
from baobab.init_from import pretrained_model
from baobab.run_assets import write_assets
from baobab.runs import has_checkpoint, restore_model, write_config
from baobab.text_stream import TextStream

__all__ = ["run_train", "run_eval", "generate_text"]

log = logging.getLogger("baobab")


def run_train(config: ExperimentConfig) -> btrain.TrainResult:
    """Train (or resume) the run in ``config.trainer.workdir``; write its resolved config."""
    btrain.initialize_distributed()  # before anything touches a device: multi-host launches need it first
    known = bdata.data_info(config.data)
    if known is not None:  # what the config alone shows (classes, vocabulary) fails before any data is read
        check_fits(config, known)
    pretrained = config.finetune.init_from and not has_checkpoint(config.trainer.workdir)
    if pretrained:
        check_init_from(config)  # the source's headers: a damaged file fails before the data is read
    mesh = make_mesh(config)
    train_data, eval_data, info = bdata.build_data(config.data, mesh=mesh, rules=rules(config),
                                                   seed=config.trainer.seed)
    check_fits(config, info)
    start = model_constructor(config)
    if pretrained:  # before anything is written: a bad init_from source leaves no half-made run directory
        start = pretrained_model(config, jax.random.split(jax.random.key(config.trainer.seed))[0], mesh=mesh,
                                 rules=rules(config))
    sched = config.schedule
    if sched.kind != "constant" and sched.warmup_steps >= config.trainer.steps:
        log.warning("schedule.warmup_steps = %d covers all trainer.steps = %d: the warmup is cut to %d steps and "
                    "the %s decay never runs. Set schedule.warmup_steps well below the step count.",
                    sched.warmup_steps, config.trainer.steps, config.trainer.steps - 1, sched.kind)
    with btrain.WorkdirLock(config.trainer.workdir):  # before the config is written: a live run keeps its own
        write_config(config)
        write_assets(config, info)  # tokenizer files, class names, generation settings
        task = task_of(config)
        iterator = iter(train_data)
        try:
            return btrain.train(start, task.loss, build_optimizer(config), iterator, config.trainer,
                                checkpoint=config.checkpoint, logging=config.logging, mesh=mesh,
                                rules=rules(config), tokens_key=task.tokens_key,
                                eval_fn=task.eval if eval_data else None, eval_data=eval_data,
                                config=json.loads(to_json(config)))
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()


def run_eval(config: ExperimentConfig) -> dict[str, float]:
    """Evaluate the newest checkpoint of a run over its exact eval split (read-only)."""
    mesh = make_mesh(config)
    _, eval_data, info = bdata.build_data(config.data, mesh=mesh, rules=rules(config), seed=config.trainer.seed)
    check_fits(config, info)
    if eval_data is None:
        raise ConfigError(f"data.kind = {config.data.kind!r} has no eval split configured")
    model, step = restore_model(config, mesh)
    metrics = btrain.evaluate(btrain.make_eval_step(task_of(config).eval, mesh=mesh, rules=rules(config)), model, eval_data(), mesh=mesh,
                              rules=rules(config))
    return {"step": step, **metrics}


def generate_text(config: ExperimentConfig, prompt: str, steps: int, *, temperature: float = 0.0,
                  top_k: int | None = None, top_p: float | None = None, seed: int = 0, stop: Sequence[str] = (),
                  eos_id: int | None = None, on_text: Callable[[str], None] | None = None) -> str:
    """The prompt continued by up to ``steps`` tokens of a language-model run's newest model.

    Tokens are decoded as they are made (``models.generate_stream``); ``on_text`` gets
    each piece of final text (``baobab generate`` prints them). Generation ends early at
    ``eos_id`` or at the first of the ``stop`` strings, which is not included.
    """
    if "language_model" not in getattr(type(config.model), "tasks", ()):
        raise ConfigError(f"model.kind = {config.model.kind!r} is not a language model (a task={config.task} "
                          f"run); generate needs a run with task=language_model (text) or task=text_to_image "
                          f"(images)")
    tokenizer = getattr(config.data, "tokenizer", "bytes")
    if tokenizer == "bytes":
        ids = list(prompt.encode("utf-8"))

        def decode(tokens):
            return bytes(int(t) for t in tokens if t < 256).decode("utf-8", errors="replace")
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tokenizer)
        ids = tok.encode(prompt).ids

        def decode(tokens):
            return tok.decode([int(t) for t in tokens])
    if not ids:
        raise ConfigError("--prompt is empty; give at least one character")
    model, _ = restore_model(config)
    stream = TextStream(decode, stop=stop)
    show = on_text or (lambda text: None)
    tokens = models.generate_stream(nn.eval_mode(model), jnp.asarray([ids], jnp.int32), steps,
                                    temperature=temperature, top_k=top_k, top_p=top_p, key=jax.random.key(seed),
                                    eos_id=eos_id)
    for token in tokens:
        if eos_id is not None and int(token[0]) == eos_id:
            break
        show(stream.push(int(token[0])))
        if stream.stopped:
            break
    tokens.close()
    show(stream.finish())
    return prompt + stream.text
