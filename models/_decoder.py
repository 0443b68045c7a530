"""What every decoder-only zoo model shares: its layer stack, its cache and its input checks.

A zoo LM has two methods, each with one return type:

* ``model(ids, *, segment_ids=None, positions=None, key=None) -> logits (B, T, V)``:
  a training/scoring forward. ``segment_ids`` ``(B, T)`` keep packed documents apart
  in attention; ``positions`` ``(B, T)`` restart at each document (what
  ``data``'s packing yields as ``tokens_segment_ids`` / ``tokens_positions``).
* ``model.decode(ids, cache, *, positions=None) -> (logits, cache)``: the new tokens
  ``(B, T)`` at ``positions`` ``(B, T)`` (default ``cache index ...``; -1 marks padding,
  e.g. of left-padded prompts), with the keys and values of earlier ones in ``cache``
  (``model.init_cache``; ``rolling=True`` keeps the most recent ``max_len`` tokens).

The layers are a tuple of blocks or one ``nn.Stacked`` (``scan_layers``); the
functions below run either, so a model file only says what its block computes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from baobab import nn

__all__ = ["apply_layers", "decode_layers", "decode_positions", "cache_index", "layer_caches", "check_token_inputs"]


def apply_layers(layers, x: jax.Array, *, key: jax.Array | None = None, **kwargs) -> jax.Array:
    """``x`` through each layer in turn (``layer(x, key=, **kwargs)``), one key per layer.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> blocks = tuple(nn.Dropout(0.5) for _ in range(3))
    >>> apply_layers(blocks, jnp.ones((2, 4)), key=jax.random.key(0)).shape
    (2, 4)
    """
    if isinstance(layers, nn.Stacked):
        return layers(x, key=key, **kwargs)  # lax.scan over the stacked layers
    keys = [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))
    for layer, layer_key in zip(layers, keys, strict=True):
        x = layer(x, key=layer_key, **kwargs)  # (B, T, D)
    return x


def decode_layers(layers, x: jax.Array, cache, **kwargs):
    """``x`` through each layer's ``decode(x, layer_cache, **kwargs)``: returns ``(x, new cache)``."""
    if isinstance(layers, nn.Stacked):
        def body(h, xs):
            layer, layer_cache = xs
            return layer.decode(h, layer_cache, **kwargs)

        x, new = jax.lax.scan(body, x, (layers.layer, cache.layer))
        return x, nn.replace(cache, layer=new)
    new_caches = []
    for layer, layer_cache in zip(layers, cache, strict=True):
        x, layer_cache = layer.decode(x, layer_cache, **kwargs)
        new_caches.append(layer_cache)
    return x, tuple(new_caches)


def cache_index(cache) -> jax.Array:
    """The number of positions already in the cache (the same in every layer)."""
    return cache.layer.index[0] if isinstance(cache, nn.Stacked) else cache[0].index


def decode_positions(model_name: str, ids: jax.Array, cache, positions) -> jax.Array:
    """Positions ``(B, T)`` int32 of the tokens ``ids`` being decoded: ``positions`` checked
    (-1 marks padding), or the cache's next ones (``cache_index + arange(T)``)."""
    B, T = ids.shape
    if positions is None:
        return jnp.broadcast_to(cache_index(cache) + jnp.arange(T, dtype=jnp.int32), (B, T))
    positions = jnp.asarray(positions)
    if positions.shape != (B, T) or not jnp.issubdtype(positions.dtype, jnp.integer):
        raise nn.ShapeError(f"{model_name}.decode: positions must be integers shaped like the ids {(B, T)} "
                            f"(-1 for padding), got {positions.dtype}{list(positions.shape)}.")
    return positions.astype(jnp.int32)


def layer_caches(one: nn.KVCache, num_layers: int, stacked: bool):
    """One empty cache per layer: a tuple, or an ``nn.Stacked`` of them for scanned layers."""
    if stacked:
        return nn.Stacked.from_layers([one] * num_layers)
    return (one,) * num_layers


def check_token_inputs(model_name: str, ids, segment_ids, positions) -> jax.Array:
    """``ids`` as an array, after checking ids ``(B, T)`` and the packing inputs against it."""
    ids = jnp.asarray(ids)
    if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise nn.ShapeError(
            f"{model_name} expects integer token ids (B, T), got {ids.dtype}{list(ids.shape)}. "
            f"A single sequence needs ids[None]."
        )
    for name, value in (("segment_ids", segment_ids), ("positions", positions)):
        if value is None:
            continue
        value = jnp.asarray(value)
        if value.shape != ids.shape or not jnp.issubdtype(value.dtype, jnp.integer):
            raise nn.ShapeError(
                f"{model_name}: {name} must be integers shaped like the ids {tuple(ids.shape)}, got "
                f"{value.dtype}{list(value.shape)}. Packed batches carry them as tokens_{name}."
            )
    return ids
