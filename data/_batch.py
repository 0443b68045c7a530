"""Stacking examples into a batch, with errors that name the feature and positions.

>>> import numpy as np
>>> from baobab import data
>>> batch = data.stack_examples([{"x": np.zeros(3), "y": 1}, {"x": np.ones(3), "y": 2}])
>>> batch["x"].shape, batch["y"].tolist()
((2, 3), [1, 2])
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._errors import DataError
from ._records import Example

__all__ = ["stack_examples"]


def stack_examples(examples: Sequence[Example]) -> dict[str, Any]:
    """``[{key: (...)}] * B -> {key: (B, ...)}``; str/bytes features become ``(B,)`` numpy arrays."""
    if not examples:
        raise DataError("cannot batch zero examples.")
    keys = list(examples[0])
    out = {}
    for position, example in enumerate(examples):
        if list(example) != keys and set(example) != set(keys):
            raise DataError(f"batch position {position} has features {sorted(example)}, position 0 has "
                            f"{sorted(keys)}. Make every example carry the same keys.")
    for key in keys:
        values = [example[key] for example in examples]
        if isinstance(values[0], (str, bytes)):
            out[key] = np.asarray(values, dtype=object if isinstance(values[0], bytes) else None)
            continue
        try:
            out[key] = np.stack(values)
        except ValueError as err:
            shapes: dict[tuple[int, ...], list[int]] = {}
            for position, value in enumerate(values):
                shapes.setdefault(np.shape(value), []).append(position)
            detail = ", ".join(f"{shape} at positions {pos[:4]}{'...' if len(pos) > 4 else ''}"
                               for shape, pos in shapes.items())
            raise DataError(f"feature {key!r} has different shapes within one batch: {detail}. Give it "
                            f"one shape before batching (data.Resize / RandomCrop for images, "
                            f"data.Pack for token sequences).") from err
    return out
