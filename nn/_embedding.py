"""``Embedding``: a lookup table from integer ids to vectors, with tied unembedding."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from . import _context
from ._checks import check_dim
from ._core import wrap_call
from ._module import Module, param, static

__all__ = ["Embedding"]

Initializer = Callable[..., jax.Array]


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``features``, indexed by integer ids.

    Shapes: ``__call__``: ids ``(...)`` of any integer dtype ``-> (..., features)``.
    ``attend``: ``(..., features) -> (..., num_embeddings)``, the logits of the tied
    unembedding ``x @ weight.T``.

    ``weight`` is ``(num_embeddings, features)``, as in PyTorch, so checkpoints copy
    one to one. Init matches ``torch.nn.Embedding``: ``N(0, 1)``, unless
    ``weight_init`` (a ``jax.nn.initializers`` function) is given. ``axes`` names the
    logical axes of ``weight``.

    Ids must lie in ``[0, num_embeddings)``. Under ``jit`` they cannot be checked, so
    an id out of range, negative ones included, gives a row of NaN, never a silently
    clamped or wrapped row.

    >>> import jax, jax.numpy as jnp
    >>> from baobab import nn
    >>> emb = nn.Embedding(100, 16, key=jax.random.key(0))
    >>> h = emb(jnp.array([[1, 2, 3]]))
    >>> h.shape, emb.attend(h).shape
    ((1, 3, 16), (1, 3, 100))
    """

    weight: jax.Array
    num_embeddings: int = static()
    features: int = static()

    def __init__(self, num_embeddings: int, features: int, *, key: jax.Array,
                 axes: tuple[str | None, str | None] = ("vocab", "embed"),
                 weight_init: Initializer | None = None, dtype=jnp.float32):
        for name, value in (("num_embeddings", num_embeddings), ("features", features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Embedding: {name} must be a positive int, got {value!r}.")
        self.num_embeddings = num_embeddings
        self.features = features
        weight_init = weight_init or jax.nn.initializers.normal(stddev=1.0)
        self.weight = param(weight_init(key, (num_embeddings, features), dtype), axes)

    def __call__(self, ids: jax.Array) -> jax.Array:
        ids = jnp.asarray(ids)
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(
                f"{_context.where()}: expected integer ids, got dtype {ids.dtype} with shape "
                f"{tuple(ids.shape)}. Cast them, e.g. ids.astype(jnp.int32)."
            )
        # Out-of-range ids, negative ones included, give NaN rows instead of wrapping or clamping.
        return jnp.asarray(self.weight).at[ids].get(mode="fill", fill_value=jnp.nan, wrap_negative_indices=False)

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits over the vocabulary: ``(..., features) -> (..., num_embeddings)``, ``x @ weight.T``.

        >>> import jax, jax.numpy as jnp
        >>> from baobab import nn
        >>> emb = nn.Embedding(10, 4, key=jax.random.key(0))
        >>> emb.attend(jnp.ones((2, 4))).shape
        (2, 10)
        """
        check_dim(x, -1, self.features, "features")
        return x @ self.weight.T  # (..., num_embeddings)

    # Run like __call__: in a named scope, with the module's path and precision policy.
    attend = wrap_call(attend)
