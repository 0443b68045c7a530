"""``attention_cpu``: softmax attention laid out for XLA:CPU, used by ``MultiHeadAttention`` there.

Grouped heads ``(B, K, G, T, D)`` against shared keys, normalised after the value
product, and a causal path that computes only the key blocks each query block can see.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

__all__ = ["attention_cpu", "CAUSAL_BLOCK"]


#: Query rows per block in ``attention_cpu``'s causal path (see there).
CAUSAL_BLOCK = 64


def _softmax_values(logits: jax.Array, v: jax.Array) -> jax.Array:
    """``softmax(logits) @ v`` normalised after the product: ``(B, K, G, T, S), (B, K, S, D) -> (B, K, G, T, D)``.

    The G query heads that share a key/value head are stacked along the rows, so
    each product is a plain ``(B, K)``-batched GEMM (a separate G axis made XLA:CPU
    relayout the operands).
    """
    B, K, G, T, S = logits.shape
    logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    weights = jnp.exp(logits)  # unnormalised
    out = jnp.einsum("bkqs,bksd->bkqd", weights.reshape(B, K, G * T, S).astype(v.dtype), v,
                     preferred_element_type=jnp.float32)  # (B, K, G * T, D)
    return out.reshape(B, K, G, T, -1) / jnp.sum(weights, axis=-1, keepdims=True)


def attention_cpu(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
                  is_causal: bool = False, *, scale: float | None = None,
                  softcap: float | None = None) -> jax.Array:
    """Scaled dot-product attention laid out for XLA:CPU; same result as ``jax.nn.dot_product_attention``.

    ``q``: ``(B, T, H, D)``; ``k``, ``v``: ``(B, S, K, D)`` with ``K`` dividing ``H``
    (grouped-query attention); ``mask``: boolean, broadcastable to ``(B, H, T, S)``,
    True = attend; ``is_causal``: query ``t`` sees keys ``s <= t``; ``scale`` multiplies
    the logits (default ``D ** -0.5``); ``softcap`` bounds them to ``softcap * tanh(l / softcap)``.
    Returns ``(B, T, H, D)``.

    Differences from ``jax.nn.dot_product_attention``'s XLA path, which together make
    the attention of a GPT-2-style layer (B=16, T=128, 4 heads of 64, fwd + bwd, one
    CPU thread) take 13.3 ms instead of 17.2 ms (benchmarks/RESULTS.md): the heads move in front once
    (``(B, K, G, T, D)``), so both matmuls are plain batched GEMMs without relayouts;
    the scale multiplies ``q`` instead of the ``T x S`` logits; the causal mask is
    added as a large negative number; the softmax is normalised after multiplying by
    ``v``, on ``(T, D)`` instead of ``(T, S)``; and with a causal mask alone, queries
    go in blocks of ``CAUSAL_BLOCK`` rows that each take only the keys they can see,
    which skips most of the masked upper triangle. Logits and the softmax are float32
    whatever the input dtype, as in JAX. A query that may attend to nothing gets the
    mean of the values, also as in JAX.
    """
    B, T, H, D = q.shape
    S, K = k.shape[1], k.shape[2]
    G = H // K
    scale = D ** -0.5 if scale is None else scale
    q = (q * jnp.asarray(scale, q.dtype)).reshape(B, T, K, G, D).transpose(0, 2, 3, 1, 4)  # (B, K, G, T, D)
    k = k.transpose(0, 2, 1, 3)  # (B, K, S, D)
    v = v.transpose(0, 2, 1, 3)  # (B, K, S, D)
    big = jnp.asarray(-0.7 * float(jnp.finfo(jnp.float32).max), jnp.float32)

    def logits(a: int, b: int, keys: int) -> jax.Array:  # query rows [a, b) against keys [0, keys)
        rows = q[:, :, :, a:b].reshape(B, K, G * (b - a), D)  # the heads of a group stacked along rows
        out = jnp.einsum("bkqd,bksd->bkqs", rows, k[:, :, :keys], preferred_element_type=jnp.float32)
        if softcap is not None:
            out = softcap * jnp.tanh(out / softcap)
        return out.reshape(B, K, G, b - a, keys)

    if mask is None and is_causal:
        # Rows [a, b) see keys [0, min(b, S)); every row sees key 0, so adding the
        # mask is exact (and cheaper than a select).
        blocks = []
        for a in range(0, T, CAUSAL_BLOCK):
            b, keys = min(a + CAUSAL_BLOCK, T), min(a + CAUSAL_BLOCK, T, S)
            seen = jnp.arange(keys)[None, :] <= jnp.arange(a, b)[:, None]  # (b - a, keys)
            blocks.append(_softmax_values(logits(a, b, keys) + jnp.where(seen, 0.0, big), v[:, :, :keys]))
        out = jnp.concatenate(blocks, axis=3) if len(blocks) > 1 else blocks[0]  # (B, K, G, T, D)
    else:
        scores = logits(0, T, S)  # (B, K, G, T, S)
        if mask is not None:
            mask = jnp.broadcast_to(mask, (*mask.shape[:2], T, S))
            groups = (K, G) if mask.shape[1] == H else (1, 1)  # per head, or one mask for every head
            visible = mask.reshape(mask.shape[0], *groups, T, S)
            if is_causal:
                visible = jnp.logical_and(visible, jnp.tril(jnp.ones((T, S), jnp.bool_)))
            # A select, not an addition: a row that sees nothing must give its logits no gradient.
            scores = jnp.where(visible, scores, big)
        out = _softmax_values(scores, v)  # (B, K, G, T, D)
    return out.astype(v.dtype).transpose(0, 3, 1, 2, 4).reshape(B, T, H, D)  # (B, T, H, D)
