"""Hugging Face / torchvision tensor names <-> baobab parameter paths, as declarative tables.

The zoo's models name their parameters after the upstream checkpoints, so a
checkpoint maps onto a model by a small table, not by code. A ``NameTable`` is a
list of rules ``(their name, our path, layout)``; names are templates where ``{i}``
(any name in braces) stands for a decimal index::

    ("model.layers.{i}.self_attn.q_proj.weight", "model.layers[{i}].self_attn.q_proj.weight", "linear")

Layouts say how a tensor is stored differently:

* ``"same"``: copied as it is (embeddings, norms, GPT-2's ``Conv1D``, BatchNorm);
* ``"linear"``: torch ``Linear`` ``(out, in)`` -> ours ``(in, out)``, a transpose;
* ``"conv"``: torch ``Conv`` ``(out, in, *kernel)`` -> ours ``(*kernel, in, out)``, channels-last.

Our paths are written per layer (``h[3]``). When a model stores its layers stacked
(``scan_layers=True``, an ``nn.Stacked`` at ``transformer.h``), ``load_hf`` and
``hf_state_dict`` translate between ``transformer.h[i].X`` and row ``i`` of
``transformer.h.layer.X`` themselves, so a table serves both layouts.

What is here: the tables (``gpt2_names``, ``llama_names``, ``mistral_names``, ``qwen2_names``,
``qwen3_names``, ``gemma3_names``, ``bert_names``, ``bart_names``, ``vit_names``, ``resnet_names``, each a
function of the model config because e.g. a tied head has no ``lm_head``), config
translation from a ``config.json`` dict (``config_from_hf``, from ``hf_config``), and an
in-memory ``load_hf`` / ``hf_state_dict``. Reading safetensors shard by shard
into a target sharding is the importer's job; it can use ``NameTable.to_ours`` and
``to_baobab_layout`` per tensor.

>>> import jax, numpy as np
>>> from baobab.models import GPT2, GPT2Config, hf
>>> config = GPT2Config(vocab_size=10, max_len=8, hidden_size=8, num_layers=1, num_heads=2)
>>> table = hf.gpt2_names(config)
>>> table.to_ours("transformer.h.0.attn.c_attn.weight")
('transformer.h[0].attn.c_attn.weight', 'same')
>>> table.to_theirs("transformer.h[0].mlp.c_fc.bias")
('transformer.h.0.mlp.c_fc.bias', 'same')
>>> model = GPT2(config, key=jax.random.key(0))
>>> tensors = hf.hf_state_dict(model, table)  # export ...
>>> sorted(tensors)[:2]
['transformer.h.0.attn.c_attn.bias', 'transformer.h.0.attn.c_attn.weight']
>>> model = hf.load_hf(model, tensors, table)  # ... and import again
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

import numpy as np

from baobab import nn
from baobab.errors import CheckpointError, ConfigError, ShapeMismatchError

from .bart import BartConfig
from .bert import BertConfig
from .gemma3_config import Gemma3Config
from .gpt2 import GPT2Config
from .hf_config import config_from_hf as config_from_hf
from .llama import LlamaConfig
from .llama_variants import MistralConfig, Qwen2Config, Qwen3Config
from .resnet import ResNetConfig
from .vit import ViTConfig

__all__ = [
    "NameTable", "LAYOUTS", "to_baobab_layout", "to_torch_layout", "load_hf", "hf_state_dict",
    "gpt2_names", "llama_names", "mistral_names", "qwen2_names", "qwen3_names", "gemma3_names", "bert_names",
    "bart_names", "vit_names", "resnet_names", "NAME_TABLES", "names_for",
    "config_from_hf",
]

LAYOUTS = ("same", "linear", "conv")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _template_regex(template: str) -> re.Pattern:
    parts = _PLACEHOLDER.split(template)  # literal, name, literal, name, ...
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>\\d+)" for i, p in enumerate(parts))
    return re.compile(regex)


@dataclasses.dataclass(frozen=True)
class NameTable:
    """How one upstream architecture's tensor names map onto a baobab model.

    * ``rules``: ``(their template, our template, layout)`` triples.
    * ``ignore``: regexes (full match) of their tensors that carry no parameters
      (buffers such as ``attn.bias`` masks, ``num_batches_tracked``, tied copies).
    * ``prefixes``: ``(theirs, canonical)`` rewrites applied before matching, first
      match only, for checkpoints saved from another head class (``bert.`` in
      ``BertForSequenceClassification``; GPT-2 files without ``transformer.``).
    """

    rules: tuple[tuple[str, str, str], ...]
    ignore: tuple[str, ...] = ()
    prefixes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        for theirs, ours, layout in self.rules:
            if layout not in LAYOUTS:
                raise ValueError(f"NameTable rule {theirs!r}: unknown layout {layout!r}; use one of {LAYOUTS}.")
            if set(_PLACEHOLDER.findall(theirs)) != set(_PLACEHOLDER.findall(ours)):
                raise ValueError(f"NameTable rule {theirs!r} -> {ours!r}: both sides need the same placeholders.")
        compiled = [(_template_regex(t), _template_regex(o), t, o, lay) for t, o, lay in self.rules]
        object.__setattr__(self, "_compiled", compiled)

    def canonical(self, name: str) -> str:
        """``name`` with the first matching ``prefixes`` rewrite applied."""
        for theirs, canonical in self.prefixes:
            if name.startswith(theirs):
                return canonical + name[len(theirs):]
        return name

    def ignored(self, name: str) -> bool:
        return any(re.fullmatch(p, self.canonical(name)) for p in self.ignore)

    def to_ours(self, name: str) -> tuple[str, str] | None:
        """Their tensor name -> ``(our per-layer path, layout)``, or ``None`` if no rule matches."""
        name = self.canonical(name)
        for theirs_re, _, _, ours, layout in self._compiled:
            m = theirs_re.fullmatch(name)
            if m:
                return _PLACEHOLDER.sub(lambda g: m.group(g.group(1)), ours), layout
        return None

    def to_theirs(self, path: str) -> tuple[str, str] | None:
        """Our per-layer path -> ``(their canonical name, layout)``, or ``None``."""
        for _, ours_re, theirs, _, layout in self._compiled:
            m = ours_re.fullmatch(path)
            if m:
                return _PLACEHOLDER.sub(lambda g: m.group(g.group(1)), theirs), layout
        return None


def to_baobab_layout(x: Any, layout: str) -> np.ndarray:
    """Convert one upstream tensor (numpy) to baobab's layout."""
    x = np.asarray(x)
    if layout == "linear":
        return x.T
    if layout == "conv":  # (O, I, *k) -> (*k, I, O)
        return np.transpose(x, (*range(2, x.ndim), 1, 0))
    return x


