"""Call-time context: which module is running, at which path, and where state goes.

Two small stacks, both per thread and only alive during a call:

* **Frames.** Each module call pushes a frame holding the module and its path in
  the model (``blocks[3].attn.q``). The path of a child is found by looking the
  child up among its parent's fields, so modules never store their own names.
  Errors use it to say where they happened.
* **State collectors.** ``nn.stateful_call`` opens a collector; layers that update
  state (BatchNorm statistics) record the new values into it, keyed by the module
  object. Afterwards the collected values are merged into a new model. Nothing is
  mutated, and the collector lives only for one trace.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

_local = threading.local()


def _frames() -> list["Frame"]:
    if not hasattr(_local, "frames"):
        _local.frames = []
    return _local.frames


def _collectors() -> list[dict[int, tuple[Any, dict[str, Any]]]]:
    if not hasattr(_local, "collectors"):
        _local.collectors = []
    return _local.collectors


def join_path(prefix: str, name: str) -> str:
    if not prefix:
        return name
    return prefix + name if name.startswith("[") else f"{prefix}.{name}"


def _field_name_of(parent: Any, child: Any) -> str | None:
    for name in type(parent)._baobab_dynamic:
        value = parent.__dict__.get(name)
        if value is child:
            return name
        if isinstance(value, tuple):
            for i, v in enumerate(value):
                if v is child:
                    return f"{name}[{i}]"
        elif isinstance(value, dict):
            for k, v in value.items():
                if v is child:
                    return f"{name}[{k!r}]"
    return None


class Frame:
    """One running module call."""

    __slots__ = ("module", "path", "alias", "child_names")

    def __init__(self, module: Any, path: str):
        self.module = module
        self.path = path
        self.alias = None  # a cast copy of `module` made by the precision policy
        self.child_names: dict[int, str] = {}

    def child_path(self, child: Any) -> str:
        name = self.child_names.get(id(child))
        if name is None:
            name = _field_name_of(self.module, child)
        if name is None:
            name = f"<{type(child).__name__}>"
        return join_path(self.path, name)

    def describe(self) -> str:
        name = type(self.module).__name__
        return f"{name} at '{self.path}'" if self.path else f"{name} (the root module)"


@contextlib.contextmanager
def calling(module: Any) -> Iterator[Frame]:
    frames = _frames()
    path = frames[-1].child_path(module) if frames else ""
    frame = Frame(module, path)
    frames.append(frame)
    try:
        yield frame
    finally:
        frames.pop()


def name_child(child: Any, name: str) -> None:
    """Tell the running module that ``child`` (not one of its fields) is called ``name``."""
    frames = _frames()
    if frames:
        frames[-1].child_names[id(child)] = name


def current_frame() -> Frame | None:
    frames = _frames()
    return frames[-1] if frames else None


def where() -> str:
    """The running module and its path, for error messages: ``"Linear at 'mlp.fc'"``."""
    frame = current_frame()
    return frame.describe() if frame else "(outside any module call)"


# ----------------------------------------------------------------------------------------
# State collection
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def collecting() -> Iterator[dict[int, tuple[Any, dict[str, Any]]]]:
    collectors = _collectors()
    updates: dict[int, tuple[Any, dict[str, Any]]] = {}
    collectors.append(updates)
    try:
        yield updates
    finally:
        collectors.pop()


def is_collecting() -> bool:
    return bool(_collectors())


def record(module: Any, changes: dict[str, Any]) -> None:
    """Record new field values for ``module`` in the innermost collector."""
    collectors = _collectors()
    if not collectors:
        raise RuntimeError("internal: record() called without a collector")
    _, existing = collectors[-1].setdefault(id(module), (module, {}))
    existing.update(changes)


def resolve_running(module: Any) -> Any:
    """The original module object of the running call that ``module`` stands for."""
    frame = current_frame()
    if frame is not None and (module is frame.module or module is frame.alias):
        return frame.module
    return module
