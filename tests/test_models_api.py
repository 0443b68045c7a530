"""The public surface of baobab.models, its kind table, configs, name tables and docstring examples."""

import doctest
import importlib
import pkgutil

import jax
import numpy as np
import pydantic
import pytest

from baobab import models, nn
from baobab.config import Config
from baobab.models import hf

MODELS_PUBLIC = [
    "MODELS", "ModelEntry", "ModelConfig", "build_model", "parse_model_config",
    "MLPConfig", "MLPClassifier", "CNNConfig", "CNN", "ResNetConfig", "ResNet", "ViTConfig", "ViT",
    "GPT2Config", "GPT2", "LlamaConfig", "Llama", "RopeScalingConfig", "MistralConfig", "Qwen2Config",
    "Qwen3Config", "Gemma3Config", "Gemma3", "BertConfig", "Bert", "mean_pool",
    "BartConfig", "Bart", "generate_seq2seq", "DalleBartConfig", "DalleBart", "VQGANConfig", "VQGAN",
    "generate", "generate_stream", "sample_logits", "generate_images", "sample_image_codes", "GeneratedImages",
    "image_grid", "check_pair", "hf", "hf_config", "hf_io",
]
SUBMODULES = sorted(f"baobab.models.{m.name}" for m in pkgutil.iter_modules(models.__path__))


def test_public_names_are_pinned():
    assert sorted(models.__all__) == sorted(MODELS_PUBLIC)
    for name in MODELS_PUBLIC:
        obj = getattr(models, name)
        assert getattr(obj, "__doc__", None) or name in ("MODELS", "ModelConfig"), f"models.{name} has no docstring"


