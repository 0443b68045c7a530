"""Saving loader iterators with orbax, through grain's checkpoint handler.

grain's handler writes one ``process_<i>-of-<n>.json`` per process holding the
iterator's ``get_state()``; ``LoaderIterator`` states carry their process and
worker counts and refuse a changed layout themselves. What grain's handler cannot
do is explain a changed *process* count: it looks for ``process_<i>-of-<new n>.json``
and fails with "does not exist". ``CheckpointSave`` / ``CheckpointRestore`` here use
a subclass of grain's handler (same files) whose restore, when that file is missing,
hands a saved state to the iterator, which then refuses with the counts or, with
``on_mismatch="reposition"``, repositions from the saved step.

Use them like grain's::

    manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), data=data.CheckpointSave(iterator)))
    manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract), data=data.CheckpointRestore(iterator)))
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from baobab.errors import MissingFileError

from ._errors import DataError

__all__ = ["CheckpointHandler", "CheckpointSave", "CheckpointRestore"]

_STATE_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


class CheckpointHandler(grain.checkpoint.CheckpointHandler):
    """grain's handler, with a clear refusal (or a reposition) when the process count changed."""

    def restore(self, directory: Any, item: Any = None, args: Any = None) -> Any:
        item = item if item is not None else args.item
        index, count = jax.process_index(), jax.process_count()
        if (directory / f"process_{index}-of-{count}.json").exists():
            return super().restore(directory, item=item)
        saved = sorted(p for p in directory.iterdir() if _STATE_FILE.fullmatch(p.name))
        if not saved:
            raise MissingFileError(f"{directory} holds no data-iterator state (process_*-of-*.json).")
        saved_count = int(_STATE_FILE.fullmatch(saved[0].name).group(2))
        if not hasattr(item, "reposition"):
            raise DataError(f"the data iterator was saved by {saved_count} process(es) and is restored by "
                            f"{count}; grain's per-process state cannot be split or merged. Restore with "
                            f"{saved_count} processes, or use a baobab LoaderIterator with "
                            f"on_mismatch='reposition'.")
        item.set_state(saved[0].read_bytes())  # the loader refuses or repositions, with the counts
        item.start_prefetch()
        return item


@ocp.args.register_with_handler(CheckpointHandler, for_save=True)
@dataclasses.dataclass
class CheckpointSave(ocp.args.CheckpointArgs):
    """Save a data iterator (``LoaderIterator`` or any grain iterator) in an orbax checkpoint."""

    item: Any


@ocp.args.register_with_handler(CheckpointHandler, for_restore=True)
@dataclasses.dataclass
class CheckpointRestore(ocp.args.CheckpointArgs):
    """Restore a data iterator in place from an orbax checkpoint."""

    item: Any
