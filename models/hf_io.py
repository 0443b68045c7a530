"""Hugging Face folders (safetensors) in and out: no torch, no pickle.

``import_hf(src)`` reads a local Hugging Face model folder (``config.json`` plus
``model.safetensors`` or a sharded ``model.safetensors.index.json``), or a torchvision
``state_dict`` saved as one ``.safetensors`` file, and returns a baobab model with
those weights. ``export_hf(model, out)`` writes the folder back. The mapping is the
declarative tables of ``models.hf``; this file only reads, checks and writes.

Every problem is reported together, by name, before anything is read: tensors the
model needs that the files lack, tensors the files have that no rule places, shapes
that disagree, and (from ``hf.config_from_hf``) config settings baobab lacks.

With ``mesh=``, each array is built with ``jax.make_array_from_callback`` directly in
its target sharding: a device's callback reads only its slice of the tensor
(``safe_open(...).get_slice``), so a host never holds more than the slices of one
tensor that its own devices need, never the whole checkpoint.

>>> import tempfile, jax
>>> from baobab.models import GPT2, GPT2Config, hf_io
>>> model = GPT2(GPT2Config(vocab_size=16, max_len=8, hidden_size=8, num_layers=1, num_heads=2),
...              key=jax.random.key(0))
>>> out = hf_io.export_hf(model, tempfile.mkdtemp())
>>> sorted(p.name for p in out.iterdir())
['config.json', 'model.safetensors']
>>> again, report = hf_io.import_hf(out)
>>> report.kind, report.fresh
('gpt2', [])
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import jax
import numpy as np

from baobab import nn
from baobab.errors import CheckpointError, ConfigError, MissingFileError, ShapeMismatchError

from . import hf
from .bert import BertConfig
from .hf_config import config_to_hf
from .resnet import ResNetConfig

__all__ = ["HFSource", "ImportReport", "open_source", "source_config", "import_hf", "load_into", "fresh_arrays",
           "config_to_hf", "export_hf", "PICKLE_SUFFIXES"]

WEIGHTS, INDEX, CONFIG = "model.safetensors", "model.safetensors.index.json", "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
CONVERT_HINT = (
    "baobab reads safetensors only (pickle files can run code when loaded). Convert it once, where torch "
    "is installed: `python -c \"import torch; from safetensors.torch import save_file; "
    "save_file({{k: v.contiguous() for k, v in torch.load('{path}', weights_only=True).items()}}, "
    "'model.safetensors')\"`, or for a transformers model: "
    "`AutoModel.from_pretrained(folder).save_pretrained(out, safe_serialization=True)`.")


# ----------------------------------------------------------------------------------------
# Reading a source: names, shapes, slices
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class HFSource:
    """A local set of safetensors files: ``files`` maps each tensor name to its file."""

    path: Path
    hf_config: dict | None
    files: dict[str, Path]
    shapes: dict[str, tuple[int, ...]]

    def read(self, name: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """Tensor ``name`` (numpy), or only ``index`` of it: just those bytes are read."""
        from safetensors import safe_open

        with safe_open(self.files[name], framework="numpy") as f:
            if index is None or not self.shapes[name]:
                return f.get_tensor(name)
            return f.get_slice(name)[index]


def _refuse_pickle(path: Path) -> None:
    raise CheckpointError(f"{path}: a PyTorch pickle file. " + CONVERT_HINT.format(path=path))


def open_source(src: str | Path) -> HFSource:
    """Index the safetensors under ``src`` (a folder, or one ``.safetensors`` file)."""
    from safetensors import SafetensorError, safe_open

    path = Path(src)
    if not path.exists():
        raise MissingFileError(f"{str(src)!r} does not exist; pass a Hugging Face model folder "
                                f"(config.json + model.safetensors) or a .safetensors file.")
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            _refuse_pickle(path)
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: expected a .safetensors file or a model folder.")
        weight_files, hf_config = [path], None
    else:
        config_path = path / CONFIG
        hf_config = _read_json_object(config_path) if config_path.is_file() else None
        if (path / INDEX).is_file():
            index = _read_json_object(path / INDEX).get("weight_map")
            if not isinstance(index, dict) or not all(isinstance(f, str) for f in index.values()):
                raise CheckpointError(f"{path / INDEX}: no \"weight_map\" object of tensor name -> shard file; "
                                      f"re-save the model with save_pretrained(safe_serialization=True).")
            weight_files = sorted({path / f for f in index.values()})
        else:
            weight_files = sorted(path.glob("*.safetensors"))
        if not weight_files:
            pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                _refuse_pickle(pickles[0])
            raise CheckpointError(f"{path}: no *.safetensors weights (nor {INDEX}) in this folder; found "
                             f"{sorted(p.name for p in path.iterdir())[:10]}.")
        missing = [p.name for p in weight_files if not p.is_file()]
        if missing:
            raise MissingFileError(f"{path / INDEX} lists shards that are missing: {missing}")
    files, shapes = {}, {}
    for file in weight_files:
        try:
            with safe_open(file, framework="numpy") as f:
                for name in f.keys():
                    files[name] = file
                    shapes[name] = tuple(f.get_slice(name).get_shape())
        except (SafetensorError, OSError) as err:  # a truncated or corrupted file
            raise CheckpointError(f"{file}: not a readable safetensors file, truncated or corrupted "
                                  f"({' '.join(str(err).split())}); download or save it again.") from err
    return HFSource(path, hf_config, files, shapes)


def _read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; a file that is not one is named with the fix."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({' '.join(str(err).split())}); fix or download the file "
                          f"again.") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object {{...}}, got a {type(value).__name__}; fix or "
                          f"download the file again.")
    return value


def _resnet_config(source: HFSource, overrides: Mapping[str, Any]) -> ResNetConfig:
    """A torchvision ResNet's config, read off its ``state_dict`` names and shapes."""
    names, shapes = source.files, source.shapes
    if "conv1.weight" not in names or "fc.weight" not in names:
        raise CheckpointError(f"{source.path}: no config.json, and not a torchvision ResNet state_dict "
                         f"(no conv1.weight / fc.weight); tensors look like {sorted(names)[:5]}.")
    blocks = tuple(len({m.group(1) for n in names if (m := re.match(rf"layer{s}\.(\d+)\.", n))})
                   for s in (1, 2, 3, 4))
    bottleneck = any(".conv3." in n for n in names)
    depths = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50,
              ((3, 4, 23, 3), True): 101, ((3, 8, 36, 3), True): 152}
    depth = depths.get((blocks, bottleneck))
    if depth is None:
        raise NotImplementedError(f"{source.path}: a ResNet with blocks {blocks} (bottleneck={bottleneck}) "
                                  f"is not one of torchvision's resnet18/34/50/101/152.")
    fields = dict(depth=depth, num_classes=shapes["fc.weight"][0], width=shapes["conv1.weight"][0],
                  in_channels=shapes["conv1.weight"][1])
    return ResNetConfig(**{**fields, **overrides})


