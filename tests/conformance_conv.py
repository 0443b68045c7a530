"""Conformance cases: conv, pooling, embedding, einops layers, containers. One line per layer; see conformance.py."""

import jax
import jax.numpy as jnp

from baobab import nn
from conformance import Case, normal, tokens

CASES: list[Case] = [
    Case("Embedding", lambda k: nn.Embedding(16, 8, key=k), tokens(4, 8, vocab=16), grad_inputs=False),
    Case("Conv1d-causal", lambda k: nn.Conv(8, 16, 3, key=k, padding="CAUSAL", dilation=2), normal(2, 16, 8)),
    Case("Conv2d-stride-groups", lambda k: nn.Conv(8, 16, (3, 3), key=k, stride=2, padding=1, groups=2), normal(2, 8, 8, 8)),
    Case("Conv2d-depthwise-unbatched", lambda k: nn.Conv(8, 8, (3, 3), key=k, groups=8, use_bias=False), normal(8, 8, 8)),
    Case("Conv3d", lambda k: nn.Conv(8, 8, (2, 3, 3), key=k, padding="VALID"), normal(2, 4, 8, 8, 8)),
    Case("ConvTranspose2d", lambda k: nn.ConvTranspose(8, 16, (3, 3), key=k, stride=2, padding=1, output_padding=1, groups=2), normal(2, 8, 8, 8)),
    Case("ConvTranspose1d", lambda k: nn.ConvTranspose(8, 8, 4, key=k, stride=2, dilation=2), normal(2, 8, 8)),
    Case("MaxPool2d", lambda k: nn.MaxPool((3, 3), stride=2, padding=1, ceil_mode=True), normal(2, 8, 8, 8)),
    Case("AvgPool2d", lambda k: nn.AvgPool((3, 3), stride=2, padding=1, count_include_pad=False), normal(2, 8, 8, 8)),
    Case("AdaptiveAvgPool2d", lambda k: nn.AdaptiveAvgPool((3, 5)), normal(2, 8, 8, 8)),
    Case("GlobalAvgPool", lambda k: nn.GlobalAvgPool(), normal(2, 8, 8, 8)),
    Case("Rearrange", lambda k: nn.Rearrange("b (h p) w c -> b h (w p c)", p=2), normal(2, 8, 8, 8)),
    Case("Reduce", lambda k: nn.Reduce("b (h 2) (w 2) c -> b h w c", "mean"), normal(2, 8, 8, 8)),
    Case("Sequential", lambda k: nn.Sequential(nn.Conv(8, 8, (3, 3), key=nn.subkey(k, "conv")), nn.Lambda(jax.nn.gelu), nn.GlobalAvgPool(), nn.Linear(8, 16, key=nn.subkey(k, "fc"))), normal(2, 8, 8, 8)),
]
