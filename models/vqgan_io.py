"""VQGAN weights in and out: vqgan-jax's Flax msgpack and taming / min-dalle's torch state dicts.

Two upstream layouts map onto ``models.VQGAN`` by name tables (``models.hf.NameTable``):

=========================  ==================================================  ========================
source                     names                                               arrays
=========================  ==================================================  ========================
vqgan-jax Flax msgpack     ``encoder/down_0/block_1/norm1/scale``,             HWIO kernels: copied
(``dalle-mini/vqgan_``     ``quantize/embedding/embedding``,
``imagenet_f16_16384``)    ``decoder/up_4/attn_2/proj_out/kernel``
taming ``VQModel`` /       ``encoder.down.0.block.1.norm1.weight``,            OIHW weights: to HWIO
min-dalle detokenizer      ``quantize.embedding.weight`` (min-dalle:
(safetensors, or a dict)   ``embedding.weight``), ``decoder.up.4.attn.2.*``
=========================  ==================================================  ========================

min-dalle's detokenizer has no encoder and no ``quant_conv``: those keep their initial
values, and the report's ``fresh`` lists them. taming's ``loss.*`` (the discriminator
and LPIPS) is ignored. Every missing, unexpected or mis-shaped tensor is reported
together, by name, in one error. Pickle files (``.pt``, ``.ckpt``) are refused with the
one-line conversion to safetensors. min-dalle runs its GroupNorms with eps 1e-5
(``VQGANConfig(norm_eps=1e-5)`` reproduces it exactly); vqgan-jax and taming use 1e-6.

>>> import tempfile, pathlib, jax
>>> from baobab.models import VQGAN, VQGANConfig, vqgan_io
>>> config = VQGANConfig(resolution=8, in_channels=1, out_channels=1, ch=32, ch_mult=(1, 1),
...                      num_res_blocks=1, attn_resolutions=(), z_channels=4, embed_dim=4, n_embed=8)
>>> model = VQGAN(config, key=jax.random.key(0))
>>> path = pathlib.Path(tempfile.mkdtemp()) / "flax_model.msgpack"
>>> vqgan_io.save_flax(model, path)
>>> again, report = vqgan_io.load_flax(VQGAN(config, key=jax.random.key(1)), path)
>>> report.fresh, bool((again.decoder.conv_out.weight == model.decoder.conv_out.weight).all())
([], True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from baobab import nn
from baobab.errors import CheckpointError

from . import hf, hf_io
from .flax_msgpack import read_flax_msgpack, write_flax_msgpack
from .vqgan import VQGAN, VQGANConfig

__all__ = ["flax_names", "torch_names", "load_flax", "load_torch", "import_vqgan", "flax_params",
           "torch_state_dict", "save_flax"]

_BLOCK = ("norm1", "conv1", "norm2", "conv2", "nin_shortcut")
_ATTN = ("norm", "q", "k", "v", "proj_out")


def _layers(config: VQGANConfig) -> list[tuple[list[str], list[str]]]:
    """``(our path parts, their path parts)`` of every norm and conv layer, placeholders filled per level."""
    out = []

    def add(ours: list[str], theirs: list[str], names: tuple[str, ...]):
        out.extend((ours + [n], theirs + [n]) for n in names)

    for side, sub, n_blocks in (("encoder", "down", config.num_res_blocks),
                                ("decoder", "up", config.num_res_blocks + 1)):
        add([side], [side], ("conv_in", "norm_out", "conv_out"))
        for name, names in (("block_1", _BLOCK), ("attn_1", _ATTN), ("block_2", _BLOCK)):
            add([side, "mid", name], [side, "mid", name], names)
        for i in range(len(config.ch_mult)):
            for j in range(n_blocks):
                add([side, f"{sub}[{i}]", f"block[{j}]"], [side, f"{sub}_{i}", f"block_{j}"], _BLOCK)
                add([side, f"{sub}[{i}]", f"attn[{j}]"], [side, f"{sub}_{i}", f"attn_{j}"], _ATTN)
            resample = "downsample" if side == "encoder" else "upsample"
            add([side, f"{sub}[{i}]", resample], [side, f"{sub}_{i}", resample], ("conv",))
    add([], [], ("quant_conv", "post_quant_conv"))
    return out


def _is_norm(name: str) -> bool:
    return name.startswith("norm")


def flax_names(config: VQGANConfig) -> hf.NameTable:
    """vqgan-jax's ``/``-joined Flax names: ``kernel``/``scale`` -> ``weight``; all arrays copied (HWIO)."""
    rules = [("quantize/embedding/embedding", "quantize.embedding.weight", "same")]
    for ours, theirs in _layers(config):
        weight = "scale" if _is_norm(ours[-1]) else "kernel"
        rules.append(("/".join(theirs + [weight]), ".".join(ours + ["weight"]), "same"))
        rules.append(("/".join(theirs + ["bias"]), ".".join(ours + ["bias"]), "same"))
    return hf.NameTable(tuple(rules))


def _torch_part(part: str) -> str:
    """``down[3]`` -> ``down.3`` (torch's ``ModuleList`` indices); other parts unchanged."""
    return part.replace("[", ".").rstrip("]")


