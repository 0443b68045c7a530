"""In-memory arrays: a dict of numpy arrays with a common leading (example) axis.

>>> import numpy as np
>>> from baobab import data
>>> ds = data.from_arrays({"x": np.zeros((5, 3), np.float32), "y": np.arange(5)})
>>> len(ds), ds[4]["x"].shape, int(ds[4]["y"])
(5, (3,), 4)
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Mapping

import grain
import numpy as np

from baobab.errors import MissingFileError

from ._errors import DataError
from ._records import Example

__all__ = ["ArraySource", "from_arrays", "load_npz"]


class ArraySource:
    """Random-access source over ``{key: array (N, ...)}``: ``source[i] = {key: array[i]}``.

    Elements are views into the arrays (no copy); transforms must not modify them.
    """

    def __init__(self, arrays: Mapping[str, Any], *, name: str = "arrays"):
        if not isinstance(arrays, Mapping) or not arrays:
            raise DataError(f"{name}: expected a non-empty dict of arrays, got {type(arrays).__name__}.")
        self.arrays = {}
        for key, value in arrays.items():
            array = np.asarray(value)
            if array.ndim == 0 or array.dtype.kind not in "biufcUS":
                raise DataError(f"{name}: feature {key!r} has shape {array.shape} and dtype {array.dtype}; "
                                f"each feature needs a leading example axis and a numeric or string dtype.")
            self.arrays[key] = array
        lengths = {key: len(a) for key, a in self.arrays.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(f"{name}: features disagree on the number of examples (leading axis): "
                            f"{lengths}. Every array needs the same first dimension.")
        if not next(iter(lengths.values())):
            raise DataError(f"{name}: the dataset is empty (0 examples in {sorted(lengths)}).")
        self.name = name

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, index: int) -> Example:
        return {key: array[index] for key, array in self.arrays.items()}

    def __repr__(self) -> str:
        shapes = {k: (a.shape, str(a.dtype)) for k, a in self.arrays.items()}
        return f"ArraySource({self.name}: {shapes})"


def from_arrays(arrays: Mapping[str, Any], *, name: str = "arrays") -> grain.MapDataset:
    """A ``grain.MapDataset`` of examples ``{key: array[i]}`` from ``{key: array (N, ...)}``."""
    return grain.MapDataset.source(ArraySource(arrays, name=name))


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load a ``.npz`` file safely (``allow_pickle=False``) into a dict of arrays."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"numpy file {str(path)!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as err:
        raise DataError(f"{path}: cannot load without pickle ({err}). Object arrays are refused for "
                        f"safety; save plain numeric/string arrays with np.savez.") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz file ({err}); it may be truncated.") from err
