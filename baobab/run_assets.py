"""What a run keeps for the people who use its model, beside the weights: ``RUN/assets/``.

A checkpoint alone cannot be used downstream: the ids it was trained on come from a
tokenizer, its class indices stand for names, and an LM's end-of-text id lives in
the tokenizer too. ``baobab train`` copies them into the run when training starts
(``write_assets``), so the run still has them after the source folder is gone, and
``baobab export hf`` writes them into the export (``hf_files``)::

    RUN/assets/tokenizer/           the tokenizer files training read: data.tokenizer (as
                                    tokenizer.json) and, beside a tokenizer.json, its
                                    Hugging Face companions (tokenizer_config.json, vocab.txt...)
    RUN/assets/labels.json          {"class_names": [...]}: classification runs, label-index order
    RUN/assets/generation_config.json  language-model runs: a transformers GenerationConfig
                                    (bos/eos/pad ids where known, max_length = model.max_len,
                                    greedy as ``baobab generate``'s default)

Existing files are kept on resume: they describe what the run was trained with.
Byte-level runs (``data.tokenizer="bytes"``) have no tokenizer files.

>>> import tempfile
>>> from baobab import data, run_assets
>>> from baobab.experiment import ExperimentConfig, TrainerConfig
>>> config = ExperimentConfig(trainer=TrainerConfig(workdir=tempfile.mkdtemp()))
>>> info = data.DataInfo("classification", num_classes=3, class_names=("cat", "dog", "owl"))
>>> folder = run_assets.write_assets(config, info)
>>> run_assets.read_assets(config.trainer.workdir).class_names
('cat', 'dog', 'owl')
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import jax

from baobab.errors import ConfigError

__all__ = ["ASSETS", "TOKENIZER_FILES", "RunAssets", "write_assets", "read_assets", "special_tokens"]

#: The folder inside a run directory.
ASSETS = "assets"
#: The Hugging Face tokenizer files copied from beside a ``tokenizer.json``.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model")
_LABELS = "labels.json"
_GENERATION = "generation_config.json"
# special-token roles guessed from a token's text when no tokenizer_config.json names them
_ROLES = {"pad_token": ("[PAD]", "<pad>", "<|pad|>"), "unk_token": ("[UNK]", "<unk>"),
          "cls_token": ("[CLS]",), "sep_token": ("[SEP]",), "mask_token": ("[MASK]", "<mask>"),
          "bos_token": ("<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>"),
          "eos_token": ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>")}


@dataclasses.dataclass(frozen=True)
class RunAssets:
    """What ``RUN/assets/`` holds: tokenizer file paths, class names, generation settings."""

    tokenizer_files: tuple[Path, ...] = ()
    class_names: tuple[str, ...] | None = None
    generation: dict[str, Any] | None = None


def _tokenizer_path(config: Any) -> Path | None:
    name = getattr(config.data, "tokenizer", None)
    if not name or name == "bytes":
        return None
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"data.tokenizer = {name!r} is not a file; pass the tokenizer.json training reads.")
    return path


def special_tokens(folder: Path) -> dict[str, tuple[str, int]]:
    """``role -> (text, id)`` of a tokenizer folder's special tokens (``eos_token`` ...).

    Named by ``tokenizer_config.json`` / ``special_tokens_map.json`` where they exist,
    else guessed from the special tokens' text in ``tokenizer.json`` (``</s>``, ``[PAD]``...).
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    named: dict[str, str] = {}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / file).is_file():
            for role, value in json.loads((folder / file).read_text()).items():
                text = value.get("content") if isinstance(value, dict) else value
                if role in _ROLES and isinstance(text, str):
                    named[role] = text
    if not named:
        added = [t["content"] for t in json.loads((folder / "tokenizer.json").read_text()).get("added_tokens", ())
                 if t.get("special")]
        named = {role: text for role, texts in _ROLES.items() for text in texts if text in added}
    return {role: (text, tok.token_to_id(text)) for role, text in named.items() if tok.token_to_id(text) is not None}


def _write_tokenizer(source: Path, folder: Path, config: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, folder / "tokenizer.json")
    if source.name == "tokenizer.json":
        for name in TOKENIZER_FILES[1:]:
            if (source.parent / name).is_file():
                shutil.copy2(source.parent / name, folder / name)
    if not (folder / "tokenizer_config.json").is_file():  # a bare tokenizer.json: say how to load it
        tokens = {role: text for role, (text, _) in special_tokens(folder).items()}
        max_len = getattr(config.model, "max_len", None)
        settings = {"tokenizer_class": "PreTrainedTokenizerFast", **tokens}
        if max_len:
            settings["model_max_length"] = max_len
        (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")


def _upstream_ids(config: Any) -> dict[str, int]:
    """bos/eos/pad ids of the model ``finetune.init_from`` names (HF folder or baobab run), if it has them."""
    source = config.finetune.init_from
    if not source:
        return {}
    root = Path(source)
    folders = [root / ASSETS, root / "hf"] if (root / "checkpoints").is_dir() else [root]
    ids: dict[str, int] = {}
    for folder in folders:
        for file in (_GENERATION, "config.json"):
            if (folder / file).is_file():
                values = json.loads((folder / file).read_text())
                for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                    if key not in ids and values.get(key) is not None:
                        ids[key] = values[key]
    return ids


def _generation(config: Any, tokenizer_folder: Path | None) -> dict[str, Any]:
    ids = _upstream_ids(config)
    if tokenizer_folder is not None:
        for role, (_, i) in special_tokens(tokenizer_folder).items():
            key = role.replace("_token", "_token_id")
            if key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                ids.setdefault(key, i)
    settings: dict[str, Any] = dict(sorted(ids.items()))
    max_len = getattr(config.model, "max_len", None)
    if max_len:
        settings["max_length"] = max_len
    settings["do_sample"] = False  # baobab generate's default: --temperature 0, greedy
    return settings


def write_assets(config: Any, info: Any) -> Path:
    """Write ``<workdir>/assets/`` for ``config`` and its data's ``DataInfo`` (process 0); the folder.

    Files already there are kept (a resumed run keeps what it started with).
    """
    folder = Path(config.trainer.workdir) / ASSETS
    if jax.process_index() != 0:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    source = _tokenizer_path(config)
    tokenizer = folder / "tokenizer"
    if source is not None and not (tokenizer / "tokenizer.json").is_file():
        _write_tokenizer(source, tokenizer, config)
    names = getattr(info, "class_names", None)
    if names and not (folder / _LABELS).is_file():
        (folder / _LABELS).write_text(json.dumps({"class_names": list(names)}, indent=2) + "\n")
    if config.task == "language_model" and not (folder / _GENERATION).is_file():
        has_tokenizer = (tokenizer / "tokenizer.json").is_file()
        settings = _generation(config, tokenizer if has_tokenizer else None)
        (folder / _GENERATION).write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def read_assets(run_dir: str | Path) -> RunAssets:
    """What ``RUN/assets/`` holds (empty for runs written before assets existed)."""
    folder = Path(run_dir) / ASSETS
    tokenizer = folder / "tokenizer"
    files = tuple(sorted(p for p in tokenizer.iterdir() if p.is_file())) if tokenizer.is_dir() else ()
    names = None
    if (folder / _LABELS).is_file():
        names = tuple(json.loads((folder / _LABELS).read_text())["class_names"])
    generation = json.loads((folder / _GENERATION).read_text()) if (folder / _GENERATION).is_file() else None
    return RunAssets(files, names, generation)
