"""Optimizers and learning-rate schedules by name: the ``optimizer`` and ``schedule`` sections.

``OPTIMIZERS`` maps a name to an optax optimizer factory: every optax optimizer that
takes a learning rate (``adamw``, ``adafactor``, ``lion``, ``sgd``, ``lamb``,
``rmsprop``, ``muon``, ...). ``OptimizerConfig.kind`` picks one; the common keywords
(``b1``, ``b2``, ``eps``, ``momentum``, ``mu_dtype``) are fields, and ``options`` passes
any other keyword of that optimizer. A keyword the optimizer does not take is an
error naming the ones it does. Weight decay skips biases and norm scales
(``train.weight_decay_mask``): decoupled for optimizers that take a decay (adamw,
lion, lamb, adafactor, ...), added to the gradient before the others (sgd, adam, ...).
``weight_decay=0`` means none, also for optimizers whose optax default decays.

``SCHEDULES`` maps a name to a schedule of ``optimizer.lr``: ``constant``, ``cosine``,
``linear``, ``inverse_sqrt`` and ``wsd`` (warmup-stable-decay), each after a linear
warmup of ``warmup_steps``.

>>> from baobab.optimizers import OptimizerConfig, ScheduleConfig, build_optimizer, build_schedule
>>> sched = build_schedule(ScheduleConfig(kind="wsd", warmup_steps=10, decay_fraction=0.2), 1e-3, steps=100)
>>> [round(float(sched(s)), 6) for s in (0, 10, 79, 90, 100)]
[0.0, 0.001, 0.001, 0.0005, 0.0]
>>> opt = build_optimizer(OptimizerConfig(kind="lion", lr=1e-4, mu_dtype="bfloat16"), sched)
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Callable, Literal, Optional

import jax.numpy as jnp
import optax
import pydantic

from baobab import train as btrain
from baobab.config import Config, ConfigError

__all__ = ["OptimizerConfig", "ScheduleConfig", "OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_schedule"]

_OPTAX_NAMES = ("adabelief", "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamaxw", "adamw", "adan",
                "amsgrad", "fromage", "lamb", "lars", "lion", "nadam", "nadamw", "noisy_sgd", "novograd",
                "optimistic_gradient_descent", "radam", "rmsprop", "rprop", "sgd", "sign_sgd", "sm3", "yogi")

#: name -> optax factory taking ``learning_rate`` first. ``muon`` comes from ``optax.contrib``.
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    name: getattr(optax, name) for name in _OPTAX_NAMES if hasattr(optax, name)}
if hasattr(optax.contrib, "muon"):
    OPTIMIZERS["muon"] = optax.contrib.muon

#: Defaults baobab sets where optax's differ from what a run expects (sgd: momentum 0.9).
_BAOBAB_DEFAULTS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9}}
#: Where each optimizer takes the decay and its mask, when it takes one itself.
_DECAY_KEYWORDS = (("weight_decay", "mask"), ("weight_decay", "weight_decay_mask"),
                   ("weight_decay_rate", "weight_decay_mask"), ("weight_decay", None))
_MOMENT_DTYPE_KEYWORDS = ("mu_dtype", "dtype_momentum", "accumulator_dtype")


class OptimizerConfig(Config):
    """The optimizer: ``kind`` is any name in ``OPTIMIZERS``; unset keywords keep optax's defaults.

    ``mu_dtype`` stores the first moment (momentum) in that dtype, e.g. ``"bfloat16"``,
    while the parameters stay in their own dtype. ``options`` holds any other keyword
    of the chosen optimizer, e.g. ``options={"nesterov": True}``.
    """

    kind: str = "adamw"
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.0, ge=0)
    b1: Optional[float] = None
    b2: Optional[float] = None
    eps: Optional[float] = None
    momentum: Optional[float] = None
    mu_dtype: Optional[str] = None
    clip_norm: Optional[float] = 1.0
    options: dict[str, Any] = {}

    @pydantic.field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in OPTIMIZERS:
            close = difflib.get_close_matches(kind, list(OPTIMIZERS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown optimizer {kind!r}; {hint}valid kinds: {', '.join(sorted(OPTIMIZERS))}")
        return kind

    @pydantic.field_validator("mu_dtype")
    @classmethod
    def _dtype(cls, name: Optional[str]) -> Optional[str]:
        if name is not None:
            try:
                jnp.dtype(name)
            except TypeError:
                raise ValueError(f"{name!r} is not a dtype; use e.g. bfloat16 or float32") from None
        return name


class ScheduleConfig(Config):
    """The learning-rate schedule, as a multiple of ``optimizer.lr``, after ``warmup_steps``.

    ``final_fraction`` is the multiple reached at the last step (cosine, linear, wsd);
    ``decay_fraction`` is the share of the run that ``wsd`` spends decaying.
    """

    kind: Literal["constant", "cosine", "linear", "inverse_sqrt", "wsd"] = "cosine"
    warmup_steps: int = pydantic.Field(0, ge=0)
    final_fraction: float = pydantic.Field(0.0, ge=0, le=1)
    decay_fraction: float = pydantic.Field(0.1, gt=0, le=1)


def _warmup_then(peak: float, warmup: int, after: optax.Schedule) -> optax.Schedule:
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def _cosine(cfg: ScheduleConfig, peak: float, steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, steps - 1)
    return optax.warmup_cosine_decay_schedule(0.0 if warmup else peak, peak, warmup, max(steps, warmup + 1),
                                              end_value=peak * cfg.final_fraction)


def _linear(cfg: ScheduleConfig, peak: float, steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, steps - 1)
    return _warmup_then(peak, warmup, optax.linear_schedule(peak, peak * cfg.final_fraction, steps - warmup))


def _constant(cfg: ScheduleConfig, peak: float, steps: int) -> optax.Schedule:
    return _warmup_then(peak, min(cfg.warmup_steps, steps - 1), optax.constant_schedule(peak))


def _inverse_sqrt(cfg: ScheduleConfig, peak: float, steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, steps - 1)
    scale = math.sqrt(max(warmup, 1))
    return _warmup_then(peak, warmup, lambda s: peak * scale / jnp.sqrt(jnp.maximum(s + warmup, max(warmup, 1))))


def _wsd(cfg: ScheduleConfig, peak: float, steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, steps - 1)
    decay = max(1, min(round(steps * cfg.decay_fraction), steps - warmup))
    stable = optax.constant_schedule(peak)
    down = optax.linear_schedule(peak, peak * cfg.final_fraction, decay)
    return _warmup_then(peak, warmup, optax.join_schedules([stable, down], [steps - warmup - decay]))


#: name -> ``(config, peak_lr, steps) -> optax schedule``.
SCHEDULES: dict[str, Callable[[ScheduleConfig, float, int], optax.Schedule]] = {
    "constant": _constant, "cosine": _cosine, "linear": _linear, "inverse_sqrt": _inverse_sqrt, "wsd": _wsd}


def build_schedule(config: ScheduleConfig, peak_lr: float, *, steps: int) -> optax.Schedule:
    """The schedule of ``config`` for a run of ``steps`` steps peaking at ``peak_lr``."""
    return SCHEDULES[config.kind](config, peak_lr, steps)


def _keywords(config: OptimizerConfig, accepted: set[str]) -> dict[str, Any]:
    """The optimizer's keyword arguments from the config, each checked against ``accepted``."""
    chosen = dict(_BAOBAB_DEFAULTS.get(config.kind, {}))
    chosen.update({k: getattr(config, k) for k in ("b1", "b2", "eps", "momentum") if getattr(config, k) is not None})
    if config.mu_dtype is not None:
        key = next((k for k in _MOMENT_DTYPE_KEYWORDS if k in accepted), None)
        if key is None:
            raise ConfigError(f"optimizer.mu_dtype: {config.kind} keeps no moment whose dtype can be set; "
                              f"unset it, or use an optimizer with momentum (adamw, lion, sgd, ...)")
        chosen[key] = jnp.dtype(config.mu_dtype)
    chosen.update(config.options)
    unknown = sorted(k for k in chosen if k not in accepted)
    if unknown:
        where = ", ".join(f"optimizer.{k}" if k in ("b1", "b2", "eps", "momentum") else f"optimizer.options.{k}"
                          for k in unknown)
        raise ConfigError(f"{where}: optax.{config.kind} takes no such keyword; it takes "
                          f"{', '.join(sorted(accepted))}")
    return chosen


