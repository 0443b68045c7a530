"""Label transforms.

>>> import numpy as np
>>> from baobab import data
>>> data.OneHot(4)({"label": np.int32(2)})["label"].tolist()
[0.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from ._errors import DataError
from ._records import Example

__all__ = ["OneHot"]


@dataclasses.dataclass(frozen=True)
class OneHot(grain.transforms.Map):
    """Integer labels at ``key`` (shape ``S``) -> one-hot ``S + (num_classes,)`` in ``dtype``."""

    num_classes: int
    key: str = "label"
    dtype: Any = np.float32

    def map(self, example: Example) -> Example:
        if self.key not in example:
            raise DataError(f"OneHot: the example has no feature {self.key!r} (it has {sorted(example)}).")
        label = np.asarray(example[self.key])
        if label.dtype.kind not in "iu":
            raise DataError(f"OneHot: feature {self.key!r} must hold integers, got dtype {label.dtype}.")
        if label.size and (label.min() < 0 or label.max() >= self.num_classes):
            raise DataError(f"OneHot: feature {self.key!r} holds {label.min()}..{label.max()}, outside "
                            f"[0, {self.num_classes}). Is num_classes={self.num_classes} right?")
        return {**example, self.key: np.eye(self.num_classes, dtype=self.dtype)[label]}

    __call__ = map