def source_config(source: HFSource, **overrides: Any):
    """Our model config for ``source`` (``config.json``, or a torchvision ResNet's tensors)."""
    if source.hf_config is None:
        return _resnet_config(source, overrides)
    try:
        return hf.config_from_hf(source.hf_config, **overrides)
    except ConfigError as err:  # name the file: the message names its key
        text = str(err)
        where = source.path / CONFIG
        raise ConfigError(f"{where}{text[len(CONFIG):]}" if text.startswith(CONFIG) else f"{where}: {text}") from None


# ----------------------------------------------------------------------------------------
# Matching names and shapes, all problems at once
# ----------------------------------------------------------------------------------------


def _their_shape_as_ours(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == "linear":
        return shape[::-1]
    if layout == "conv":
        return (*shape[2:], shape[1], shape[0])
    return shape


def _their_index(index: tuple[slice, ...], layout: str) -> tuple[slice, ...]:
    """Our slice of an array -> the slice of their tensor holding the same numbers."""
    if layout == "linear":
        return index[::-1]
    if layout == "conv":
        return (index[-1], index[-2], *index[:-2])
    return index


@dataclasses.dataclass
class ImportReport:
    """What an import did: the model kind, and our arrays initialised fresh (no tensor for them)."""

    kind: str
    source: str
    fresh: list[str]
    loaded: int


def _plan(abstract: nn.Module, source: HFSource, table: hf.NameTable, fresh: Iterable[str]) -> tuple[dict, list]:
    """``{our stored path: [(row, their name, layout), ...]}`` and the fresh per-layer paths.

    Raises one ``ValueError`` listing every missing, unexpected and mis-shaped tensor.
    """
    fresh = tuple(fresh)
    view = hf._per_layer(abstract)
    stored_shapes = {p: tuple(x.shape) for p, x in nn.state_dict(abstract).items()}
    found, unexpected, wrong = {}, [], []
    for name, shape in source.shapes.items():
        if table.ignored(name):
            continue
        hit = table.to_ours(name)
        if hit is None or hit[0] not in view:
            unexpected.append(name)
            continue
        ours, layout = hit
        stored, row = view[ours]
        want = stored_shapes[stored] if row is None else stored_shapes[stored][1:]
        if _their_shape_as_ours(shape, layout) != want:
            wrong.append(f"{name} {shape} -> {ours} needs {want if layout == 'same' else _their_shape(want, layout)}")
        found[ours] = (name, layout)
    missing = [p for p in view if p not in found and not any(nn.path_matches(f, p) for f in fresh)]
    new = [p for p in view if p not in found and p not in missing]
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}), ours: {missing}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {unexpected}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): {wrong}")
    if problems:
        raise ShapeMismatchError(f"{source.path} does not fit {type(abstract).__name__}({abstract.config.kind}): "
                                 + "; ".join(problems) + "; pass the weights saved with this config.json "
                                 "(or a model config of their shapes)")
    plan: dict[str, list] = {}
    for ours, (stored, row) in view.items():
        if ours in found:
            plan.setdefault(stored, []).append((row, *found[ours]))
    return plan, new


