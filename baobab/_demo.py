"""The demo run: a residual MLP with BatchNorm learns two interleaved spirals.

It exercises the nn core end to end: explicit keys, a scanned stack of residual
blocks, BatchNorm state returned by ``nn.stateful_call``, optimizer masks from
``nn.labels``, and one jitted, donating step. The data is generated, so it runs
offline on any machine. Until ``baobab train`` lands, this is the README's main job.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from baobab import nn


def two_spirals(n: int, *, seed: int, noise: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points on two interleaved spirals: x ``(n, 2)`` float32, y ``(n,)`` int32."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.0, 1.0, n)) * 3.0 * np.pi
    label = rng.integers(0, 2, n)
    sign = np.where(label == 0, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3.0 * np.pi)
    x = x + rng.normal(0.0, noise / (3.0 * np.pi), x.shape)
    return x.astype(np.float32), label.astype(np.int32)


class ResidualBlock(nn.Module):
    """``x + fc2(relu(norm(fc1(x))))``: (B, width) -> (B, width)."""

    fc1: nn.Linear
    norm: nn.BatchNorm
    fc2: nn.Linear

    def __init__(self, width: int, *, key: jax.Array):
        self.fc1 = nn.Linear(width, width, key=nn.subkey(key, "fc1"), axes=("embed", "mlp"))
        self.norm = nn.BatchNorm(width, axes=("mlp",))
        self.fc2 = nn.Linear(width, width, key=nn.subkey(key, "fc2"), axes=("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.fc2(jax.nn.relu(self.norm(self.fc1(x))))


class SpiralNet(nn.Module):
    """(B, 2) points -> (B, 2) class logits."""

    features: nn.Linear
    blocks: nn.Stacked
    head: nn.Linear

    def __init__(self, width: int = 64, depth: int = 4, *, key: jax.Array):
        self.features = nn.Linear(2, width, key=nn.subkey(key, "features"), axes=(None, "embed"))
        self.blocks = nn.Stacked(lambda k: ResidualBlock(width, key=k), depth, key=nn.subkey(key, "blocks"))
        self.head = nn.Linear(width, 2, key=nn.subkey(key, "head"), axes=("embed", None))

    def __call__(self, x: jax.Array) -> jax.Array:
        # Fourier features make the spiral separable by a small net.
        h = jnp.sin(self.features(x * 6.0))  # (B, width)
        return self.head(self.blocks(h))  # (B, 2)


def run(steps: int = 400, batch_size: int = 256, seed: int = 0, log_every: int = 100) -> dict[str, float]:
    """Train and evaluate; return the final metrics."""
    x_train, y_train = two_spirals(4096, seed=seed)
    x_test, y_test = two_spirals(1024, seed=seed + 1)
    model = SpiralNet(key=jax.random.key(seed))
    print(nn.summary(model))
    zero = optax.set_to_zero()
    schedule = optax.cosine_decay_schedule(3e-3, steps)
    opt = optax.multi_transform(
        {"trainable": optax.adamw(schedule, weight_decay=1e-4), "frozen": zero, "state": zero}, nn.labels)
    opt_state = opt.init(model)

    def loss_fn(m, x, y):
        logits, m = nn.stateful_call(m, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), m

    @jax.jit
    def step(m, opt_state, x, y):
        (loss, m_with_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(m, x, y)
        updates, opt_state = opt.update(grads, opt_state, m)
        return optax.apply_updates(m_with_stats, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i in range(1, steps + 1):
        idx = rng.integers(0, len(x_train), batch_size)
        model, opt_state, loss = step(model, opt_state, x_train[idx], y_train[idx])
        if i % log_every == 0 or i == steps:
            print(f"step {i:5d}  loss {float(loss):.4f}  ({time.perf_counter() - start:.1f}s)")
    logits = jax.jit(lambda m, x: m(x))(nn.eval_mode(model), x_test)
    accuracy = float((jnp.argmax(logits, -1) == y_test).mean())
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} held-out points")
    return {"loss": float(loss), "accuracy": accuracy}
