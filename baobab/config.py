"""Typed configuration: frozen pydantic models that reject unknown keys.

Every config section (model, data, optimizer, trainer, ...) subclasses ``Config``.
A section that picks an implementation has a ``kind: Literal["..."]`` field, and the
folder that implements it keeps one small explicit table from kind to config class
(for example ``baobab.models.MODELS``); an unknown kind is an error listing the
valid ones.

Why pydantic: it validates and coerces values by their declared types and reports
every problem by key path, which is what ``key=value`` overrides need; frozen models
are hashable and immutable like the rest of baobab; and ``model_dump`` gives the
resolved config as plain JSON for run directories and checkpoints.

>>> from typing import Literal
>>> from baobab.config import Config
>>> class MLPConfig(Config):
...     kind: Literal["mlp"] = "mlp"
...     hidden: int = 128
>>> MLPConfig(hidden="256").hidden
256
"""

from __future__ import annotations

import pydantic

__all__ = ["Config"]


class Config(pydantic.BaseModel):
    """Base of every config section: frozen, and unknown keys are errors."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", validate_default=True)
