"""DalleBart weights in: dalle-mini's Flax ``flax_model.msgpack`` and min-dalle's encoder/decoder state dicts.

* ``import_flax(src)``: a dalle-mini parameter tree, as a ``flax_model.msgpack`` file
  (read by ``models.flax_msgpack``, no flax and no pickle) or a mapping (flat
  ``/``-joined names, or nested dicts). Both layouts are read: scanned
  (``model/encoder/layers/FlaxBartEncoderLayers/...`` with a leading layer axis, as
  the released mini and mega are) and unscanned (``.../FlaxBartEncoderLayer_{i}/...``).
  Dense kernels are ``(in, out)`` like ours; a bias-only norm has no ``scale`` (ours has
  no ``weight`` either).
* ``import_min_dalle(encoder, decoder)``: min-dalle's ``DalleBartEncoder`` /
  ``DalleBartDecoder`` state dicts, each a ``.safetensors`` file or a mapping of
  name -> array (``module.state_dict()`` works; torch tensors are converted). torch
  ``Linear`` weights are ``(out, in)`` and are transposed. min-dalle's released files
  omit the ``weight`` of the norms that are bias-only in dalle-mini; a state dict that
  has them is accepted when they are all ones (a fresh torch LayerNorm's). A ``.pt``
  file is refused: it is a pickle (see the conversion hint in the error).

The config comes from the tensors' shapes (sizes, layer counts, GLU or FFN, biases,
norm kind and positions) unless ``config=`` is given; the head counts are not in the
shapes and default to ``d_model // 64`` (right for mini and mega), ``scale_embedding`` to
False (the released value), and
``decoder_start_token_id`` to ``min(16384, image_vocab_size)``; pass overrides to
change them. Every problem (missing, unexpected and mis-shaped tensors) is reported
together, by name, in one ``ShapeMismatchError``. Arrays are cast to ``dtype``
(float16 files included).

>>> import jax, numpy as np
>>> from baobab import nn
>>> from baobab.models import DalleBart, DalleBartConfig, dalle_bart_io
>>> config = DalleBartConfig(text_vocab_size=20, image_vocab_size=16, max_text_len=4, image_len=8, d_model=16,
...                          encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2,
...                          encoder_ffn=24, decoder_ffn=24, decoder_start_token_id=16)
>>> model = DalleBart(config, key=jax.random.key(0))
>>> flax_tree = dalle_bart_io.to_flax(model)  # the dalle-mini names, scanned layout
>>> flax_tree["model/encoder/layers/FlaxBartEncoderLayers/GLU_0/Dense_0/kernel"].shape
(1, 16, 24)
>>> again = dalle_bart_io.import_flax(flax_tree, encoder_heads=2, decoder_heads=2)
>>> bool(np.array_equal(again.lm_head.weight, model.lm_head.weight))
True
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from baobab import nn
from baobab.errors import CheckpointError, MissingFileError, ShapeMismatchError

from .dalle_bart import DalleBart, DalleBartConfig
from .hf_io import PICKLE_SUFFIXES, _refuse_pickle

__all__ = ["import_flax", "import_min_dalle", "config_from_flax", "config_from_min_dalle", "to_flax",
           "to_min_dalle", "flax_name", "min_dalle_name"]

_LAYER = re.compile(r"^(encoder|decoder)\.layers\[(\d+)\]\.(.+)$")
_LINEAR = re.compile(r"(_proj|\.fc\d|^lm_head)\.(weight|bias)$")
_NORMS_IN_LAYER = ("pre_self_attn_layer_norm", "self_attn_layer_norm", "pre_encoder_attn_layer_norm",
                   "encoder_attn_layer_norm")


def _is_norm(module_name: str) -> bool:
    return (module_name.endswith("layer_norm") or module_name in ("ln0", "ln1", "final_ln", "layernorm_embedding"))


def _unscanned_shapes(config: DalleBartConfig) -> dict[str, tuple[int, ...]]:
    """Our per-layer paths (``encoder.layers[0]...``) and their shapes, for ``config``."""
    flat = config.model_copy(update={"scan_layers": False})
    abstract = jax.eval_shape(lambda: DalleBart(flat, key=jax.random.key(0)))
    return {path: tuple(x.shape) for path, x in nn.state_dict(abstract).items()}


# ----------------------------------------------------------------------------------------
# Name tables: our per-layer path -> theirs
# ----------------------------------------------------------------------------------------


def min_dalle_name(path: str) -> tuple[str, str, bool]:
    """``(which state dict, their name, transposed)`` for one of our per-layer paths.

    >>> min_dalle_name("decoder.layers[3].encoder_attn.q_proj.weight")
    ('decoder', 'layers.3.encoder_attn.q_proj.weight', True)
    >>> min_dalle_name("lm_head.weight")
    ('decoder', 'lm_head.weight', True)
    """
    if path.startswith("lm_head."):
        return "decoder", path, path.endswith(".weight")
    side, rest = path.split(".", 1)
    rest = re.sub(r"^layers\[(\d+)\]", r"layers.\1", rest)
    return side, rest, bool(_LINEAR.search(rest)) and rest.endswith(".weight")


def _norm_class(config: DalleBartConfig) -> str:
    return "RMSNorm" if config.ln_type == "rmsnorm" else "LayerNorm"


def _leaf(module_name: str, leaf: str) -> str:
    if leaf == "bias":
        return "bias"
    if _is_norm(module_name):
        return "scale"
    if module_name.startswith("embed_"):
        return "embedding"
    return "kernel"


def _norm_names(config: DalleBartConfig, side: str) -> dict[str, str]:
    """Our norm attribute -> Flax's auto name (``LayerNorm_{k}``, numbered in creation order)."""
    present = ["pre_self_attn_layer_norm"]
    if config.ln_positions == "normformer":
        present.append("self_attn_layer_norm")
    if side == "decoder":
        present.append("pre_encoder_attn_layer_norm")
        if config.ln_positions == "normformer":
            present.append("encoder_attn_layer_norm")
    return {name: f"{_norm_class(config)}_{k}" for k, name in enumerate(present)}