def to_torch_layout(x: Any, layout: str) -> np.ndarray:
    """The inverse of ``to_baobab_layout``."""
    x = np.asarray(x)
    if layout == "linear":
        return x.T
    if layout == "conv":  # (*k, I, O) -> (O, I, *k)
        return np.transpose(x, (x.ndim - 1, x.ndim - 2, *range(x.ndim - 2)))
    return x


# ----------------------------------------------------------------------------------------
# Per-layer view of a model whose layers may be stacked
# ----------------------------------------------------------------------------------------


def _stacks(model: nn.Module) -> dict[str, int]:
    """Paths of the ``nn.Stacked`` modules in ``model`` -> their number of layers."""
    return {path: m.num_layers for path, m in nn.iter_modules(model) if isinstance(m, nn.Stacked)}


def _per_layer(model: nn.Module) -> dict[str, tuple[str, int | None]]:
    """Our per-layer paths -> ``(stored path, row)``; ``row`` is ``None`` for unstacked arrays."""
    stacks = _stacks(model)
    view: dict[str, tuple[str, int | None]] = {}
    for path in nn.state_dict(model):
        for stack, n in stacks.items():
            inner = f"{stack}.layer." if stack else "layer."
            if path.startswith(inner):
                rest = path[len(inner):]
                for i in range(n):
                    view[f"{stack}[{i}].{rest}"] = (path, i)
                break
        else:
            view[path] = (path, None)
    return view


