"""Conformance cases: attention and positional embeddings. One line per layer; see conformance.py."""

import jax
import jax.numpy as jnp

from baobab import nn
from conformance import Case, normal, tokens

CASES: list[Case] = [
    Case("MultiHeadAttention", lambda k: nn.MultiHeadAttention(16, 4, key=k), normal(2, 8, 16)),
    Case("MultiHeadAttention-gqa-rotary-causal", lambda k: nn.MultiHeadAttention(16, 4, num_kv_heads=2, rotary=nn.RotaryEmbedding(4), key=k), normal(2, 8, 16), kwargs={"causal": True}),
    Case("MultiHeadAttention-cross", lambda k: nn.MultiHeadAttention(16, 4, context_features=8, out_features=8, use_bias=False, key=k), lambda k: (jax.random.normal(k, (2, 8, 16)), jax.random.normal(jax.random.fold_in(k, 1), (2, 16, 8)))),
    Case("LearnedPositionalEmbedding", lambda k: nn.LearnedPositionalEmbedding(16, 16, key=k), tokens(2, 8, vocab=16), grad_inputs=False),
    Case("SinusoidalPositionalEmbedding", lambda k: nn.SinusoidalPositionalEmbedding(16), normal(2, 8)),
    Case("RotaryEmbedding", lambda k: nn.RotaryEmbedding(8, scaling=nn.RopeScaling("llama3", 4.0, original_max_len=16)), normal(2, 8, 4, 8)),
]