def build_optimizer(config: OptimizerConfig, learning_rate: float | optax.Schedule) -> optax.GradientTransformation:
    """The optax optimizer of ``config`` with clipping, the weight-decay mask and a visible LR.

    The learning rate is injected as a hyperparameter (``optax.inject_hyperparams``),
    so ``train.learning_rate_of`` can read and log it.
    """
    factory = OPTIMIZERS[config.kind]
    accepted = set(inspect.signature(factory).parameters) - {"learning_rate"}
    kwargs = _keywords(config, accepted)
    coupled_decay = None
    decay, mask = next(((d, m) for d, m in _DECAY_KEYWORDS if d in accepted and (m is None or m in accepted)),
                       (None, None))
    if decay is not None:  # always passed: optax's own defaults decay (adamw 1e-4, lion 1e-3)
        kwargs[decay] = config.weight_decay
        if mask is not None and config.weight_decay:  # the mask *function*: modules are callable
            kwargs[mask] = btrain.weight_decay_mask
    elif config.weight_decay:
        coupled_decay = optax.add_decayed_weights(config.weight_decay, mask=btrain.weight_decay_mask)

    def make(learning_rate: Any) -> optax.GradientTransformation:
        parts = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
        parts += [coupled_decay] if coupled_decay is not None else []
        parts.append(factory(learning_rate, **kwargs))
        return parts[0] if len(parts) == 1 else optax.chain(*parts)

    return optax.inject_hyperparams(make)(learning_rate=learning_rate)
