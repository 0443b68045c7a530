"""An eval pass as whole global batches: the split padded with zeroed rows and a ``"mask"`` feature.

``eval_loader`` maps the range ``[0, ceil(N / B) * B)`` through ``PadToBatches``:
index ``i < N`` is example ``i`` with ``mask=True``, any later index a copy of an
example with ``mask=False``, whose arrays ``zero_padding`` then zeroes (after the
transforms, so padding rows are zeros whatever the transforms do). Every example
appears exactly once with ``mask=True`` across all hosts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from ._errors import DataError

__all__ = ["PadToBatches", "zero_padding"]


@dataclasses.dataclass(frozen=True)
class PadToBatches(grain.transforms.Map):
    """Index ``i`` of the padded eval range -> example ``i`` with ``mask=True``, or a padding row."""

    source: grain.MapDataset
    size: int

    def map(self, index: int) -> dict[str, Any]:
        real = index < self.size
        example = self.source[index if real else index % self.size]
        if example is None:
            raise DataError(f"eval example {index % self.size} could not be read (skipped as corrupt). An eval "
                            f"pass needs every record: repair the data, or drop skip_corrupt for eval.")
        if "mask" in example:
            raise DataError("eval examples already have a 'mask' feature; the eval loader adds its own. "
                            "Rename yours.")
        return {**example, "mask": np.bool_(real)}


def zero_padding(example: dict[str, Any]) -> dict[str, Any]:
    if example["mask"]:
        return example
    return {k: np.zeros_like(v) if isinstance(v, (np.ndarray, np.generic)) and k != "mask" else v
            for k, v in example.items()}
