"""The errors ``baobab.data`` raises, so callers can catch them by kind.

Every message names the file, record index or feature key involved, says what was
expected and what came, and ends with the likely fix.
"""

from __future__ import annotations

__all__ = ["DataError", "CorruptRecordError"]


# The one DataError (a baobab.errors.UserError and a ValueError): bad input data or a
# pipeline that cannot work on it (empty dataset, wrong shape...).
from baobab.errors import DataError as DataError  # noqa: E402


class CorruptRecordError(DataError):
    """A record that cannot be read or decoded.

    Raised with the file and record index. ``ArrayRecordSource(..., skip_corrupt=True)``
    skips such records instead, counting them and logging each one.
    """
