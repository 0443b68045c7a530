"""min-dalle, the test-only DALL·E Mini reference, imported without its side effects.

Importing any of ``min_dalle`` runs ``torch.set_grad_enabled(False)`` and
``torch.set_num_threads(os.cpu_count())`` for the whole process; other tests use
autograd, so both are put back.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch


def import_min_dalle(module: str) -> ModuleType:
    """``importlib.import_module(module)`` (e.g. ``"min_dalle.models"``), torch's global state restored."""
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    try:
        return importlib.import_module(module)
    finally:
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
