"""Hugging Face ``config.json`` <-> baobab model configs, both directions.

``config_from_hf(cfg)`` reads a ``config.json`` dict into the zoo's config (GPT-2,
Llama, Mistral, Qwen2, Qwen3, Gemma 3 text, BERT, BART, ViT), listing together every setting
baobab does not support; ``config_to_hf(config)`` writes the dict transformers needs to
load an export, and refuses options the target HF class has no place for.

>>> from baobab.models import GPT2Config, hf_config
>>> cfg = hf_config.config_to_hf(GPT2Config(vocab_size=16, max_len=8, hidden_size=8, num_layers=1, num_heads=2))
>>> hf_config.config_from_hf(cfg) == GPT2Config(vocab_size=16, max_len=8, hidden_size=8, num_layers=1, num_heads=2)
True
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pydantic

from baobab.errors import ConfigError

from .bart import BartConfig
from .bert import BertConfig
from .gemma3_config import Gemma3Config
from .gpt2 import GPT2Config
from .llama import LlamaConfig, RopeScalingConfig
from .llama_variants import MistralConfig, Qwen2Config, Qwen3Config
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


#: HF ``model_type`` -> our config, for the Llama architecture and its option families.
LLAMA_FAMILY = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
SUPPORTED = ["gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma3_text", "bert", "vit", "bart"]


def _rope_scaling(rope: Mapping[str, Any], cfg: Mapping[str, Any], problems: list[str],
                  where: str = "rope_scaling") -> RopeScalingConfig | None:
    """HF ``rope_scaling`` / ``rope_parameters`` -> ours (None for the default RoPE)."""
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "linear", "llama3"):
        problems.append(f"{where}.rope_type={rope_type!r} (supported: default, linear, llama3)")
    if rope_type not in ("linear", "llama3"):
        return None
    return RopeScalingConfig(
        kind=rope_type, factor=rope["factor"], low_freq_factor=rope.get("low_freq_factor", 1.0),
        high_freq_factor=rope.get("high_freq_factor", 4.0),
        original_max_len=rope.get("original_max_position_embeddings", cfg.get("max_position_embeddings", 2048)))


def _llama_family_from_hf(cfg: Mapping[str, Any], kind: str, problems: list[str]) -> dict:
    """Our ``LlamaConfig`` fields for a Llama / Mistral / Qwen2 / Qwen3 ``config.json``."""
    _require(cfg, problems, "hidden_act", ("silu",), "silu")
    _require(cfg, problems, "pretraining_tp", (1,), 1)
    if kind in ("qwen2", "qwen3"):  # a window on the upper layers only: not in any released checkpoint
        _require(cfg, problems, "use_sliding_window", (False,), False)
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    fields = dict(vocab_size=cfg.get("vocab_size", 32000), max_len=cfg.get("max_position_embeddings", 2048),
                  hidden_size=cfg.get("hidden_size", 4096), num_layers=cfg.get("num_hidden_layers", 32),
                  num_heads=cfg.get("num_attention_heads", 32), num_kv_heads=cfg.get("num_key_value_heads"),
                  head_dim=cfg.get("head_dim", 128 if kind == "qwen3" else None),
                  intermediate_size=cfg.get("intermediate_size", 11008), norm_eps=cfg.get("rms_norm_eps", 1e-6),
                  rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
                  rope_scaling=_rope_scaling(rope, cfg, problems),
                  tie_embeddings=cfg.get("tie_word_embeddings", False))
    if kind in ("llama", "qwen3"):
        fields["attention_bias"] = cfg.get("attention_bias", False)
    if kind == "llama":
        fields["mlp_bias"] = cfg.get("mlp_bias", False)
    if kind == "mistral":
        fields["sliding_window"] = cfg.get("sliding_window", 4096)
    fields["qkv_bias"], fields["qk_norm"] = kind == "qwen2", kind == "qwen3"
    return fields


def _gemma3_pattern(num_layers: int, every: int = 6) -> list[str]:
    return ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(num_layers)]


def _gemma3_from_hf(cfg: Mapping[str, Any], problems: list[str]) -> dict:
    """Our ``Gemma3Config`` fields for a ``gemma3_text`` ``config.json`` (RoPE in either HF format)."""
    _require(cfg, problems, "hidden_activation", ("gelu_pytorch_tanh",), "gelu_pytorch_tanh")
    _require(cfg, problems, "use_bidirectional_attention", (False, None), False)
    # transformers' Gemma3 keeps attn_logit_softcapping but never applies it (nor do the released
    # checkpoints, all None): a value here would make our logits differ from theirs
    _require(cfg, problems, "attn_logit_softcapping", (None,), None)
    params = cfg.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:  # one RoPE per layer type
        full, local = params.get("full_attention") or {}, params.get("sliding_attention") or {}
    else:  # rope_theta, rope_scaling (global layers) and rope_local_base_freq
        full = {**(cfg.get("rope_scaling") or {}), "rope_theta": cfg.get("rope_theta", 1000000.0)}
        local = {"rope_theta": cfg.get("rope_local_base_freq", 10000.0)}
    if local.get("rope_type", local.get("type", "default")) != "default":
        problems.append(f"rope_parameters.sliding_attention={local!r} (supported: the default RoPE)")
    num_layers = cfg.get("num_hidden_layers", 26)
    layer_types = list(cfg.get("layer_types") or _gemma3_pattern(num_layers, cfg.get("sliding_window_pattern", 6)))
    if cfg.get("sliding_window", 4096) is None:
        problems.append("sliding_window=None (supported: a window for the sliding_attention layers)")
    return dict(vocab_size=cfg.get("vocab_size", 262208), max_len=cfg.get("max_position_embeddings", 131072),
                hidden_size=cfg.get("hidden_size", 2304), num_layers=num_layers,
                num_heads=cfg.get("num_attention_heads", 8), num_kv_heads=cfg.get("num_key_value_heads", 4),
                head_dim=cfg.get("head_dim", 256), intermediate_size=cfg.get("intermediate_size", 9216),
                norm_eps=cfg.get("rms_norm_eps", 1e-6), rope_theta=full.get("rope_theta", 1000000.0),
                rope_local_theta=local.get("rope_theta", 10000.0),
                rope_scaling=_rope_scaling(full, cfg, problems, "rope_parameters.full_attention"),
                sliding_window=cfg.get("sliding_window", 4096),
                layer_types=None if layer_types == _gemma3_pattern(num_layers) else tuple(layer_types),
                query_pre_attn_scalar=cfg.get("query_pre_attn_scalar", 256),
                final_softcap=cfg.get("final_logit_softcapping"),
                attention_bias=cfg.get("attention_bias", False), tie_embeddings=cfg.get("tie_word_embeddings", True))


#: Keys of old BART config.json files (fairseq-era transformers): accepted at these values, which are
#: BART's architecture; any other value (e.g. mBART's normalize_before=true) is refused by name.
BART_LEGACY = {"normalize_before": False, "add_final_layer_norm": False, "extra_pos_embeddings": 2,
               "static_position_embeddings": False, "add_bias_logits": False, "normalize_embedding": True}


def _bart_from_hf(cfg: Mapping[str, Any], problems: list[str]) -> dict:
    """Our ``BartConfig`` fields for a ``bart`` ``config.json``."""
    for key, value in BART_LEGACY.items():
        _require(cfg, problems, key, (value,), value)
    _require(cfg, problems, "activation_function", ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu"), "gelu")
    _require(cfg, problems, "tie_word_embeddings", (True,), True)
    _require(cfg, problems, "is_encoder_decoder", (True,), True)
    act = cfg.get("activation_function", "gelu")
    return dict(vocab_size=cfg.get("vocab_size", 50265), max_len=cfg.get("max_position_embeddings", 1024),
                hidden_size=cfg.get("d_model", 1024), encoder_layers=cfg.get("encoder_layers", 12),
                decoder_layers=cfg.get("decoder_layers", 12), encoder_heads=cfg.get("encoder_attention_heads", 16),
                decoder_heads=cfg.get("decoder_attention_heads", 16),
                encoder_ffn_size=cfg.get("encoder_ffn_dim", 4096), decoder_ffn_size=cfg.get("decoder_ffn_dim", 4096),
                activation=_ACT.get(act, act), dropout=cfg.get("dropout", 0.1),
                attention_dropout=cfg.get("attention_dropout", 0.0),
                activation_dropout=cfg.get("activation_dropout", 0.0), init_std=cfg.get("init_std", 0.02),
                scale_embedding=cfg.get("scale_embedding", False), pad_token_id=cfg.get("pad_token_id", 1),
                bos_token_id=cfg.get("bos_token_id", 0), eos_token_id=cfg.get("eos_token_id", 2),
                decoder_start_token_id=cfg.get("decoder_start_token_id", 2))


def config_from_hf(cfg: Mapping[str, Any], **overrides: Any):
    """Our config for a Hugging Face ``config.json`` (a dict); ``overrides`` set our fields.

    The architecture comes from ``model_type`` (``SUPPORTED``: ``gpt2``, ``llama``, ``mistral``,
    ``qwen2``, ``qwen3``, ``gemma3_text``, ``bert``, ``vit``, ``bart``).
    Values baobab does not implement are all reported in one ``NotImplementedError``; a
    value of the wrong type is a ``ConfigError`` naming the ``config.json`` key.

    >>> from baobab.models import hf
    >>> hf.config_from_hf({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4}).hidden_size
    64
    >>> hf.config_from_hf({"model_type": "gpt2", "n_embd": "big"})
    Traceback (most recent call last):
    ...
    baobab.errors.ConfigError: config.json (gpt2): n_embd='big' (GPT2Config.hidden_size): input should be a valid integer, unable to parse string as an integer; correct the value
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"config.json: expected a JSON object, got a {type(cfg).__name__}")
    kind = cfg.get("model_type")
    try:
        return _config_from_hf(cfg, kind, overrides)
    except pydantic.ValidationError as err:
        raise ConfigError(f"config.json ({kind}): "
                          + "; ".join(_wrong_value(e, cfg, overrides, err.title) for e in err.errors())
                          + "; correct the value") from None
    except (KeyError, TypeError, AttributeError) as err:  # a nested setting missing or of another type
        raise ConfigError(f"config.json ({kind}): cannot read it ({type(err).__name__}: {err}); a setting is "
                          f"missing or has the wrong type (compare with the model's original config.json)") from None


