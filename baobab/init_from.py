"""``finetune.init_from``: a run's first model built from pretrained weights.

``init_from`` names a baobab run directory (its newest model is read, read-only)
or a Hugging Face folder (``config.json`` + ``*.safetensors``, read directly). The
model of the run's own config is built, every array the source has with the same
path and shape is copied in, and the rest (a new classifier head) start fresh: they
are listed in the log and in ``<workdir>/init_from.json``. Freezing and LoRA from
the ``finetune`` section are applied after.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax

from baobab import models, nn
from baobab.errors import ConfigError, MissingFileError
from baobab.finetune import apply_finetune
from baobab.models import hf_io

__all__ = ["pretrained_model", "INIT_REPORT"]

log = logging.getLogger("baobab")
INIT_REPORT = "init_from.json"  # in the workdir: what came from init_from, and what is fresh


def _from_run(model: nn.Module, run_dir: str) -> tuple[nn.Module, list[str]]:
    from baobab.runs import load_run, restore_model

    pretrained, _ = restore_model(load_run(run_dir))
    theirs = nn.state_dict(jax.device_get(nn.merge_lora(pretrained)))
    own = nn.state_dict(model)
    take = {p: theirs[p] for p, x in own.items() if p in theirs and tuple(theirs[p].shape) == tuple(x.shape)}
    return nn.load_state_dict(model, take, strict=False, cast=True), [p for p in own if p not in take]


def pretrained_model(config: Any, key: jax.Array) -> nn.Module:
    """The run's model built from ``finetune.init_from``, then frozen / adapted as configured."""
    ft = config.finetune
    model = models.build_model(config.model, key=key)
    path = Path(ft.init_from)
    if not path.exists():
        raise MissingFileError(f"finetune.init_from={ft.init_from!r} does not exist; pass a baobab run directory "
                               f"or a Hugging Face folder (config.json + *.safetensors).")
    if (path / "checkpoints").is_dir():
        model, fresh = _from_run(model, ft.init_from)
    else:
        try:
            model, report = hf_io.load_into(model, path, fresh=("*",))
        except NotImplementedError as err:
            raise ConfigError(f"finetune.init_from={ft.init_from!r}: {err}") from None
        fresh = report.fresh
    if fresh:
        log.warning("init_from %s: %d arrays have no pretrained value and start fresh: %s", ft.init_from,
                    len(fresh), fresh)
    workdir = Path(config.trainer.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / INIT_REPORT).write_text(json.dumps({"init_from": ft.init_from, "fresh": fresh}, indent=1) + "\n")
    return apply_finetune(model, ft, key)
