"""What a failed checkpoint read or write means: corrupt, worth a retry, or fatal.

A restore may only skip a checkpoint that is *corrupt*: a format or checksum error,
or an incomplete step (a file or item missing). Everything else (an I/O error, a
permission, the host running out of memory) says nothing about the checkpoint, so
skipping it would silently resume from an older step and lose work. Those are
retried when they can pass (``EIO``, ``EAGAIN``, a storage service unavailable),
then raised; nothing is moved or deleted.

Orbax reads arrays through TensorStore, whose errors arrive as ``ValueError`` with a
status code first (``DATA_LOSS: ... CRC-32C checksum verification failed``); the
code is what tells corruption (``DATA_LOSS``, ``OUT_OF_RANGE`` for a truncated file,
``NOT_FOUND`` for a missing one) from the rest (``PERMISSION_DENIED``,
``RESOURCE_EXHAUSTED``, ``UNAVAILABLE``, ...). A full disk while writing is
``ENOSPC`` as an ``OSError`` or TensorStore's ``os_error_code='28'``.

>>> import errno, json
>>> classify(json.JSONDecodeError("Expecting value", "{", 1))
'corrupt'
>>> classify(ValueError("DATA_LOSS: Error reading ... CRC-32C checksum verification failed"))
'corrupt'
>>> classify(OSError(errno.EIO, "Input/output error")), classify(MemoryError())
('transient', 'fatal')
>>> is_disk_full(ValueError("RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']"))
True
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

__all__ = ["classify", "reason", "is_disk_full", "free_bytes", "describe_bytes"]

# TensorStore status codes (the first word of its ValueError messages).
_CORRUPT_STATUS = {"DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"}
_TRANSIENT_STATUS = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED"}
_TRANSIENT_ERRNO = {errno.EIO, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY, errno.ESTALE}
_STATUS = re.compile(r"^([A-Z_]{4,}): ")


def _status(error: BaseException) -> str | None:
    match = _STATUS.match(str(error))
    return match.group(1) if match else None


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def classify(error: BaseException) -> str:
    """``'corrupt'`` (skip this checkpoint), ``'transient'`` (retry) or ``'fatal'`` (raise)."""
    if isinstance(error, MemoryError) or is_disk_full(error):
        return "fatal"
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
        return "corrupt"  # a damaged JSON item (config, metrics, run facts, data position)
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return "corrupt"  # a piece of a finished step is missing: an incomplete step
    if isinstance(error, OSError):
        return "transient" if error.errno in _TRANSIENT_ERRNO else "fatal"
    status = _status(error)
    if status is not None:
        if status in _CORRUPT_STATUS:
            return "corrupt"
        return "transient" if status in _TRANSIENT_STATUS else "fatal"
    if isinstance(error, KeyError) and "was not found in the checkpoint" in str(error):
        return "corrupt"  # orbax: an item directory (state/, run/) is missing
    if type(error) is ValueError:
        return "corrupt"  # orbax's own format errors: metadata that is missing or does not parse into a tree
    return "fatal"  # anything else (a TypeError, a KeyError of ours) is a bug: raised, never skipped


def reason(error: BaseException, limit: int = 300) -> str:
    """``error`` in one short line: TensorStore's status and its innermost cause, not its spec dump.

    >>> reason(ValueError('DATA_LOSS: Error opening "zarr" driver: Error reading "w/.zarray": '
    ...                   'CRC-32C checksum verification failed [tensorstore_spec=...]'))
    'ValueError: DATA_LOSS: ... CRC-32C checksum verification failed'
    """
    text = " ".join(str(error).split("[tensorstore_spec")[0].split())
    status = _status(error)
    if status and len(text) > 80:
        clauses = text.split(": ")
        core = clauses[-1]
        if core.startswith("expected=") and len(clauses) > 2:  # "... verification failed: expected=.."
            core = f"{clauses[-2]}: {core}"
        files = re.findall(r'local file "([^"]+)"', text)
        text = f"{status}: ... {core}" + (f" (in {files[-1]})" if files else "")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is "no space left on device"."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "os_error_code='28'" in text or "Disk quota exceeded" in text:
            return True
    return False


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem holding ``path`` (its nearest existing parent), or None."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def describe_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
