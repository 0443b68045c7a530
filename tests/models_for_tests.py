"""Small composed models used by the core tests (a block stack, a residual BN net)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from baobab import nn


class Attn(nn.Module):
    q: nn.Linear
    o: nn.Linear

    def __init__(self, d: int, *, key):
        self.q = nn.Linear(d, d, key=nn.subkey(key, "q"), axes=("embed", "heads"))
        self.o = nn.Linear(d, d, key=nn.subkey(key, "o"), axes=("heads", "embed"))

    def __call__(self, x):
        return self.o(jnp.tanh(self.q(x)))


class Block(nn.Module):
    attn: Attn
    fc: nn.Linear

    def __init__(self, d: int, *, key):
        self.attn = Attn(d, key=nn.subkey(key, "attn"))
        self.fc = nn.Linear(d, d, key=nn.subkey(key, "fc"), axes=("embed", "mlp"))

    def __call__(self, x):
        x = x + self.attn(x)
        return x + self.fc(x)


class Tower(nn.Module):
    """embed -> 4 blocks (a tuple) -> head; paths read ``blocks[3].attn.q.weight``."""

    embed: nn.Linear
    blocks: tuple
    head: nn.Linear
    width: int = nn.static()

    def __init__(self, d_in: int = 8, width: int = 16, d_out: int = 8, depth: int = 4, *, key):
        self.width = width
        self.embed = nn.Linear(d_in, width, key=nn.subkey(key, "embed"), axes=("classes", "embed"))
        self.blocks = tuple(Block(width, key=nn.subkey(key, f"blocks[{i}]")) for i in range(depth))
        self.head = nn.Linear(width, d_out, key=nn.subkey(key, "head"), axes=("embed", "classes"))

    def __call__(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class ResidualBN(nn.Module):
    """x + fc2(relu(bn(fc1(x)))): a residual block with BatchNorm."""

    fc1: nn.Linear
    bn: nn.BatchNorm
    fc2: nn.Linear

    def __init__(self, d: int, *, key):
        self.fc1 = nn.Linear(d, d, key=nn.subkey(key, "fc1"))
        self.bn = nn.BatchNorm(d, axes=("mlp",))
        self.fc2 = nn.Linear(d, d, key=nn.subkey(key, "fc2"), axes=("mlp", "embed"))

    def __call__(self, x):
        return x + self.fc2(jax.nn.relu(self.bn(self.fc1(x))))


class ResNetBN(nn.Module):
    stem: nn.Linear
    blocks: tuple
    stacked: nn.Stacked
    head: nn.Linear

    def __init__(self, d_in: int, d: int, classes: int, *, key):
        self.stem = nn.Linear(d_in, d, key=nn.subkey(key, "stem"), axes=("classes", "embed"))
        self.blocks = tuple(ResidualBN(d, key=nn.subkey(key, f"b{i}")) for i in range(2))
        self.stacked = nn.Stacked(lambda k: ResidualBN(d, key=k), 2, key=nn.subkey(key, "stacked"))
        self.head = nn.Linear(d, classes, key=nn.subkey(key, "head"), axes=("embed", "classes"))

    def __call__(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(self.stacked(x))


# --- a small transformer and a small ResNet, for summaries and end-to-end checks -------


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: x + attn(norm(x)); x + mlp(norm(x)). (B, T, D) -> (B, T, D)."""

    attn_norm: nn.RMSNorm
    attn: nn.MultiHeadAttention
    mlp_norm: nn.RMSNorm
    mlp: nn.GatedMLP

    def __init__(self, d: int, heads: int, kv_heads: int, hidden: int, *, key):
        self.attn_norm = nn.RMSNorm(d, eps=1e-6)
        self.attn = nn.MultiHeadAttention(d, heads, num_kv_heads=kv_heads, use_bias=False,
                                          rotary=nn.RotaryEmbedding(d // heads), key=nn.subkey(key, "attn"))
        self.mlp_norm = nn.RMSNorm(d, eps=1e-6)
        self.mlp = nn.GatedMLP(d, hidden, key=nn.subkey(key, "mlp"))

    def __call__(self, x):
        x = x + self.attn(self.attn_norm(x), causal=True)
        return x + self.mlp(self.mlp_norm(x))


class TinyTransformer(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab), with tied embeddings."""

    embed: nn.Embedding
    blocks: nn.Stacked
    norm: nn.RMSNorm

    def __init__(self, vocab: int = 256, d: int = 64, depth: int = 2, heads: int = 4, kv_heads: int = 2, *, key):
        self.embed = nn.Embedding(vocab, d, key=nn.subkey(key, "embed"))
        self.blocks = nn.Stacked(lambda k: DecoderBlock(d, heads, kv_heads, 4 * d, key=k), depth,
                                 key=nn.subkey(key, "blocks"))
        self.norm = nn.RMSNorm(d, eps=1e-6)

    def __call__(self, ids):
        return self.embed.attend(self.norm(self.blocks(self.embed(ids))))


class BasicBlock(nn.Module):
    """ResNet basic block, channels-last: (N, H, W, C) -> (N, H, W, C)."""

    conv1: nn.Conv
    bn1: nn.BatchNorm
    conv2: nn.Conv
    bn2: nn.BatchNorm

    def __init__(self, c: int, *, key):
        self.conv1 = nn.Conv(c, c, (3, 3), use_bias=False, key=nn.subkey(key, "conv1"))
        self.bn1 = nn.BatchNorm(c)
        self.conv2 = nn.Conv(c, c, (3, 3), use_bias=False, key=nn.subkey(key, "conv2"))
        self.bn2 = nn.BatchNorm(c)

    def __call__(self, x):
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        return jax.nn.relu(x + self.bn2(self.conv2(y)))


class TinyResNet(nn.Module):
    """Images (N, H, W, 3) -> logits (N, classes)."""

    stem: nn.Conv
    bn: nn.BatchNorm
    layer1: tuple
    pool: nn.GlobalAvgPool
    fc: nn.Linear

    def __init__(self, c: int = 16, classes: int = 10, *, key):
        self.stem = nn.Conv(3, c, (3, 3), use_bias=False, key=nn.subkey(key, "stem"))
        self.bn = nn.BatchNorm(c)
        self.layer1 = tuple(BasicBlock(c, key=nn.subkey(key, f"layer1[{i}]")) for i in range(2))
        self.pool = nn.GlobalAvgPool()
        self.fc = nn.Linear(c, classes, key=nn.subkey(key, "fc"), axes=("embed", "classes"))

    def __call__(self, x):
        x = jax.nn.relu(self.bn(self.stem(x)))
        for block in self.layer1:
            x = block(x)
        return self.fc(self.pool(x))
