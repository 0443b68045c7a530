"""One trainer per workdir: a lock file that names its holder and outlives nothing.

Two trainers writing one workdir would interleave checkpoints and metric lines, and
each one's startup removes the other's in-flight save (orbax cleans leftover
``*.orbax-checkpoint-tmp-*`` directories). So ``train`` takes ``<workdir>/.lock``
before it opens the checkpoints, and a second trainer refuses with the holder's pid,
host and start time.

The lock is an ``flock`` on that file, held for the whole run. The kernel drops it
when the holder dies, even by ``kill -9``, so a stale lock is recognised by simply
being free: the newcomer takes it over and logs whose it was. The file also records
the holder (JSON) and is touched every few seconds: on a filesystem shared by hosts,
where ``flock`` may not reach across machines, a record from another host that was
touched recently is still respected, and one untouched for ``STALE_AFTER_S`` is
taken over. Readers (``eval``, ``generate``, ``export``) never take the lock.

In a multi-process run, process 0 takes the lock and tells the others the outcome,
so every process raises the same error. Within one process the lock is re-entrant
(``baobab train`` holds it from before it writes the run's config until ``train``
returns, and ``train`` takes it again): it is freed when the outermost holder releases.

>>> import tempfile
>>> workdir = tempfile.mkdtemp()
>>> with WorkdirLock(workdir):
...     print(open(workdir + "/.lock").read().startswith('{"pid": '))
True
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import jax

from baobab.errors import WorkdirLockedError

__all__ = ["WorkdirLock", "LOCK_FILE"]

log = logging.getLogger("baobab.train")

LOCK_FILE = ".lock"
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
_held: dict[str, int] = {}  # lock files this process holds -> how many holders
_held_guard = threading.Lock()


class WorkdirLock:
    """The exclusive right to train in ``workdir`` (``acquire`` / ``release``, or ``with``)."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir).absolute() / LOCK_FILE
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ------------------------------------------------------------------------------ public

    def acquire(self) -> "WorkdirLock":
        """Take the lock, or raise ``WorkdirLockedError`` naming the live holder."""
        key = str(self.path)
        with _held_guard:
            if key in _held:  # this process holds it already
                _held[key] += 1
                self._nested = True
                return self
        refusal = self._try_acquire() if jax.process_index() == 0 else None
        if jax.process_count() > 1:
            refusal = _agree(refusal, self.path)
        if refusal is not None:
            self._close_fd()
            raise WorkdirLockedError(refusal)
        with _held_guard:
            _held[key] = 1
        self._nested = False
        return self

    def release(self) -> None:
        """Give the lock up (the file stays, empty: its absence or emptiness means free)."""
        with _held_guard:
            _held[str(self.path)] -= 1
            if _held[str(self.path)] > 0:
                return
            del _held[str(self.path)]
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            self._close_fd()

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ----------------------------------------------------------------------------- private

    def _try_acquire(self) -> str | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        holder = _read_holder(self._fd)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _refusal(self.path, holder)
        if holder:
            age = time.time() - os.fstat(self._fd).st_mtime
            if holder.get("host") != socket.gethostname() and age < STALE_AFTER_S:
                fcntl.flock(self._fd, fcntl.LOCK_UN)  # flock may not span hosts: trust the heartbeat
                return _refusal(self.path, holder, f"; its lock was renewed {age:.0f}s ago")
            log.warning("Took over the stale lock %s of pid %s on %s (started %s): that trainer is gone.",
                        self.path, holder.get("pid"), holder.get("host"), holder.get("started"))
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(record).encode(), 0)
        os.fsync(self._fd)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="baobab-workdir-lock", daemon=True)
        self._beat.start()
        return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:  # the workdir went away; the flock still holds
                pass

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the flock
            self._fd = None


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode()
        return json.loads(text) if text.strip() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": "?", "host": "?", "started": "?"}


def _refusal(path: Path, holder: dict, extra: str = "") -> str:
    who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
           f"{holder.get('started', '?')}" if holder else "another process")
    return (f"{path.parent} is being trained by {who}{extra} (lock {path}). Two trainers must not "
            f"write one workdir: wait for it to finish, stop it, or give this run another "
            f"trainer.workdir.")


def _agree(refusal: str | None, path: Path) -> str | None:
    """Process 0's outcome, on every process."""
    import numpy as np
    from jax.experimental import multihost_utils

    refused = multihost_utils.broadcast_one_to_all(np.int32(refusal is not None))
    if not int(refused):
        return None
    return refusal or (f"{path.parent} is locked by another trainer (process 0 of this run could "
                       f"not take {path}; its error names the holder).")