def flax_name(path: str, config: DalleBartConfig, *, scanned: bool) -> tuple[str, int | None]:
    """``(their /-joined name, layer row or None)`` for one of our per-layer paths.

    >>> flax_name("encoder.layers[1].glu.fc2.weight", DalleBartConfig(), scanned=True)
    ('model/encoder/layers/FlaxBartEncoderLayers/GLU_0/Dense_2/kernel', 1)
    >>> flax_name("decoder.layers[0].encoder_attn_layer_norm.weight", DalleBartConfig(), scanned=False)
    ('model/decoder/layers/FlaxBartDecoderLayer_0/LayerNorm_3/scale', None)
    """
    if path.startswith("lm_head."):
        return "lm_head/" + ("kernel" if path.endswith(".weight") else "bias"), None
    layer = _LAYER.match(path)
    if layer is None:  # embeddings, layernorm_embedding, final_ln
        side, module_name, leaf = path.split(".")
        return f"model/{side}/{module_name}/{_leaf(module_name, leaf)}", None
    side, i, rest = layer.group(1), int(layer.group(2)), layer.group(3)
    kind = "Encoder" if side == "encoder" else "Decoder"
    prefix = f"model/{side}/layers/" + (f"FlaxBart{kind}Layers" if scanned else f"FlaxBart{kind}Layer_{i}")
    parts = rest.split(".")
    if parts[0] in ("glu", "ffn"):
        block = "GLU_0" if parts[0] == "glu" else "FFN_0"
        sub, leaf = parts[1], parts[2]
        name = f"{_norm_class(config)}_{sub[2:]}" if sub.startswith("ln") else f"Dense_{sub[2:]}"
        theirs = f"{prefix}/{block}/{name}/{_leaf(sub, leaf)}"
    elif parts[0] in ("self_attn", "encoder_attn"):
        index = 0 if parts[0] == "self_attn" else 1
        theirs = f"{prefix}/FlaxBartAttention_{index}/{parts[1]}/{_leaf(parts[1], parts[2])}"
    else:  # a layer norm
        theirs = f"{prefix}/{_norm_names(config, side)[parts[0]]}/{_leaf(parts[0], parts[1])}"
    return theirs, (i if scanned else None)


# ----------------------------------------------------------------------------------------
# Reading sources
# ----------------------------------------------------------------------------------------


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "/"))
        else:
            out[name] = v
    return out


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, from module.state_dict()
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _read_flax(src: str | Path | Mapping) -> tuple[str, dict[str, np.ndarray]]:
    if isinstance(src, Mapping):
        return "the given parameter tree", {k: _as_numpy(v) for k, v in _flatten(src).items()}
    from .flax_msgpack import read_flax_msgpack

    path = Path(src)
    if path.is_dir():
        path = path / "flax_model.msgpack"
    if path.suffix in PICKLE_SUFFIXES:
        _refuse_pickle(path)
    return str(path), read_flax_msgpack(path)