def load_hf(model: nn.Module, tensors: Mapping[str, Any], table: NameTable, *,
            allow_missing: Iterable[str] = ()) -> nn.Module:
    """A copy of ``model`` with its arrays taken from upstream ``tensors`` (name -> array).

    Tensors are renamed and re-laid-out by ``table``, stacked where the model stacks
    its layers, and cast to the model's dtypes. Every problem is reported together in
    one ``ValueError``: their tensors no rule maps (unexpected), our arrays nothing
    provides (missing; ``allow_missing`` path patterns, e.g. ``"classifier"``, keep their
    initial values instead, for new heads), and shape mismatches.
    """
    view = _per_layer(model)
    own = nn.state_dict(model)
    allow = tuple(allow_missing)
    found: dict[str, np.ndarray] = {}
    unexpected, problems, mismatched = [], [], set()
    for name, value in tensors.items():
        if table.ignored(name):
            continue
        hit = table.to_ours(name)
        if hit is None or hit[0] not in view:
            unexpected.append(name if hit is None else f"{name} (-> {hit[0]}, which this model does not have)")
            continue
        path, layout = hit
        x = to_baobab_layout(value, layout)
        stored, row = view[path]
        want = tuple(own[stored].shape[1:] if row is not None else own[stored].shape)
        if tuple(x.shape) != want:
            problems.append(f"{name} -> {path}: shape {tuple(x.shape)} after layout {layout!r}, model has {want}")
            mismatched.add(path)
            continue
        if path in found:
            problems.append(f"{name} -> {path}: a second tensor maps to the same path")
        found[path] = x
    missing = [p for p in view if p not in found and p not in mismatched
               and not any(nn.path_matches(a, p) for a in allow)]
    if unexpected:
        problems.insert(0, f"unexpected tensors ({len(unexpected)}), no rule maps them: {unexpected}")
    if missing:
        problems.insert(0, f"missing ({len(missing)}), nothing provides: {missing}")
    if problems:
        raise ShapeMismatchError(f"load_hf into {type(model).__name__}: " + "; ".join(problems))

    rows: dict[str, list[tuple[int, str]]] = {}  # stored stacked path -> [(row, per-layer path)]
    for path, (stored, row) in view.items():
        if row is not None:
            rows.setdefault(stored, []).append((row, path))
    values: dict[str, Any] = {}
    for stored, current in own.items():
        if stored not in rows:
            values[stored] = found.get(stored, current)
        else:  # one tensor per layer -> (num_layers, ...); rows nothing provides keep their values
            values[stored] = np.stack([found[p] if p in found else np.asarray(current[row])
                                       for row, p in sorted(rows[stored])])
    return nn.load_state_dict(model, values, cast=True)


def hf_state_dict(model: nn.Module, table: NameTable) -> dict[str, np.ndarray]:
    """The model's arrays under their upstream names and layouts (numpy), for export.

    Stacked layers are split into one tensor per layer. An array with no rule is an error.
    """
    own = nn.state_dict(model)
    out, unmapped = {}, []
    for path, (stored, row) in _per_layer(model).items():
        hit = table.to_theirs(path)
        if hit is None:
            unmapped.append(path)
            continue
        x = np.asarray(own[stored]) if row is None else np.asarray(own[stored][row])
        out[hit[0]] = np.ascontiguousarray(to_torch_layout(x, hit[1]))
    if unmapped:
        raise CheckpointError(f"hf_state_dict: no rule names these arrays of {type(model).__name__}: {unmapped}")
    return out


# ----------------------------------------------------------------------------------------
# The tables
# ----------------------------------------------------------------------------------------


def _same_names(templates: Iterable[str], layout: str = "same", prefix: str = "") -> list[tuple[str, str, str]]:
    """Rules whose only difference is the layer index: ``a.{i}.b`` <-> ``a[{i}].b``."""
    return [(prefix + t, re.sub(r"\.(\{\w+\})", r"[\1]", t), layout) for t in templates]


def gpt2_names(config: GPT2Config) -> NameTable:
    """``GPT2LMHeadModel``. GPT-2's ``Conv1D`` weights are ``(in, out)`` already: all ``same``."""
    h = "transformer.h.{i}."
    rules = _same_names(["transformer.wte.weight", "transformer.wpe.weight",
                         "transformer.ln_f.weight", "transformer.ln_f.bias"])
    rules += _same_names(h + p for p in (
        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
        "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias"))
    ignore = [r"transformer\.h\.\d+\.attn\.(bias|masked_bias)"]  # causal-mask buffers of old files
    if config.tie_embeddings:
        ignore.append(r"lm_head\.weight")  # a copy of wte when present
    else:
        rules.append(("lm_head.weight", "lm_head.weight", "linear"))
    prefixes = tuple((p, "transformer." + p) for p in ("h.", "wte.", "wpe.", "ln_f."))
    return NameTable(tuple(rules), tuple(ignore), prefixes)


