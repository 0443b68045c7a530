"""Typed configuration: frozen pydantic models, loaded from Python files, overridden by key.

Every config section (model, data, optimizer, trainer, ...) subclasses ``Config``.
A section that picks an implementation has a ``kind: Literal["..."]`` field, and the
folder that implements it keeps one small explicit table from kind to config class
(for example ``baobab.models.MODELS``); an unknown kind is an error listing the
valid ones.

Why pydantic: it validates and coerces values by their declared types and reports
every problem by key path, which is what ``key=value`` overrides need; frozen models
are hashable and immutable like the rest of baobab; and ``model_dump`` gives the
resolved config as plain JSON for run directories and checkpoints. Why Python files
(``configs/*.py`` with a ``get_config()``): configs can compute values and import
the config classes they use, so an IDE checks them, as in big_vision.

>>> from typing import Literal
>>> from baobab.config import Config, apply_overrides
>>> class Optimizer(Config):
...     lr: float = 1e-3
...     betas: tuple[float, float] = (0.9, 0.999)
>>> class Experiment(Config):
...     optimizer: Optimizer = Optimizer()
...     steps: int = 100
>>> cfg = apply_overrides(Experiment(), ["optimizer.lr=3e-4", "optimizer.betas=(0.9,0.95)", "steps=20"])
>>> cfg.optimizer.lr, cfg.optimizer.betas, cfg.steps
(0.0003, (0.9, 0.95), 20)
>>> apply_overrides(Experiment(), ["optimizer.lrr=1"])
Traceback (most recent call last):
...
baobab.errors.ConfigError: optimizer.lrr: no such key; did you mean optimizer.lr?
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping, TypeVar

import pydantic
import pydantic_core

from baobab.errors import ConfigError as ConfigError

__all__ = ["Config", "ConfigError", "apply_overrides", "load_config", "parse_value", "to_json", "kind_field"]

C = TypeVar("C", bound="Config")


class Config(pydantic.BaseModel):
    """Base of every config section: frozen, and unknown keys are errors."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", validate_default=True)


def _dump_own_fields(value: Config, info: pydantic.SerializationInfo) -> dict:
    return value.model_dump(mode=info.mode)


def kind_field(table: Mapping[str, Any], section: str, config_of: Callable[[Any], type] = lambda entry: entry):
    """The type of a config section chosen by ``kind`` from ``table`` (kind -> entry).

    The table is read when a value is validated, not when the type is made, so a
    kind added to the table later (a new model file plus its table entry) is valid
    everywhere at once. ``config_of(entry)`` is the entry's config class. Values are
    dumped by their own class, so every field of the chosen kind is kept.

    >>> class Small(Config):
    ...     kind: str = "small"
    ...     width: int = 8
    >>> table = {"small": Small}
    >>> class Run(Config):
    ...     model: kind_field(table, "model") = Small()
    >>> Run.model_validate({"model": {"kind": "small", "width": 4}}).model.width
    4
    >>> apply_overrides(Run(), ["model.kind=big"])
    Traceback (most recent call last):
    ...
    baobab.errors.ConfigError: model: unknown kind 'big'; valid kinds: 'small'
    """

    def validate(value: Any) -> Config:
        classes = {kind: config_of(entry) for kind, entry in table.items()}
        if isinstance(value, Config) and type(value) in classes.values():
            return value
        if isinstance(value, Config):
            value = value.model_dump(mode="python")
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a {section} section (a mapping with a kind), got {type(value).__name__}")
        kind = value.get("kind")
        if not isinstance(kind, str) or kind not in classes:  # (a list or dict is not hashable)
            raise pydantic_core.PydanticCustomError(
                "unknown_kind", "unknown kind {kind}; valid kinds: {kinds}",
                {"kind": repr(kind), "kinds": ", ".join(repr(k) for k in classes)})
        return classes[kind].model_validate(dict(value))

    return Annotated[Config, pydantic.PlainValidator(validate),
                     pydantic.PlainSerializer(_dump_own_fields)]


