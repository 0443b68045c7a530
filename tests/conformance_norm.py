"""Conformance cases: normalisation, dropout, MLPs. One line per layer; see conformance.py.

Two layers need a small test-only wrapper to fit the table:

* BatchNorm in training mode must be called through ``nn.stateful_call`` (a plain
  call raises), so ``_BatchNormTrain`` does that and returns the output only. The
  table's vmap check is meaningful here: each vmapped example is a whole batch,
  compared with the same batch run alone, so batch statistics agree. New running
  statistics are checked in tests/test_layers_norm_torch.py instead (they are
  ``stop_gradient``-ed, so ``check_grads`` cannot see them).
* Dropout in training mode needs ``key=``, which is keyword-only, while ``kwargs``
  are static. ``_DropoutWithKey`` takes the key positionally, so the table passes
  it as a dynamic input: jit, vmap (one key per example), grads with a fixed mask
  and bf16 all run on the dropping path. ``Dropout-eval`` (``training=False``, no
  key) covers the identity path.
"""

import jax
import jax.numpy as jnp

from baobab import nn
from conformance import Case, normal, tokens


class _BatchNormTrain(nn.Module):
    """Test-only: BatchNorm in training mode, called through ``nn.stateful_call``."""

    bn: nn.BatchNorm

    def __init__(self, num_features):
        self.bn = nn.BatchNorm(num_features, training=True)

    def __call__(self, x):
        y, _ = nn.stateful_call(self.bn, x)
        return y


class _DropoutWithKey(nn.Module):
    """Test-only: Dropout whose key is a positional (dynamic) input."""

    dropout: nn.Dropout

    def __init__(self, rate):
        self.dropout = nn.Dropout(rate)

    def __call__(self, x, key):
        return self.dropout(x, key=key)


def _with_key(*shape):
    return lambda k: (jax.random.normal(k, shape), jax.random.fold_in(k, 1))


CASES: list[Case] = [
    Case("LayerNorm", lambda k: nn.LayerNorm(8), normal(4, 8)),
    Case("LayerNorm-2d-nobias", lambda k: nn.LayerNorm((8, 8), use_bias=False), normal(2, 8, 8)),
    Case("RMSNorm", lambda k: nn.RMSNorm(8), normal(4, 8)),
    Case("GroupNorm", lambda k: nn.GroupNorm(2, 8), normal(2, 4, 4, 8)),
    Case("BatchNorm-train", lambda k: _BatchNormTrain(8), normal(8, 8)),
    Case("Dropout-eval", lambda k: nn.Dropout(0.5, training=False), normal(4, 8)),
    Case("Dropout-key", lambda k: _DropoutWithKey(0.5), _with_key(4, 8)),
    Case("MLP", lambda k: nn.MLP(8, 16, 8, key=k), normal(4, 8)),
    Case("GatedMLP", lambda k: nn.GatedMLP(8, 16, key=k), normal(4, 8)),
]