def _decoder_names(config: Any, norms: Iterable[str]) -> NameTable:
    """A Llama-like ``*ForCausalLM``: embeddings, the per-layer ``norms``, q/k/v/o and gate/up/down
    projections (torch ``Linear``: transposed) with their biases (rules for absent biases match nothing)."""
    layer = "model.layers.{i}."
    projections = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    rules = _same_names(["model.embed_tokens.weight", "model.norm.weight"])
    rules += _same_names([layer + n + ".weight" for n in norms])
    rules += _same_names([layer + p + ".weight" for p in projections], "linear")
    rules += _same_names([layer + p + ".bias" for p in projections])
    ignore = [r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"]
    if config.tie_embeddings:
        ignore.append(r"lm_head\.weight")
    else:
        rules.append(("lm_head.weight", "lm_head.weight", "linear"))
    return NameTable(tuple(rules), tuple(ignore))


def _llama_norms(config: LlamaConfig) -> tuple[str, ...]:
    qk = ("self_attn.q_norm", "self_attn.k_norm") if config.qk_norm else ()
    return ("input_layernorm", "post_attention_layernorm", *qk)


def llama_names(config: LlamaConfig) -> NameTable:
    """``LlamaForCausalLM``. Projections are torch ``Linear``: transposed."""
    return _decoder_names(config, _llama_norms(config))


def mistral_names(config: MistralConfig) -> NameTable:
    """``MistralForCausalLM``: Llama's names (the sliding window has no parameters)."""
    return _decoder_names(config, _llama_norms(config))


def qwen2_names(config: Qwen2Config) -> NameTable:
    """``Qwen2ForCausalLM``: Llama's names, with ``q_proj``/``k_proj``/``v_proj`` biases."""
    return _decoder_names(config, _llama_norms(config))


def qwen3_names(config: Qwen3Config) -> NameTable:
    """``Qwen3ForCausalLM``: Llama's names plus ``self_attn.q_norm``/``k_norm`` ``(head_dim,)``."""
    return _decoder_names(config, _llama_norms(config))


def gemma3_names(config: Gemma3Config) -> NameTable:
    """``Gemma3ForCausalLM``: four norms per layer, q/k norms; the embedding is stored unscaled."""
    return _decoder_names(config, ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                                   "post_feedforward_layernorm", "self_attn.q_norm", "self_attn.k_norm"))


def bert_names(config: BertConfig) -> NameTable:
    """``BertModel`` (and ``BertForSequenceClassification`` with a ``classifier``)."""
    layer = "encoder.layer.{i}."
    linears = ["attention.self.query", "attention.self.key", "attention.self.value",
               "attention.output.dense", "intermediate.dense", "output.dense"]
    norms = ["attention.output.LayerNorm", "output.LayerNorm"]
    rules = _same_names(f"embeddings.{e}.weight" for e in
                        ("word_embeddings", "position_embeddings", "token_type_embeddings"))
    rules += _same_names(["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"])
    rules += _same_names([layer + p + ".weight" for p in linears], "linear")
    rules += _same_names([layer + p + s for p in linears for s in (".bias",)])
    rules += _same_names([layer + p + s for p in norms for s in (".weight", ".bias")])
    rules += [("pooler.dense.weight", "pooler.dense.weight", "linear"),
              ("pooler.dense.bias", "pooler.dense.bias", "same"),
              ("classifier.weight", "classifier.weight", "linear"), ("classifier.bias", "classifier.bias", "same")]
    ignore = [r"embeddings\.position_ids", r"embeddings\.token_type_ids"]  # buffers
    return NameTable(tuple(rules), tuple(ignore), prefixes=(("bert.", ""),))