def parse_value(text: str) -> Any:
    """Coerce an override's text: Python literals (ints, floats, tuples, None, quoted
    strings), ``true``/``false``/``none``/``null`` in any case, else the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # TypeError: {[]: 1}; too deep
        return text


def _flat_keys(tree: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            path = f"{prefix}.{k}" if prefix else k
            keys.append(path)
            keys.extend(_flat_keys(v, path))
    return keys


def _no_such_key(key: str, tree: dict) -> ConfigError:
    depth = key.count(".")
    candidates = [k for k in _flat_keys(tree) if k.count(".") == depth] or _flat_keys(tree)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:  # compare the last segment alone, e.g. 'lrr' vs 'lr' under any section
        last = key.rsplit(".", 1)[-1]
        by_last = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = [by_last[m] for m in difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.6)]
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; valid top-level keys: {sorted(tree)}"
    return ConfigError(f"{_shown(key)}: no such key{hint}")


def _shown(key: str) -> str:
    """A key as typed, or quoted when it holds line breaks or control characters (one-line errors)."""
    return key if key.isprintable() else repr(key)


def _set(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise _no_such_key(key, tree)
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def _error_from_validation(err: pydantic.ValidationError) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = _shown(".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
        got = e.get("input")
        got_text = f", got {got!r}" if not isinstance(got, dict) else ""
        ctx = e.get("ctx") or {}
        if e["type"] == "unknown_kind":
            lines.append(f"{loc}: {e['msg']}")
        elif e["type"] == "union_tag_invalid":
            lines.append(f"{loc}: unknown kind {ctx.get('tag')!r}; valid kinds: {ctx.get('expected_tags')}")
        elif e["type"] == "extra_forbidden":
            lines.append(f"{loc}: no such key")
        elif e["type"] == "value_error":  # a validator's own message, which names the value
            lines.append(f"{loc}: {ctx.get('error') or e['msg']}")
        else:
            lines.append(f"{loc}: {e['msg'][0].lower() + e['msg'][1:]}{got_text}")
    return ConfigError("; ".join(lines).replace("\n", "\\n"))  # one line, as the CLI prints it


def apply_overrides(config: C, overrides: list[str] | tuple[str, ...]) -> C:
    """A new config with ``key=value`` overrides applied and everything re-validated.

    Unknown keys are rejected with the closest valid names; wrong types are rejected
    by key and expected type. Setting ``<section>.kind`` switches the section to that
    kind's defaults before the section's other overrides apply.
    """
    tree = config.model_dump(mode="python")
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optimizer.lr=3e-4")
        parsed.append((key.strip(), parse_value(raw)))
    kinds = [(k, v) for k, v in parsed if k == "kind" or k.endswith(".kind")]
    early: set[str] = set()  # overrides already placed in a section whose kind changed
    switched: list[tuple[str, dict]] = []
    for key, value in kinds:
        section = key.rsplit(".", 1)[0] if "." in key else ""
        node = tree
        for part in section.split(".") if section else []:
            if not isinstance(node, dict) or part not in node:
                raise _no_such_key(key, tree)
            node = node[part]
        if not isinstance(node, dict) or "kind" not in node:
            raise _no_such_key(key, tree)
        if node["kind"] != value:  # a new kind starts from its own defaults
            node.clear()
            node["kind"] = value
            switched.append((section, node))
    if kinds:  # fill in the new kinds' defaults, so their keys can be overridden next
        try:
            tree = type(config).model_validate(tree).model_dump(mode="python")
        except pydantic.ValidationError:
            # A new kind with required keys (data.kind=prepared needs data.path): take them
            # from the same overrides, then validate again.
            for section, node in switched:
                prefix = f"{section}." if section else ""
                for k, v in parsed:
                    if k.startswith(prefix) and (k, v) not in kinds:
                        *parents, leaf = k[len(prefix):].split(".")
                        target = node
                        for part in parents:
                            target = target.setdefault(part, {})
                            if not isinstance(target, dict):  # e.g. data.path.x=1: a value has no keys
                                raise _no_such_key(k, tree)
                        target[leaf] = v
                        early.add(k)
            try:
                tree = type(config).model_validate(tree).model_dump(mode="python")
            except pydantic.ValidationError as err:
                raise _error_from_validation(err) from None
    for key, value in parsed:
        if (key, value) not in kinds and key not in early:
            _set(tree, key, value)
    try:
        return type(config).model_validate(tree)
    except pydantic.ValidationError as err:
        raise _error_from_validation(err) from None


def _failed(path: Path, err: BaseException, what: str) -> ConfigError:
    """``path line N: <what> (KeyError: 'x'); fix the config file``, N the deepest line of ``path``."""
    line = err.lineno if isinstance(err, SyntaxError) and err.filename == str(path) else None
    for frame in traceback.extract_tb(err.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    where = f"{path} line {line}" if line else str(path)
    detail = " ".join(str(err).split())
    cause = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
    return ConfigError(f"{where}: {what} ({cause}); fix the config file")


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``get_config()`` from a Python config file, then apply overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass a path like configs/mnist_cnn.py")
    spec = importlib.util.spec_from_file_location(f"baobab_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # the user's file failed: say which line, keep the cause
        raise _failed(path, err, "failed to load") from err
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config(); a config file must define get_config() -> Config")
    try:
        config = module.get_config()
    except pydantic.ValidationError as err:
        raise ConfigError(f"{path}: {_error_from_validation(err)}") from None
    except ConfigError as err:  # the file's own message (e.g. a missing optional package)
        raise ConfigError(f"{path}: {err}") from None
    except (Exception, SystemExit) as err:
        raise _failed(path, err, "get_config() failed") from err
    if not isinstance(config, Config):
        raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, not a baobab Config")
    return apply_overrides(config, overrides)


def to_json(config: Config) -> str:
    """The resolved config (every default filled in) as JSON."""
    return json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True)