def _their_shape(ours: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == "linear":
        return ours[::-1]
    return (ours[-1], ours[-2], *ours[:-2])


def _read_ours(source: HFSource, parts: list, index: tuple[slice, ...], shape: tuple[int, ...],
               dtype: Any) -> np.ndarray:
    """Our array (or the ``index`` slice of it) assembled from their tensors."""
    index = tuple(index) + (slice(None),) * (len(shape) - len(index))
    if parts[0][0] is None:  # one tensor, one array
        _, name, layout = parts[0]
        x = hf.to_baobab_layout(source.read(name, _their_index(index, layout)), layout)
        return np.asarray(x, dtype=dtype)
    rows = range(shape[0])[index[0]]  # stacked layers: row i is layer i's tensor
    by_row = {row: (name, layout) for row, name, layout in parts}
    return np.stack([np.asarray(hf.to_baobab_layout(source.read(by_row[r][0], _their_index(index[1:], by_row[r][1])),
                                                    by_row[r][1]), dtype=dtype) for r in rows])


def _stored_paths(model: nn.Module, per_layer: Iterable[str]) -> list[str]:
    """The stored arrays (a stacked array once) behind per-layer paths."""
    view = hf._per_layer(model)
    return sorted({view[p][0] for p in per_layer})


def fresh_arrays(model: nn.Module, source: HFSource | str | Path, *, table: hf.NameTable | None = None,
                 fresh: Iterable[str] = ("*",)) -> list[str]:
    """The stored paths of ``model`` (which may be abstract) that ``source`` has no tensor for.

    Those must be concrete when ``load_into`` fills the rest, e.g. a new classifier head:
    build just them (``jax.jit`` of the constructor returning only those arrays computes
    nothing else) and leave the others abstract, so no array is initialised only to be
    overwritten.
    """
    source = source if isinstance(source, HFSource) else open_source(source)
    _, new = _plan(model, source, table or hf.names_for(model.config), fresh)
    return _stored_paths(model, new)


def load_into(model: nn.Module, source: HFSource | str | Path, *, table: hf.NameTable | None = None,
              fresh: Iterable[str] = (), mesh: jax.sharding.Mesh | None = None,
              rules: Mapping[str, Any] | None = None) -> tuple[nn.Module, ImportReport]:
    """``model`` with its arrays read from ``source``; arrays under ``fresh`` patterns may be absent.

    ``model`` may be abstract (``jax.eval_shape``) except for its fresh arrays
    (``fresh_arrays``). With ``mesh``,
    every array is built in its target sharding (``nn.shardings(model, mesh, rules)``)
    from the slices each local device needs; without, arrays are read whole.
    """
    source = source if isinstance(source, HFSource) else open_source(source)
    table = table or hf.names_for(model.config)
    plan, new = _plan(model, source, table, fresh)
    stored = nn.state_dict(model)
    abstract_fresh = [p for p in _stored_paths(model, new) if isinstance(stored[p], jax.ShapeDtypeStruct)]
    if abstract_fresh:
        raise CheckpointError(f"arrays {abstract_fresh} have no tensor in {source.path}: pass a model whose "
                              f"fresh arrays are concrete to keep their initial values (the others may stay "
                              f"abstract; see hf_io.fresh_arrays).")
    shardings = None if mesh is None else nn.shardings(model, mesh, dict(rules or nn.DEFAULT_RULES))
    flat_shardings = {} if shardings is None else dict(zip(
        [p for p, _, _ in nn.iter_arrays(model)], [s for _, s, _ in nn.iter_arrays(shardings)], strict=True))

    def load(path: str, x: Any, meta: Any) -> Any:
        parts = plan.get(path)
        if parts is None:  # fresh (or a stacked row set from no tensor)
            return x
        shape, dtype = tuple(x.shape), np.dtype(x.dtype)
        if len(parts) != (1 if parts[0][0] is None else shape[0]):  # some stacked rows are fresh
            current = np.asarray(x)
            rows = {r for r, _, _ in parts}
            values = [_read_ours(source, [p for p in parts if p[0] == r], (slice(r, r + 1),), shape, dtype)[0]
                      if r in rows else current[r] for r in range(shape[0])]
            return jax.numpy.asarray(np.stack(values))
        if mesh is None:
            return jax.numpy.asarray(_read_ours(source, parts, (), shape, dtype))
        return jax.make_array_from_callback(shape, flat_shardings[path],
                                            lambda index: _read_ours(source, parts, index, shape, dtype))

    loaded = nn.map_arrays(load, model)
    report = ImportReport(kind=model.config.kind, source=str(source.path), fresh=new, loaded=len(plan))
    return loaded, report


def import_hf(src: str | Path, *, mesh: jax.sharding.Mesh | None = None, rules: Mapping[str, Any] | None = None,
              key: jax.Array | None = None, **overrides: Any) -> tuple[nn.Module, ImportReport]:
    """The baobab model stored in ``src`` (an HF folder, or a torchvision ``.safetensors``), and a report.

    ``overrides`` set fields of our config (``scan_layers=True``, ``dropout=0.1``). The
    model is built abstractly first, so only the files' tensors are ever read.
    """
    from . import build_model

    source = open_source(src)
    config = source_config(source, **overrides)
    abstract = jax.eval_shape(lambda: build_model(config, key=jax.random.key(0) if key is None else key))
    return load_into(abstract, source, mesh=mesh, rules=rules)


# ----------------------------------------------------------------------------------------
# Export: config.json + model.safetensors
# ----------------------------------------------------------------------------------------

def _export_names(config: Any, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical names -> the names the head class's file uses (``bert.`` under a classifier)."""
    if isinstance(config, BertConfig) and config.num_classes:
        return {(n if n.startswith("classifier.") else "bert." + n): x for n, x in tensors.items()}
    return tensors


def export_hf(model: nn.Module, out: str | Path, *, base_config: Mapping[str, Any] | None = None,
              extra_files: Iterable[Path] = ()) -> Path:
    """Write ``model`` as a Hugging Face folder (``config.json`` + ``model.safetensors``) into ``out``.

    ``base_config`` (e.g. the imported model's own ``config.json``) keeps fields baobab
    does not model (token ids, label names); ours overwrite the architecture's fields.
    ``extra_files`` (tokenizer files) are copied alongside. ResNets are written as a
    torchvision ``state_dict`` (``model.safetensors`` only).
    """
    import shutil

    from safetensors.numpy import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    ours = config_to_hf(config)
    tensors = _export_names(config, hf.hf_state_dict(model, hf.names_for(config)))
    save_file(tensors, out / WEIGHTS, metadata={"format": "pt"})
    if ours is not None:
        merged = dict(base_config or {})
        if "rope_scaling" not in ours:
            merged.pop("rope_scaling", None)
        merged.pop("rope_parameters", None)
        labels = merged.get("id2label") or {}
        if not getattr(config, "num_classes", 0) or len(labels) != config.num_classes:
            merged.pop("id2label", None), merged.pop("label2id", None)
        else:
            ours.pop("id2label", None), ours.pop("label2id", None)
        merged.update(ours)
        (out / CONFIG).write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    for f in extra_files:
        shutil.copy2(f, out / Path(f).name)
    return out