def bart_names(config: BartConfig) -> NameTable:
    """``BartForConditionalGeneration``. Projections and ``fc1``/``fc2`` are torch ``Linear``: transposed.

    The tied copies of ``model.shared.weight`` (``lm_head.weight``,
    ``model.{encoder,decoder}.embed_tokens.weight``) are ignored on import and not written on export.
    Files saved from ``BartModel`` (no ``model.`` prefix) map too; they lack ``final_logits_bias``
    (zeros in a fresh model): ``hf_io.load_into(model, src, fresh=["final_logits_bias"])`` keeps it.
    """
    attention = [f"self_attn.{p}_proj" for p in ("q", "k", "v", "out")]
    cross = [f"encoder_attn.{p}_proj" for p in ("q", "k", "v", "out")]
    rules = _same_names(["model.shared.weight", "final_logits_bias"])
    for stack, linears, norms in (
            ("encoder", attention + ["fc1", "fc2"], ["self_attn_layer_norm", "final_layer_norm"]),
            ("decoder", attention + cross + ["fc1", "fc2"],
             ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"])):
        top = f"model.{stack}."
        rules += _same_names([top + "embed_positions.weight", top + "layernorm_embedding.weight",
                              top + "layernorm_embedding.bias"])
        layer = top + "layers.{i}."
        rules += _same_names([layer + p + ".weight" for p in linears], "linear")
        rules += _same_names([layer + p + ".bias" for p in linears])
        rules += _same_names([layer + n + s for n in norms for s in (".weight", ".bias")])
    ignore = [r"lm_head\.weight", r"model\.(encoder|decoder)\.embed_tokens\.weight"]  # tied to model.shared
    prefixes = tuple((p, "model." + p) for p in ("shared.", "encoder.", "decoder."))  # BartModel files
    return NameTable(tuple(rules), tuple(ignore), prefixes)


def vit_names(config: ViTConfig) -> NameTable:
    """``ViTForImageClassification`` when ``num_classes > 0`` (names prefixed ``vit.``), else ``ViTModel``."""
    p = "vit." if config.num_classes else ""
    layer = "encoder.layer.{i}."
    linears = ["attention.attention.query", "attention.attention.key", "attention.attention.value",
               "attention.output.dense", "intermediate.dense", "output.dense"]
    norms = ["layernorm_before", "layernorm_after"]
    rules = [(p + n, n, "same") for n in ("embeddings.cls_token", "embeddings.position_embeddings",
                                          "embeddings.patch_embeddings.projection.bias",
                                          "layernorm.weight", "layernorm.bias")]
    rules += [(p + "embeddings.patch_embeddings.projection.weight",
               "embeddings.patch_embeddings.projection.weight", "conv")]
    rules += _same_names([layer + n + ".weight" for n in linears], "linear", prefix=p)
    rules += _same_names([layer + n + ".bias" for n in linears], prefix=p)
    rules += _same_names([layer + n + s for n in norms for s in (".weight", ".bias")], prefix=p)
    rules += [(p + "pooler.dense.weight", "pooler.dense.weight", "linear"),
              (p + "pooler.dense.bias", "pooler.dense.bias", "same"),
              ("classifier.weight", "classifier.weight", "linear"), ("classifier.bias", "classifier.bias", "same")]
    prefixes = (("vit.", ""),) if not p else ()
    return NameTable(tuple(rules), prefixes=prefixes)


def resnet_names(config: ResNetConfig) -> NameTable:
    """torchvision ``resnet18/34/50/101/152`` ``state_dict``: convs channels-last, ``fc`` transposed."""
    block = "layer{s}.{b}."
    bn = ("weight", "bias", "running_mean", "running_var")
    rules = [("conv1.weight", "conv1.weight", "conv")] + [(f"bn1.{s}", f"bn1.{s}", "same") for s in bn]
    for n in (1, 2, 3):
        rules += [(f"{block}conv{n}.weight", f"layer{{s}}[{{b}}].conv{n}.weight", "conv")]
        rules += [(f"{block}bn{n}.{s}", f"layer{{s}}[{{b}}].bn{n}.{s}", "same") for s in bn]
    rules += [(f"{block}downsample.0.weight", "layer{s}[{b}].downsample[0].weight", "conv")]
    rules += [(f"{block}downsample.1.{s}", f"layer{{s}}[{{b}}].downsample[1].{s}", "same") for s in bn]
    rules += [("fc.weight", "fc.weight", "linear"), ("fc.bias", "fc.bias", "same")]
    return NameTable(tuple(rules), ignore=(r".*num_batches_tracked",))


#: model kind -> the function giving its table for a config.
NAME_TABLES = {"gpt2": gpt2_names, "llama": llama_names, "mistral": mistral_names, "qwen2": qwen2_names,
               "qwen3": qwen3_names, "gemma3": gemma3_names, "bert": bert_names, "bart": bart_names,
               "vit": vit_names, "resnet": resnet_names}


def names_for(config: Any) -> NameTable:
    """The name table for a model config (by its ``kind``)."""
    fn = NAME_TABLES.get(getattr(config, "kind", None))
    if fn is None:
        raise ConfigError(f"no upstream name table for kind {getattr(config, 'kind', None)!r}; "
                         f"tables exist for {sorted(NAME_TABLES)}.")
    return fn(config)
