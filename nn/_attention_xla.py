"""``attention_xla``: the reference softmax attention, written in plain ``jnp`` for every backend.

Every other implementation of ``nn.attention`` is tested against this one. It is
also the one that takes attention dropout, and the one chosen where no fused
kernel applies (float32 on a GPU, arbitrary masks on a TPU, one-token decoding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["attention_xla", "MASKED"]

#: The logit of a masked pair. Finite, so a query that may see nothing averages the values
#: (``jax.nn.dot_product_attention``'s behaviour) instead of producing NaN.
MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_xla(q: jax.Array, k: jax.Array, v: jax.Array, visible: jax.Array | None = None, *,
                  scale: float, softcap: float | None = None, dropout_rate: float = 0.0,
                  key: jax.Array | None = None) -> jax.Array:
    """Softmax attention: ``q (B, T, H, D)``, ``k``/``v`` ``(B, S, K, D)`` -> ``(B, T, H, D)``.

    ``K`` divides ``H``: each group of ``H // K`` query heads shares one key/value head.
    ``visible``: boolean ``(B|1, H|1, T, S)``, True = attend. Logits are
    ``scale * q . k`` in float32, soft-capped to ``softcap * tanh(l / softcap)`` when
    given; the softmax is float32. ``dropout_rate`` zeroes attention weights with
    that probability (and rescales the rest), drawing from ``key``.

    >>> import jax.numpy as jnp
    >>> q = jnp.ones((1, 3, 2, 4)); kv = jnp.arange(24.0).reshape(1, 3, 2, 4)
    >>> attention_xla(q, kv, kv, scale=0.5).shape
    (1, 3, 2, 4)
    """
    B, T, H, D = q.shape
    S, K = k.shape[1], k.shape[2]
    G = H // K
    grouped = q.reshape(B, T, K, G, D)
    logits = jnp.einsum("btkgd,bskd->bkgts", grouped, k, preferred_element_type=jnp.float32) * scale
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    if visible is not None:
        heads = visible.shape[1]
        groups = (K, G) if heads == H else (1, 1)  # per head, or one mask for all heads
        logits = jnp.where(visible.reshape(visible.shape[0], *groups, T, S), logits, MASKED)
    weights = jax.nn.softmax(logits, axis=-1)  # (B, K, G, T, S), float32
    if dropout_rate > 0.0:
        keep = jax.random.bernoulli(key, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    out = jnp.einsum("bkgts,bskd->btkgd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.reshape(B, T, H, D).astype(v.dtype)
