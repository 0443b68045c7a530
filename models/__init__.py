"""baobab.models: the model zoo, one readable file per model, each with its config beside it.

==============  ===================  =================  ==========================================
kind            config               model              file
==============  ===================  =================  ==========================================
``mlp``         ``MLPConfig``        ``MLPClassifier``  ``mlp.py``
``cnn``         ``CNNConfig``        ``CNN``            ``cnn.py``
``resnet``      ``ResNetConfig``     ``ResNet``         ``resnet.py`` (torchvision names)
``vit``         ``ViTConfig``        ``ViT``            ``vit.py`` (HF ``ViTModel`` names)
``gpt2``        ``GPT2Config``       ``GPT2``           ``gpt2.py`` (HF ``GPT2LMHeadModel`` names)
``llama``       ``LlamaConfig``      ``Llama``          ``llama.py`` (HF ``LlamaForCausalLM`` names)
``mistral``     ``MistralConfig``    ``Llama``          ``llama_variants.py`` (HF ``MistralForCausalLM`` names)
``qwen2``       ``Qwen2Config``      ``Llama``          ``llama_variants.py`` (HF ``Qwen2ForCausalLM`` names)
``qwen3``       ``Qwen3Config``      ``Llama``          ``llama_variants.py`` (HF ``Qwen3ForCausalLM`` names)
``gemma3``      ``Gemma3Config``     ``Gemma3``         ``gemma3.py`` (HF ``Gemma3ForCausalLM`` names)
``bert``        ``BertConfig``       ``Bert``           ``bert.py`` (HF ``BertModel`` names)
``bart``        ``BartConfig``       ``Bart``           ``bart.py`` (HF ``BartForConditionalGeneration``)
``dalle_bart``  ``DalleBartConfig``  ``DalleBart``      ``dalle_bart.py`` (min-dalle names; ``dalle_bart_io``)
``vqgan``       ``VQGANConfig``      ``VQGAN``          ``vqgan.py`` (vqgan-jax / taming names)
==============  ===================  =================  ==========================================

Every model is built as ``Model(config, *, key)`` and keeps its config as
``model.config``. ``MODELS`` is the one table from ``kind`` to both classes, and
``build_model`` uses it; ``ModelConfig`` is the config type that experiment configs
use for their ``model`` section (``kind`` picks the class, from ``MODELS``). A config
class says what it can do: ``tasks`` names the ``baobab.tasks`` it runs. Adding a
model is one file plus one ``MODELS`` entry (``docs/design.md``, "How to add ..."). ``generate``
samples from the language models, ``generate_seq2seq`` from the encoder-decoders,
``generate_images`` images from a DalleBart and a VQGAN (``text_to_image.py``), and ``hf``
holds the upstream name tables.

>>> import jax
>>> from baobab import models
>>> model = models.build_model(models.CNNConfig(), key=jax.random.key(0))
>>> type(model).__name__, sorted(models.MODELS)
('CNN', ['bart', 'bert', 'cnn', 'dalle_bart', 'gemma3', 'gpt2', 'llama', 'mistral', 'mlp', 'qwen2', 'qwen3', 'resnet', 'vit', 'vqgan'])
>>> models.build_model({"kind": "mlp", "hidden": [32]}, key=jax.random.key(0)).hidden[0].weight.shape
(784, 32)
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax

from baobab.config import Config, ConfigError, kind_field

from . import hf as hf
from . import hf_config as hf_config
from . import hf_io as hf_io
from .bart import Bart as Bart
from .bart import BartConfig as BartConfig
from .bert import Bert as Bert
from .bert import BertConfig as BertConfig
from .bert import mean_pool as mean_pool
from .cnn import CNN as CNN
from .cnn import CNNConfig as CNNConfig
from .dalle_bart import DalleBart as DalleBart
from .dalle_bart import DalleBartConfig as DalleBartConfig
from .gemma3 import Gemma3 as Gemma3
from .gemma3_config import Gemma3Config as Gemma3Config
from .generate import generate as generate
from .generate import generate_stream as generate_stream
from .generate import sample_logits as sample_logits
from .text_to_image import GeneratedImages as GeneratedImages
from .text_to_image import check_pair as check_pair
from .text_to_image import generate_images as generate_images
from .text_to_image import image_grid as image_grid
from .text_to_image import sample_image_codes as sample_image_codes
from .gpt2 import GPT2 as GPT2
from .gpt2 import GPT2Config as GPT2Config
from .llama import Llama as Llama
from .llama import LlamaConfig as LlamaConfig
from .llama import RopeScalingConfig as RopeScalingConfig
from .llama_variants import MistralConfig as MistralConfig
from .llama_variants import Qwen2Config as Qwen2Config
from .llama_variants import Qwen3Config as Qwen3Config
from .mlp import MLPClassifier as MLPClassifier
from .mlp import MLPConfig as MLPConfig
from .resnet import ResNet as ResNet
from .resnet import ResNetConfig as ResNetConfig
from .seq2seq import generate_seq2seq as generate_seq2seq
from .vit import ViT as ViT
from .vit import ViTConfig as ViTConfig
from .vqgan import VQGAN as VQGAN
from .vqgan import VQGANConfig as VQGANConfig


class ModelEntry(NamedTuple):
    """One row of ``MODELS``: the config class and the model class built from it."""

    config: type[Config]
    model: type


#: kind -> (config class, model class). The one place a model is chosen by name.
MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(MLPConfig, MLPClassifier),
    "cnn": ModelEntry(CNNConfig, CNN),
    "resnet": ModelEntry(ResNetConfig, ResNet),
    "vit": ModelEntry(ViTConfig, ViT),
    "gpt2": ModelEntry(GPT2Config, GPT2),
    "llama": ModelEntry(LlamaConfig, Llama),
    "mistral": ModelEntry(MistralConfig, Llama),  # the Llama blocks with a sliding window
    "qwen2": ModelEntry(Qwen2Config, Llama),  # ... with q/k/v biases
    "qwen3": ModelEntry(Qwen3Config, Llama),  # ... with q/k RMSNorm
    "gemma3": ModelEntry(Gemma3Config, Gemma3),
    "bert": ModelEntry(BertConfig, Bert),
    "dalle_bart": ModelEntry(DalleBartConfig, DalleBart),
    "bart": ModelEntry(BartConfig, Bart),
    "vqgan": ModelEntry(VQGANConfig, VQGAN),
}

#: The ``model`` section of an experiment config: any config in ``MODELS``, chosen by
#: ``kind``. The table is read at validation time, so adding a model is its file plus
#: one ``MODELS`` entry.
ModelConfig = kind_field(MODELS, "model", lambda entry: entry.config)


def parse_model_config(values: Mapping[str, Any]) -> Config:
    """A model config from plain values (``{"kind": "cnn", ...}``), validated by its kind.

    >>> from baobab.models import parse_model_config
    >>> parse_model_config({"kind": "resnet", "depth": 50}).depth
    50
    """
    kind = values.get("kind") if isinstance(values, Mapping) else None
    if kind not in MODELS:
        raise ConfigError(f"unknown model kind {kind!r}; valid kinds: {sorted(MODELS)}.")
    return MODELS[kind].config.model_validate(dict(values))


def build_model(config: Config | Mapping[str, Any], *, key: jax.Array):
    """Build the model that ``config`` describes (a config object, or a dict with ``kind``)."""
    if isinstance(config, Mapping):
        config = parse_model_config(config)
    kind = getattr(config, "kind", None)
    entry = MODELS.get(kind)
    if entry is None:
        raise ConfigError(f"unknown model kind {kind!r}; valid kinds: {sorted(MODELS)}.")
    if not isinstance(config, entry.config):
        raise TypeError(f"build_model: kind {kind!r} needs a {entry.config.__name__}, got {type(config).__name__}.")
    return entry.model(config, key=key)


__all__ = [
    "MODELS", "ModelEntry", "ModelConfig", "build_model", "parse_model_config",
    "MLPConfig", "MLPClassifier", "CNNConfig", "CNN", "ResNetConfig", "ResNet", "ViTConfig", "ViT",
    "GPT2Config", "GPT2", "LlamaConfig", "Llama", "RopeScalingConfig", "MistralConfig", "Qwen2Config",
    "Qwen3Config", "Gemma3Config", "Gemma3", "BertConfig", "Bert", "mean_pool",
    "BartConfig", "Bart", "generate_seq2seq", "DalleBartConfig", "DalleBart", "VQGANConfig", "VQGAN",
    "generate", "generate_stream", "sample_logits", "generate_images", "sample_image_codes", "GeneratedImages",
    "image_grid", "check_pair", "hf", "hf_config", "hf_io",
]
