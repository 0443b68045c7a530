"""One GPT, written in each framework: baobab, raw JAX, Equinox, Flax NNX and PyTorch.

The architecture is GPT-2's: token and learned position embeddings, pre-norm blocks
(LayerNorm, causal self-attention with a fused q|k|v projection or three separate
ones, LayerNorm, tanh-GELU MLP of width 4d), a final LayerNorm and the unembedding
tied to the token embedding; every Linear and LayerNorm has a bias. The loss is the
mean next-token cross-entropy; the optimizer is AdamW (lr 3e-4, betas 0.9/0.999,
eps 1e-8, weight decay 0.01 on every parameter).

Every implementation starts from the weights of the baobab model
(``baobab.models.GPT2``, GPT-2's init), copied through ``shared_weights``, and takes
the same batch, so all of them report the same loss at step 0 and after each step
(``tests/test_bench_gpt.py``). Each is written the way its framework's
documentation writes a model: Equinox and NNX use their own ``Linear``,
``LayerNorm``, ``Embedding``/``Embed`` and multi-head attention layers; the raw JAX
version is a dict of arrays and functions; PyTorch uses ``torch.nn`` layers and
``scaled_dot_product_attention``.

``builders(cfg)`` gives ``{name: build}``; ``build()`` returns an ``Impl`` whose
``step()`` runs one blocking train step and returns the loss before it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import numpy as np

import _harness  # benchmarks/ is on sys.path wherever this module is imported


@dataclasses.dataclass(frozen=True)
class GPTSpec:
    """Sizes of the benchmarked GPT and its batch."""

    vocab: int = 256
    seq: int = 128
    d: int = 256
    layers: int = 4
    heads: int = 4
    batch: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    seed: int = 0

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq

    def num_params(self) -> int:
        d, v, t = self.d, self.vocab, self.seq
        block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
        return v * d + t * d + self.layers * block + 2 * d


@dataclasses.dataclass
class Impl:
    name: str
    step: Callable[[], Any]
    num_params: int
    flops_per_step: float | None = None  # from XLA's cost analysis, JAX implementations only
    compiled: Any = None


def batch(spec: GPTSpec) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``x`` and next-token targets ``y``, both ``(batch, seq)`` int32."""
    rng = np.random.default_rng(spec.seed + 1)
    ids = rng.integers(0, spec.vocab, (spec.batch, spec.seq + 1)).astype(np.int32)
    return ids[:, :-1], ids[:, 1:]


# ---------------------------------------------------------------------------------------------
# baobab, and the shared weights
# ---------------------------------------------------------------------------------------------

def baobab_config(spec: GPTSpec, *, scan_layers: bool = False, remat: str | None = None):
    from baobab.models import GPT2Config

    return GPT2Config(vocab_size=spec.vocab, max_len=spec.seq, hidden_size=spec.d, num_layers=spec.layers,
                      num_heads=spec.heads, scan_layers=scan_layers, remat=remat)


def baobab_model(spec: GPTSpec, **kwargs: Any):
    import jax
    from baobab.models import GPT2

    return GPT2(baobab_config(spec, **kwargs), key=jax.random.key(spec.seed))


def shared_weights(spec: GPTSpec) -> dict[str, Any]:
    """The baobab model's initial weights as numpy, by role; matrices stored ``(in, out)``."""
    from baobab import nn

    sd = {k: np.asarray(v) for k, v in nn.state_dict(baobab_model(spec)).items()}
    blocks = []
    for i in range(spec.layers):
        p = f"transformer.h[{i}]."
        blocks.append({name: sd[p + path] for name, path in (
            ("ln1_w", "ln_1.weight"), ("ln1_b", "ln_1.bias"),
            ("qkv_w", "attn.c_attn.weight"), ("qkv_b", "attn.c_attn.bias"),
            ("proj_w", "attn.c_proj.weight"), ("proj_b", "attn.c_proj.bias"),
            ("ln2_w", "ln_2.weight"), ("ln2_b", "ln_2.bias"),
            ("fc_w", "mlp.c_fc.weight"), ("fc_b", "mlp.c_fc.bias"),
            ("out_w", "mlp.c_proj.weight"), ("out_b", "mlp.c_proj.bias"))})
    return {"wte": sd["transformer.wte.weight"], "wpe": sd["transformer.wpe.weight"],
            "lnf_w": sd["transformer.ln_f.weight"], "lnf_b": sd["transformer.ln_f.bias"], "blocks": blocks}