def _wrong_value(e: Mapping[str, Any], cfg: Mapping[str, Any], overrides: Mapping[str, Any], title: str) -> str:
    """One pydantic error, named by the ``config.json`` key (or override) that gave the value."""
    field = ".".join(str(p) for p in e["loc"])
    got, msg = e.get("input"), e["msg"][0].lower() + e["msg"][1:]
    if not e["loc"]:  # a check across fields: its message names them
        return f"{title}: {msg}"
    if e["loc"][0] in overrides:
        return f"override {field}={got!r}: {msg}"
    theirs = [k for k, v in cfg.items() if type(v) is type(got) and v == got]
    return f"{'/'.join(theirs) or field}={got!r} ({title}.{field}): {msg}"


def _config_from_hf(cfg: Mapping[str, Any], kind: Any, overrides: Mapping[str, Any]):
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
    elif kind in LLAMA_FAMILY:
        fields = _llama_family_from_hf(cfg, kind, problems)
        config_class = LLAMA_FAMILY[kind]
    elif kind == "gemma3_text":
        fields = _gemma3_from_hf(cfg, problems)
        config_class = Gemma3Config
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
    elif kind == "bart":
        fields = _bart_from_hf(cfg, problems)
        config_class = BartConfig
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
            f"config_from_hf: model_type {kind!r} is not supported; supported: {SUPPORTED}.")
    if problems:
        raise NotImplementedError(f"config_from_hf ({kind}): unsupported settings: " + "; ".join(problems))
    return config_class(**{**fields, **overrides})


