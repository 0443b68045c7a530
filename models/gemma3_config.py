"""``Gemma3Config``: the typed config of Gemma 3's text model (``models/gemma3.py``).

>>> from baobab.models import Gemma3Config
>>> Gemma3Config(num_layers=7).sliding_layers  # every sixth layer global by default
(True, True, True, True, True, False, True)
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pydantic

from baobab.config import Config

from .llama import RopeScalingConfig

__all__ = ["Gemma3Config"]

LayerType = Literal["sliding_attention", "full_attention"]


class Gemma3Config(Config):
    """Gemma 3 text model. The defaults are Gemma 3 1B (999.9M parameters, tied embeddings).

    Hugging Face ``Gemma3TextConfig`` names in brackets: ``vocab_size``, ``max_len``
    [max_position_embeddings], ``hidden_size``, ``num_layers`` [num_hidden_layers],
    ``num_heads`` [num_attention_heads], ``num_kv_heads`` [num_key_value_heads],
    ``head_dim``, ``intermediate_size``, ``norm_eps`` [rms_norm_eps], ``rope_theta``
    [the global layers' base: rope_theta / rope_parameters.full_attention], ``rope_local_theta``
    [rope_local_base_freq / rope_parameters.sliding_attention], ``rope_scaling`` [global
    layers only], ``sliding_window``, ``layer_types`` [layer_types; None = every sixth
    layer global, HF's sliding_window_pattern=6], ``query_pre_attn_scalar`` (logits are
    scaled by its ``-1/2`` power), ``final_softcap`` [final_logit_softcapping],
    ``attention_bias``, ``tie_embeddings`` [tie_word_embeddings]. The activation is the
    tanh GELU [gelu_pytorch_tanh].

    ``attn_softcap`` soft-caps the attention logits (``nn.attention(softcap=)``). Gemma 3
    does not (Gemma 2 did), and transformers' Gemma 3 ignores its ``attn_logit_softcapping``,
    so ``hf.config_from_hf`` refuses a value there and ``config_to_hf`` refuses ours.

    ``max_len`` adds no parameters: it bounds ``init_cache`` and ``generate``.
    ``scan_layers`` and ``remat`` are as in ``LlamaConfig``. No dropout.
    """

    kind: Literal["gemma3"] = "gemma3"
    tasks: ClassVar[tuple[str, ...]] = ("language_model",)  # the baobab.tasks it can run
    vocab_size: int = pydantic.Field(262144, gt=0)
    max_len: int = pydantic.Field(32768, gt=0)
    hidden_size: int = pydantic.Field(1152, gt=0)
    num_layers: int = pydantic.Field(26, gt=0)
    num_heads: int = pydantic.Field(4, gt=0)
    num_kv_heads: int = pydantic.Field(1, gt=0)
    head_dim: int = pydantic.Field(256, gt=0)
    intermediate_size: int = pydantic.Field(6912, gt=0)
    norm_eps: float = pydantic.Field(1e-6, gt=0.0)
    rope_theta: float = pydantic.Field(1000000.0, gt=0.0)
    rope_local_theta: float = pydantic.Field(10000.0, gt=0.0)
    rope_scaling: RopeScalingConfig | None = None
    sliding_window: int = pydantic.Field(512, gt=0)
    layer_types: tuple[LayerType, ...] | None = None
    query_pre_attn_scalar: int = pydantic.Field(256, gt=0)
    attn_softcap: float | None = pydantic.Field(None, gt=0.0)
    final_softcap: float | None = pydantic.Field(None, gt=0.0)
    attention_bias: bool = False
    tie_embeddings: bool = True
    scan_layers: bool = False
    remat: str | None = None

    @pydantic.model_validator(mode="after")
    def _fits(self) -> "Gemma3Config":
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads={self.num_kv_heads} does not divide num_heads={self.num_heads}.")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings.")
        if self.layer_types is not None and len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for num_layers={self.num_layers}; "
                             f"give one per layer, or None for every sixth layer global.")
        if self.remat is not None and not self.scan_layers:
            raise ValueError("remat needs scan_layers=True (it wraps the scanned layer).")
        return self

    @property
    def sliding_layers(self) -> tuple[bool, ...]:
        """Per layer: True for a local (sliding-window) layer, False for a global one."""
        if self.layer_types is None:
            return tuple((i + 1) % 6 != 0 for i in range(self.num_layers))
        return tuple(t == "sliding_attention" for t in self.layer_types)