def _adamw(spec: GPTSpec):
    import optax

    return optax.adamw(spec.lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=spec.weight_decay)


def _xent(logits, y):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _jax_impl(name: str, train_step: Any, state: list, spec: GPTSpec, num_params: int) -> Impl:
    """Wrap a jitted ``train_step(params, opt_state, x, y) -> (params, opt_state, loss)``."""
    import jax.numpy as jnp

    x, y = (jnp.asarray(a) for a in batch(spec))
    compiled = train_step.lower(state[0], state[1], x, y).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost

    def step():
        state[0], state[1], loss = compiled(state[0], state[1], x, y)
        return loss.block_until_ready()

    return Impl(name, step, num_params, float(cost["flops"]), compiled)


def nn_model(spec: GPTSpec):
    """The GPT assembled from ``baobab.nn`` layers, holding the shared weights.

    ``nn.Embedding``, ``nn.LearnedPositionalEmbedding``, and per block ``nn.LayerNorm``,
    ``nn.MultiHeadAttention`` (separate q, k, v projections: the fused ``c_attn`` weight
    is split three ways, so the parameter count is the same), ``nn.LayerNorm`` and
    ``nn.MLP`` (tanh GELU); a final ``nn.LayerNorm``; the unembedding is ``wte.attend``.
    """
    import jax
    import jax.numpy as jnp
    from baobab import nn

    class Block(nn.Module):
        ln_1: nn.LayerNorm
        attn: nn.MultiHeadAttention
        ln_2: nn.LayerNorm
        mlp: nn.MLP

        def __init__(self, *, key: jax.Array):
            self.ln_1 = nn.LayerNorm(spec.d)
            self.attn = nn.MultiHeadAttention(spec.d, spec.heads, key=nn.subkey(key, "attn"))
            self.ln_2 = nn.LayerNorm(spec.d)
            self.mlp = nn.MLP(spec.d, 4 * spec.d, spec.d, key=nn.subkey(key, "mlp"))

        def __call__(self, x: jax.Array) -> jax.Array:
            x = x + self.attn(self.ln_1(x), causal=True)  # (B, T, D)
            return x + self.mlp(self.ln_2(x))  # (B, T, D)

    class GPT(nn.Module):
        wte: nn.Embedding
        wpe: nn.LearnedPositionalEmbedding
        blocks: tuple[Block, ...]
        ln_f: nn.LayerNorm

        def __init__(self, *, key: jax.Array):
            self.wte = nn.Embedding(spec.vocab, spec.d, key=nn.subkey(key, "wte"))
            self.wpe = nn.LearnedPositionalEmbedding(spec.seq, spec.d, key=nn.subkey(key, "wpe"))
            self.blocks = tuple(Block(key=nn.subkey(key, f"blocks[{i}]")) for i in range(spec.layers))
            self.ln_f = nn.LayerNorm(spec.d)

        def __call__(self, ids: jax.Array) -> jax.Array:
            x = self.wte(ids) + self.wpe(jnp.arange(ids.shape[1]))  # (B, T, D)
            for block in self.blocks:
                x = block(x)
            return self.wte.attend(self.ln_f(x))  # (B, T, V)

    w = shared_weights(spec)
    values = {"wte.weight": w["wte"], "wpe.weight": w["wpe"], "ln_f.weight": w["lnf_w"], "ln_f.bias": w["lnf_b"]}
    for i, p in enumerate(w["blocks"]):
        q, k, v = np.split(p["qkv_w"], 3, axis=1)
        qb, kb, vb = np.split(p["qkv_b"], 3)
        b = f"blocks[{i}]."
        values.update({
            b + "ln_1.weight": p["ln1_w"], b + "ln_1.bias": p["ln1_b"],
            b + "attn.q.weight": q, b + "attn.q.bias": qb, b + "attn.k.weight": k, b + "attn.k.bias": kb,
            b + "attn.v.weight": v, b + "attn.v.bias": vb,
            b + "attn.o.weight": p["proj_w"], b + "attn.o.bias": p["proj_b"],
            b + "ln_2.weight": p["ln2_w"], b + "ln_2.bias": p["ln2_b"],
            b + "mlp.fc1.weight": p["fc_w"], b + "mlp.fc1.bias": p["fc_b"],
            b + "mlp.fc2.weight": p["out_w"], b + "mlp.fc2.bias": p["out_b"]})
    model = GPT(key=jax.random.key(spec.seed))
    return nn.load_state_dict(model, {k: jnp.asarray(np.ascontiguousarray(v)) for k, v in values.items()})