def _read_state_dict(src: str | Path | Mapping, what: str) -> tuple[str, dict[str, np.ndarray]]:
    if isinstance(src, Mapping):
        return f"the given {what} state dict", {k: _as_numpy(v) for k, v in src.items()}
    path = Path(src)
    if path.suffix in PICKLE_SUFFIXES:
        _refuse_pickle(path)
    if not path.is_file():
        raise MissingFileError(f"{str(src)!r}: no such file; pass min-dalle's {what} state dict as a .safetensors "
                               f"file or a mapping of name -> array.")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: expected a .safetensors file of min-dalle's {what} state dict.")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return str(path), load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({' '.join(str(err).split())}).") from err


def _need(tensors: Mapping[str, np.ndarray], name: str, where: str) -> np.ndarray:
    if name not in tensors:
        raise CheckpointError(f"{where}: no tensor {name!r}, so its shapes cannot give a DalleBart config; it has "
                              f"{sorted(tensors)[:6]}... Pass config= (a DalleBartConfig) if the names differ.")
    return tensors[name]


def _sizes(d_model: int) -> dict[str, Any]:
    """Head counts are not in the shapes: ``d_model // 64`` (64-wide heads, as mini and mega)."""
    heads = max(d_model // 64, 1)
    return {"encoder_heads": heads, "decoder_heads": heads}


# ----------------------------------------------------------------------------------------
# Configs from shapes
# ----------------------------------------------------------------------------------------


def config_from_flax(params: Mapping[str, np.ndarray], *, where: str = "the parameter tree",
                     **overrides: Any) -> DalleBartConfig:
    """The ``DalleBartConfig`` that dalle-mini's flat parameter tree ``params`` has the shapes of."""
    tokens = _need(params, "model/encoder/embed_tokens/embedding", where)
    image = _need(params, "model/decoder/embed_tokens/embedding", where)
    d = int(tokens.shape[1])
    names = list(params)

    def layers(kind: str) -> int:
        scanned = [n for n in names if f"/FlaxBart{kind}Layers/" in n]
        if scanned:
            return int(params[scanned[0]].shape[0])
        return len({m.group(1) for n in names if (m := re.search(rf"/FlaxBart{kind}Layer_(\d+)/", n))})

    def any_name(pattern: str) -> bool:
        return any(re.search(pattern, n) for n in names)

    glu = any_name(r"/FlaxBartEncoderLayers?(_\d+)?/GLU_0/")
    dense0 = [n for n in names if re.search(r"/FlaxBartEncoderLayers?(_\d+)?/(GLU|FFN)_0/Dense_0/kernel$", n)]
    ffn = int(params[dense0[0]].shape[-1]) if dense0 else 1
    dec_dense0 = [n for n in names if re.search(r"/FlaxBartDecoderLayers?(_\d+)?/(GLU|FFN)_0/Dense_0/kernel$", n)]
    rms = "model/encoder/layernorm_embedding/bias" not in params
    norm = "RMSNorm" if rms else "LayerNorm"
    fields: dict[str, Any] = dict(
        text_vocab_size=int(tokens.shape[0]), image_vocab_size=int(image.shape[0]) - 1,
        max_text_len=int(_need(params, "model/encoder/embed_positions/embedding", where).shape[0]),
        image_len=int(_need(params, "model/decoder/embed_positions/embedding", where).shape[0]),
        d_model=d, encoder_layers=layers("Encoder"), decoder_layers=layers("Decoder"),
        encoder_ffn=ffn, decoder_ffn=int(params[dec_dense0[0]].shape[-1]) if dec_dense0 else ffn,
        use_glu=glu, use_bias=any_name(r"/q_proj/bias$"), ln_type="rmsnorm" if rms else "layernorm",
        ln_positions="normformer" if any_name(rf"/FlaxBartEncoderLayers?(_\d+)?/{norm}_1/") else "preln",
        force_ln_scale=any_name(rf"/FlaxBartEncoderLayers?(_\d+)?/{norm}_0/scale$"),
        use_final_ln_encoder=rms or any_name(r"^model/encoder/final_ln/"),
        use_final_ln_decoder=rms or any_name(r"^model/decoder/final_ln/"),
        decoder_start_token_id=min(16384, int(image.shape[0]) - 1), **_sizes(d))
    return DalleBartConfig(**{**fields, **overrides})


def config_from_min_dalle(encoder: Mapping[str, np.ndarray], decoder: Mapping[str, np.ndarray], *,
                          where: str = "the min-dalle state dicts", **overrides: Any) -> DalleBartConfig:
    """The ``DalleBartConfig`` that min-dalle's encoder and decoder state dicts have the shapes of."""
    tokens = _need(encoder, "embed_tokens.weight", where)
    image = _need(decoder, "embed_tokens.weight", where)
    d = int(tokens.shape[1])

    def layers(tensors) -> int:
        return len({m.group(1) for n in tensors if (m := re.match(r"layers\.(\d+)\.", n))})

    def ffn(tensors) -> int:
        for name in ("layers.0.glu.fc0.weight", "layers.0.ffn.fc0.weight"):
            if name in tensors:
                return int(tensors[name].shape[0])
        return 1

    fields: dict[str, Any] = dict(
        text_vocab_size=int(tokens.shape[0]), image_vocab_size=int(image.shape[0]) - 1,
        max_text_len=int(_need(encoder, "embed_positions.weight", where).shape[0]),
        image_len=int(_need(decoder, "embed_positions.weight", where).shape[0]),
        d_model=d, encoder_layers=layers(encoder), decoder_layers=layers(decoder),
        encoder_ffn=ffn(encoder), decoder_ffn=ffn(decoder), use_glu="layers.0.glu.fc0.weight" in encoder,
        use_bias="layers.0.self_attn.q_proj.bias" in encoder,
        decoder_start_token_id=min(16384, int(image.shape[0]) - 1), **_sizes(d))
    return DalleBartConfig(**{**fields, **overrides})


# ----------------------------------------------------------------------------------------
# Matching and loading
# ----------------------------------------------------------------------------------------


def _report(where: str, config: DalleBartConfig, missing: list, unexpected: list, wrong: list) -> None:
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {unexpected}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): {wrong}")
    if problems:
        raise ShapeMismatchError(
            f"{where} does not fit DalleBart(d_model={config.d_model}, layers={config.encoder_layers}+"
            f"{config.decoder_layers}, ffn={config.encoder_ffn}, use_glu={config.use_glu}, "
            f"use_bias={config.use_bias}, ln_positions={config.ln_positions!r}): " + "; ".join(problems)
            + ". Pass the files of one checkpoint, or a config= of their shapes.")


