"""``nn.attention``: baobab's one scaled dot-product attention, for every layer and zoo model.

Which implementation runs is decided per platform the program is *compiled* for, not by
the process's default backend: each is traced under ``jax.lax.platform_dependent`` and
only the branch of the lowering platform reaches the compiled program. So a program
compiled here for a TPU topology (``baobab plan --topology``) contains the TPU kernel,
and the same jitted function run on the CPU contains the CPU layout.

===========  ==============================================================================
platform     implementation (``implementation=None``)
===========  ==============================================================================
cpu          ``attention_cpu`` (``_attention_cpu.py``): grouped GEMMs, causal key blocks
cuda         cuDNN's fused attention via ``jax.nn.dot_product_attention`` for bf16/fp16
             inputs with ``head_dim <= 128``; otherwise the XLA reference
tpu          the Pallas splash kernel (``_attention_tpu.py``) for whole 128-blocks without
             an arbitrary ``mask``; otherwise the XLA reference
other        the XLA reference (``_attention_xla.py``)
===========  ==============================================================================

Attention dropout exists only in the XLA reference, so ``dropout_rate > 0`` (in a
training call) runs it on every platform. ``implementation=`` forces one: ``"xla"``,
``"cpu"``, ``"cudnn"`` (NVIDIA GPUs only) or ``"splash"`` (the TPU kernel; on other
platforms it runs in the Pallas interpreter, slowly, which is how tests check it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from . import _context
from ._attention_cpu import attention_cpu
from ._attention_tpu import attention_splash, splash_fits
from ._attention_xla import attention_xla
from ._checks import ShapeError

__all__ = ["attention", "IMPLEMENTATIONS"]

#: Values of ``implementation``; None picks per compile platform.
IMPLEMENTATIONS = (None, "xla", "cpu", "cudnn", "splash")


def _error(message: str, kind=ValueError):
    return kind(f"{_context.where()}: attention: {message}")


def _positions(p, length: int, name: str) -> jax.Array:
    if p is None:
        return jnp.arange(length)[None]  # (1, length)
    p = jnp.asarray(p)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != length or not jnp.issubdtype(p.dtype, jnp.integer):
        raise _error(f"{name} must be integers of shape ({length},) or (B, {length}), got "
                     f"{p.dtype}{list(p.shape)}.", ShapeError)
    return p


def _check(q, k, v, mask, segment_ids, kv_segment_ids, window, softcap, dropout_rate, key, implementation):
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise _error(f"expected q (B, T, heads, head_dim) and k, v (B, S, kv_heads, head_dim) with the same B "
                     f"and head_dim, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}.", ShapeError)
    if q.shape[2] % k.shape[2]:
        raise _error(f"{k.shape[2]} key/value heads do not divide {q.shape[2]} query heads.", ShapeError)
    B, T, S = q.shape[0], q.shape[1], k.shape[1]
    if mask is not None and jnp.asarray(mask).dtype != jnp.bool_:
        raise _error(f"mask must be boolean (True = attend), got {jnp.asarray(mask).dtype}; write "
                     f"mask.astype(bool).", TypeError)
    for name, ids, length in (("segment_ids", segment_ids, T), ("kv_segment_ids", kv_segment_ids, S)):
        if ids is not None and (ids.shape != (B, length) or not jnp.issubdtype(ids.dtype, jnp.integer)):
            raise _error(f"expected integer {name} of shape (B, {'T' if length == T else 'S'}) = {(B, length)}, "
                         f"got {ids.dtype}{list(ids.shape)}.", ShapeError)
    if kv_segment_ids is not None and segment_ids is None:
        raise _error("kv_segment_ids needs segment_ids for the queries.")
    if segment_ids is not None and kv_segment_ids is None and S != T:
        raise _error(f"segment_ids alone apply when keys are the queries (S == T); here S={S}, T={T}. "
                     f"Pass kv_segment_ids of shape (B, S) too.")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise _error(f"window must be a positive int (keys within that many positions), got {window!r}.")
    if softcap is not None and not softcap > 0:
        raise _error(f"softcap must be positive, got {softcap!r}.")
    if not 0.0 <= dropout_rate < 1.0:
        raise _error(f"dropout_rate must be in [0, 1), got {dropout_rate!r}.")
    if dropout_rate > 0.0 and key is None:
        raise _error(f"dropout_rate={dropout_rate} needs key= (a PRNG key); in evaluation pass dropout_rate=0.")
    if implementation not in IMPLEMENTATIONS:
        raise _error(f"unknown implementation {implementation!r}; use one of {list(IMPLEMENTATIONS)}.")
    if implementation in ("cpu", "cudnn", "splash") and dropout_rate > 0.0:
        raise _error(f"implementation={implementation!r} has no attention dropout; use implementation=None or "
                     f"'xla', or dropout_rate=0.", NotImplementedError)


def _visible(B, H, T, S, *, causal, mask, segment_ids, kv_segment_ids, q_pos, kv_pos, window):
    """All masks and-ed into one boolean ``(B|1, H|1, T, S)``, or None when nothing is masked."""
    parts = []
    if mask is not None:
        mask = jnp.asarray(mask)
        mask = mask[:, None] if mask.ndim == 3 else mask
        if mask.ndim != 4 or any(m not in (1, e) for m, e in zip(mask.shape, (B, H, T, S))):
            raise _error(f"mask of shape {tuple(mask.shape)} does not broadcast to (B, T, S) = {(B, T, S)} or "
                         f"(B, heads, T, S) = {(B, H, T, S)}; a key padding mask (B, S) is mask[:, None, :].",
                         ShapeError)
        parts.append(mask)
    if segment_ids is not None:
        kv = segment_ids if kv_segment_ids is None else kv_segment_ids
        parts.append((segment_ids[:, :, None] == kv[:, None, :])[:, None])  # (B, 1, T, S)
    offset = q_pos[:, :, None] - kv_pos[:, None, :]  # (B|1, T, S): how far back each key is
    if causal:
        parts.append((offset >= 0)[:, None])
    if window is not None:
        parts.append((offset < window)[:, None] if causal else (jnp.abs(offset) < window)[:, None])
    if not parts:
        return None
    out = functools.reduce(jnp.logical_and, parts)
    return jnp.broadcast_to(out, (out.shape[0], out.shape[1], T, S))


def _cudnn_loads() -> bool:
    try:
        from jax._src.cudnn.fused_attention_stablehlo import check_cudnn_version

        check_cudnn_version()
        return True
    except Exception:  # no CUDA/cuDNN in this process: nothing to compile for it
        return False


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False, mask: jax.Array | None = None,
              segment_ids: jax.Array | None = None, kv_segment_ids: jax.Array | None = None,
              q_positions: jax.Array | None = None, kv_positions: jax.Array | None = None,
              window: int | None = None, softcap: float | None = None, scale: float | None = None,
              dropout_rate: float = 0.0, key: jax.Array | None = None,
              implementation: str | None = None) -> jax.Array:
    """Softmax attention: ``q (B, T, H, D)``, ``k``/``v`` ``(B, S, K, D)`` -> ``(B, T, H, D)``.

    ``K`` dividing ``H`` is grouped-query attention (``K == 1``: multi-query). A query
    at position ``t`` sees a key at position ``s`` when every given condition holds:

    * ``causal``: ``s <= t``;
    * ``window``: ``t - s < window`` (with ``causal``: the ``window`` most recent keys,
      itself included, as Mistral's sliding window); ``|t - s| < window`` otherwise;
    * ``mask``: boolean, broadcastable to ``(B, T, S)`` or ``(B, H, T, S)``, True = attend
      (padding: ``mask = valid[:, None, :]``);
    * ``segment_ids`` ``(B, T)`` (and ``kv_segment_ids`` ``(B, S)``, default the same):
      equal ids only, which keeps packed documents apart.

    Positions ``t``/``s`` are ``q_positions`` ``(T,)``/``(B, T)`` and ``kv_positions``
    (default ``arange``): a cache passes ``q_positions = index + arange(T)``. ``scale``
    multiplies the logits (default ``head_dim ** -0.5``); ``softcap`` bounds them to
    ``softcap * tanh(logit / softcap)``; ``dropout_rate`` drops attention weights,
    drawing from ``key``. A query that may see no key gets the mean of the values.
    Logits and softmax are float32 whatever the input dtype. See the module docstring
    for which implementation runs where.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> q = jax.random.normal(jax.random.key(0), (2, 6, 4, 8))   # (B, T, H, D)
    >>> kv = jax.random.normal(jax.random.key(1), (2, 6, 2, 8))  # (B, S, K, D): 2 kv heads
    >>> segments = jnp.array([[1, 1, 1, 2, 2, 2]] * 2)           # two packed documents per row
    >>> out = nn.attention(q, kv, kv, causal=True, segment_ids=segments)
    >>> alone = nn.attention(q[:, 3:], kv[:, 3:], kv[:, 3:], causal=True)
    >>> out.shape, bool(jnp.allclose(out[:, 3:], alone, atol=1e-5))
    ((2, 6, 4, 8), True)
    """
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    _check(q, k, v, mask, segment_ids, kv_segment_ids, window, softcap, dropout_rate, key, implementation)
    B, T, H, D = q.shape
    S = k.shape[1]
    scale = D ** -0.5 if scale is None else float(scale)
    softcap = None if softcap is None else float(softcap)
    default_positions = q_positions is None and kv_positions is None
    q_pos, kv_pos = _positions(q_positions, T, "q_positions"), _positions(kv_positions, S, "kv_positions")
    visible = _visible(B, H, T, S, causal=causal, mask=mask, segment_ids=segment_ids,
                       kv_segment_ids=kv_segment_ids, q_pos=q_pos, kv_pos=kv_pos, window=window)
    only_causal = causal and default_positions and mask is None and segment_ids is None and window is None

    def xla(q, k, v):
        return attention_xla(q, k, v, visible, scale=scale, softcap=softcap, dropout_rate=dropout_rate, key=key)

    def cpu(q, k, v):
        if only_causal:
            return attention_cpu(q, k, v, is_causal=True, scale=scale, softcap=softcap)
        return attention_cpu(q, k, v, visible, scale=scale, softcap=softcap)

    def cudnn(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, mask=None if only_causal else visible, is_causal=only_causal,
                                            scale=scale, implementation="cudnn")

    def splash(q, k, v, *, interpret: bool):
        seg_q = kv_seg = None
        if segment_ids is not None:
            seg_q = segment_ids.astype(jnp.int32)
            kv_seg = seg_q if kv_segment_ids is None else kv_segment_ids.astype(jnp.int32)
        return attention_splash(q, k, v, causal=causal, window=window, segment_ids=seg_q, kv_segment_ids=kv_seg,
                                scale=scale, softcap=softcap, interpret=interpret)

    splash_ok = mask is None and default_positions and splash_fits(T, S, D)
    cudnn_ok = q.dtype in (jnp.bfloat16, jnp.float16) and softcap is None and D <= 128 and D % 8 == 0

    if implementation == "xla":
        return xla(q, k, v)
    if implementation == "cpu":
        return cpu(q, k, v)
    if implementation == "cudnn":
        if not (cudnn_ok and _cudnn_loads()):
            raise _error(f"implementation='cudnn' needs an NVIDIA GPU with cuDNN and bf16/fp16 inputs with "
                         f"head_dim <= 128 and no softcap; got {q.dtype}, head_dim={D}, softcap={softcap}. "
                         f"Use implementation=None.")
        return cudnn(q, k, v)
    if implementation == "splash":
        if not splash_ok:
            raise _error(f"implementation='splash' needs no mask= (use segment_ids for padding), default "
                         f"positions (no cache offset), sequence lengths in whole blocks of 128 and head_dim "
                         f"a multiple of 8; got T={T}, S={S}, head_dim={D}.",
                         NotImplementedError)
        return jax.lax.platform_dependent(q, k, v, tpu=functools.partial(splash, interpret=False),
                                          default=functools.partial(splash, interpret=True))
    if dropout_rate > 0.0:
        return xla(q, k, v)
    on_gpu = cudnn if cudnn_ok and _cudnn_loads() else xla
    on_tpu = functools.partial(splash, interpret=False) if splash_ok else xla
    return jax.lax.platform_dependent(q, k, v, cpu=cpu, cuda=on_gpu, tpu=on_tpu, default=xla)