def build_baobab(spec: GPTSpec, *, scan_layers: bool = False, policy: Any = None,
                 model: str = "gpt2") -> Impl:
    """baobab's GPT, ``optax.adamw``, one donating ``jax.jit`` step.

    ``model="gpt2"`` (the row named ``baobab``): the zoo's ``baobab.models.GPT2``, the
    model users train (optionally with ``scan_layers``); ``model="nn"`` (``baobab_nn``):
    the same GPT assembled from ``nn`` layers (``nn_model``).
    """
    import jax
    import optax
    from baobab import nn

    name = {"nn": "baobab_nn", "gpt2": "baobab"}[model]
    model = nn_model(spec) if name == "baobab_nn" else baobab_model(spec, scan_layers=scan_layers)
    if policy is not None:
        model = nn.with_policy(model, policy)
    opt = _adamw(spec)

    def loss_fn(model, x, y):
        return _xent(model(x).astype("float32"), y)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(model, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(model, x, y)
        updates, opt_state = opt.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state, loss

    n = sum(a.size for a in jax.tree.leaves(model))
    return _jax_impl(name, train_step, [model, opt.init(model)], spec, n)


# ---------------------------------------------------------------------------------------------
# raw JAX: a dict of arrays and a handful of functions
# ---------------------------------------------------------------------------------------------

def build_raw_jax(spec: GPTSpec) -> Impl:
    import jax
    import jax.numpy as jnp
    import optax

    params = jax.tree.map(jnp.asarray, shared_weights(spec))
    H, Dh = spec.heads, spec.d // spec.heads

    def layer_norm(x, w, b, eps=1e-5):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + eps) * w + b

    def attention(x, p):
        B, T, D = x.shape
        q, k, v = jnp.split(x @ p["qkv_w"] + p["qkv_b"], 3, axis=-1)  # (B, T, D) each
        q, k, v = (a.reshape(B, T, H, Dh).transpose(0, 2, 1, 3) for a in (q, k, v))  # (B, H, T, Dh)
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(Dh)  # (B, H, T, T)
        causal = jnp.tril(jnp.ones((T, T), bool))
        scores = jnp.where(causal, scores, -jnp.inf)
        out = jax.nn.softmax(scores, axis=-1) @ v  # (B, H, T, Dh)
        out = out.transpose(0, 2, 1, 3).reshape(B, T, D)
        return out @ p["proj_w"] + p["proj_b"]

    def forward(params, ids):
        T = ids.shape[1]
        x = params["wte"][ids] + params["wpe"][:T]  # (B, T, D)
        for p in params["blocks"]:
            x = x + attention(layer_norm(x, p["ln1_w"], p["ln1_b"]), p)
            h = jax.nn.gelu(layer_norm(x, p["ln2_w"], p["ln2_b"]) @ p["fc_w"] + p["fc_b"], approximate=True)
            x = x + h @ p["out_w"] + p["out_b"]
        x = layer_norm(x, params["lnf_w"], params["lnf_b"])
        return x @ params["wte"].T  # (B, T, V)

    opt = _adamw(spec)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: _xent(forward(p, x), y))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    n = sum(a.size for a in jax.tree.leaves(params))
    return _jax_impl("raw_jax", train_step, [params, opt.init(params)], spec, n)


# ---------------------------------------------------------------------------------------------
# Equinox: eqx.nn layers on single examples, vmapped, and filter_jit
# ---------------------------------------------------------------------------------------------

