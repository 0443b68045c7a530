"""Input-pipeline throughput, anchored on torch.utils.data.DataLoader in the same run.

    python benchmarks/data_pipeline.py            # ~2-3 minutes on 2 CPU cores
    python benchmarks/data_pipeline.py --quick    # a smoke run (seconds)

Three measurements:

1. MNIST-style: the embedded MNIST (ArrayRecord) -> random 2-pixel shift (pad + crop) ->
   normalise to float32, batch 128. baobab's train_loader vs a DataLoader whose Dataset
   reads the same records and calls the same numpy transforms.
2. Packed text: 200 standard-library sources (~3.2 MB) -> byte tokens -> rows of 256 tokens
   with segment ids and positions, batch 16, one epoch. baobab (grain's ConcatThenSplit
   packing) vs a DataLoader over an IterableDataset doing the same reading, tokenising and
   packing in numpy.
3. Data wait: a small jitted MNIST CNN train step fed by train_loader with device
   prefetch; the share of wall time spent waiting in next(iterator) (goal <= 2 %).

Ratios are baobab / torch (> 1: baobab is faster). torch is a benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

from baobab import data

sys.path.insert(0, str(Path(__file__).parent))
import _harness as H  # noqa: E402

MNIST_BATCH, TEXT_BATCH, TEXT_LENGTH, ROUNDS = 128, 16, 256, 3
MNIST_TRANSFORMS = (data.RandomCrop((28, 28), padding=2), data.Normalize(mean=0.1307, std=0.3081))


def _rate(iterator, batches: int, rows: int) -> float:
    next(iterator)  # warm-up: threads started, first batch ready
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * rows / (time.perf_counter() - start)


# -- 1. MNIST-style -----------------------------------------------------------------------------------------
def baobab_mnist(batches: int, num_threads: int = 0, worker_count: int = 0) -> float:
    loader = data.train_loader(data.mnist("train"), batch_size=MNIST_BATCH, transforms=MNIST_TRANSFORMS,
                               seed=0, num_threads=num_threads, worker_count=worker_count)
    with iter(loader) as it:
        return _rate(it, batches, MNIST_BATCH)


class TorchMnist(torch.utils.data.Dataset):
    """The same records and the same numpy transforms; one generator per (epoch, index)."""

    def __init__(self):
        self.source = data.mnist("train")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        example = self.source[index]
        rng = np.random.default_rng((self.epoch, index))
        example = MNIST_TRANSFORMS[1](MNIST_TRANSFORMS[0](example, rng))
        return example["image"], example["label"]


def torch_mnist(batches: int, num_workers: int) -> float:
    loader = torch.utils.data.DataLoader(TorchMnist(), batch_size=MNIST_BATCH, shuffle=True, drop_last=True,
                                         num_workers=num_workers, persistent_workers=num_workers > 0,
                                         # fork after jax and open ArrayRecord readers is unsafe: spawn
                                         multiprocessing_context="spawn" if num_workers else None)

    def forever():
        while True:
            yield from loader

    return _rate(forever(), batches, MNIST_BATCH)


# -- 2. packed text -------------------------------------------------------------------------------------------
def baobab_text(batches: int, files) -> float:
    ds = data.text_corpus(files).map(data.ByteTokenize(eos_id=256))
    loader = data.train_loader(ds, batch_size=TEXT_BATCH, seed=0, pack=data.Pack(length=TEXT_LENGTH))
    with iter(loader) as it:
        return _rate(it, batches, TEXT_BATCH)


class TorchPackedText(torch.utils.data.IterableDataset):
    """Shuffled documents -> byte tokens -> concatenated and cut into rows, with segments/positions."""

    def __init__(self, files):
        self.source = data.text_corpus(files)
        self.tokenize = data.ByteTokenize(eos_id=256)

    def __iter__(self):
        rng = np.random.default_rng(0)
        tokens, segments, positions, seg = [], [], [], 0
        while True:
            for index in rng.permutation(len(self.source)):
                ids = self.tokenize(self.source[int(index)])["tokens"]
                start = 0
                while start < len(ids):
                    room = TEXT_LENGTH - len(tokens)
                    piece = ids[start:start + room]
                    seg += 1
                    tokens += piece.tolist()
                    segments += [seg] * len(piece)
                    positions += list(range(len(piece)))
                    start += len(piece)
                    if len(tokens) == TEXT_LENGTH:
                        yield (np.asarray(tokens, np.int32), np.asarray(segments, np.int32),
                               np.asarray(positions, np.int32))
                        tokens, segments, positions, seg = [], [], [], 0


def torch_text(batches: int, files) -> float:
    loader = torch.utils.data.DataLoader(TorchPackedText(files), batch_size=TEXT_BATCH)
    return _rate(iter(loader), batches, TEXT_BATCH)


# -- 3. data wait in a jitted step ----------------------------------------------------------------------------
def _cnn_init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"c1": jax.random.normal(k1, (3, 3, 1, 16)) * 0.3, "c2": jax.random.normal(k2, (3, 3, 16, 32)) * 0.1,
            "fc": jax.random.normal(k3, (7 * 7 * 32, 10)) * 0.02}


def _cnn_loss(params, image, label):
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.nn.relu(jax.lax.conv_general_dilated(image, params["c1"], (1, 1), "SAME", dimension_numbers=dn))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")       # (B, 14, 14, 16)
    x = jax.nn.relu(jax.lax.conv_general_dilated(x, params["c2"], (1, 1), "SAME", dimension_numbers=dn))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")       # (B, 7, 7, 32)
    logits = x.reshape(x.shape[0], -1) @ params["fc"]                                              # (B, 10)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), label[:, None], axis=1))


@jax.jit
def _step(params, image, label):
    loss, grads = jax.value_and_grad(_cnn_loss)(params, image, label)
    return jax.tree.map(lambda p, g: p - 0.05 * g, params, grads), loss


def data_wait(steps: int) -> tuple[float, float, float]:
    """(wait fraction, ms per step with the loader, ms per step on a fixed batch)."""
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    loader = data.train_loader(data.mnist("train"), batch_size=MNIST_BATCH, transforms=MNIST_TRANSFORMS,
                               seed=0, mesh=mesh, rules={"batch": "data"}, prefetch=2)
    params = _cnn_init(jax.random.key(0))
    with iter(loader) as it:
        batch = next(it)
        params, loss = _step(params, batch["image"], batch["label"])  # compile
        loss.block_until_ready()
        start = time.perf_counter()
        for _ in range(steps):  # the same loop on one fixed batch: the step's own time
            params, loss = _step(params, batch["image"], batch["label"])
            loss.block_until_ready()
        fixed = (time.perf_counter() - start) / steps
        waited = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            batch = next(it)
            waited += time.perf_counter() - t0
            params, loss = _step(params, batch["image"], batch["label"])
            loss.block_until_ready()
        total = time.perf_counter() - start
    return waited / total, 1e3 * total / steps, 1e3 * fixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few batches only (smoke run)")
    parser.add_argument("--json", default=str(H.RESULTS_DIR / "data_pipeline.json"), help="where to write the results")
    args = parser.parse_args()
    info = H.machine()
    scale = 0.1 if args.quick else 1.0
    mnist_batches, steps = int(100 * scale), int(200 * scale)
    files = data.stdlib_text_files(limit=int(200 * scale))  # ~3.2 MB of Python source
    tokens = sum(len(f.read_bytes()) + 1 for f in files)    # bytes + one end-of-document id each
    text_batches = tokens // TEXT_LENGTH // TEXT_BATCH - 1  # one epoch: both sides see every document
    torch.set_num_threads(1)
    print(f"jax {jax.__version__}, torch {torch.__version__}, {jax.device_count()} device(s), "
          f"text corpus: {len(files)} stdlib files, {tokens / 1e6:.1f} M byte tokens\n")

    print(f"MNIST-style (batch {MNIST_BATCH}), examples/s, median of {ROUNDS} alternating rounds:")
    runs = {name: [] for name in ("baobab", "torch0", "torch2")}
    for _ in range(ROUNDS):  # alternate, so a change in machine load hits both sides alike
        runs["baobab"].append(baobab_mnist(mnist_batches, 0))
        runs["torch0"].append(torch_mnist(mnist_batches, 0))
        runs["torch2"].append(torch_mnist(mnist_batches, 2))
    ours, torch0, torch2 = (float(np.median(runs[k])) for k in ("baobab", "torch0", "torch2"))
    ratios0 = [a / b for a, b in zip(runs["baobab"], runs["torch0"], strict=True)]
    print(f"  baobab train_loader (defaults):     {ours:9.0f}   ratio to DataLoader(workers=0): {ours / torch0:4.2f} "
          f"(per round {min(ratios0):.2f}-{max(ratios0):.2f})   to DataLoader(workers=2): {ours / torch2:4.2f}")
    print(f"  torch DataLoader num_workers=0:     {torch0:9.0f}")
    print(f"  torch DataLoader num_workers=2:     {torch2:9.0f}")
    for label, kwargs in (("num_threads=2", {"num_threads": 2}), ("worker_count=2", {"worker_count": 2})):
        other = baobab_mnist(mnist_batches, **{"num_threads": 0, **kwargs})
        print(f"  baobab train_loader {label}:     {other:9.0f}   (one round) ratio to defaults: {other / ours:4.2f}")

    print(f"\nPacked text (rows of {TEXT_LENGTH} byte tokens, batch {TEXT_BATCH}), rows/s, median of {ROUNDS} rounds:")
    text = {"baobab": [], "torch": []}
    for _ in range(ROUNDS):
        text["baobab"].append(baobab_text(text_batches, files))
        text["torch"].append(torch_text(text_batches, files))
    ours, theirs = float(np.median(text["baobab"])), float(np.median(text["torch"]))
    ratios = [a / b for a, b in zip(text["baobab"], text["torch"], strict=True)]
    print(f"  baobab train_loader + Pack:  {ours:8.0f} rows/s ({ours * TEXT_LENGTH / 1e6:5.2f} M tokens/s)   "
          f"ratio to DataLoader: {ours / theirs:4.2f} (per round {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"  torch DataLoader (numpy packing): {theirs:8.0f} rows/s")

    text_rows = (ours, theirs)

    fraction, with_loader, fixed = data_wait(steps)
    print(f"\nData wait, jitted MNIST CNN step (batch {MNIST_BATCH}, device prefetch 2):")
    print(f"  step on a fixed batch {fixed:6.2f} ms; step fed by the loader {with_loader:6.2f} ms; "
          f"waiting on data {100 * fraction:4.2f} % of step time (goal <= 2 %)")
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result = {"benchmark": "data_pipeline", "machine": info, "quick": args.quick, "rounds": ROUNDS,
              "mnist_examples_per_s": {k: float(np.median(v)) for k, v in runs.items()},
              "text_rows_per_s": {"baobab": text_rows[0], "torch": text_rows[1]},
              "text_tokens_per_s_baobab": text_rows[0] * TEXT_LENGTH,
              "data_wait_fraction": fraction, "step_ms_with_loader": with_loader, "step_ms_fixed_batch": fixed}
    print(f"wrote {H.write_json(args.json, result)}")


if __name__ == "__main__":
    main()