# ----------------------------------------------------------------------------------------
# our config -> config.json
# ----------------------------------------------------------------------------------------

_ACT_BACK = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def _labels(n: int) -> dict:
    return {"id2label": {str(i): f"LABEL_{i}" for i in range(n)}, "label2id": {f"LABEL_{i}": i for i in range(n)}}


#: What each HF class of the Llama family can hold: options its checkpoint has no place for.
_FIXED = {
    "llama": dict(activation="silu", qkv_bias=False, qk_norm=False, sliding_window=None),
    "mistral": dict(activation="silu", attention_bias=False, mlp_bias=False, qkv_bias=False, qk_norm=False),
    "qwen2": dict(activation="silu", attention_bias=False, mlp_bias=False, qkv_bias=True, qk_norm=False,
                  sliding_window=None),
    "qwen3": dict(activation="silu", mlp_bias=False, qkv_bias=False, qk_norm=True, sliding_window=None),
}
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM"}


def _rope_to_hf(r: RopeScalingConfig) -> dict:
    if r.kind == "linear":
        return {"rope_type": "linear", "factor": r.factor}
    return {"rope_type": "llama3", "factor": r.factor, "low_freq_factor": r.low_freq_factor,
            "high_freq_factor": r.high_freq_factor, "original_max_position_embeddings": r.original_max_len}


