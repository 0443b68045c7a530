"""A bit-exact copy of the train state on the CPU, dispatched without blocking the loop.

On the CPU, device memory is host memory, so ``Checkpointer.save`` hands orbax a
copy of the state (the next step may then donate the originals) and saves it on
a background thread. The copy is one jitted dispatch, ordered by PjRt before any
later computation that donates the originals.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["on_cpu", "copy_state"]


def on_cpu(tree: Any) -> bool:
    """Whether every array in ``tree`` lives on CPU devices (device memory is host memory)."""
    arrays = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
    return bool(arrays) and all(d.platform == "cpu" for x in arrays for d in x.devices())


def _copy_leaf(x: jax.Array, zero: jax.Array) -> jax.Array:
    """A bit-exact copy of ``x``, written as ``bits ^ 0`` with ``zero`` a runtime argument.

    XLA:CPU runs an executable it counts under 1,000 FLOPs inline on the calling
    thread, and a plain copy counts zero, so ``jnp.copy`` of a large state would
    block the caller for the whole memcpy. The XOR counts one op per element: the
    copy is dispatched asynchronously and runs on XLA's thread pool. Integer XOR
    keeps every bit (a float multiply by 1 would flush denormals).
    """
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_copy_leaf(jax.random.key_data(x), zero),
                                        impl=jax.random.key_impl(x))
    if x.dtype == jnp.bool_:
        return x ^ zero.astype(jnp.bool_)
    width = (jnp.finfo(x.dtype).bits if jnp.issubdtype(x.dtype, jnp.floating)
             else jnp.iinfo(x.dtype).bits if jnp.issubdtype(x.dtype, jnp.integer) else None)
    bits = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}.get(width)
    if bits is None or width != x.dtype.itemsize * 8:  # complex, int4, ...: a plain copy
        return jnp.copy(x)
    if x.dtype == bits:
        return x ^ zero.astype(bits)
    return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(x, bits) ^ zero.astype(bits), x.dtype)


# One dispatch copies the whole state into new buffers with the same shardings. The
# copy is ordered before any later computation that donates the originals.
_copy_tree = jax.jit(lambda tree, zero: jax.tree.map(lambda x: _copy_leaf(x, zero), tree))


def copy_state(tree: Any) -> Any:
    """A bit-exact copy of ``tree``'s arrays in new buffers with the same shardings (one dispatch)."""
    return _copy_tree(tree, jnp.zeros((), jnp.uint8))
