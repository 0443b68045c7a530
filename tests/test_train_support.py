"""Shared pieces for the train tests, and the script their subprocesses run.

Holds no tests. Other test files import it (``tests/`` is on ``pythonpath``), and
the subprocess tests run it as a script with one JSON argument:

    python tests/test_train_support.py '{"workdir": ..., "steps": 10, ...}'

The subprocess environment sets ``XLA_FLAGS`` (device count) before jax loads.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from baobab import nn, train

HERE = Path(__file__).resolve().parent
N_EXAMPLES, D_IN, CLASSES = 512, 8, 8


class Net(nn.Module):
    """A small classifier with the pieces the loop must handle.

    stem (no bias) -> BatchNorm (state) -> 2 stacked residual blocks (nn.Stacked: "layers" axis) -> head.
    Every dimension divides by 8, so any 8-device mesh shards it.
    """

    stem: nn.Linear
    bn: nn.BatchNorm
    blocks: nn.Stacked
    head: nn.Linear

    def __init__(self, width: int = 16, *, key: jax.Array):
        # No bias before BatchNorm: its gradient is zero up to rounding noise, which Adam
        # would amplify into mesh-dependent updates.
        self.stem = nn.Linear(D_IN, width, key=nn.subkey(key, "stem"), axes=("classes", "embed"),
                              use_bias=False)
        self.bn = nn.BatchNorm(width, axes=("embed",))
        self.blocks = nn.Stacked(lambda k: _Block(width, key=k), 2, key=nn.subkey(key, "blocks"))
        self.head = nn.Linear(width, CLASSES, key=nn.subkey(key, "head"), axes=("embed", "classes"))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.bn(self.stem(x))  # (B, W)
        return self.head(self.blocks(h))  # (B, CLASSES)


class _Block(nn.Module):
    up: nn.Linear
    down: nn.Linear

    def __init__(self, width: int, *, key: jax.Array):
        self.up = nn.Linear(width, 2 * width, key=nn.subkey(key, "up"), axes=("embed", "mlp"))
        self.down = nn.Linear(2 * width, width, key=nn.subkey(key, "down"), axes=("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.down(jax.nn.gelu(self.up(x)))


def make_net(seed: int = 0) -> Net:
    """A ``Net`` with weights drawn by numpy instead of a keyed init: this skips
    compiling a dozen random ops, which takes seconds on 2 busy cores."""
    abstract = jax.eval_shape(lambda: Net(key=jax.random.key(0)))
    rng = np.random.default_rng(seed)
    values = {}
    for path, x in nn.state_dict(abstract).items():
        name = path.rsplit(".", 1)[-1]
        if name in ("running_var",) or path == "bn.weight":
            values[path] = np.ones(x.shape, np.float32)
        elif name in ("bias", "running_mean"):
            values[path] = np.zeros(x.shape, np.float32)
        else:
            bound = 1.0 / np.sqrt(x.shape[-2])
            values[path] = rng.uniform(-bound, bound, x.shape).astype(np.float32)
    return nn.load_state_dict(abstract, values)


def dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed synthetic classification set: labels from a random linear teacher."""
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(N_EXAMPLES, D_IN)).astype(np.float32)
    y = (x @ rng.normal(size=(D_IN, CLASSES))).argmax(-1).astype(np.int32)
    return x, y


def grain_batches(batch_size: int = 32, *, seed: int = 0, shard: int = 0, num_shards: int = 1
                  ) -> grain.DatasetIterator:
    """shuffle -> repeat -> shard -> batch: each shard gets batch_size/num_shards rows per step."""
    x, y = dataset()
    records = [{"x": x[i], "y": y[i]} for i in range(len(x))]
    ds = grain.MapDataset.source(records).shuffle(seed=seed).repeat()
    ds = ds[shard::num_shards].batch(batch_size // num_shards, drop_remainder=True)
    return iter(ds.to_iter_dataset())


class NumpyBatches:
    """A plain iterator with JSON get_state/set_state (not a grain iterator)."""

    def __init__(self, batch_size: int = 32, seed: int = 0):
        self.x, self.y = dataset()
        self.batch_size, self.seed, self.index = batch_size, seed, 0

    def __iter__(self) -> "NumpyBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.index])
        rows = rng.integers(0, len(self.x), self.batch_size)
        self.index += 1
        return {"x": self.x[rows], "y": self.y[rows]}

    def get_state(self) -> dict[str, int]:
        return {"index": self.index, "seed": self.seed}

    def set_state(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"this state is for seed {state['seed']}, the iterator has {self.seed}")
        self.index = state["index"]


def loss_fn(model: nn.Module, batch: dict[str, jax.Array], key: jax.Array):
    logits = model(batch["x"])  # (B, CLASSES)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


def eval_fn(model: nn.Module, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    logits = model(batch["x"])
    return {"accuracy": (logits.argmax(-1) == batch["y"]).astype(jnp.float32),
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])}