def torch_names(config: VQGANConfig) -> hf.NameTable:
    """taming ``VQModel`` ``state_dict`` names (min-dalle's detokenizer is a subset): conv weights OIHW."""
    rules = [("quantize.embedding.weight", "quantize.embedding.weight", "same")]
    for ours, _ in _layers(config):
        theirs = ".".join(_torch_part(p) for p in ours)
        rules.append((theirs + ".weight", ".".join(ours + ["weight"]), "same" if _is_norm(ours[-1]) else "conv"))
        rules.append((theirs + ".bias", ".".join(ours + ["bias"]), "same"))
    return hf.NameTable(tuple(rules), ignore=(r"loss\..*",), prefixes=(("embedding.", "quantize.embedding."),))


def _covered(model: nn.Module, names: Any, table: hf.NameTable) -> list[str]:
    """Our stored paths that no name in ``names`` provides (they keep their initial values)."""
    provided = {hit[0] for n in names if not table.ignored(n) and (hit := table.to_ours(n)) is not None}
    return [p for p in nn.state_dict(model) if p not in provided]


def _load(model: VQGAN, tensors: Mapping[str, Any], table: hf.NameTable, source: str, *,
          allow_fresh: tuple[str, ...]) -> tuple[VQGAN, hf_io.ImportReport]:
    if not isinstance(model, VQGAN):
        raise TypeError(f"vqgan_io loads into a models.VQGAN, got {type(model).__name__}.")
    fresh = [p for p in _covered(model, tensors, table) if any(nn.path_matches(a, p) for a in allow_fresh)]
    stored = nn.state_dict(model)
    abstract = [p for p in fresh if isinstance(stored[p], jax.ShapeDtypeStruct)]
    if abstract:
        raise CheckpointError(f"{source} has no tensors for {len(abstract)} arrays that are abstract in the model "
                              f"(e.g. {abstract[:3]}): pass a concretely built VQGAN(config, key=...) so they keep "
                              f"their initial values.")
    try:
        loaded = hf.load_hf(model, tensors, table, allow_missing=allow_fresh)
    except ValueError as err:
        raise type(err)(f"{source}: {err}") from None
    return loaded, hf_io.ImportReport(kind="vqgan", source=source, fresh=fresh, loaded=len(stored) - len(fresh))


def _refuse(path: Path) -> None:
    if path.suffix in hf_io.PICKLE_SUFFIXES:
        hf_io._refuse_pickle(path)


def load_flax(model: VQGAN, src: str | Path | Mapping[str, Any]) -> tuple[VQGAN, hf_io.ImportReport]:
    """``model`` with every array from a vqgan-jax Flax msgpack (a path) or its flat ``/``-joined dict.

    The file must provide every array (``model`` may be abstract, from ``jax.eval_shape``).
    """
    if isinstance(src, Mapping):
        tensors, source = src, "<flax params>"
    else:
        path = Path(src)
        _refuse(path)
        tensors, source = read_flax_msgpack(path), str(path)
    return _load(model, tensors, flax_names(model.config), source, allow_fresh=())


def load_torch(model: VQGAN, src: str | Path | Mapping[str, Any]) -> tuple[VQGAN, hf_io.ImportReport]:
    """``model`` with the arrays of a taming / min-dalle state dict: a ``.safetensors`` path or name -> array.

    The encoder and ``quant_conv`` may be absent (min-dalle's detokenizer): they keep
    ``model``'s values and ``report.fresh`` lists them; everything else must be there.
    """
    if isinstance(src, Mapping):
        tensors, source = {k: np.asarray(v) for k, v in src.items()}, "<state dict>"
    else:
        path = Path(src)
        _refuse(path)
        opened = hf_io.open_source(path)
        tensors, source = {n: opened.read(n) for n in opened.files}, str(path)
    return _load(model, tensors, torch_names(model.config), source, allow_fresh=("encoder", "quant_conv"))


def import_vqgan(src: str | Path, *, key: jax.Array | None = None, **overrides: Any
                 ) -> tuple[VQGAN, hf_io.ImportReport]:
    """A ``VQGAN(VQGANConfig(**overrides))`` with the weights in ``src``, chosen by suffix.

    ``.msgpack``: vqgan-jax (built abstractly, every array read); ``.safetensors``: taming /
    min-dalle (built for real, since a detokenizer file leaves the encoder at its
    initial values). The defaults are ``vqgan_imagenet_f16_16384``'s sizes.
    """
    path = Path(src)
    _refuse(path)
    config = VQGANConfig(**overrides)
    key = jax.random.key(0) if key is None else key
    if path.suffix == ".msgpack":
        return load_flax(jax.eval_shape(lambda: VQGAN(config, key=key)), path)
    if path.suffix == ".safetensors":
        return load_torch(VQGAN(config, key=key), path)
    raise CheckpointError(f"{path}: expected a vqgan-jax `flax_model.msgpack` or a taming / min-dalle state dict "
                          f"saved as `.safetensors`.")


def flax_params(model: VQGAN) -> dict[str, np.ndarray]:
    """The model's arrays under vqgan-jax's ``/``-joined names (numpy), for ``write_flax_msgpack``."""
    return hf.hf_state_dict(model, flax_names(model.config))


def torch_state_dict(model: VQGAN) -> dict[str, np.ndarray]:
    """The model's arrays under taming's ``state_dict`` names and layouts (OIHW convs), numpy."""
    return hf.hf_state_dict(model, torch_names(model.config))


def save_flax(model: VQGAN, path: str | Path) -> None:
    """Write the model as a vqgan-jax ``flax_model.msgpack``."""
    write_flax_msgpack(path, flax_params(model))
