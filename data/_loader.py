"""Loaders: from a source to (sharded, prefetched, checkpointable) batches.

``train_loader`` builds the training stream in the order that keeps hosts
independent and the stream exact:

    shuffle -> repeat -> transforms -> shard by process -> [pack] -> batch(drop_remainder)
            -> [worker processes] -> global jax.Array -> prefetch thread

All processes shuffle with the same seed and apply the transforms to the whole shuffled,
repeated stream (so a random draw belongs to a stream position, not to a process);
then, for global batch ``k``, process ``p`` of ``n`` takes the ``B / n`` positions from
``(k*n + p) * B / n`` (``ShardByBatch``). Global batch ``k`` is therefore positions
``[k*B, (k+1)*B)`` in order, row for row the batch one process with the same devices
loads: hosts see disjoint examples that together cover each epoch, and the stream does
not depend on the process count. Packed streams are the exception: each process packs
every ``n``-th document of the stream, so the rows depend on the process count (see
``Pack``). ``eval_loader`` makes one exact pass instead: no shuffle, the split padded to
whole global batches with zero rows, and a ``"mask"`` feature (``(B,)`` bool) that is
False on padding rows; the same layout puts eval batch ``k`` on the processes in order.

Prefetching: a background host thread reads, transforms and batches examples and
keeps ``prefetch`` batches ready (with a ``mesh``, already on device, so the step
never waits on a transfer); ``num_threads`` adds reader threads. ``worker_count > 0``
moves the per-example work to worker processes (grain's ``mp_prefetch``): worth it
only when per-example Python work is heavy and the host has spare cores (e.g. JPEG
decoding and augmentation on a 32-core host feeding accelerators). On small hosts
threads win: workers are spawned (seconds to start, each re-imports jax), copy every
batch between processes, and compete with the step for the cores. Scripts that use
workers need the ``if __name__ == "__main__":`` guard; the loader marks absl flags as
parsed, which grain 0.2.18's workers need outside ``absl.app.run``.

Checkpointing: ``iter(loader)`` returns a ``LoaderIterator`` whose ``get_state`` /
``set_state`` give bit-identical resumes; save it with orbax through grain's handler
(``grain.checkpoint.CheckpointSave(it)``, or ``baobab.data.CheckpointSave(it)`` which
also explains a process-count change). The state records the process and worker
counts: restoring under other counts is refused with a message, or, with
``on_mismatch="reposition"``, the stream restarts at the saved step's position
(``LoaderIterator.reposition``; packed streams cannot be repositioned).

>>> import numpy as np
>>> from baobab import data
>>> ds = data.from_arrays({"x": np.arange(10, dtype=np.float32)})
>>> loader = data.train_loader(ds, batch_size=4, seed=0)
>>> with iter(loader) as it:
...     first = next(it)["x"]
...     state = it.get_state()
...     second = next(it)["x"]
>>> with iter(loader) as it:
...     it.set_state(state)
...     bool((next(it)["x"] == second).all())
True
>>> batches = list(data.eval_loader(ds, batch_size=4))
>>> len(batches), batches[-1]["mask"].tolist()
(3, [True, True, False, False])
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
from jax.sharding import Mesh

from ._batch import stack_examples
from ._errors import DataError
from ._eval_padding import PadToBatches, zero_padding
from ._global import ToGlobal, batch_sharding
from ._packing import Pack
from ._shard import ShardByBatch

__all__ = ["Loader", "LoaderIterator", "train_loader", "eval_loader", "apply_transforms", "STATE_VERSION"]

Transform = grain.transforms.Map | grain.transforms.RandomMap | Callable[[Any], Any]
STATE_VERSION = 1
_MISMATCH = ("error", "reposition")


def apply_transforms(ds: grain.MapDataset, transforms: Sequence[Transform]) -> grain.MapDataset:
    """Apply transforms in order: ``RandomMap``s through ``ds.random_map`` (grain's seeded
    per-element RNG), everything else through ``ds.map``."""
    for transform in transforms:
        if isinstance(transform, grain.transforms.RandomMap):
            ds = ds.random_map(transform)
        elif isinstance(transform, grain.transforms.Map) or callable(transform):
            ds = ds.map(transform)
        else:
            raise TypeError(f"transform {transform!r} is neither a grain Map/RandomMap nor callable.")
    return ds


def _as_map_dataset(source: Any) -> grain.MapDataset:
    if isinstance(source, grain.MapDataset):
        return source
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        return grain.MapDataset.source(source)
    raise TypeError(f"a loader needs a grain.MapDataset or a random-access source (__len__ and __getitem__), "
                    f"got {type(source).__name__}. Wrap iterables with grain yourself.")


@dataclasses.dataclass(frozen=True)
class Loader:
    """A data pipeline description; ``iter(loader)`` starts a ``LoaderIterator``.

    Build it with ``train_loader`` or ``eval_loader``; the fields are their arguments.
    """

    source: grain.MapDataset
    batch_size: int
    transforms: tuple[Transform, ...] = ()
    training: bool = True
    seed: int = 0
    num_epochs: int | None = None
    pack: Pack | None = None
    mesh: Mesh | None = None
    rules: Mapping[str, Any] | None = None
    num_threads: int = 0
    worker_count: int = 0
    worker_buffer_size: int = 2
    prefetch: int = 2
    shard: grain.sharding.ShardOptions | None = None
    on_mismatch: str = "error"

    # -- layout -------------------------------------------------------------------------
    @property
    def process_index(self) -> int:
        return self._shard.shard_index

    @property
    def process_count(self) -> int:
        return self._shard.shard_count

    @property
    def _shard(self) -> grain.sharding.ShardOptions:
        return self.shard if self.shard is not None else grain.sharding.ShardByJaxProcess(drop_remainder=True)

    @property
    def local_batch_size(self) -> int:
        """Rows per process: ``batch_size // process_count``."""
        return self.batch_size // self.process_count

    def __len__(self) -> int:
        """Global batches per pass: eval (padded) or a finite training run."""
        n = len(self.source)
        if not self.training:
            return math.ceil(n / self.batch_size)
        if self.num_epochs is None or self.pack is not None:
            raise TypeError("this loader has no length: it repeats forever (num_epochs=None) or packs "
                            "sequences; count steps instead.")
        per_process = n * self.num_epochs // self.process_count
        return per_process // self.local_batch_size

    def _check(self) -> None:
        n = len(self.source)
        if n == 0:
            raise DataError(f"the dataset is empty ({self.source!r:.200}): nothing to load.")
        if self.batch_size < 1 or self.batch_size % self.process_count:
            raise DataError(f"batch_size={self.batch_size} must be a positive multiple of the process count "
                            f"({self.process_count}): each process loads batch_size / process_count rows.")
        if self.mesh is not None:  # divisibility over the mesh's batch axes, checked before any work
            batch_sharding(1, mesh=self.mesh, rules=self.rules, rows=self.batch_size)
        if self.on_mismatch not in _MISMATCH:
            raise ValueError(f"on_mismatch must be one of {_MISMATCH}, got {self.on_mismatch!r}.")
        shard_size = n // self.process_count
        if self.training and self.pack is None and self.local_batch_size > shard_size:
            raise DataError(
                f"batch_size={self.batch_size} gives {self.local_batch_size} rows per process, more than this "
                f"process's shard of the dataset ({shard_size} of {n} examples, process {self.process_index} of "
                f"{self.process_count}): every batch would repeat examples. Lower batch_size or add data.")
        if self.training and self.num_epochs is not None and self.pack is None and len(self) == 0:
            raise DataError(f"{self.num_epochs} epoch(s) of {n} examples give no full batch of {self.batch_size}.")

    # -- pipeline -----------------------------------------------------------------------
    def host_dataset(self, start_step: int = 0) -> grain.IterDataset:
        """This process's stream of numpy batches (before the device and prefetch stage).

        ``start_step`` skips the first ``start_step`` batches' examples without reading them.
        """
        self._check()
        shard = self._shard
        ds = self.source
        if self.training:
            ds = ds.seed(self.seed).shuffle().repeat(self.num_epochs)
        else:
            padded = len(self) * self.batch_size
            ds = grain.MapDataset.range(padded).seed(self.seed).map(PadToBatches(ds, len(ds)))
        ds = apply_transforms(ds, self.transforms)  # before sharding: random draws keyed by global position
        if not self.training:
            ds = ds.map(zero_padding)
        if shard.shard_count == 1:
            pass  # one process reads the whole stream (no truncation: skipped corrupt records keep their batch)
        elif self.pack is None:  # global batch k is positions [k*B, (k+1)*B) in order, whatever the process count
            ds = ShardByBatch(ds, index=shard.shard_index, count=shard.shard_count, rows=self.local_batch_size)
        else:  # documents, not rows: each process packs every n-th document (see Pack)
            ds = ds[shard.shard_index::shard.shard_count]
        if start_step:  # after the transforms (lazy), so random draws keep their per-position seeds
            ds = ds[start_step * self.local_batch_size:]
        it = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.num_threads,
                                                  prefetch_buffer_size=max(1, 2 * self.local_batch_size)))
        if self.pack is not None:
            it = self.pack(it)
        it = it.batch(self.local_batch_size, drop_remainder=True, batch_fn=stack_examples)
        if self.worker_count:
            _mark_absl_flags_parsed()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.worker_count,
                                                             per_worker_buffer_size=self.worker_buffer_size))
        return it

    def __iter__(self) -> LoaderIterator:
        return LoaderIterator(self)