def build_equinox(spec: GPTSpec) -> Impl:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    D, H = spec.d, spec.heads

    class Block(eqx.Module):
        ln1: eqx.nn.LayerNorm
        attn: eqx.nn.MultiheadAttention
        ln2: eqx.nn.LayerNorm
        fc: eqx.nn.Linear
        out: eqx.nn.Linear

        def __init__(self, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.ln1 = eqx.nn.LayerNorm(D)
            self.attn = eqx.nn.MultiheadAttention(H, D, use_query_bias=True, use_key_bias=True,
                                                  use_value_bias=True, use_output_bias=True, key=k1)
            self.ln2 = eqx.nn.LayerNorm(D)
            self.fc = eqx.nn.Linear(D, 4 * D, key=k2)
            self.out = eqx.nn.Linear(4 * D, D, key=k3)

        def __call__(self, x, mask):  # x: (T, D), one sequence
            h = jax.vmap(self.ln1)(x)
            x = x + self.attn(h, h, h, mask=mask)
            h = jax.nn.gelu(jax.vmap(self.fc)(jax.vmap(self.ln2)(x)), approximate=True)
            return x + jax.vmap(self.out)(h)

    class GPT(eqx.Module):
        wte: eqx.nn.Embedding
        wpe: eqx.nn.Embedding
        blocks: tuple
        lnf: eqx.nn.LayerNorm

        def __init__(self, key):
            keys = jax.random.split(key, spec.layers + 2)
            self.wte = eqx.nn.Embedding(spec.vocab, D, key=keys[0])
            self.wpe = eqx.nn.Embedding(spec.seq, D, key=keys[1])
            self.blocks = tuple(Block(k) for k in keys[2:])
            self.lnf = eqx.nn.LayerNorm(D)

        def __call__(self, ids):  # ids: (T,)
            T = ids.shape[0]
            x = jax.vmap(self.wte)(ids) + jax.vmap(self.wpe)(jnp.arange(T))
            mask = jnp.tril(jnp.ones((T, T), bool))
            for block in self.blocks:
                x = block(x, mask)
            return jax.vmap(self.lnf)(x) @ self.wte.weight.T  # (T, V)

    model = GPT(jax.random.key(spec.seed))
    w = shared_weights(spec)
    a = jnp.asarray
    replace = {"wte": a(w["wte"]), "wpe": a(w["wpe"]), "lnf.weight": a(w["lnf_w"]), "lnf.bias": a(w["lnf_b"])}
    for i, p in enumerate(w["blocks"]):
        q, k, v = np.split(p["qkv_w"], 3, axis=1)
        qb, kb, vb = np.split(p["qkv_b"], 3)
        replace.update({  # Equinox stores Linear weights (out, in)
            f"{i}.ln1.weight": a(p["ln1_w"]), f"{i}.ln1.bias": a(p["ln1_b"]),
            f"{i}.q.w": a(q.T), f"{i}.q.b": a(qb), f"{i}.k.w": a(k.T), f"{i}.k.b": a(kb),
            f"{i}.v.w": a(v.T), f"{i}.v.b": a(vb), f"{i}.o.w": a(p["proj_w"].T), f"{i}.o.b": a(p["proj_b"]),
            f"{i}.ln2.weight": a(p["ln2_w"]), f"{i}.ln2.bias": a(p["ln2_b"]),
            f"{i}.fc.w": a(p["fc_w"].T), f"{i}.fc.b": a(p["fc_b"]),
            f"{i}.out.w": a(p["out_w"].T), f"{i}.out.b": a(p["out_b"])})

    def where(m):
        leaves = [m.wte.weight, m.wpe.weight, m.lnf.weight, m.lnf.bias]
        for b in m.blocks:
            at = b.attn
            leaves += [b.ln1.weight, b.ln1.bias, at.query_proj.weight, at.query_proj.bias,
                       at.key_proj.weight, at.key_proj.bias, at.value_proj.weight, at.value_proj.bias,
                       at.output_proj.weight, at.output_proj.bias, b.ln2.weight, b.ln2.bias,
                       b.fc.weight, b.fc.bias, b.out.weight, b.out.bias]
        return leaves

    order = ["wte", "wpe", "lnf.weight", "lnf.bias"]
    for i in range(spec.layers):
        order += [f"{i}.{n}" for n in ("ln1.weight", "ln1.bias", "q.w", "q.b", "k.w", "k.b", "v.w", "v.b",
                                        "o.w", "o.b", "ln2.weight", "ln2.bias", "fc.w", "fc.b", "out.w", "out.b")]
    model = eqx.tree_at(where, model, [replace[k] for k in order])
    params = eqx.filter(model, eqx.is_array)
    step = _harness.equinox_step(model, _adamw(spec), tuple(jnp.asarray(a) for a in batch(spec)), _xent)
    return Impl("equinox", step, sum(x.size for x in jax.tree.leaves(params)))


# ---------------------------------------------------------------------------------------------
# Flax NNX: nnx layers, nnx.Optimizer, nnx.jit (and nnx.cached_partial)
# ---------------------------------------------------------------------------------------------

def _nnx_model(spec: GPTSpec):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    D, H, Dh = spec.d, spec.heads, spec.d // spec.heads

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.ln1 = nnx.LayerNorm(D, epsilon=1e-5, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(H, D, decode=False, rngs=rngs)
            self.ln2 = nnx.LayerNorm(D, epsilon=1e-5, rngs=rngs)
            self.fc = nnx.Linear(D, 4 * D, rngs=rngs)
            self.out = nnx.Linear(4 * D, D, rngs=rngs)

        def __call__(self, x, mask):
            x = x + self.attn(self.ln1(x), mask=mask)
            return x + self.out(jax.nn.gelu(self.fc(self.ln2(x)), approximate=True))

    class GPT(nnx.Module):
        def __init__(self, rngs):
            self.wte = nnx.Embed(spec.vocab, D, rngs=rngs)
            self.wpe = nnx.Embed(spec.seq, D, rngs=rngs)
            self.blocks = nnx.List([Block(rngs) for _ in range(spec.layers)])
            self.lnf = nnx.LayerNorm(D, epsilon=1e-5, rngs=rngs)

        def __call__(self, ids):  # (B, T)
            T = ids.shape[1]
            x = self.wte(ids) + self.wpe(jnp.arange(T))
            mask = nnx.make_causal_mask(ids)
            for block in self.blocks:
                x = block(x, mask)
            return self.wte.attend(self.lnf(x))  # (B, T, V)

    model = GPT(nnx.Rngs(spec.seed))
    w = shared_weights(spec)
    a = jnp.asarray
    model.wte.embedding.set_value(a(w["wte"]))
    model.wpe.embedding.set_value(a(w["wpe"]))
    model.lnf.scale.set_value(a(w["lnf_w"]))
    model.lnf.bias.set_value(a(w["lnf_b"]))
    for block, p in zip(model.blocks, w["blocks"], strict=True):
        block.ln1.scale.set_value(a(p["ln1_w"]))
        block.ln1.bias.set_value(a(p["ln1_b"]))
        qkv, qkv_b = np.split(p["qkv_w"], 3, axis=1), np.split(p["qkv_b"], 3)
        for proj, wi, bi in zip((block.attn.query, block.attn.key, block.attn.value), qkv, qkv_b, strict=True):
            proj.kernel.set_value(a(wi.reshape(D, H, Dh)))  # NNX kernels are (in, heads, head_dim)
            proj.bias.set_value(a(bi.reshape(H, Dh)))
        block.attn.out.kernel.set_value(a(p["proj_w"].reshape(H, Dh, D)))
        block.attn.out.bias.set_value(a(p["proj_b"]))
        block.ln2.scale.set_value(a(p["ln2_w"]))
        block.ln2.bias.set_value(a(p["ln2_b"]))
        block.fc.kernel.set_value(a(p["fc_w"]))
        block.fc.bias.set_value(a(p["fc_b"]))
        block.out.kernel.set_value(a(p["out_w"]))
        block.out.bias.set_value(a(p["out_b"]))
    return model


def _nnx_train_step(model, optimizer, x, y):
    from flax import nnx

    def loss_fn(model):
        return _xent(model(x), y)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def build_nnx(spec: GPTSpec, *, cached: bool = False) -> Impl:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model = _nnx_model(spec)
    optimizer = nnx.Optimizer(model, _adamw(spec), wrt=nnx.Param)
    x, y = (jnp.asarray(a) for a in batch(spec))
    n = sum(a.size for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
    if not cached:
        train_step = nnx.jit(_nnx_train_step, donate_argnames=("model", "optimizer"))
        return Impl("nnx_jit", lambda: train_step(model, optimizer, x, y).block_until_ready(), n)
    jitted = nnx.jit(_nnx_train_step, donate_argnames=("model", "optimizer"), graph=True, graph_updates=True)
    with nnx.set_graph_mode(True), nnx.set_graph_updates(True):
        train_step = nnx.cached_partial(jitted, model, optimizer)
    return Impl("nnx_cached", lambda: train_step(x, y).block_until_ready(), n)


# ---------------------------------------------------------------------------------------------
# PyTorch: torch.nn layers, scaled_dot_product_attention, AdamW; eager or torch.compile
# ---------------------------------------------------------------------------------------------

def torch_model(spec: GPTSpec, weights: dict[str, Any] | None = None):
    import torch
    import torch.nn.functional as F

    D, H = spec.d, spec.heads

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = torch.nn.LayerNorm(D)
            self.c_attn = torch.nn.Linear(D, 3 * D)
            self.c_proj = torch.nn.Linear(D, D)
            self.ln_2 = torch.nn.LayerNorm(D)
            self.c_fc = torch.nn.Linear(D, 4 * D)
            self.mlp_proj = torch.nn.Linear(4 * D, D)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(D, dim=-1)
            q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(a.transpose(1, 2).reshape(B, T, D))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(spec.vocab, D)
            self.wpe = torch.nn.Embedding(spec.seq, D)
            self.h = torch.nn.ModuleList(Block() for _ in range(spec.layers))
            self.ln_f = torch.nn.LayerNorm(D)

        def forward(self, ids):
            x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
            for block in self.h:
                x = block(x)
            return F.linear(self.ln_f(x), self.wte.weight)  # tied unembedding

    model = GPT()
    w = shared_weights(spec) if weights is None else weights
    t = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
    with torch.no_grad():  # torch stores Linear weights (out, in)
        model.wte.weight.copy_(t(w["wte"]))
        model.wpe.weight.copy_(t(w["wpe"]))
        model.ln_f.weight.copy_(t(w["lnf_w"]))
        model.ln_f.bias.copy_(t(w["lnf_b"]))
        for block, p in zip(model.h, w["blocks"], strict=True):
            for mod, wk, bk in ((block.ln_1, "ln1_w", "ln1_b"), (block.ln_2, "ln2_w", "ln2_b")):
                mod.weight.copy_(t(p[wk]))
                mod.bias.copy_(t(p[bk]))
            for mod, wk, bk in ((block.c_attn, "qkv_w", "qkv_b"), (block.c_proj, "proj_w", "proj_b"),
                                (block.c_fc, "fc_w", "fc_b"), (block.mlp_proj, "out_w", "out_b")):
                mod.weight.copy_(t(p[wk]).T)
                mod.bias.copy_(t(p[bk]))
    return model


def build_torch(spec: GPTSpec, *, compile: bool = False, device: str = "cpu",
                dtype: str = "float32", weights: dict[str, Any] | None = None) -> Impl:
    """PyTorch eager (or ``torch.compile``d model); ``dtype="bfloat16"`` runs under autocast."""
    import contextlib

    import torch
    import torch.nn.functional as F

    model = torch_model(spec, weights).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=spec.weight_decay)
    x, y = (torch.from_numpy(a.astype(np.int64)).to(device) for a in batch(spec))
    forward = torch.compile(model) if compile else model
    autocast = (functools.partial(torch.autocast, device_type=device.split(":")[0], dtype=torch.bfloat16)
                if dtype == "bfloat16" else contextlib.nullcontext)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = forward(x)
        loss = F.cross_entropy(logits.float().view(-1, spec.vocab), y.view(-1))
        loss.backward()
        opt.step()
        sync()
        return loss.detach()

    n = sum(p.numel() for p in model.parameters())
    return Impl("torch_compile" if compile else "torch", step, n)


def builders(spec: GPTSpec) -> dict[str, Callable[[], Impl]]:
    return {
        "baobab": lambda: build_baobab(spec),
        "baobab_nn": lambda: build_baobab(spec, model="nn"),
        "raw_jax": lambda: build_raw_jax(spec),
        "equinox": lambda: build_equinox(spec),
        "nnx_jit": lambda: build_nnx(spec),
        "nnx_cached": lambda: build_nnx(spec, cached=True),
        "torch": lambda: build_torch(spec),
        "torch_compile": lambda: build_torch(spec, compile=True),
    }


#: The package each implementation needs beyond jax/optax.
NEEDS = {"equinox": "equinox", "nnx_jit": "flax", "nnx_cached": "flax", "torch": "torch", "torch_compile": "torch"}