def _build(config: DalleBartConfig, ours: dict[str, np.ndarray], dtype: Any) -> DalleBart:
    """The model with our per-layer arrays ``ours`` (stacked first under ``scan_layers``)."""
    values: dict[str, Any] = {}
    if config.scan_layers:
        rows: dict[str, dict[int, np.ndarray]] = {}
        for path, x in ours.items():
            m = _LAYER.match(path)
            if m is None:
                values[path] = x
            else:
                rows.setdefault(f"{m.group(1)}.layers.layer.{m.group(3)}", {})[int(m.group(2))] = x
        for path, by_row in rows.items():
            values[path] = np.stack([by_row[i] for i in range(len(by_row))])
    else:
        values = dict(ours)
    abstract = jax.eval_shape(lambda: DalleBart(config, key=jax.random.key(0)))
    model = jax.tree.map(lambda x: jnp.zeros(x.shape, dtype), abstract)
    return nn.load_state_dict(model, {k: np.asarray(v, dtype=dtype) for k, v in values.items()})


def import_flax(src: str | Path | Mapping, *, config: DalleBartConfig | None = None, dtype: Any = jnp.float32,
                **overrides: Any) -> DalleBart:
    """A ``DalleBart`` from dalle-mini's Flax parameters: a ``flax_model.msgpack`` file (or its folder) or a tree.

    ``overrides`` set config fields over the ones read off the shapes (e.g.
    ``encoder_heads=``, ``scan_layers=True``); ``config`` replaces the inference.
    """
    where, params = _read_flax(src)
    if params and all(n.startswith("params/") for n in params):
        params = {n[len("params/"):]: x for n, x in params.items()}
    if config is None:
        config = config_from_flax(params, where=where, **overrides)
    config.check_implemented()
    shapes = _unscanned_shapes(config)
    used, missing, wrong, ours = set(), [], [], {}
    scanned = {side: any(f"/FlaxBart{kind}Layers/" in n for n in params)
               for side, kind in (("encoder", "Encoder"), ("decoder", "Decoder"))}
    for path, shape in shapes.items():
        side = path.split(".", 1)[0]
        name, row = flax_name(path, config, scanned=scanned.get(side, False))
        if name not in params:
            missing.append(f"{name} (for {path})")
            continue
        used.add(name)
        x = params[name]
        if row is not None:
            if x.ndim == 0 or x.shape[0] <= row:
                wrong.append(f"{name} {tuple(x.shape)} has no layer row {row} (for {path} {shape})")
                continue
            x = x[row]
        if tuple(x.shape) != shape:
            wrong.append(f"{name} {tuple(params[name].shape)} -> {path} needs {shape}"
                         + (" per layer" if row is not None else ""))
            continue
        ours[path] = x
    unexpected = sorted(set(params) - used)
    _report(where, config, missing, unexpected, wrong)
    return _build(config, ours, dtype)


