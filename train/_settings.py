"""How a run is set up: the ``trainer``, ``checkpoint``, ``logging`` and ``mesh`` sections.

These typed sections are what ``train.train`` takes and what an experiment config
holds (``baobab.experiment.ExperimentConfig`` composes them under the same names),
so a key means one thing everywhere: ``trainer.steps`` in a config file, the
override ``trainer.steps=800`` and ``train.train(..., TrainerConfig(steps=800))``
are one field with one default. Knobs that no config file sets (a mesh object,
rule tables, ``tokens_key``, ``resume``, ``handle_signals``) are keyword arguments
of ``train.train`` instead.

Sections are frozen pydantic models (``baobab.config.Config``): unknown keys and
wrong types are refused by name. Built directly in Python, a bad value raises
``baobab.errors.ConfigError`` naming the dotted key, as an override would:

>>> from baobab import train
>>> train.TrainerConfig(steps=0)
Traceback (most recent call last):
...
baobab.errors.ConfigError: trainer.steps = 0: input should be greater than 0
>>> train.MeshConfig(data=2, fsdp=-1).resolve(8)
(2, 4, 1)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Optional

import pydantic

from baobab.config import Config
from baobab.errors import ConfigError

__all__ = ["TrainerConfig", "CheckpointConfig", "LoggingConfig", "MeshConfig"]

AXES = ("data", "fsdp", "tensor")


def _explain(err: pydantic.ValidationError, section: str) -> str:
    """A pydantic error as ``section.key = value: what is wrong``, one clause per problem."""
    parts = []
    for e in err.errors():
        loc = ".".join([section, *(str(p) for p in e["loc"])])
        ctx = e.get("ctx") or {}
        if e["type"] == "extra_forbidden":
            parts.append(f"{loc}: no such key")
        elif e["type"] == "value_error":  # a validator's own message
            parts.append(f"{loc}: {ctx.get('error') or e['msg']}")
        else:
            msg = e["msg"][0].lower() + e["msg"][1:]
            parts.append(f"{loc} = {e.get('input')!r}: {msg}")
    return "; ".join(parts)


class _Section(Config):
    """A config section whose direct construction reports errors by dotted key."""

    section: ClassVar[str] = ""

    def __init__(self, /, **values: Any) -> None:
        try:
            super().__init__(**values)
        except pydantic.ValidationError as err:
            raise ConfigError(_explain(err, type(self).section)) from None

    # This __init__ only validates, as pydantic's own does: so mark it like pydantic marks its
    # own (and RootModel's), and nested validation (an ExperimentConfig from a dict) skips it and
    # reports errors by the full path itself.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


class TrainerConfig(_Section):
    """Where and how long to train (``trainer.*``).

    Attributes:
        workdir: the run directory (checkpoints/, metrics.jsonl, tensorboard/, profile/).
        steps: total train steps; a resumed run continues to this count.
        seed: seeds model init, the run's RNG key and (in ``baobab train``) the data order.
        microbatches: gradient-accumulation steps inside each step.
        precision: an ``nn.Policy`` string, e.g. ``"params=float32,compute=bfloat16,output=float32"``.
        ema_decay: keep an EMA of the weights with this decay (None: no EMA).
        eval_every: steps between evals (0: only at the end); needs ``eval_fn``/``eval_data``.
        eval_at_start: also evaluate the starting model of a fresh run, at step 0 (a
            fine-tune's "before"; a resumed run does not repeat it).
        on_nonfinite: ``"stop"`` (raise ``NonFiniteError``) or ``"skip"`` (drop the update, warn).
    """

    section: ClassVar[str] = "trainer"

    workdir: str = "runs/default"
    steps: int = pydantic.Field(1000, gt=0)
    seed: int = 0
    microbatches: int = pydantic.Field(1, ge=1)
    precision: Optional[str] = None
    ema_decay: Optional[float] = None
    eval_every: int = pydantic.Field(0, ge=0)
    eval_at_start: bool = False
    on_nonfinite: Literal["stop", "skip"] = "stop"


class CheckpointConfig(_Section):
    """When to checkpoint and what to keep (``checkpoint.*``).

    Attributes:
        every: steps between checkpoints (0: only at the end and on a signal).
        keep: keep the newest ``keep`` checkpoints...
        keep_every: ...plus every checkpoint whose step is a multiple of this.
        async_save: write checkpoints in the background.
    """

    section: ClassVar[str] = "checkpoint"

    every: int = pydantic.Field(500, ge=0)
    keep: int = pydantic.Field(3, ge=1)
    keep_every: Optional[int] = None
    async_save: bool = True


class LoggingConfig(_Section):
    """What the run prints and records (``logging.*``).

    Attributes:
        log_every: steps per metrics record (a line of metrics.jsonl, a log line or a
            progress-bar update); reading metrics is the loop's only regular host sync.
        progress: True: a tqdm bar; False: plain log lines; None: a bar only when stderr
            is a terminal, plain log lines otherwise.
        profile_steps: ``(a, b)``: a ``jax.profiler`` trace of steps a..b in ``workdir/profile``.
    """

    section: ClassVar[str] = "logging"

    log_every: int = pydantic.Field(50, ge=1)
    progress: Optional[bool] = None
    profile_steps: Optional[tuple[int, int]] = None

    @pydantic.field_validator("profile_steps")
    @classmethod
    def _steps_in_order(cls, steps: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
        if steps is not None and not 1 <= steps[0] <= steps[1]:
            raise ValueError(f"{steps} must be (a, b) with 1 <= a <= b (step numbers)")
        return steps


class MeshConfig(_Section):
    """Sizes of the ``data``, ``fsdp`` and ``tensor`` mesh axes, and the sharding rules (``mesh.*``).

    ``-1`` is "all the devices the other axes leave" (one axis at most). Every mesh
    has the three axes, so one rule table fits all of them; an axis of size 1 splits
    nothing. ``rules`` names a table of ``train.STRATEGY_RULES``. ``topology`` names a
    TPU slice (e.g. ``"v5p:4x4x4"``, see ``baobab.tpu``) that ``baobab plan`` compiles
    for; training runs on the devices the process has, and ignores it.

    >>> from baobab import train
    >>> train.MeshConfig(tensor=2).resolve(8)
    (4, 1, 2)
    >>> train.MeshConfig(data=2, fsdp=8).resolve(8)
    Traceback (most recent call last):
    ...
    baobab.errors.ConfigError: mesh.data = 2, mesh.fsdp = 8, mesh.tensor = 1 needs 16 devices, but there are 8: ...
    """

    section: ClassVar[str] = "mesh"

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: Literal["default", "data_parallel", "fsdp", "tensor_parallel"] = "default"
    topology: Optional[str] = None

    @pydantic.field_validator(*AXES)
    @classmethod
    def _size(cls, size: int) -> int:
        if size < 1 and size != -1:
            raise ValueError(f"{size} is not a size: give a positive int, or -1 for the rest of the devices")
        return size

    @pydantic.model_validator(mode="after")
    def _one_rest(self) -> "MeshConfig":
        rest = [f"mesh.{name}" for name in AXES if getattr(self, name) == -1]
        if len(rest) > 1:
            raise ValueError(f"{' and '.join(rest)} are both -1; at most one axis may take the rest of the "
                             f"devices: give the others a size")
        return self

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """The concrete ``(data, fsdp, tensor)`` sizes for ``num_devices`` devices."""
        sizes = (self.data, self.fsdp, self.tensor)
        given = ", ".join(f"mesh.{name} = {size}" for name, size in zip(AXES, sizes, strict=True))
        fixed = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % fixed:
                raise ConfigError(
                    f"{given}: the {num_devices} devices do not divide by the fixed axes' product {fixed}; "
                    f"give the fixed axes sizes whose product divides {num_devices}")
            return tuple(num_devices // fixed if s == -1 else s for s in sizes)  # type: ignore[return-value]
        if fixed != num_devices:
            raise ConfigError(
                f"{given} needs {fixed} devices, but there are {num_devices}: give sizes whose product is "
                f"{num_devices}, or -1 for one axis to take the rest (e.g. mesh.data=-1)")
        return sizes
