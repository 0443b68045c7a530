"""Checkpoints: orbax ``CheckpointManager`` with async saves, exact resume, and skipping bad ones.

Layout of ``<workdir>/checkpoints/<step>/`` (one directory per saved step)::

    state/    the TrainState (model, opt_state, step, rng, ema): orbax StandardSave,
              sharded arrays in OCDBT/Zarr, restorable onto any mesh
    data/     the data iterator's position: grain's orbax handler, one
              ``process_<i>-of-<n>.json`` per process
    config/   the resolved run config, as JSON (given by the caller)
    metrics/  the loop's open metric window (per-step values since the last record), JSON
    run/      JSON facts needed to restore safely: process count, mesh shape, format

Everything is arrays or JSON: no pickle anywhere.

Saving is asynchronous: ``save`` returns once the arrays are copied off the
devices, and the files are written in a background thread. On the CPU, where the
devices are host memory, ``save`` only dispatches one jitted copy of the state (so
the next step may donate its buffers) and hands the orbax save to a background
thread owned by the ``Checkpointer``: each orbax save starts a fresh event loop and
threads, and right after a step XLA's idle worker threads keep both cores spinning
for ~40 ms, so every thread start in the caller waited that long (measured on 2
cores: the loop was blocked 50-70 ms per save, now ~2 ms). On accelerators orbax's own copy to
host is kept, since a device copy would double the state's device memory. Orbax writes into a
``<step>.orbax-checkpoint-tmp-*`` directory and renames it when complete, so a
crash (even ``kill -9``) mid-save leaves the earlier checkpoints untouched.

Restoring tries the newest checkpoint first. An interrupted save (a leftover tmp
directory) and a *corrupt* checkpoint (a format or checksum error, a missing file or
item: see ``_checkpoint_faults.py``) are skipped with a ``CheckpointWarning`` naming
the step and the reason; the next older one is tried. Skipped checkpoints newer than
the one restored are moved (never deleted) to ``<workdir>/checkpoints_skipped/`` so
the resumed run can save those steps again; the log names where each went. Any other
failure (an I/O error, permissions, memory) says nothing about the checkpoint: it is
retried if it can pass, then raised as ``CheckpointReadError``, and nothing is moved.
If checkpoints exist but none restores, that is an error: a run never silently starts
over. A full disk while saving is a ``DiskFullError`` naming the directory, the
checkpoint's size and the free space; the earlier checkpoints stay as they were.

Iterators: any iterator with ``get_state()``/``set_state()`` is saved through
grain's orbax handler (``grain.checkpoint.CheckpointSave``), one JSON file per
process. That handler only half duck-types: a grain ``DatasetIterator`` must give
a dict, anything else must give bytes and have ``start_prefetch()``. So the state
is read at save time into a small snapshot (bytes as they are, dicts as JSON), and
restored through an adapter that gives the iterator back what its ``get_state``
returns. grain iterators, baobab.data loaders and plain iterators with JSON states
all work. A state the iterator refuses (another stream, other worker counts) is an
error, not a corrupt checkpoint. With another process count, an iterator that can
``reposition`` (baobab.data loaders) gets the saved state and decides; any other is
refused with the fix.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import grain
import jax
import orbax.checkpoint as ocp

from baobab.errors import CheckpointError, CheckpointReadError, ConfigError, DiskFullError

from ._checkpoint_faults import classify, describe_bytes, free_bytes, is_disk_full, reason
from ._core import TrainState
from ._cpu_copy import copy_state, on_cpu

__all__ = ["Checkpointer", "CheckpointWarning", "Restored", "supports_state"]

log = logging.getLogger("baobab.train")

FORMAT = 1
TMP_MARK = ".orbax-checkpoint-tmp"
READ_RETRIES = (0.5, 1.0, 2.0)  # seconds before each retry of a transient read failure
# How a failed write reaches us: OSError from the filesystem, ValueError from TensorStore
# (``RESOURCE_EXHAUSTED: ... No space left on device``). Anything else is a bug and propagates.
SAVE_ERRORS = (OSError, ValueError)


class CheckpointWarning(UserWarning):
    """A checkpoint was found incomplete or unreadable, and skipped."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """What ``Checkpointer.restore`` found: the state, its step, the saved config and metric window."""

    state: TrainState
    step: int
    config: dict | None
    path: Path
    metrics: dict | None = None


def supports_state(iterator: Any) -> bool:
    """Whether ``iterator`` can be checkpointed (has ``get_state`` and ``set_state``)."""
    return callable(getattr(iterator, "get_state", None)) and callable(getattr(iterator, "set_state", None))


class _Snapshot:
    """An iterator state frozen at save time, in the form grain's handler writes (bytes)."""

    def __init__(self, iterator: Any):
        state = iterator.get_state()
        if isinstance(state, bytes):  # grain's DataLoader and baobab.data loaders: JSON bytes
            self._bytes = state
            return
        try:
            self._bytes = json.dumps(state).encode()
        except TypeError as e:
            raise TypeError(
                f"{type(iterator).__name__}.get_state() returned a state that is not JSON "
                f"({e}). Checkpoints hold no pickle: return plain dicts, lists, numbers and "
                f"strings (or JSON bytes).") from None

    def get_state(self) -> bytes:
        return self._bytes


