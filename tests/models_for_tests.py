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
