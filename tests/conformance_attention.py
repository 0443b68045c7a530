"""Conformance cases: attention and positional embeddings. One line per layer; see conformance.py."""

import jax
import jax.numpy as jnp

from baobab import nn
from conformance import Case, normal, tokens

CASES: list[Case] = [
]
