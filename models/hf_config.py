"""Hugging Face ``config.json`` <-> baobab model configs, both directions.

``config_from_hf(cfg)`` reads a ``config.json`` dict into the zoo's config (GPT-2,
Llama, BERT, ViT), listing together every setting baobab does not support;
``config_to_hf(config)`` writes the dict transformers needs to load an export.

>>> from baobab.models import GPT2Config, hf_config
>>> cfg = hf_config.config_to_hf(GPT2Config(vocab_size=16, max_len=8, hidden_size=8, num_layers=1, num_heads=2))
>>> hf_config.config_from_hf(cfg) == GPT2Config(vocab_size=16, max_len=8, hidden_size=8, num_layers=1, num_heads=2)
True
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from baobab.errors import ConfigError

from .bert import BertConfig
from .gpt2 import GPT2Config
from .llama import LlamaConfig, RopeScalingConfig
from .resnet import ResNetConfig
from .vit import ViTConfig

__all__ = ["config_from_hf", "config_to_hf"]


# ----------------------------------------------------------------------------------------
# config.json -> our config
# ----------------------------------------------------------------------------------------


def _require(cfg: Mapping[str, Any], problems: list[str], key: str, allowed: Iterable[Any], default: Any) -> None:
    value = cfg.get(key, default)
    allowed = tuple(allowed)
    if value not in allowed:
        problems.append(f"{key}={value!r} (supported: {list(allowed)})")


_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
        "relu": "relu", "silu": "silu", "swish": "silu"}


def config_from_hf(cfg: Mapping[str, Any], **overrides: Any):
    """Our config for a Hugging Face ``config.json`` (a dict); ``overrides`` set our fields.

    The architecture comes from ``model_type`` (``gpt2``, ``llama``, ``bert``, ``vit``).
    Values baobab does not implement are all reported in one ``NotImplementedError``.

    >>> from baobab.models import hf
    >>> hf.config_from_hf({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4}).hidden_size
    64
    """
    kind = cfg.get("model_type")
    problems: list[str] = []
    act = lambda key, default: _ACT.get(cfg.get(key, default), cfg.get(key, default))  # noqa: E731
    if kind == "gpt2":
        _require(cfg, problems, "activation_function", ("gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu"),
                 "gelu_new")
        _require(cfg, problems, "scale_attn_weights", (True,), True)
        _require(cfg, problems, "scale_attn_by_inverse_layer_idx", (False,), False)
        _require(cfg, problems, "add_cross_attention", (False,), False)
        fields = dict(vocab_size=cfg.get("vocab_size", 50257), max_len=cfg.get("n_positions", 1024),
                      hidden_size=cfg.get("n_embd", 768), num_layers=cfg.get("n_layer", 12),
                      num_heads=cfg.get("n_head", 12), intermediate_size=cfg.get("n_inner"),
                      activation=act("activation_function", "gelu_new"),
                      norm_eps=cfg.get("layer_norm_epsilon", 1e-5), dropout=cfg.get("resid_pdrop", 0.1),
                      attention_dropout=cfg.get("attn_pdrop", 0.1),
                      tie_embeddings=cfg.get("tie_word_embeddings", True))
        config_class = GPT2Config
    elif kind == "llama":
        _require(cfg, problems, "hidden_act", ("silu",), "silu")
        _require(cfg, problems, "pretraining_tp", (1,), 1)
        rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "linear", "llama3"):
            problems.append(f"rope_scaling.rope_type={rope_type!r} (supported: default, linear, llama3)")
        scaling = None
        if rope_type in ("linear", "llama3"):
            scaling = RopeScalingConfig(
                kind=rope_type, factor=rope["factor"], low_freq_factor=rope.get("low_freq_factor", 1.0),
                high_freq_factor=rope.get("high_freq_factor", 4.0),
                original_max_len=rope.get("original_max_position_embeddings", cfg.get("max_position_embeddings", 2048)))
        fields = dict(vocab_size=cfg.get("vocab_size", 32000), max_len=cfg.get("max_position_embeddings", 2048),
                      hidden_size=cfg.get("hidden_size", 4096), num_layers=cfg.get("num_hidden_layers", 32),
                      num_heads=cfg.get("num_attention_heads", 32), num_kv_heads=cfg.get("num_key_value_heads"),
                      head_dim=cfg.get("head_dim"), intermediate_size=cfg.get("intermediate_size", 11008),
                      norm_eps=cfg.get("rms_norm_eps", 1e-6),
                      rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)), rope_scaling=scaling,
                      attention_bias=cfg.get("attention_bias", False), mlp_bias=cfg.get("mlp_bias", False),
                      tie_embeddings=cfg.get("tie_word_embeddings", False))
        config_class = LlamaConfig
    elif kind == "bert":
        _require(cfg, problems, "position_embedding_type", ("absolute",), "absolute")
        _require(cfg, problems, "is_decoder", (False,), False)
        _require(cfg, problems, "hidden_act", tuple(_ACT), "gelu")
        fields = dict(vocab_size=cfg.get("vocab_size", 30522), max_len=cfg.get("max_position_embeddings", 512),
                      type_vocab_size=cfg.get("type_vocab_size", 2), hidden_size=cfg.get("hidden_size", 768),
                      num_layers=cfg.get("num_hidden_layers", 12), num_heads=cfg.get("num_attention_heads", 12),
                      intermediate_size=cfg.get("intermediate_size", 3072), activation=act("hidden_act", "gelu"),
                      norm_eps=cfg.get("layer_norm_eps", 1e-12), dropout=cfg.get("hidden_dropout_prob", 0.1))
        if any(a.endswith("ForSequenceClassification") for a in cfg.get("architectures") or ()):
            fields["num_classes"] = len(cfg.get("id2label") or {0: 0, 1: 1})
        config_class = BertConfig
    elif kind == "vit":
        _require(cfg, problems, "hidden_act", tuple(_ACT), "gelu")
        for key in ("image_size", "patch_size"):
            if not isinstance(cfg.get(key, 0), int):
                problems.append(f"{key}={cfg[key]!r} (supported: one int, square images and patches)")
        labels = cfg.get("id2label") or {}
        is_classifier = any(a.endswith("ForImageClassification") for a in cfg.get("architectures") or ())
        fields = dict(image_size=cfg.get("image_size", 224), patch_size=cfg.get("patch_size", 16),
                      in_channels=cfg.get("num_channels", 3), hidden_size=cfg.get("hidden_size", 768),
                      num_layers=cfg.get("num_hidden_layers", 12), num_heads=cfg.get("num_attention_heads", 12),
                      intermediate_size=cfg.get("intermediate_size", 3072), activation=act("hidden_act", "gelu"),
                      norm_eps=cfg.get("layer_norm_eps", 1e-12), qkv_bias=cfg.get("qkv_bias", True),
                      dropout=cfg.get("hidden_dropout_prob", 0.0),
                      num_classes=len(labels) if is_classifier else 0, pooler=not is_classifier)
        config_class = ViTConfig
    else:
        raise NotImplementedError(
            f"config_from_hf: model_type {kind!r} is not supported; supported: ['gpt2', 'llama', 'bert', 'vit'].")
    if problems:
        raise NotImplementedError(f"config_from_hf ({kind}): unsupported settings: " + "; ".join(problems))
    return config_class(**{**fields, **overrides})


# ----------------------------------------------------------------------------------------
# our config -> config.json
# ----------------------------------------------------------------------------------------

_ACT_BACK = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def _labels(n: int) -> dict:
    return {"id2label": {str(i): f"LABEL_{i}" for i in range(n)}, "label2id": {f"LABEL_{i}": i for i in range(n)}}


def config_to_hf(config: Any) -> dict | None:
    """The ``config.json`` dict transformers needs for ``config`` (``None`` for ResNet: torchvision has none)."""
    if isinstance(config, GPT2Config):
        return dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=config.vocab_size,
                    n_positions=config.max_len, n_embd=config.hidden_size, n_layer=config.num_layers,
                    n_head=config.num_heads, n_inner=config.intermediate_size,
                    activation_function=_ACT_BACK[config.activation], layer_norm_epsilon=config.norm_eps,
                    resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.attention_dropout,
                    tie_word_embeddings=config.tie_embeddings)
    if isinstance(config, LlamaConfig):
        out = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=config.vocab_size,
                   max_position_embeddings=config.max_len, hidden_size=config.hidden_size,
                   num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
                   num_key_value_heads=config.num_kv_heads or config.num_heads,
                   intermediate_size=config.intermediate_size, rms_norm_eps=config.norm_eps,
                   rope_theta=config.rope_theta, attention_bias=config.attention_bias, mlp_bias=config.mlp_bias,
                   tie_word_embeddings=config.tie_embeddings, hidden_act="silu")
        if config.head_dim is not None:
            out["head_dim"] = config.head_dim
        r = config.rope_scaling
        if r is not None:
            out["rope_scaling"] = ({"rope_type": "linear", "factor": r.factor} if r.kind == "linear" else
                                   {"rope_type": "llama3", "factor": r.factor, "low_freq_factor": r.low_freq_factor,
                                    "high_freq_factor": r.high_freq_factor,
                                    "original_max_position_embeddings": r.original_max_len})
        return out
    if isinstance(config, BertConfig):
        out = dict(model_type="bert", architectures=["BertForSequenceClassification" if config.num_classes
                                                     else "BertModel"],
                   vocab_size=config.vocab_size, max_position_embeddings=config.max_len,
                   type_vocab_size=config.type_vocab_size, hidden_size=config.hidden_size,
                   num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
                   intermediate_size=config.intermediate_size, hidden_act=_ACT_BACK[config.activation],
                   layer_norm_eps=config.norm_eps, hidden_dropout_prob=config.dropout,
                   attention_probs_dropout_prob=config.dropout, position_embedding_type="absolute")
        return {**out, **(_labels(config.num_classes) if config.num_classes else {})}
    if isinstance(config, ViTConfig):
        out = dict(model_type="vit", architectures=["ViTForImageClassification" if config.num_classes
                                                    else "ViTModel"],
                   image_size=config.image_size, patch_size=config.patch_size, num_channels=config.in_channels,
                   hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                   num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
                   hidden_act=_ACT_BACK[config.activation], layer_norm_eps=config.norm_eps,
                   qkv_bias=config.qkv_bias, hidden_dropout_prob=config.dropout)
        return {**out, **(_labels(config.num_classes) if config.num_classes else {})}
    if isinstance(config, ResNetConfig):
        return None
    raise ConfigError(f"no Hugging Face export for kind {getattr(config, 'kind', None)!r}; "
                     f"exports exist for ['bert', 'gpt2', 'llama', 'resnet', 'vit'].")
