"""``finetune.init_from``: a run's first model built from pretrained weights, sharded from the start.

``init_from`` names a baobab run directory (its newest model is read, read-only)
or a Hugging Face folder (``config.json`` + ``*.safetensors``, read directly). The
model of the run's own config is built, every array the source has with the same
path and shape is copied in, and the rest (a new classifier head) start fresh: they
are listed in the log and in ``<workdir>/init_from.json``. Freezing and LoRA from
the ``finetune`` section are applied after.

No array is ever whole on one device. The model is traced abstractly; only the fresh
arrays are initialised (a jitted constructor that returns just them computes
nothing else), straight into their shardings; each pretrained array is read from the
files slice by slice into its target sharding (each process reads only what its
devices hold), or restored from the run's checkpoint into it; freezing and LoRA run
under ``jit`` with the final model's shardings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from baobab import models, nn
from baobab.errors import ConfigError, MissingFileError
from baobab.experiment import make_mesh
from baobab.experiment import rules as config_rules
from baobab.finetune import apply_finetune
from baobab.models import hf_io

__all__ = ["pretrained_model", "check_source", "INIT_REPORT"]

log = logging.getLogger("baobab")
INIT_REPORT = "init_from.json"  # in the workdir: what came from init_from, and what is fresh


def _replicated(key: jax.Array, mesh) -> jax.Array:
    """``key`` (the same on every process) as a global array replicated over ``mesh``."""
    data = np.asarray(jax.random.key_data(key))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    raw = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
    return jax.random.wrap_key_data(raw, impl=jax.random.key_impl(key))


def _abstract(constructor: Callable, key: jax.Array, mesh, rules) -> nn.Module:
    """The model as ``ShapeDtypeStruct`` leaves that carry their target shardings."""
    shapes = jax.eval_shape(constructor, key)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
                        nn.shardings(shapes, mesh, rules))


def _with_fresh(constructor: Callable, key: jax.Array, abstract: nn.Module, fresh: list[str]) -> nn.Module:
    """``abstract`` with the arrays at ``fresh`` paths initialised (sharded), the others still abstract."""
    if not fresh:
        return abstract
    wanted = set(fresh)
    targets = {p: x.sharding for p, x in nn.state_dict(abstract).items() if p in wanted}

    def only_fresh(k):
        return {p: x for p, x in nn.state_dict(constructor(k)).items() if p in wanted}

    values = jax.jit(only_fresh, out_shardings=targets)(key)
    return nn.map_arrays(lambda path, x, meta: values.get(path, x), abstract)


def _from_run(constructor: Callable, key: jax.Array, abstract: nn.Module, run_dir: str,
              mesh) -> tuple[nn.Module, list[str]]:
    from baobab.runs import load_run, restore_model

    pretrained, _ = restore_model(load_run(run_dir), mesh)  # read-only, straight into shardings on mesh
    theirs = nn.state_dict(nn.merge_lora(pretrained))
    own = nn.state_dict(abstract)
    take = {p: theirs[p] for p, x in own.items() if p in theirs and tuple(theirs[p].shape) == tuple(x.shape)}
    fresh = [p for p in own if p not in take]
    model = _with_fresh(constructor, key, abstract, fresh)
    return nn.load_state_dict(model, take, strict=False, cast=True), fresh  # resharded to this run's layout


def _from_hf(constructor: Callable, key: jax.Array, abstract: nn.Module, path: Path, init_from: str, mesh,
             rules) -> tuple[nn.Module, list[str]]:
    try:
        source = hf_io.open_source(path)
        fresh = hf_io.fresh_arrays(abstract, source)
        model = _with_fresh(constructor, key, abstract, fresh)
        model, report = hf_io.load_into(model, source, fresh=("*",), mesh=mesh, rules=rules)
    except NotImplementedError as err:
        raise ConfigError(f"finetune.init_from={init_from!r}: {err}") from None
    return model, report.fresh


def check_source(config: Any) -> None:
    """Refuse a missing or unreadable ``finetune.init_from`` now, from the files' headers alone.

    ``baobab train`` calls it first, so a damaged source fails before any data is read
    or anything is written.
    """
    init_from = config.finetune.init_from
    path = Path(init_from)
    if not path.exists():
        raise MissingFileError(f"finetune.init_from={init_from!r} does not exist; pass a baobab run directory "
                               f"or a Hugging Face folder (config.json + *.safetensors).")
    if not (path / "checkpoints").is_dir():
        hf_io.open_source(path)  # names a truncated or corrupted safetensors file


def pretrained_model(config: Any, key: jax.Array, *, mesh: jax.sharding.Mesh | None = None,
                     rules: Mapping[str, Any] | None = None) -> nn.Module:
    """The run's model built from ``finetune.init_from``, then frozen / adapted as configured.

    Every array is built in its sharding on ``mesh`` under ``rules`` (defaults: the
    config's mesh and rules), as ``train`` will keep it.
    """
    ft = config.finetune
    mesh = make_mesh(config) if mesh is None else mesh
    rules = config_rules(config) if rules is None else dict(rules)
    check_source(config)
    path = Path(ft.init_from)

    key = _replicated(key, mesh)  # beside the model: jit then moves nothing between devices

    def constructor(k):
        return models.build_model(config.model, key=k)

    abstract = _abstract(constructor, key, mesh, rules)
    if (path / "checkpoints").is_dir():
        model, fresh = _from_run(constructor, key, abstract, ft.init_from, mesh)
    else:
        model, fresh = _from_hf(constructor, key, abstract, path, ft.init_from, mesh, rules)
    if fresh:
        log.warning("init_from %s: %d arrays have no pretrained value and start fresh: %s", ft.init_from,
                    len(fresh), fresh)
    workdir = Path(config.trainer.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / INIT_REPORT).write_text(json.dumps({"init_from": ft.init_from, "fresh": fresh}, indent=1) + "\n")

    def finetuned(m, k):
        return apply_finetune(m, ft, k)

    target = nn.shardings(jax.eval_shape(finetuned, model, key), mesh, rules)
    return jax.jit(finetuned, out_shardings=target, donate_argnums=0)(model, key)
