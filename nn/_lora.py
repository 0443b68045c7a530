"""LoRA as a tree transform: wrap chosen ``Linear`` layers, train only the adapters, merge back.

``lora(model, patterns, rank=r, key=k)`` returns a copy of ``model`` in which every
``Linear`` whose path matches one of the patterns (``nn.path_matches``) becomes a
``LoRALinear``: the original layer, frozen, plus a low-rank update
``y = base(x) + (x @ lora_a) @ lora_b * alpha / rank``. ``lora_b`` starts at zero, so
the wrapped model computes exactly what the original did. Every other parameter is
frozen too, so ``nn.labels`` / ``train.only_trainable`` give the frozen weights no
optimizer state: only the adapters carry Adam moments.

``merge_lora(model)`` folds each adapter into its base weight
(``W + a @ b * alpha / rank``) and returns plain ``Linear`` layers with the original
paths, ready for ``models.hf_io.export_hf``. Layers stacked by ``nn.Stacked`` work
too: their adapters carry the same leading ``layers`` axis. A base held in int8
(``nn.Int8Linear``, see ``nn.int8_lora_bases``) merges into its dequantized weight,
the one the adapters were trained against, as a float32 ``Linear``.

>>> import jax, jax.numpy as jnp
>>> from baobab import nn
>>> mlp = nn.MLP(4, 8, 2, key=jax.random.key(0))
>>> tuned = nn.lora(mlp, "fc1", rank=2, key=jax.random.key(1))
>>> type(tuned.fc1).__name__, nn.count_parameters(tuned, trainable_only=True)
('LoRALinear', 24)
>>> x = jnp.ones((3, 4))
>>> bool(jnp.allclose(tuned(x), mlp(x)))  # lora_b starts at zero
True
>>> type(nn.merge_lora(tuned).fc1).__name__
'Linear'
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._context import join_path
from ._int8_linear import Int8Linear
from ._linear import Linear
from ._module import Module, array_meta, param, replace, static
from ._params import freeze, path_matches, unfreeze
from ._tree import iter_modules, map_modules

__all__ = ["LoRALinear", "lora", "merge_lora", "int8_lora_bases"]


class LoRALinear(Module):
    """A frozen ``Linear`` (or ``Int8Linear``) plus a trainable low-rank update: ``(..., in) -> (..., out)``.

    ``lora_a`` is ``(in, rank)`` (Kaiming-uniform like torch's ``Linear``), ``lora_b``
    ``(rank, out)`` zeros; with leading axes when ``base`` is stacked (``(L, in, r)``).
    """

    base: Linear | Int8Linear
    lora_a: jax.Array
    lora_b: jax.Array
    rank: int = static()
    scale: float = static()

    def __init__(self, base: Linear | Int8Linear, *, rank: int, key: jax.Array, alpha: float | None = None):
        if not isinstance(base, (Linear, Int8Linear)):
            raise TypeError(f"LoRALinear wraps an nn.Linear or nn.Int8Linear, got {type(base).__name__}.")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}.")
        weight = "weight" if isinstance(base, Linear) else "qvalue"
        in_axis, out_axis = array_meta(base, weight).axes[-2:]
        bound = 1.0 / base.in_features ** 0.5
        dtype = base.weight.dtype if isinstance(base, Linear) else base.scale.dtype
        self.base = base
        self.lora_a = param(jax.random.uniform(key, (base.in_features, rank), dtype, -bound, bound),
                            (in_axis, None))
        self.lora_b = param(jnp.zeros((rank, base.out_features), dtype), (None, out_axis))
        self.rank = rank
        self.scale = float(alpha if alpha is not None else rank) / rank

    def __call__(self, x: jax.Array) -> jax.Array:
        low = (x @ self.lora_a.astype(x.dtype)) @ self.lora_b.astype(x.dtype)  # (..., r) -> (..., out)
        return self.base(x) + low * self.scale

    def merged(self) -> Linear:
        """The base ``Linear`` with the update folded in (same frozen flag as the base).

        The sum is taken in float32 whatever the stored dtype, then cast back once. An
        int8 base is dequantized first and the result is a float32 ``Linear``.
        """
        f32 = jnp.float32
        delta = jnp.matmul(self.lora_a.astype(f32), self.lora_b.astype(f32)) * self.scale  # (..., in, out)
        if isinstance(self.base, Int8Linear):
            base = self.base.dequantized()
            return replace(base, weight=base.weight + delta)
        return replace(self.base, weight=(self.base.weight.astype(f32) + delta).astype(self.base.weight.dtype))


def lora(model: Module, *patterns: str, rank: int, key: jax.Array, alpha: float | None = None) -> Module:
    """``model`` with the ``Linear`` layers under ``patterns`` wrapped in ``LoRALinear``; all else frozen.

    Patterns are ``nn.path_matches`` patterns of module paths, e.g.
    ``"*.attention.self.query"`` or ``"model.layers*.self_attn.*"``. Each wrapped layer
    draws its own key (folded from ``key`` by the layer's position).
    """
    if not patterns:
        raise ValueError("nn.lora needs at least one path pattern, e.g. nn.lora(model, '*.q_proj', rank=8, key=k).")
    linears = [p for p, m in iter_modules(model) if isinstance(m, Linear)]
    chosen = [p for p in linears if any(path_matches(pat, p) for pat in patterns)]
    unmatched = [pat for pat in patterns if not any(path_matches(pat, p) for p in linears)]
    if unmatched:
        raise ValueError(f"nn.lora: pattern(s) {unmatched} match no Linear layer of {type(model).__name__}; "
                         f"its Linear layers are {linears[:8]}{' ...' if len(linears) > 8 else ''}.")
    keys = dict(zip(chosen, jax.random.split(key, len(chosen)), strict=True))

    def wrap(path: str, module: Module) -> Module:
        if path not in keys or not isinstance(module, Linear):
            return module
        if module.weight.ndim == 2:
            return LoRALinear(module, rank=rank, alpha=alpha, key=keys[path])
        # inside nn.Stacked: build one adapter per layer, stacked the same way
        layer_keys = jax.random.split(keys[path], module.weight.shape[0])
        return jax.vmap(lambda m, k: LoRALinear(m, rank=rank, alpha=alpha, key=k))(module, layer_keys)

    wrapped = freeze(map_modules(wrap, model), "*")
    return unfreeze(wrapped, *(join_path(p, "lora_a") for p in chosen), *(join_path(p, "lora_b") for p in chosen))


def merge_lora(model: Module) -> Module:
    """``model`` with every ``LoRALinear`` folded back into a plain ``Linear`` (a no-op without any)."""
    return map_modules(lambda path, m: m.merged() if isinstance(m, LoRALinear) else m, model)


def int8_lora_bases(model: Module) -> Module:
    """``model`` with the base ``Linear`` of every ``nn.LoRALinear`` held as an ``Int8Linear``.

    Only adapted layers change; every other layer (a trainable head, embeddings,
    norms) keeps its dtype. Works under ``jax.jit`` and on stacked layers.

    >>> import jax
    >>> from baobab import nn
    >>> tuned = nn.lora(nn.MLP(4, 8, 2, key=jax.random.key(0)), "fc1", rank=2, key=jax.random.key(1))
    >>> type(nn.int8_lora_bases(tuned).fc1.base).__name__
    'Int8Linear'
    """

    def swap(path: str, module: Module) -> Module:
        if not isinstance(module, LoRALinear) or not isinstance(module.base, Linear):
            return module
        base = module.base
        if base.weight.ndim == 2:
            return replace(module, base=Int8Linear(base))
        if base.weight.ndim == 3:  # inside nn.Stacked: one scale set per layer
            return replace(module, base=jax.vmap(Int8Linear)(base))
        raise ValueError(f"int8_lora_bases: {path or type(model).__name__}.base has a weight of shape "
                         f"{tuple(base.weight.shape)}; only 2-D weights or one stacked axis are supported.")

    return map_modules(swap, model)