@pytest.mark.parametrize("name", ["baobab.models"] + SUBMODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    assert result.attempted > 0, f"{name} has no runnable example"


def test_kind_table_is_consistent():
    assert sorted(models.MODELS) == ["bart", "bert", "cnn", "dalle_bart", "gemma3", "gpt2", "llama", "mistral", "mlp",
                                     "qwen2", "qwen3", "resnet", "vit", "vqgan"]
    for kind, entry in models.MODELS.items():
        config = entry.config()
        assert config.kind == kind and isinstance(config, Config)
        assert entry.model.__doc__ and entry.config.__doc__
        assert type(models.parse_model_config({"kind": kind})) is entry.config


def test_unknown_kind_lists_the_valid_ones():
    for bad in ({"kind": "gpt5"}, {"hidden": 3}):
        with pytest.raises(ValueError, match=r"valid kinds: \['bart', 'bert', 'cnn', 'dalle_bart', 'gemma3', 'gpt2'"):
            models.build_model(bad, key=jax.random.key(0))


def test_model_config_union_in_an_experiment_config():
    class Experiment(Config):
        model: models.ModelConfig

    exp = Experiment.model_validate({"model": {"kind": "gpt2", "hidden_size": 64, "num_heads": 4}})
    assert isinstance(exp.model, models.GPT2Config) and exp.model.hidden_size == 64
    assert Experiment.model_validate(exp.model_dump()) == exp  # the resolved config round-trips
    with pytest.raises(pydantic.ValidationError, match="unknown kind 'gpt5'; valid kinds: 'mlp', 'cnn', 'resnet'"):
        Experiment.model_validate({"model": {"kind": "gpt5"}})
    with pytest.raises(pydantic.ValidationError, match="hidden_sise"):
        Experiment.model_validate({"model": {"kind": "gpt2", "hidden_sise": 64}})  # unknown keys are errors
    with pytest.raises(pydantic.ValidationError, match="num_heads=5 does not divide hidden_size=64"):
        Experiment.model_validate({"model": {"kind": "gpt2", "hidden_size": 64, "num_heads": 5}})
    with pytest.raises(pydantic.ValidationError, match="num_kv_heads=3 does not divide num_heads=4"):
        models.LlamaConfig(num_heads=4, num_kv_heads=3, hidden_size=64)
    with pytest.raises(pydantic.ValidationError, match="remat needs scan_layers"):
        models.GPT2Config(remat="full")


def test_default_configs_are_the_reference_sizes():
    sizes = {
        "gpt2": 124_439_808,  # GPT-2 small, tied embeddings
        "llama": 1_235_814_400,  # Llama 3.2 1B, tied embeddings
        "mistral": 7_241_732_096,  # Mistral-7B-v0.1, untied
        "qwen2": 494_032_768,  # Qwen2.5-0.5B, tied, q/k/v biases
        "qwen3": 596_049_920,  # Qwen3-0.6B, tied, q/k norms
        "gemma3": 999_885_952,  # Gemma 3 1B, tied
        "bert": 109_482_240,  # bert-base-uncased with the pooler
        "bart": 406_291_456,  # facebook/bart-large (final_logits_bias is state, not a parameter)
        "vit": 86_567_656,  # ViT-B/16, 1000 classes
        "dalle_bart": 437_833_712,  # DALL·E Mini as released (DalleBartConfig.mini(); mega: 2_587_521_024)
    }
    for kind, n in sizes.items():
        entry = models.MODELS[kind]
        abstract = jax.eval_shape(lambda k, e=entry: e.model(e.config(), key=k), jax.random.key(0))
        assert nn.count_parameters(abstract) == n, kind


def test_every_parameter_has_logical_axes_known_to_the_default_rules():
    for kind, entry in models.MODELS.items():
        overrides = {"gpt2": dict(scan_layers=True, num_layers=2), "llama": dict(num_layers=2),
                     "mistral": dict(num_layers=2), "qwen2": dict(num_layers=2), "qwen3": dict(num_layers=2),
                     "gemma3": dict(num_layers=2, scan_layers=True),
                     "bert": dict(num_layers=1), "vit": dict(num_layers=1),
                     "bart": dict(encoder_layers=1, decoder_layers=2, scan_layers=True),
                     "dalle_bart": dict(encoder_layers=1, decoder_layers=2, scan_layers=True)}.get(kind, {})
        config = entry.config(**overrides)
        abstract = jax.eval_shape(lambda k, e=entry, c=config: e.model(c, key=k), jax.random.key(0))
        for path, x, meta in nn.iter_arrays(abstract):
            assert len(meta.axes) == len(x.shape), path
            unknown = [a for a in meta.axes if a is not None and a not in nn.DEFAULT_RULES]
            assert not unknown, (kind, path, unknown)


# ----------------------------------------------------------------------------------------
# Name tables (models.hf)
# ----------------------------------------------------------------------------------------


def _tiny(kind):
    return {
        "gpt2": models.GPT2Config(vocab_size=16, max_len=8, hidden_size=8, num_layers=2, num_heads=2,
                                  tie_embeddings=False),
        "llama": models.LlamaConfig(vocab_size=16, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                                    intermediate_size=12, tie_embeddings=False),
        "mistral": models.MistralConfig(vocab_size=16, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                                        intermediate_size=12, sliding_window=4),
        "qwen2": models.Qwen2Config(vocab_size=16, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                                    intermediate_size=12, tie_embeddings=False),
        "qwen3": models.Qwen3Config(vocab_size=16, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                                    head_dim=6, intermediate_size=12, attention_bias=True),
        "gemma3": models.Gemma3Config(vocab_size=16, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                                      head_dim=6, intermediate_size=12, tie_embeddings=False),
        "bert": models.BertConfig(vocab_size=16, max_len=8, hidden_size=8, num_layers=2, num_heads=2,
                                  intermediate_size=12, num_classes=3),
        "vit": models.ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_layers=2, num_heads=2,
                                intermediate_size=12, num_classes=3),
        "resnet": models.ResNetConfig(depth=18, num_classes=3, width=2),
        "bart": models.BartConfig(vocab_size=16, max_len=8, hidden_size=8, encoder_layers=2, decoder_layers=1,
                                  encoder_heads=2, decoder_heads=2, encoder_ffn_size=12, decoder_ffn_size=12),
    }[kind]