def import_min_dalle(encoder: str | Path | Mapping, decoder: str | Path | Mapping, *,
                     config: DalleBartConfig | None = None, dtype: Any = jnp.float32, **overrides: Any) -> DalleBart:
    """A ``DalleBart`` from min-dalle's encoder and decoder state dicts (``.safetensors`` files or mappings).

    ``overrides`` and ``config`` as in ``import_flax``.
    """
    where_e, enc = _read_state_dict(encoder, "encoder")
    where_d, dec = _read_state_dict(decoder, "decoder")
    where = f"{where_e} + {where_d}"
    if config is None:
        config = config_from_min_dalle(enc, dec, where=where, **overrides)
    config.check_implemented()
    sources = {"encoder": enc, "decoder": dec}
    shapes = _unscanned_shapes(config)
    used: set[tuple[str, str]] = set()
    missing, wrong, ours = [], [], {}
    for path, shape in shapes.items():
        which, name, transposed = min_dalle_name(path)
        tensors = sources[which]
        if name not in tensors:
            missing.append(f"{which}:{name} (for {path})")
            continue
        used.add((which, name))
        x = tensors[name]
        x = x.T if transposed else x
        if tuple(x.shape) != shape:
            want = shape[::-1] if transposed else shape
            wrong.append(f"{which}:{name} {tuple(tensors[name].shape)} -> {path} needs {want}")
            continue
        ours[path] = x
    unexpected = []
    for which, tensors in sources.items():
        for name, x in tensors.items():
            if (which, name) in used:
                continue
            if name.endswith(".weight") and _is_norm(name.rsplit(".", 2)[-2]):
                if np.all(x == 1):
                    continue  # the scale of a bias-only norm, left at torch's ones
                unexpected.append(f"{which}:{name} (a norm scale that is not all ones, but this norm is bias-only "
                                  f"in the config; set force_ln_scale=True if the checkpoint trained it)")
                continue
            unexpected.append(f"{which}:{name}")
    _report(where, config, missing, unexpected, wrong)
    return _build(config, ours, dtype)


# ----------------------------------------------------------------------------------------
# Export (what the tests and a round trip need)
# ----------------------------------------------------------------------------------------


def _per_layer(model: DalleBart) -> dict[str, np.ndarray]:
    """Our arrays under per-layer paths (``encoder.layers[i]...``), unstacking ``scan_layers``."""
    out = {}
    for path, x in nn.state_dict(model).items():
        m = re.match(r"^(encoder|decoder)\.layers\.layer\.(.+)$", path)
        if m is None:
            out[path] = np.asarray(x)
        else:
            for i in range(x.shape[0]):
                out[f"{m.group(1)}.layers[{i}].{m.group(2)}"] = np.asarray(x[i])
    return out


def to_flax(model: DalleBart, *, scanned: bool = True) -> dict[str, np.ndarray]:
    """``model``'s arrays under dalle-mini's flat Flax names (``write_flax_msgpack`` writes them)."""
    config = model.config
    out: dict[str, Any] = {}
    rows: dict[str, dict[int, np.ndarray]] = {}
    for path, x in _per_layer(model).items():
        name, row = flax_name(path, config, scanned=scanned)
        if row is None:
            out[name] = x
        else:
            rows.setdefault(name, {})[row] = x
    for name, by_row in rows.items():
        out[name] = np.stack([by_row[i] for i in range(len(by_row))])
    return out


def to_min_dalle(model: DalleBart) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``model``'s arrays as min-dalle's ``(encoder, decoder)`` state dicts (bias-only norms have no weight)."""
    out: dict[str, dict[str, np.ndarray]] = {"encoder": {}, "decoder": {}}
    for path, x in _per_layer(model).items():
        which, name, transposed = min_dalle_name(path)
        out[which][name] = np.ascontiguousarray(x.T) if transposed else x
    return out["encoder"], out["decoder"]