def _mark_absl_flags_parsed() -> None:
    # grain 0.2.18's worker processes read absl flags; in a plain script (no absl.app.run)
    # the flags are unparsed and the workers crash with UnparsedFlagAccessError.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class LoaderIterator:
    """Iterator over a ``Loader``'s batches, with exact, checked checkpoint state.

    ``get_state()`` returns JSON bytes: grain's state plus ``step``, the process and
    worker counts, ``batch_size``, ``seed`` and ``num_examples``. It plugs into
    orbax through grain's ``CheckpointHandler`` (which calls ``get_state``,
    ``set_state`` and ``start_prefetch``). Close it (or use ``with``) to stop threads
    and worker processes.
    """

    def __init__(self, loader: Loader, start_step: int = 0):
        self.loader = loader
        self._it: grain.DatasetIterator | None = None
        self._start(start_step)

    def _start(self, start_step: int) -> None:
        self.close()
        loader = self.loader
        ds = loader.host_dataset(start_step)
        if loader.mesh is not None:
            ds = ds.map(ToGlobal(loader.mesh, loader.rules))
        if loader.prefetch:
            ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=loader.prefetch)
        self._it = iter(ds)
        self._start_step = self.step = start_step

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._it is None:
            raise RuntimeError("this LoaderIterator is closed; start a new one with iter(loader).")
        batch = next(self._it)
        self.step += 1
        return batch

    # -- state ----------------------------------------------------------------------------
    def _layout(self) -> dict[str, Any]:
        loader = self.loader
        return {"process_count": loader.process_count, "worker_count": loader.worker_count}

    def _stream(self) -> dict[str, Any]:
        loader = self.loader
        return {"batch_size": loader.batch_size, "seed": loader.seed, "num_examples": len(loader.source),
                "training": loader.training, "num_epochs": loader.num_epochs,
                "pack": None if loader.pack is None else repr(loader.pack)}

    def get_state(self) -> bytes:
        """The position in the stream, as JSON bytes (see the class docstring)."""
        state = {"baobab_loader_state": STATE_VERSION, "step": self.step, "start_step": self._start_step,
                 "process_index": self.loader.process_index, **self._layout(), **self._stream(),
                 "grain": self._it.get_state()}
        return json.dumps(state, indent=1).encode()

    def set_state(self, state: bytes | str | Mapping[str, Any]) -> None:
        """Resume from ``get_state()`` output; refuses (or repositions) a changed layout."""
        state = json.loads(state) if isinstance(state, (bytes, str)) else dict(state)
        if state.get("baobab_loader_state") != STATE_VERSION:
            raise DataError(f"not a baobab loader state (version {state.get('baobab_loader_state')!r}, expected "
                            f"{STATE_VERSION}); was it saved from another kind of iterator?")
        changed = {k: (state[k], v) for k, v in self._stream().items() if state.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise DataError(f"the iterator state belongs to a different stream ({detail}). Restoring it "
                            f"would not resume the saved stream; rebuild the loader with the saved settings.")
        layout_changed = {k: (state[k], v) for k, v in self._layout().items() if state[k] != v}
        same_process = state["process_index"] == self.loader.process_index
        if not layout_changed and same_process:
            if state["start_step"] != self._start_step:
                self._start(state["start_step"])
            self._it.set_state(state["grain"])
            self.step = state["step"]
            return
        detail = ", ".join(f"{k} saved {a}, now {b}" for k, (a, b) in layout_changed.items()) or \
            f"state of process {state['process_index']} restored into process {self.loader.process_index}"
        if self.loader.on_mismatch != "reposition":
            raise DataError(
                f"cannot restore the data iterator: {detail}. grain's state depends on the process and worker "
                f"counts, and restoring it under others silently gives wrong batches. Restore with the saved "
                f"counts, or build the loader with on_mismatch='reposition' to restart the stream at the saved "
                f"step {state['step']} (see LoaderIterator.reposition).")
        self.reposition(state["step"])

    def reposition(self, step: int) -> None:
        """Restart the stream after ``step`` global batches, whatever the process/worker counts.

        This process resumes at position ``step * local_batch_size`` of its shard, i.e. the
        global stream resumes at example position ``step * batch_size``. With 0 or 1 saved
        workers that is exactly the saved run's prefix; with ``W`` saved workers, batches near
        the boundary may differ (grain gives each worker every ``W``-th example). Random
        augmentations keep their draws whatever the process count. Packed streams
        cannot be repositioned (the documents per row are unknown without replaying).
        """
        if self.loader.pack is not None:
            raise DataError(f"a packed stream cannot be repositioned to step {step}: the number of documents "
                            f"per packed row is not known without replaying. Restore under the saved process "
                            f"and worker counts instead.")
        self._start(step)

    def start_prefetch(self) -> None:
        """Start filling buffers now (grain's checkpoint handler calls this after a restore)."""
        if self._it is not None and hasattr(self._it, "start_prefetch"):
            self._it.start_prefetch()

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop prefetch threads and worker processes. Idempotent."""
        it, self._it = self._it, None
        if it is not None:
            it.close()

    def __enter__(self) -> LoaderIterator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may be gone
            pass


def train_loader(source: Any, *, batch_size: int, transforms: Sequence[Transform] = (), seed: int = 0,
                 num_epochs: int | None = None, pack: Pack | None = None, mesh: Mesh | None = None,
                 rules: Mapping[str, Any] | None = None, num_threads: int = 0, worker_count: int = 0,
                 prefetch: int = 2, shard: grain.sharding.ShardOptions | None = None,
                 on_mismatch: str = "error") -> Loader:
    """The training stream: shuffled, repeated (forever by default), sharded, batched.

    Args:
      source: a ``grain.MapDataset`` or random-access source of example dicts.
      batch_size: the *global* batch size ``B``; each process loads ``B / process_count`` rows.
      transforms: per-example ``grain.transforms.Map`` / ``RandomMap`` (or plain callables).
      seed: shuffling and random-transform seed (identical on every process).
      num_epochs: ``None`` repeats forever; an int stops after that many epochs.
      pack: a ``Pack`` that packs token sequences before batching. Each process packs its own
        documents, so packed rows depend on the process count (see ``Pack``).
      mesh, rules: give both to get global ``jax.Array`` batches split along ``rules["batch"]``
        (``rules`` defaults to ``baobab.nn.DEFAULT_RULES``); without a mesh, numpy batches.
      num_threads: extra host threads reading and transforming examples. 0 (default) does
        that work on the prefetch thread, fastest for numpy transforms on small hosts (the
        GIL); raise it for I/O-bound reads or GIL-releasing work (Pillow decode, tokenizers).
      worker_count: worker processes (``mp_prefetch``); 0 keeps everything in this process.
        Each worker batches every ``worker_count``-th example, so batches depend on the count
        (hence the check on restore) and a finite run may drop each worker's last partial batch.
      prefetch: batches kept ready by a background thread (on device with a mesh).
      shard: override the process sharding (default ``grain.sharding.ShardByJaxProcess``).
      on_mismatch: ``"error"`` or ``"reposition"`` when a state from other counts is restored.

    Batches are dicts ``{key: (B, ...)}`` (``(B / process_count, ...)`` numpy without a mesh).
    """
    return Loader(source=_as_map_dataset(source), batch_size=batch_size, transforms=tuple(transforms), seed=seed,
                  num_epochs=num_epochs, pack=pack, mesh=mesh, rules=rules, num_threads=num_threads,
                  worker_count=worker_count, prefetch=prefetch, shard=shard, on_mismatch=on_mismatch)


def eval_loader(source: Any, *, batch_size: int, transforms: Sequence[Transform] = (), mesh: Mesh | None = None,
                rules: Mapping[str, Any] | None = None, num_threads: int = 0, prefetch: int = 2,
                shard: grain.sharding.ShardOptions | None = None, seed: int = 0) -> Loader:
    """One exact pass over ``source``: ``ceil(N / B)`` batches, padding rows zeroed, plus ``"mask"`` ``(B,)``.

    Every example appears exactly once with ``mask=True``; weigh metrics by the mask.
    The batch size may exceed the dataset (it is all padding then). Arguments as in
    ``train_loader``; ``seed`` only matters for random transforms. There are no worker
    processes here: grain's workers each batch their own slice of examples, so a pass
    would drop each worker's last partial batch, and a short pass never repays their start.
    """
    return Loader(source=_as_map_dataset(source), batch_size=batch_size, transforms=tuple(transforms),
                  training=False, seed=seed, mesh=mesh, rules=rules, num_threads=num_threads,
                  prefetch=prefetch, shard=shard)
