"""Mistral, Qwen2 and Qwen3: the Llama architecture with options, one typed config per family.

Each is ``models.Llama`` built from a config whose ``kind`` names the family and whose
defaults are a released model. What sets a family apart is one or two ``LlamaConfig``
options, so the blocks, the cache and ``decode`` are Llama's (``llama.py``):

===========  ===================  ============================  =====================================
kind         config               defaults                      options it sets
===========  ===================  ============================  =====================================
``mistral``  ``MistralConfig``    Mistral-7B-v0.1 (7.24B)       ``sliding_window=4096``
``qwen2``    ``Qwen2Config``      Qwen2.5-0.5B (494M, tied)     ``qkv_bias=True`` (no ``o_proj`` bias)
``qwen3``    ``Qwen3Config``      Qwen3-0.6B (596M, tied)       ``qk_norm=True``, ``head_dim=128``
===========  ===================  ============================  =====================================

Parameter paths are Llama's, which are also those of HF ``MistralForCausalLM``,
``Qwen2ForCausalLM`` and ``Qwen3ForCausalLM`` (``models.hf.mistral_names`` etc. are the
import tables); Linear weights are stored ``(in, out)``, the transpose of HF's:

=====================================================  ==============================================
Hugging Face                                           baobab
=====================================================  ==============================================
``model.layers.{i}.self_attn.q_proj.weight`` (out, in)  ``model.layers[i].self_attn.q_proj.weight`` (in, out)
``model.layers.{i}.self_attn.{q,k,v}_proj.bias``       same pattern (Qwen2, or ``attention_bias``)
``model.layers.{i}.self_attn.q_norm.weight`` (Dh,)     ``model.layers[i].self_attn.q_norm.weight`` (Qwen3)
``model.layers.{i}.self_attn.k_norm.weight`` (Dh,)     ``model.layers[i].self_attn.k_norm.weight`` (Qwen3)
everything else                                        as in ``llama.py``
=====================================================  ==============================================

HF config fields map as for Llama (``LlamaConfig``'s docstring), plus Mistral's
``sliding_window``. Qwen2/Qwen3's optional ``use_sliding_window`` (a window on the upper
``max_window_layers`` layers only; off in every released checkpoint) is not implemented
and is refused by ``hf.config_from_hf``.

>>> import jax, jax.numpy as jnp
>>> from baobab.models import Llama, Qwen3Config
>>> config = Qwen3Config(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
...                      head_dim=16, intermediate_size=64, max_len=64)
>>> model = Llama(config, key=jax.random.key(0))
>>> model.model.layers[0].self_attn.q_norm.weight.shape  # one RMSNorm over head_dim, shared by the heads
(16,)
>>> model(jnp.zeros((2, 8), jnp.int32)).shape  # (B, T, V)
(2, 8, 100)
"""

from __future__ import annotations

from typing import Literal

import pydantic

from .llama import LlamaConfig, RopeScalingConfig

__all__ = ["MistralConfig", "Qwen2Config", "Qwen3Config"]


class MistralConfig(LlamaConfig):
    """Mistral: Llama with sliding-window attention. Defaults are Mistral-7B-v0.1 (7.24B, untied).

    Fields are ``LlamaConfig``'s; ``sliding_window`` [sliding_window] is the number of most
    recent positions a query sees, itself included (4096; None = all, as Mistral-7B-v0.2+).
    No biases [Mistral has none], ``norm_eps`` [rms_norm_eps] 1e-5, ``rope_theta`` 10000.
    """

    kind: Literal["mistral"] = "mistral"
    vocab_size: int = pydantic.Field(32000, gt=0)
    max_len: int = pydantic.Field(32768, gt=0)
    hidden_size: int = pydantic.Field(4096, gt=0)
    num_layers: int = pydantic.Field(32, gt=0)
    num_heads: int = pydantic.Field(32, gt=0)
    num_kv_heads: int | None = pydantic.Field(8, gt=0)
    intermediate_size: int = pydantic.Field(14336, gt=0)
    rope_theta: float = pydantic.Field(10000.0, gt=0.0)
    rope_scaling: RopeScalingConfig | None = None
    sliding_window: int | None = pydantic.Field(4096, gt=0)
    tie_embeddings: bool = False


class Qwen2Config(LlamaConfig):
    """Qwen2 / Qwen2.5: Llama with biases on q/k/v. Defaults are Qwen2.5-0.5B (494M, tied).

    Fields are ``LlamaConfig``'s; ``qkv_bias`` is True [Qwen2's ``q_proj``/``k_proj``/
    ``v_proj`` always have biases, ``o_proj`` none; HF Qwen2 has no ``attention_bias``].
    ``norm_eps`` [rms_norm_eps] 1e-6, ``rope_theta`` 1e6, ``max_len``
    [max_position_embeddings] 32768, 14 heads over 2 kv heads.
    """

    kind: Literal["qwen2"] = "qwen2"
    vocab_size: int = pydantic.Field(151936, gt=0)
    max_len: int = pydantic.Field(32768, gt=0)
    hidden_size: int = pydantic.Field(896, gt=0)
    num_layers: int = pydantic.Field(24, gt=0)
    num_heads: int = pydantic.Field(14, gt=0)
    num_kv_heads: int | None = pydantic.Field(2, gt=0)
    intermediate_size: int = pydantic.Field(4864, gt=0)
    norm_eps: float = pydantic.Field(1e-6, gt=0.0)
    rope_theta: float = pydantic.Field(1000000.0, gt=0.0)
    rope_scaling: RopeScalingConfig | None = None
    qkv_bias: bool = True
    tie_embeddings: bool = True


class Qwen3Config(LlamaConfig):
    """Qwen3 (dense): Llama with per-head q/k RMSNorm. Defaults are Qwen3-0.6B (596M, tied).

    Fields are ``LlamaConfig``'s; ``qk_norm`` is True [``q_norm``/``k_norm``: an RMSNorm
    over ``head_dim`` of each query and key head, before RoPE, eps ``norm_eps``];
    ``head_dim`` [head_dim] 128 (not hidden_size / num_heads = 64); no biases
    [attention_bias False]. ``norm_eps`` 1e-6, ``rope_theta`` 1e6, ``max_len`` 40960.
    """

    kind: Literal["qwen3"] = "qwen3"
    vocab_size: int = pydantic.Field(151936, gt=0)
    max_len: int = pydantic.Field(40960, gt=0)
    hidden_size: int = pydantic.Field(1024, gt=0)
    num_layers: int = pydantic.Field(28, gt=0)
    num_heads: int = pydantic.Field(16, gt=0)
    num_kv_heads: int | None = pydantic.Field(8, gt=0)
    head_dim: int | None = pydantic.Field(128, gt=0)
    intermediate_size: int = pydantic.Field(3072, gt=0)
    norm_eps: float = pydantic.Field(1e-6, gt=0.0)
    rope_theta: float = pydantic.Field(1000000.0, gt=0.0)
    rope_scaling: RopeScalingConfig | None = None
    qk_norm: bool = True
    tie_embeddings: bool = True
