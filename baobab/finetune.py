"""The ``finetune`` section: what a run starts from and which parameters train.

``FinetuneConfig`` holds the choices; ``apply_finetune`` applies the structural part
(freezing, LoRA adapters) to a built model. Loading the pretrained weights named by
``init_from`` is ``baobab.init_from``'s job.

>>> import jax
>>> from baobab import models, nn
>>> from baobab.finetune import FinetuneConfig, LoRAConfig, apply_finetune
>>> model = models.build_model(models.MLPConfig(hidden=(16,)), key=jax.random.key(0))
>>> tuned = apply_finetune(model, FinetuneConfig(freeze=("hidden*",)), jax.random.key(1))
>>> nn.count_parameters(tuned, trainable_only=True) < nn.count_parameters(tuned)
True
"""

from __future__ import annotations

from typing import Literal, Optional

import jax
import pydantic

from baobab import nn
from baobab.config import Config
from baobab.errors import ConfigError

__all__ = ["FinetuneConfig", "LoRAConfig", "apply_finetune"]


class LoRAConfig(Config):
    """LoRA adapters on the ``Linear`` layers under ``targets`` (``nn.path_matches`` patterns).

    ``base_dtype="int8"`` holds the frozen base weight of each adapted layer in int8
    (``nn.int8_lora_bases``, per-output-channel scales, needs ``pip install
    'baobab[quant]'``); layers without an adapter keep their dtype.
    """

    targets: tuple[str, ...] = pydantic.Field(min_length=1)
    rank: int = pydantic.Field(8, ge=1)
    alpha: Optional[float] = None
    base_dtype: Optional[Literal["int8"]] = None


class FinetuneConfig(Config):
    """Start from pretrained weights and choose what trains.

    * ``init_from``: a baobab run directory (its newest checkpoint) or a Hugging Face
      folder (imported on the fly). Arrays it lacks (a new classifier head) are
      initialised fresh and listed in ``<workdir>/init_from.json`` and the log.
    * ``freeze``: path patterns of parameters to freeze.
    * ``lora``: wrap linear layers with adapters; every other parameter is frozen
      except those under ``trainable``.
    """

    init_from: Optional[str] = None
    freeze: tuple[str, ...] = ()
    lora: Optional[LoRAConfig] = None
    trainable: tuple[str, ...] = ()


def apply_finetune(model: nn.Module, finetune: FinetuneConfig, key: jax.Array) -> nn.Module:
    """The structural part (freezing, LoRA, int8 LoRA bases), applied to a built model; jit-able."""
    if finetune.freeze:
        model = nn.freeze(model, *finetune.freeze)
    if finetune.lora is not None:
        lo = finetune.lora
        model = nn.lora(model, *lo.targets, rank=lo.rank, alpha=lo.alpha, key=jax.random.fold_in(key, 7))
        if lo.base_dtype == "int8":
            model = nn.int8_lora_bases(model)
    if finetune.trainable:
        try:
            model = nn.unfreeze(model, *finetune.trainable)
        except ValueError as err:
            raise ConfigError(f"finetune.trainable={list(finetune.trainable)}: {err}") from None
    return model
