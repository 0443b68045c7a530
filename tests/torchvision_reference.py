"""Make torchvision importable as a test reference when its compiled ops cannot load.

The torchvision 0.28 wheel on PyPI (the release for torch 2.13) is built against CUDA
torch; beside the CPU build of torch its ``_C`` extension does not load, and its import
then fails while registering fake kernels for ``torchvision::nms`` / ``qnms``. Since
``transformers`` imports torchvision whenever it is installed, that failure would break
every transformers reference too. ``declare_missing_ops()`` declares those two op names
(never called by the model code the tests use: ResNets, image transforms) before the
first import. It does nothing when torchvision is absent or imports on its own.
"""

from __future__ import annotations

import importlib.util
import sys

_LIBRARY = None  # keeps the op declarations alive


def declare_missing_ops() -> None:
    global _LIBRARY
    if _LIBRARY is not None or importlib.util.find_spec("torchvision") is None:
        return
    import torch

    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401,F811