def eval_batches(n: int = 100, batch_size: int = 32) -> Iterator[dict[str, np.ndarray]]:
    """The first ``n`` examples exactly once; the last batch padded, with a mask."""
    x, y = dataset()
    for i in range(0, n, batch_size):
        xs, ys = x[i:min(i + batch_size, n)], y[i:min(i + batch_size, n)]
        pad = batch_size - len(xs)
        mask = np.concatenate([np.ones(len(xs), np.float32), np.zeros(pad, np.float32)])
        yield {"x": np.pad(xs, ((0, pad), (0, 0))), "y": np.pad(ys, (0, pad)), "mask": mask}


def optimizer() -> optax.GradientTransformation:
    return train.adamw(3e-3, weight_decay=0.01, clip_norm=1.0)


def raw(x: jax.Array) -> np.ndarray:
    """Host copy of an array; PRNG keys as their raw uint32 data (for bit-for-bit comparisons)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def losses(workdir: str | Path) -> dict[int, float]:
    """step -> train/loss from metrics.jsonl (log_every=1 gives every step)."""
    return {r["step"]: r["train/loss"] for r in train.read_metrics(workdir) if "train/loss" in r}


class count_compiles:
    """Context manager recording XLA backend compilations by function name (``c.names``, ``c.n``)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __enter__(self) -> "count_compiles":
        self.names: list[str] = []
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    @property
    def n(self) -> int:
        return len(self.names)

    def _listen(self, event: str, duration: float, **kwargs: Any) -> None:
        if event == self.EVENT:
            self.names.append(str(kwargs.get("fun_name")))

    def __exit__(self, *exc: Any) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)


def subprocess_env(devices: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def finish(p: "subprocess.Popen", *, timeout: float = 240, what: str = "subprocess") -> tuple[str, str]:
    """``(stdout, stderr)`` of ``p``; on a timeout it is killed and the test fails with its stderr."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        pytest.fail(f"{what} timed out\n{err[-3000:]}")


def finish_all(procs: list["subprocess.Popen"], *, timeout: float) -> list[tuple[str, str]]:
    """``(stdout, stderr)`` of each process (e.g. the hosts of one run), each required to exit 0.

    If one times out, all are killed: the others would wait for it forever in a collective.
    """
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            pytest.fail(f"process {proc.args} timed out after {timeout}s")
        assert proc.returncode == 0, err[-3000:]
        outputs.append((out, err))
    return outputs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a ``jax.distributed`` coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------
# Subprocess entry point.
# --------------------------------------------------------------------------------------


def _kill_during_save(step_to_kill: int) -> None:
    """kill -9 this process from inside the save of ``step_to_kill``: grain's handler runs
    while orbax writes into ``<step>.orbax-checkpoint-tmp-*``, so the save is half done."""
    from baobab.train._checkpoint import TMP_MARK

    original = grain.checkpoint.CheckpointHandler.save

    def save(self, directory, *args, **kwargs):
        step_dir = Path(directory).parent.name
        if TMP_MARK in step_dir and step_dir.startswith(f"{step_to_kill}."):
            os.kill(os.getpid(), 9)
        return original(self, directory, *args, **kwargs)

    grain.checkpoint.CheckpointHandler.save = save


class _Concat:
    """The global batch of ``n`` shard iterators, in process order (for 1-process references)."""

    def __init__(self, batch_size: int, n: int):
        self.shards = [grain_batches(batch_size, shard=i, num_shards=n) for i in range(n)]

    def __iter__(self) -> "_Concat":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        parts = [next(s) for s in self.shards]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def main(args: dict[str, Any]) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
    if args.get("processes", 1) > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{args['port']}", num_processes=args["processes"],
                                   process_id=args["process_id"])
    if "kill_at_save" in args:
        _kill_during_save(args["kill_at_save"])
    n = jax.process_count()
    if args.get("as_shards"):
        data = _Concat(args.get("batch", 32), args["as_shards"])
    else:
        data = grain_batches(args.get("batch", 32), shard=jax.process_index(), num_shards=n)
    if args.get("slow_data"):
        data = _Slow(data, args["slow_data"], Path(args["workdir"]) / "drawing")
    result = train.train(make_net(), loss_fn, optimizer(), data,
                         train.TrainerConfig(workdir=args["workdir"], steps=args["steps"]),
                         checkpoint=train.CheckpointConfig(every=args.get("checkpoint_every", 0)),
                         logging=train.LoggingConfig(log_every=args.get("log_every", 1), progress=False),
                         mesh=train.MeshConfig(**args.get("mesh", {})), config={"test": True})
    print(json.dumps({"step": result.step, "preempted": result.preempted,
                      "process": jax.process_index()}), flush=True)


class _Slow:
    """Wraps an iterator so each batch takes ``seconds``, writing how many batches it has
    started drawing to ``marker`` first: a test knows when the loop is waiting here."""

    def __init__(self, inner: Any, seconds: float, marker: Path):
        self.inner, self.seconds, self.marker, self.drawn = inner, seconds, marker, 0

    def __iter__(self) -> "_Slow":
        return self

    def __next__(self) -> Any:
        self.drawn += 1
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(str(self.drawn))
        time.sleep(self.seconds)
        return next(self.inner)

    def get_state(self) -> Any:
        return self.inner.get_state()

    def set_state(self, state: Any) -> None:
        self.inner.set_state(state)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