@pytest.mark.parametrize("kind", sorted(hf.NAME_TABLES))
def test_name_tables_round_trip_exactly(kind):
    config = _tiny(kind)
    model = jax.eval_shape(lambda k: models.build_model(config, key=k), jax.random.key(0))
    model = nn.map_arrays(lambda p, x, m: np.random.RandomState(len(p)).randn(*x.shape).astype(x.dtype), model)
    table = hf.names_for(config)
    tensors = hf.hf_state_dict(model, table)
    assert not any("[" in name for name in tensors)  # upstream names: h.0, not h[0]
    fresh = jax.eval_shape(lambda k: models.build_model(config, key=k), jax.random.key(1))
    fresh = nn.map_arrays(lambda p, x, m: np.zeros(x.shape, x.dtype), fresh)
    loaded = hf.load_hf(fresh, tensors, table)
    for (p, a), (q, b) in zip(nn.state_dict(model).items(), nn.state_dict(loaded).items(), strict=True):
        assert p == q
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=p)


def test_load_reports_every_problem_by_name():
    config = _tiny("llama")
    model = models.build_model(config, key=jax.random.key(0))
    table = hf.names_for(config)
    tensors = hf.hf_state_dict(model, table)
    del tensors["model.layers.1.mlp.up_proj.weight"]  # missing
    tensors["model.layers.0.self_attn.q_proj.weight"] = np.zeros((3, 8), np.float32)  # wrong shape
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.zeros(2, np.float32)  # a buffer: ignored
    tensors["model.layers.0.self_attn.q_norm.weight"] = np.zeros(4, np.float32)  # nothing maps it
    with pytest.raises(ValueError) as err:
        hf.load_hf(model, tensors, table)
    message = str(err.value)
    for needle in ("missing (1)", "model.layers[1].mlp.up_proj.weight", "unexpected tensors (1)",
                   "model.layers.0.self_attn.q_norm.weight", "model.layers.0.self_attn.q_proj.weight",
                   "shape (8, 3) after layout 'linear', model has (8, 8)"):
        assert needle in message, (needle, message)


def test_new_heads_may_stay_fresh_and_prefixes_are_normalised():
    config = _tiny("bert")
    model = models.build_model(config, key=jax.random.key(0))
    tensors = {"bert." + k: v for k, v in hf.hf_state_dict(model, hf.names_for(config)).items()
               if not k.startswith("classifier")}  # a BertForPreTraining-style file without our head
    fresh = models.build_model(config, key=jax.random.key(1))
    with pytest.raises(ValueError, match=r"missing \(2\).*classifier"):
        hf.load_hf(fresh, tensors, hf.names_for(config))
    loaded = hf.load_hf(fresh, tensors, hf.names_for(config), allow_missing=["classifier"])
    np.testing.assert_array_equal(loaded.classifier.weight, fresh.classifier.weight)
    np.testing.assert_array_equal(loaded.pooler.dense.weight, model.pooler.dense.weight)
    gpt = models.build_model(_tiny("gpt2"), key=jax.random.key(0))
    old_style = {k.removeprefix("transformer."): v for k, v in hf.hf_state_dict(gpt, hf.names_for(gpt.config)).items()}
    old_style["h.0.attn.bias"] = np.tril(np.ones((1, 1, 8, 8), np.float32))  # the original gpt2 files' buffers
    hf.load_hf(gpt, old_style, hf.names_for(gpt.config))


def test_config_from_hf_rejects_what_is_not_implemented():
    with pytest.raises(NotImplementedError, match=r"hidden_act='gelu'.*rope_type='yarn'"):
        hf.config_from_hf({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0},
                           "hidden_act": "gelu"})
    with pytest.raises(NotImplementedError, match="supported: \\['gpt2', 'llama', 'mistral', 'qwen2', 'qwen3', "
                                                  "'gemma3_text', 'bert', 'vit', 'bart'\\]"):
        hf.config_from_hf({"model_type": "t5"})
    with pytest.raises(NotImplementedError, match="position_embedding_type='relative_key'"):
        hf.config_from_hf({"model_type": "bert", "position_embedding_type": "relative_key"})
    config = hf.config_from_hf({"model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}},
                               num_layers=2, scan_layers=True)
    assert config.rope_scaling.kind == "linear" and config.num_layers == 2 and config.scan_layers
