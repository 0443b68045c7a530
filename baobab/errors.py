"""Errors that are the user's to fix, told apart from bugs.

A ``UserError`` means the input was wrong: a config key, a data file, a checkpoint,
a shape. Its message names the thing (key, path, module path, expected and got
shape) and the fix, in its first line. The ``baobab`` command prints that one line
and exits with status 2. Anything else that escapes a command is a bug in baobab
(or in code it calls): the command prints the traceback, says so, and exits 1.

Each subclass also derives from the builtin exception it refines (``ValueError``,
``FileNotFoundError``, ...), so ``except ValueError`` in user code keeps working.

>>> from baobab.errors import ConfigError, UserError
>>> err = ConfigError("optimizer.lrr: no such key; did you mean optimizer.lr?")
>>> isinstance(err, UserError), isinstance(err, ValueError)
(True, True)
"""

from __future__ import annotations

__all__ = ["UserError", "ConfigError", "DataError", "CheckpointError", "ShapeMismatchError", "MissingFileError",
           "UnknownKeyError", "WorkdirLockedError", "RunError", "DiskFullError", "CheckpointReadError"]


class UserError(Exception):
    """Bad input: the message's first line names what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """A config file, config key or override is wrong."""


class DataError(UserError, ValueError):
    """Input data is missing, malformed or does not fit the model."""


class CheckpointError(UserError, ValueError):
    """A run directory or checkpoint cannot be used as asked (none there, another layout)."""


class ShapeMismatchError(UserError, ValueError):
    """An array's shape is not what a layer or a checkpoint expects."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class UnknownKeyError(UserError, KeyError):
    """A name the user gave (a split, a metric, a parameter path) is not there."""

    def __str__(self) -> str:  # KeyError would print the message's repr, quotes and all
        return str(self.args[0]) if self.args else ""


class WorkdirLockedError(UserError, RuntimeError):
    """Another live trainer holds the workdir's lock (the message names its pid and host)."""


class RunError(Exception):
    """The run failed for a reason outside its input (a full disk, an I/O error), said in one line.

    The ``baobab`` command prints the first line and exits with status 1, without a
    traceback or a bug report: the message says what happened, what is intact and
    what to do.
    """


class DiskFullError(RunError, OSError):
    """A checkpoint or log could not be written: no space left (names the directory and the size)."""


class CheckpointReadError(RunError, OSError):
    """A checkpoint could not be read for a reason other than corruption (I/O, memory, permissions)."""
