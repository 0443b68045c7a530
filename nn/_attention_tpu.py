"""``attention_splash``: ``nn.attention`` on TPU, through JAX's Pallas splash-attention kernel.

The kernel (``jax.experimental.pallas.ops.tpu.splash_attention``) is a flash-style
blocked attention that skips the key blocks a static mask (causal, sliding window)
hides, takes packed-sequence segment ids and soft-capping, and has its own fused
backward pass. It works per example on ``(heads, T, D)``; this file maps it over the
batch and the key/value heads (grouped-query attention uses the kernel's MQA form per
key/value head), and runs it inside ``jax.shard_map`` over ``nn.kernel_mesh`` because
XLA cannot partition a Mosaic kernel on its own. ``interpret=True`` runs the same
kernel through the Pallas interpreter on any backend, which is how it is tested here.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from ._kernel_mesh import current_kernel_mesh

__all__ = ["attention_splash", "splash_fits", "BLOCK"]

#: Rows and key columns of one kernel block; sequence lengths must be multiples of it.
BLOCK = 128


def splash_fits(T: int, S: int, head_dim: int) -> bool:
    """Whether the kernel takes these shapes: whole 128-blocks along both sequences, heads of 8k dims."""
    return T % BLOCK == 0 and S % BLOCK == 0 and head_dim % 8 == 0


def _static_mask(T: int, S: int, causal: bool, window: int | None):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    if window is not None:  # query t sees keys s with t - window < s (and s <= t when causal)
        return masks.LocalMask((T, S), (window - 1, 0 if causal else window - 1), offset=0)
    if causal:
        return masks.CausalMask((T, S))
    return masks.FullMask((T, S))


def _kernel(T: int, S: int, groups: int, causal: bool, window: int | None, softcap: float | None,
            interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    bq = bk = BLOCK
    sizes = splash.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk,
                              block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)
    mask = masks.MultiHeadMask([_static_mask(T, S, causal, window)] * groups)
    return splash.make_splash_mha(mask, block_sizes=sizes, is_mqa=True, attn_logits_soft_cap=softcap,
                                  head_shards=1, q_seq_shards=1, interpret=interpret)


def _per_device(q, k, v, segment_ids, kv_segment_ids, *, causal, window, scale, softcap, interpret):
    """The kernel over this device's rows and heads: ``(b, T, h, D)``, ``(b, S, kh, D)`` -> ``(b, T, h, D)``."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash

    B, T, H, D = q.shape
    S, K = k.shape[1], k.shape[2]
    G = H // K
    kernel = _kernel(T, S, G, causal, window, softcap, interpret)
    q = (q * jnp.asarray(scale, q.dtype)).reshape(B, T, K, G, D).transpose(0, 2, 3, 1, 4)  # (B, K, G, T, D)
    k = k.transpose(0, 2, 1, 3)  # (B, K, S, D)
    v = v.transpose(0, 2, 1, 3)  # (B, K, S, D)

    def one_example(qb, kb, vb, seg_q, seg_kv):  # (K, G, T, D), (K, S, D), (K, S, D), (T,), (S,)
        segments = None if seg_q is None else splash.SegmentIds(q=seg_q, kv=seg_kv)
        return jax.vmap(lambda qh, kh, vh: kernel(qh, kh, vh, segment_ids=segments))(qb, kb, vb)

    out = jax.vmap(one_example)(q, k, v, segment_ids, kv_segment_ids)  # (B, K, G, T, D)
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, H, D).astype(v.dtype)


def _mesh_axes(mesh, rules, name: str, size: int) -> tuple[str, ...]:
    """The mesh axes the rule for ``name`` names, kept while their product divides ``size``."""
    axes = rules.get(name)
    axes = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    kept, product = [], 1
    for axis in axes:
        n = mesh.shape.get(axis, 1) if axis in mesh.axis_names else 0
        if n and size % (product * n) == 0:
            kept.append(axis)
            product *= n
    return tuple(kept)


def attention_splash(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool, window: int | None,
                     segment_ids: jax.Array | None, kv_segment_ids: jax.Array | None, scale: float,
                     softcap: float | None, interpret: bool = False) -> jax.Array:
    """Splash attention: ``q (B, T, H, D)``, ``k``/``v`` ``(B, S, K, D)`` -> ``(B, T, H, D)``.

    Sharded over ``nn.kernel_mesh``: the batch along the ``"batch"`` rule's mesh axes and
    the heads along ``"heads"`` (both kept only where they divide). ``segment_ids``
    ``(B, T)`` / ``kv_segment_ids`` ``(B, S)`` keep packed documents apart. Shapes must
    pass ``splash_fits``.
    """
    kw = dict(causal=causal, window=window, scale=scale, softcap=softcap, interpret=interpret)
    run = functools.partial(_per_device, **kw)
    current = current_kernel_mesh()
    if current is None or math.prod(current[0].shape.values()) == 1:
        return run(q, k, v, segment_ids, kv_segment_ids)
    mesh, rules = current
    batch = _mesh_axes(mesh, rules, "batch", q.shape[0]) or None
    heads = tuple(a for a in _mesh_axes(mesh, rules, "heads", k.shape[2])
                  if q.shape[2] % mesh.shape[a] == 0 and a not in (batch or ())) or None
    qkv = PartitionSpec(batch, None, heads, None)
    seg = PartitionSpec(batch, None)
    segments = () if segment_ids is None else (segment_ids, kv_segment_ids)

    def body(q, k, v, *segments):
        return run(q, k, v, *(segments or (None, None)))

    sharded = jax.shard_map(body, mesh=mesh, in_specs=(qkv, qkv, qkv) + (seg,) * len(segments),
                            out_specs=qkv, check_vma=False)
    return sharded(q, k, v, *segments)