def _llama_family_to_hf(config: LlamaConfig) -> dict:
    kind, fixed = config.kind, _FIXED[config.kind]
    wrong = [f"{name}={getattr(config, name)!r}" for name, value in fixed.items() if getattr(config, name) != value]
    if wrong:
        raise ConfigError(f"config_to_hf: HF {_ARCHITECTURES[kind]} has no place for {', '.join(wrong)} "
                          f"(kind {kind!r} holds {fixed}); pick the family that has it (mistral: sliding_window, "
                          f"qwen2: qkv_bias, qwen3: qk_norm) or drop the option.")
    out = dict(model_type=kind, architectures=[_ARCHITECTURES[kind]], vocab_size=config.vocab_size,
               max_position_embeddings=config.max_len, hidden_size=config.hidden_size,
               num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
               num_key_value_heads=config.kv_heads, intermediate_size=config.intermediate_size,
               rms_norm_eps=config.norm_eps, rope_theta=config.rope_theta,
               tie_word_embeddings=config.tie_embeddings, hidden_act="silu")
    if kind in ("llama", "qwen3"):
        out["attention_bias"] = config.attention_bias
    if kind == "llama":
        out["mlp_bias"] = config.mlp_bias
    if kind == "mistral":
        out["sliding_window"] = config.sliding_window
    if kind in ("qwen2", "qwen3"):
        out["use_sliding_window"] = False
    if config.head_dim is not None or kind == "qwen3":  # HF Qwen3's default is 128, not hidden / heads
        out["head_dim"] = config.dims_per_head
    if config.rope_scaling is not None:
        out["rope_scaling"] = _rope_to_hf(config.rope_scaling)
    return out


def _gemma3_to_hf(config: Gemma3Config) -> dict:
    """Both RoPE spellings: ``rope_parameters`` per layer type (transformers 5) and the older keys."""
    if config.attn_softcap is not None:
        raise ConfigError(f"config_to_hf: HF Gemma3ForCausalLM does not apply attention soft-capping "
                          f"(attn_logit_softcapping is read but unused), so attn_softcap={config.attn_softcap} "
                          f"cannot be exported; train with attn_softcap=None to export.")
    full = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling is not None:
        full.update(_rope_to_hf(config.rope_scaling))
    out = dict(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], vocab_size=config.vocab_size,
               max_position_embeddings=config.max_len, hidden_size=config.hidden_size,
               num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
               num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim,
               intermediate_size=config.intermediate_size, rms_norm_eps=config.norm_eps,
               hidden_activation="gelu_pytorch_tanh", sliding_window=config.sliding_window,
               layer_types=["sliding_attention" if s else "full_attention" for s in config.sliding_layers],
               query_pre_attn_scalar=config.query_pre_attn_scalar, attn_logit_softcapping=None,
               final_logit_softcapping=config.final_softcap, attention_bias=config.attention_bias,
               tie_word_embeddings=config.tie_embeddings, use_bidirectional_attention=False,
               rope_theta=config.rope_theta, rope_local_base_freq=config.rope_local_theta,
               rope_parameters={"full_attention": full,
                                "sliding_attention": {"rope_type": "default", "rope_theta": config.rope_local_theta}})
    if config.rope_scaling is not None:
        out["rope_scaling"] = _rope_to_hf(config.rope_scaling)
    return out


def config_to_hf(config: Any) -> dict | None:
    """The ``config.json`` dict transformers needs for ``config`` (``None`` for ResNet: torchvision has none)."""
    if isinstance(config, GPT2Config):
        return dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=config.vocab_size,
                    n_positions=config.max_len, n_embd=config.hidden_size, n_layer=config.num_layers,
                    n_head=config.num_heads, n_inner=config.intermediate_size,
                    activation_function=_ACT_BACK[config.activation], layer_norm_epsilon=config.norm_eps,
                    resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.attention_dropout,
                    tie_word_embeddings=config.tie_embeddings)
    if isinstance(config, LlamaConfig):  # and its option families
        return _llama_family_to_hf(config)
    if isinstance(config, Gemma3Config):
        return _gemma3_to_hf(config)
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
    if isinstance(config, BartConfig):
        return dict(model_type="bart", architectures=["BartForConditionalGeneration"], vocab_size=config.vocab_size,
                    max_position_embeddings=config.max_len, d_model=config.hidden_size,
                    encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
                    encoder_attention_heads=config.encoder_heads, decoder_attention_heads=config.decoder_heads,
                    encoder_ffn_dim=config.encoder_ffn_size, decoder_ffn_dim=config.decoder_ffn_size,
                    activation_function=_ACT_BACK[config.activation], dropout=config.dropout,
                    attention_dropout=config.attention_dropout, activation_dropout=config.activation_dropout,
                    init_std=config.init_std, scale_embedding=config.scale_embedding,
                    pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
                    eos_token_id=config.eos_token_id, decoder_start_token_id=config.decoder_start_token_id,
                    is_encoder_decoder=True, tie_word_embeddings=True)
    if isinstance(config, ResNetConfig):
        return None
    raise ConfigError(f"no Hugging Face export for kind {getattr(config, 'kind', None)!r}; "
                     f"exports exist for ['bart', 'bert', 'gemma3', 'gpt2', 'llama', 'mistral', 'qwen2', 'qwen3', "
                     f"'resnet', 'vit'].")
