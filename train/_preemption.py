"""Stopping on SIGTERM/SIGINT: save at the next step boundary, then return.

``StopOnSignal`` installs handlers for the whole run, final checkpoint included. The first signal
only sets a flag: the loop sees it after the current step, saves a checkpoint,
waits for it to be durable and returns normally (the caller exits with status
0). A second signal restores the default handler and re-sends itself, so the
process ends at once; an async save in flight is then lost, but never corrupts
the earlier checkpoints (orbax commits by renaming a finished directory).

With several processes, a signal may reach only some of them; ``agreed()`` takes
the OR over processes (a small all-gather), so all stop at the same step. The
loop calls it at logging and checkpoint intervals only, to keep the host off the
critical path; a single process checks its flag after every step.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import jax
import numpy as np

__all__ = ["StopOnSignal"]

log = logging.getLogger("baobab.train")


class StopOnSignal:
    """Context manager: ``requested`` turns True on the first SIGTERM/SIGINT.

    >>> from baobab.train._preemption import StopOnSignal
    >>> with StopOnSignal() as stop:
    ...     stop.requested
    False
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopOnSignal":
        """Install the handlers (main thread only); ``uninstall`` puts the old ones back."""
        if not self.enabled or self._previous:
            return self
        if threading.current_thread() is not threading.main_thread():
            log.warning("Not in the main thread: SIGTERM/SIGINT will not trigger a checkpoint.")
            return self
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> "StopOnSignal":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:  # the second signal: stop now, the default way
            log.warning("Second signal (%s): exiting at once without a checkpoint.", name)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.requested = True
        self.signal_name = name
        log.warning("Got %s: will save a checkpoint at the next step boundary and stop. "
                    "Send it again to exit at once.", name)

    def agreed(self) -> bool:
        """Whether any process has been asked to stop (collective with several processes)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
        return bool(np.any(flags))
