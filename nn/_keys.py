"""Explicit RNG keys: derive a submodule's key from its parent's key and its name.

There is no global RNG state. A constructor receives one ``key`` and gives each
submodule ``nn.subkey(key, "name")``: the same name always gives the same key, and
different names give independent keys, so adding a submodule never reshuffles the
initialisation of the others (as sequential ``split`` would).
"""

from __future__ import annotations

import zlib

import jax

__all__ = ["subkey"]


def subkey(key: jax.Array, path: str) -> jax.Array:
    """A key for the submodule at ``path`` (e.g. ``"attn.q"``), derived from ``key``.

    >>> import jax
    >>> from baobab import nn
    >>> k = jax.random.key(0)
    >>> bool((jax.random.key_data(nn.subkey(k, "q")) == jax.random.key_data(nn.subkey(k, "q"))).all())
    True
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"nn.subkey needs a non-empty path string, got {path!r}.")
    return jax.random.fold_in(key, zlib.crc32(path.encode()) & 0x7FFFFFFF)