class _RestoreTarget:
    """Receives the saved bytes from grain's handler and hands them to ``iterator``.

    The iterator gets bytes back if its ``get_state`` gives bytes, else the decoded
    JSON. If it refuses the state (a different stream, other worker counts), that is
    a ``_Mismatch``: the checkpoint is fine, the run does not fit it.
    """

    def __init__(self, iterator: Any):
        self.iterator = iterator
        self.wants_bytes = (not isinstance(iterator, grain.DatasetIterator)
                            and isinstance(iterator.get_state(), bytes))

    def set_state(self, state: bytes) -> None:
        if not self.wants_bytes:
            state = json.loads(state)  # fails on a damaged file: a corrupt checkpoint, skipped
        try:
            self.iterator.set_state(state)
        except Exception as e:
            raise _Mismatch(f"The data iterator ({type(self.iterator).__name__}) refused the saved "
                            f"position: {type(e).__name__}: {e}") from e

    def start_prefetch(self) -> None:
        start = getattr(self.iterator, "start_prefetch", None)
        if callable(start):
            start()


class Checkpointer:
    """Save and restore ``TrainState`` + iterator position + config under ``directory``.

    Keeps the newest ``keep_last`` checkpoints plus, if ``keep_every`` is set, every
    checkpoint whose step is a multiple of it. All processes call ``save`` and
    ``restore`` (orbax coordinates them); each writes its own shards.

    >>> import tempfile, jax, jax.numpy as jnp, optax
    >>> from baobab import nn, train
    >>> mesh = train.make_mesh(devices=jax.devices()[:1])
    >>> state = train.create_state(lambda k: nn.Linear(2, 2, key=k), optax.sgd(0.1),
    ...                            mesh=mesh, rules=nn.DEFAULT_RULES)
    >>> ckpt = train.Checkpointer(tempfile.mkdtemp() + "/checkpoints")
    >>> _ = ckpt.save(0, state, config={"lr": 0.1}); ckpt.wait()
    >>> target = train.abstract_state(lambda k: nn.Linear(2, 2, key=k), optax.sgd(0.1),
    ...                               mesh=mesh, rules=nn.DEFAULT_RULES)
    >>> restored = ckpt.restore(target)
    >>> restored.step, restored.config
    (0, {'lr': 0.1})
    >>> ckpt.close()
    """

    def __init__(self, directory: str | Path, *, keep_last: int = 3, keep_every: int | None = None,
                 async_save: bool = True):
        if keep_last < 1:
            raise ConfigError(f"keep_last must be >= 1, got {keep_last}.")
        self.directory = Path(directory).absolute()
        self._warn_incomplete()
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(keep_last)]
        if keep_every:
            policies.append(ocp.checkpoint_managers.EveryNSteps(keep_every))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        # Saves of CPU states run here, in order, one at a time (see the module docstring).
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        if async_save:  # start its thread now, not during the first save
            self._worker = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="baobab-checkpoint")
            self._worker.submit(lambda: None).result()
        self._queued: set[int] = set()  # steps handed to the worker, not yet known to orbax
        self._failure: tuple[int | None, BaseException] | None = None
        self._state_bytes: int | None = None
        self._orbax_pending = False  # an orbax async save (not through the worker) may still be running

    # ------------------------------------------------------------------------------ saving

    def save(self, step: int, state: TrainState, *, data_iterator: Any = None,
             config: Mapping[str, Any] | None = None, mesh_shape: Mapping[str, int] | None = None,
             metrics: Mapping[str, Any] | None = None) -> float:
        """Start saving ``state`` at ``step``; returns the seconds the caller was blocked.

        The iterator's position is read now, so the caller may keep drawing batches.
        ``config`` and ``metrics`` are JSON, restored as ``Restored.config``/``.metrics``.
        A step that is already saved is left alone (returns 0.0).
        """
        if step in self.all_steps():
            return 0.0
        run = {"format": FORMAT, "step": step, "process_count": jax.process_count(),
               "mesh": dict(mesh_shape or {}), "data": None}
        items: dict[str, Any] = {}
        if data_iterator is not None and supports_state(data_iterator):
            items["data"] = grain.checkpoint.CheckpointSave(_Snapshot(data_iterator))
            run["data"] = type(data_iterator).__name__
        if config is not None:
            items["config"] = ocp.args.JsonSave(dict(config))
        if metrics is not None:
            items["metrics"] = ocp.args.JsonSave(dict(metrics))
        items["run"] = ocp.args.JsonSave(run)
        self._raise_failure()
        self._state_bytes = sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(state)
                                if hasattr(x, "dtype"))
        start = time.perf_counter()
        if self._worker is not None and on_cpu(state):
            copied = copy_state(state)
            self._queued.add(step)
            self._worker.submit(self._save_in_background, step, copied, items)
        else:
            items["state"] = ocp.args.StandardSave(state)
            try:
                self.manager.save(step, args=ocp.args.Composite(**items), force=True)
            except SAVE_ERRORS as e:  # the previous async save failed (orbax waits for it first), or this one
                self._failure = (self._newest_unfinished() or step, e)
                self._raise_failure()
            self._orbax_pending = True
        return time.perf_counter() - start

    def _save_in_background(self, step: int, state: TrainState, items: dict[str, Any]) -> None:
        try:
            if self._failure is None:  # after a failure, later saves are not attempted
                items["state"] = ocp.args.StandardSave(state)
                self.manager.save(step, args=ocp.args.Composite(**items), force=True)
                # Wait here, off the loop's thread, so a failed write (a full disk) is known at once:
                # the loop checks ``failed`` every step and stops instead of training on.
                self.manager.wait_until_finished()
        except BaseException as e:  # reported to the caller by the next save/wait/close
            self._failure = (step, e)
        finally:
            self._queued.discard(step)

    def _drain(self) -> None:
        """Wait until the worker has handed every queued save to orbax."""
        if self._worker is not None:
            self._worker.submit(lambda: None).result()

    @property
    def failed(self) -> bool:
        """Whether a save has failed (``wait`` raises it): the loop checks this every step."""
        if self._failure is None and self._orbax_pending and not self.manager.is_saving_in_progress():
            self._orbax_pending = False  # orbax's own background save (accelerators) just ended: how?
            try:
                self.manager.check_for_errors()
            except SAVE_ERRORS as e:
                self._failure = (self._newest_unfinished(), e)
        return self._failure is not None

    def _raise_failure(self) -> None:
        if self._failure is None:
            return
        step, error = self._failure
        intact = sorted(s for s in self.manager.all_steps() if s != step)
        resume = (f"the checkpoints of steps {intact} are intact; rerun the same command to resume "
                  f"from step {intact[-1]}" if intact else "no earlier checkpoint exists")
        if is_disk_full(error):
            raise DiskFullError(
                f"No space left on the device for the checkpoint of step {step} in {self.directory}: "
                f"it needs up to {describe_bytes(self._state_bytes)} (the train state, before "
                f"compression) and {describe_bytes(free_bytes(self.directory))} is free. The run "
                f"stops here; {resume}. Free space (or lower checkpoint.keep, or move "
                f"trainer.workdir) first.") from error
        raise RuntimeError(
            f"Saving the checkpoint of step {step} to {self.directory} failed "
            f"({reason(error)}); {resume}. Check the disk "
            f"(space, permissions) first.") from error

    def wait(self) -> None:
        """Block until every started save is durable on disk."""
        self._drain()
        try:
            self.manager.wait_until_finished()
        except SAVE_ERRORS as e:  # orbax's own background commit failed
            if self._failure is None:
                self._failure = (self._newest_unfinished(), e)
        self._orbax_pending = False
        self._raise_failure()

    def _newest_unfinished(self) -> int | None:
        """The step whose save was left unfinished (its tmp directory), else the newest step."""
        pending = [int(p.name.split(".")[0]) for p in self.directory.iterdir()
                   if TMP_MARK in p.name and p.name.split(".")[0].isdigit()] if self.directory.is_dir() else []
        return max(pending) if pending else self.latest_step

    def close(self) -> None:
        """Wait for pending saves, then release the manager's threads."""
        try:
            self.wait()
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True)
                self._worker = None
            try:
                self.manager.close()
            except SAVE_ERRORS:  # a failed save, already raised by wait() above
                if self._failure is None:
                    raise

    @property
    def latest_step(self) -> int | None:
        """The newest saved step (a save in flight included), or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        """Every saved step, oldest first (saves in flight included)."""
        queued = set(self._queued)  # read before orbax's list: a step leaves the set only once orbax has it
        return sorted(queued | set(self.manager.all_steps()))

    # ---------------------------------------------------------------------------- restoring

    def restore(self, target: TrainState, *, data_iterator: Any = None) -> Restored | None:
        """Restore the newest readable checkpoint into ``target``'s shapes and shardings.

        ``target`` is abstract (``train.abstract_state``) or concrete; arrays are
        placed with its shardings, so the mesh may differ from the one that saved.
        Returns None when there is no checkpoint at all.
        """
        self.wait()
        failures: list[tuple[Path, BaseException]] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            path = self.directory / str(step)
            try:
                restored = self._read(step, lambda: self._restore_step(step, target, data_iterator))
            except _Corrupt as e:  # skip it and try the next older one
                failures.append((path, e.__cause__))
                warnings.warn(
                    f"Checkpoint {path} (step {step}) is corrupt and is skipped ({e}). "
                    f"Trying an older checkpoint.", CheckpointWarning, stacklevel=2)
                continue
            if failures:
                self._set_aside([p for p, _ in failures])
            return restored
        if failures:
            listing = "\n  ".join(f"{p}: {type(e).__name__}: {str(e)[:200]}" for p, e in failures)
            raise CheckpointError(
                f"None of the {len(failures)} checkpoints in {self.directory} could be restored:\n"
                f"  {listing}\nIf the model or optimizer changed since they were written, use a "
                f"new workdir; to start over on purpose, move the checkpoints away.") from failures[0][1]
        return None

    def newest_config(self) -> tuple[int, dict] | None:
        """``(step, config)`` saved with the newest readable checkpoint, read alone (before a restore)."""
        self.wait()
        for step in sorted(self.manager.all_steps(), reverse=True):
            if not (self.directory / str(step) / "config").exists():
                return None
            try:
                return step, self._read(step, lambda: self.manager.restore(
                    step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config)
            except _Corrupt:  # restore() skips it and says so
                continue
        return None

    def _read(self, step: int, read: Any) -> Any:
        """``read()``, retried on transient failures; a corrupt checkpoint raises ``_Corrupt``.

        Any failure that is neither (memory, permissions, a full disk, a persistent
        I/O error) is raised as ``CheckpointReadError``; nothing is skipped or moved. Other
        exception types (bugs, an XLA runtime error) propagate as they are.
        """
        path = self.directory / str(step)
        for attempt, pause in enumerate((*READ_RETRIES, None)):
            try:
                return read()
            except _Mismatch:
                raise
            except (OSError, ValueError, KeyError, MemoryError) as e:  # what reading can raise; a bug propagates
                kind = classify(e)
                why = reason(e)
                if kind == "corrupt":
                    raise _Corrupt(why) from e
                if kind == "transient" and pause is not None:
                    log.warning("Reading checkpoint %s failed (%s); retrying in %.1fs.", path, why, pause)
                    time.sleep(pause)
                    continue
                tries = f" after {attempt + 1} tries" if kind == "transient" else ""
                raise CheckpointReadError(
                    f"Checkpoint {path} (step {step}) could not be read{tries} ({why}). This is not "
                    f"a damaged checkpoint, so it was not skipped and nothing was moved or deleted; "
                    f"fix the cause (storage, permissions, memory) and rerun.") from e

    def _restore_step(self, step: int, target: TrainState, data_iterator: Any) -> Restored:
        path = self.directory / str(step)
        run = self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore())).run
        items: dict[str, Any] = {"state": ocp.args.StandardRestore(target)}
        for name in ("config", "metrics"):
            if (path / name).exists():
                items[name] = ocp.args.JsonRestore()
        reposition_from = None
        if run.get("data") and data_iterator is not None:
            if not supports_state(data_iterator):
                warnings.warn(
                    f"Checkpoint {path} holds a data-iterator position, but "
                    f"{type(data_iterator).__name__} has no set_state: the data will restart "
                    f"from its beginning.", CheckpointWarning, stacklevel=3)
            elif run["process_count"] == jax.process_count():
                items["data"] = grain.checkpoint.CheckpointRestore(_RestoreTarget(data_iterator))
            elif callable(getattr(data_iterator, "reposition", None)):
                # A baobab.data loader decides itself: refuse, or restart at the saved step.
                reposition_from = path / "data" / f"process_0-of-{run['process_count']}.json"
            else:
                raise _Mismatch(
                    f"Checkpoint {path} was written by {run['process_count']} processes, and "
                    f"this run has {jax.process_count()}. Each process's data position is saved "
                    f"separately and cannot be split or merged; resume with "
                    f"{run['process_count']} processes, or use an iterator that can reposition "
                    f"(baobab.data loaders with on_mismatch='reposition').")
        result = self.manager.restore(step, args=ocp.args.Composite(**items))
        if reposition_from is not None:
            _RestoreTarget(data_iterator).set_state(reposition_from.read_bytes())
        return Restored(state=result.state, step=step, config=result.config if "config" in items else None,
                        path=path, metrics=result.metrics if "metrics" in items else None)

    # ------------------------------------------------------------------------ bad checkpoints

    def _warn_incomplete(self) -> None:
        if not self.directory.exists():
            return
        for entry in sorted(self.directory.iterdir()):
            if TMP_MARK in entry.name:
                warnings.warn(
                    f"Incomplete checkpoint {entry} (a save was interrupted, e.g. by kill -9) "
                    f"is skipped and removed; earlier checkpoints are intact.",
                    CheckpointWarning, stacklevel=3)

    def _set_aside(self, paths: list[Path]) -> None:
        aside = self.directory.parent / (self.directory.name + "_skipped")
        if jax.process_index() == 0:
            aside.mkdir(parents=True, exist_ok=True)
            for p in paths:
                dest = aside / p.name
                n = 1
                while dest.exists():
                    dest, n = aside / f"{p.name}.{n}", n + 1
                shutil.move(str(p), str(dest))
                log.warning("Moved the corrupt checkpoint %s to %s (kept there; delete it yourself "
                            "once it is not needed).", p, dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("baobab_checkpoint_set_aside")
        self.manager.reload()


class _Mismatch(ValueError):
    """The checkpoint is readable but cannot fit this run: an error, not a skip."""


class _Corrupt(Exception):
    """A checkpoint failed to read because it is damaged or incomplete: skipped by restore()."""
