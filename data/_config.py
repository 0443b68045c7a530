"""Data sections of experiment configs, and the one table from kind to builder.

An experiment's ``data`` section is one of the configs below, chosen by ``kind``.
``build_data(config, mesh=..., rules=..., seed=...)`` turns it into a train
``Loader``, a function returning a fresh exact eval iterator, and a small
``DataInfo`` (what a model and a loss need to know: classes, vocabulary, shapes).

>>> from baobab import data
>>> sorted(data.DATASETS)
['captioned_mnist', 'image_folder', 'mnist', 'prepared', 'text', 'text_classification']
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping, NamedTuple, Optional

import grain
import pydantic
from jax.sharding import Mesh

from baobab.config import Config, ConfigError, kind_field

from ._captions import CaptionedCodes, CaptionTokenizer, read_codes
from ._image import CenterPad, Normalize, RandomCrop, RandomFlip, Resize
from ._image_folder import ImageFolderSource, image_folder
from ._loader import Loader, eval_loader, train_loader
from ._errors import DataError
from ._metadata import read_metadata
from ._mnist import mnist
from ._prepared import load_prepared
from ._text import stdlib_text_files
from ._text_split import split_documents
from ._text_classes import DOCSTRING_PACKAGES, EncodeText, count_truncated, jsonl_texts, python_docstrings
from ._token_chunks import TokenChunks
from ._tokenize import ByteTokenize, Tokenize

__all__ = ["MnistData", "CaptionedMnistData", "ImageFolderData", "TextData", "TextClassificationData", "PreparedData", "DataConfig",
           "DATASETS", "DatasetEntry", "DataInfo", "build_data", "data_info"]

log = logging.getLogger("baobab")


class MnistData(Config):
    """The embedded MNIST digits (4,000 train / 1,000 test), normalised to [0, 1]."""

    kind: Literal["mnist"] = "mnist"
    tasks: ClassVar[tuple[str, ...]] = ("classification", "image_autoencoder")  # the baobab.tasks it can feed
    batch_size: int = 128
    eval_batch_size: int = 500
    augment: bool = False  # random 28x28 crops of the 2-pixel-padded digit
    pad_to: Optional[int] = pydantic.Field(
        None, ge=28, description="zero-pad the 28x28 digits to pad_to x pad_to, centred (a VQGAN wants 32)")
    num_threads: int = 0


TRAIN_PHRASINGS = ("a handwritten {word}", "the digit {digit}", "the digit {word}", "a {word}", "{digit}",
                   "{word}", "an image of the number {word}", "a drawing of a {digit}", "handwritten digit {digit}",
                   "{word}, written by hand")
HELD_OUT_PHRASINGS = ("number {word}, written by hand", "a picture of a handwritten {digit}", "the number {digit}")


class CaptionedMnistData(Config):
    """Embedded MNIST digits as VQGAN codes, each with captions built from its label (text-to-image).

    The codes come from ``baobab data encode-images VQGAN_RUN`` (``data.codes``).
    Training pairs each of the 4,000 training digits with each of ``phrasings``; eval
    pairs the 1,000 test digits with each of ``held_out_phrasings``, which training never
    sees. ``{word}`` is the digit's name (seven), ``{digit}`` its numeral (7). The captions'
    word-level vocabulary comes from ``phrasings`` (``data.CaptionTokenizer``).
    """

    kind: Literal["captioned_mnist"] = "captioned_mnist"
    tasks: ClassVar[tuple[str, ...]] = ("text_to_image",)  # the baobab.tasks it can feed
    codes: str = pydantic.Field(
        "runs/vqgan_mnist/mnist_codes", description="the digits' VQGAN codes: a folder made by `baobab data "
        "encode-images VQGAN_RUN` (it names the VQGAN run, which decodes generated codes)")
    phrasings: tuple[str, ...] = pydantic.Field(TRAIN_PHRASINGS, min_length=1,
                                                description="caption templates used for training")
    held_out_phrasings: tuple[str, ...] = pydantic.Field(
        HELD_OUT_PHRASINGS, min_length=1, description="caption templates used only for evaluation")
    text_len: int = pydantic.Field(12, ge=3, description="caption tokens per row, <s> and </s> included")
    batch_size: int = pydantic.Field(64, gt=0, description="global training batch size")
    eval_batch_size: int = pydantic.Field(500, gt=0, description="global eval batch size")
    num_threads: int = pydantic.Field(0, ge=0, description="grain read threads (0: read in the main thread)")


class ImageFolderData(Config):
    """``root/<class>/*.png|jpg`` folders, resized to ``image_size``."""

    kind: Literal["image_folder"] = "image_folder"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the baobab.tasks it can feed
    train_dir: str
    eval_dir: Optional[str] = None
    image_size: tuple[int, int] = (32, 32)
    batch_size: int = 32
    eval_batch_size: int = 64
    augment: bool = True  # random flips and padded crops
    num_threads: int = 0


class TextData(Config):
    """Text files, tokenised to bytes (or a ``tokenizer.json``), cut into shuffled rows.

    ``files=()`` uses the Python standard library's own source files, a real text
    corpus every Python install carries (``stdlib_limit`` files of it). Held out for
    evaluation (``data.split_documents``): with at least ``1 / eval_fraction`` files, every
    k-th file (by sorted path); with fewer, one file included, the last ``eval_fraction``
    of each file's text. Training rows are ``seq_len + 1`` tokens cut from the whole
    corpus and shuffled one by one (``data.TokenChunks``), so a batch draws from all over
    the corpus; a new file starts a new segment. Eval scores every held-out token, or
    the first ``eval_rows`` rows if set. The corpus is tokenised when the data is built;
    for corpora that do not fit in memory, ``baobab data prepare`` them.

    Rows are cut from the whole corpus before the loader shards them (nothing is packed
    per process), so the train and eval streams do not depend on the process count:
    2 processes assemble the global batches 1 process with the same devices loads, row
    for row (``tests/test_data_multiprocess_kinds.py``; so do the other kinds).
    """

    kind: Literal["text"] = "text"
    tasks: ClassVar[tuple[str, ...]] = ("language_model",)  # the baobab.tasks it can feed
    files: tuple[str, ...] = ()
    stdlib_limit: Optional[int] = 300
    eval_fraction: float = 0.05
    seq_len: int = pydantic.Field(128, ge=1)
    batch_size: int = 16
    eval_batch_size: int = 16
    eval_rows: Optional[int] = pydantic.Field(None, ge=1)
    tokenizer: str = "bytes"  # "bytes" (vocabulary 256) or a path to a tokenizer.json
    num_threads: int = 0


class TextClassificationData(Config):
    """Labelled texts -> ``input_ids``, ``attention_mask`` ``(seq_len,)`` and ``label``, for ``models.Bert``.

    ``train_file`` / ``eval_file``: JSON-lines files of ``{"text": ..., "label": ...}``
    (labels are class names or int indices; the eval file uses the train file's
    classes). Without ``train_file``, the built-in real task: standard-library
    docstrings labelled by the package in ``packages`` they come from (one in five
    held out for eval; ``data.python_docstrings``). ``tokenizer``: a ``tokenizer.json``
    (the pretrained model's). Texts longer than ``seq_len`` tokens are cut; how many
    is logged when the data is built.
    """

    kind: Literal["text_classification"] = "text_classification"
    tasks: ClassVar[tuple[str, ...]] = ("text_classification",)  # the baobab.tasks it can feed
    tokenizer: str
    train_file: Optional[str] = None
    eval_file: Optional[str] = None
    packages: tuple[str, ...] = DOCSTRING_PACKAGES
    seq_len: int = pydantic.Field(64, ge=2)
    batch_size: int = 32
    eval_batch_size: int = 64
    num_threads: int = 0


class PreparedData(Config):
    """A folder written by ``baobab data prepare`` (ArrayRecord shards + metadata.json).

    Its features say the task: ``image`` (+ ``label``) is classification, ``tokens``
    language modelling, and pre-encoded text-to-image rows (what DALL·E Mini trained on)
    are ``text_ids`` ``(S,)`` int, ``text_mask`` ``(S,)`` bool (True = token) and
    ``image_codes`` ``(N,)`` int (VQGAN codes), with ``vocab_size`` (the captions') and
    ``image_vocab_size`` (the VQGAN codebook) in the metadata's ``info``:
    ``data.write_split(out, "train", rows, info={"vocab_size": 50272, "image_vocab_size": 16384})``.
    ``skip_corrupt``: training skips (and logs, and counts) records that fail their
    checksum instead of stopping at the first; an eval pass still needs every record.
    """

    kind: Literal["prepared"] = "prepared"
    # the baobab.tasks it can feed, by its features: images, tokens or caption ids + image codes
    tasks: ClassVar[tuple[str, ...]] = ("classification", "language_model", "text_to_image")
    path: str
    train_split: str = "train"
    eval_split: Optional[str] = "test"
    batch_size: int = 64
    eval_batch_size: int = 256
    num_threads: int = 0
    skip_corrupt: bool = False


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the model and the loss need to know about a dataset."""

    task: str  # "classification" (images), "text_classification", "language_model" or "text_to_image"
    num_classes: int | None = None
    vocab_size: int | None = None
    image_shape: tuple[int, ...] | None = None
    seq_len: int | None = None
    class_names: tuple[str, ...] | None = None  # in label-index order, where the data names its classes
    image_vocab_size: int | None = None  # text_to_image: image tokens (VQGAN codes) ...
    image_len: int | None = None  # ... and how many per image (vocab_size / seq_len: the captions')


_DIGITS = tuple(str(i) for i in range(10))  # MNIST's classes, by label index

Built = tuple[Loader, Optional[Callable[[], Iterable[Mapping[str, Any]]]], DataInfo]


def _eval_factory(loader: Loader | None) -> Callable[[], Iterable[Mapping[str, Any]]] | None:
    return None if loader is None else (lambda: iter(loader))


def _mnist(cfg: MnistData, mesh: Mesh, rules: Mapping[str, Any], seed: int) -> Built:
    norm = (CenterPad((cfg.pad_to, cfg.pad_to)),) * (cfg.pad_to is not None) + (Normalize(),)
    augment = (RandomCrop((28, 28), padding=2),) if cfg.augment else ()
    train = train_loader(mnist("train"), batch_size=cfg.batch_size, transforms=augment + norm, seed=seed,
                         mesh=mesh, rules=rules, num_threads=cfg.num_threads)
    test = eval_loader(mnist("test"), batch_size=cfg.eval_batch_size, transforms=norm, mesh=mesh, rules=rules)
    return train, _eval_factory(test), _mnist_info(cfg)


def _captioned_mnist(cfg: CaptionedMnistData, mesh: Mesh, rules: Mapping[str, Any], seed: int) -> Built:
    tokenizer = CaptionTokenizer.from_templates(cfg.phrasings)
    train_codes, train_labels, info = read_codes(cfg.codes, "train")
    test_codes, test_labels, _ = read_codes(cfg.codes, "test")
    n_embed = info["n_embed"]
    train_rows = CaptionedCodes(train_codes, train_labels, cfg.phrasings, tokenizer, text_len=cfg.text_len)
    eval_rows = CaptionedCodes(test_codes, test_labels, cfg.held_out_phrasings, tokenizer, text_len=cfg.text_len)
    log.info("data: %s for training, %s held out", train_rows, eval_rows)
    train = train_loader(train_rows, batch_size=cfg.batch_size, seed=seed, mesh=mesh, rules=rules,
                         num_threads=cfg.num_threads)
    test = eval_loader(grain.MapDataset.source(eval_rows), batch_size=cfg.eval_batch_size, mesh=mesh, rules=rules)
    return train, _eval_factory(test), DataInfo("text_to_image", vocab_size=tokenizer.vocab_size,
                                                seq_len=cfg.text_len, image_vocab_size=n_embed,
                                                image_len=train_codes.shape[1])


def _image_folder(cfg: ImageFolderData, mesh: Mesh, rules: Mapping[str, Any], seed: int) -> Built:
    folder = ImageFolderSource(cfg.train_dir, mode="RGB")
    source = grain.MapDataset.source(folder)
    resize, norm = Resize(cfg.image_size), Normalize(mean=0.5, std=0.25)
    augment = (RandomFlip(), RandomCrop(cfg.image_size, padding=max(cfg.image_size) // 8)) if cfg.augment else ()
    train = train_loader(source, batch_size=cfg.batch_size, transforms=(resize,) + augment + (norm,), seed=seed,
                         mesh=mesh, rules=rules, num_threads=cfg.num_threads)
    test = None
    if cfg.eval_dir:
        test = eval_loader(image_folder(cfg.eval_dir, mode="RGB"), batch_size=cfg.eval_batch_size,
                           transforms=(resize, norm), mesh=mesh, rules=rules)
    return train, _eval_factory(test), DataInfo("classification", num_classes=len(folder.classes),
                                                image_shape=(*cfg.image_size, 3),
                                                class_names=tuple(str(c) for c in folder.classes))


def _text(cfg: TextData, mesh: Mesh, rules: Mapping[str, Any], seed: int) -> Built:
    files = [Path(f) for f in cfg.files] if cfg.files else stdlib_text_files(cfg.stdlib_limit)
    if cfg.tokenizer == "bytes":
        tokenize, vocab = ByteTokenize(), 256
    else:
        tokenize = Tokenize(cfg.tokenizer)
        vocab = tokenize.vocab_size
    train_docs, eval_docs, held_out = split_documents(files, cfg.eval_fraction, tokenize)
    length = cfg.seq_len + 1  # inputs are tokens[:-1], targets tokens[1:]
    train_rows = TokenChunks(train_docs, length)
    eval_rows = TokenChunks(eval_docs, length, pad_last=True)
    log.info("data: %s for training, %s held out (%s)", train_rows, eval_rows,
             "whole files" if held_out == "files" else f"the last {cfg.eval_fraction:g} of each file")
    train = train_loader(train_rows, batch_size=cfg.batch_size, seed=seed, mesh=mesh, rules=rules,
                         num_threads=cfg.num_threads)
    eval_source = grain.MapDataset.source(eval_rows)
    if cfg.eval_rows is not None:
        eval_source = eval_source[:cfg.eval_rows]
    test = eval_loader(eval_source, batch_size=cfg.eval_batch_size, mesh=mesh, rules=rules)
    return train, _eval_factory(test), DataInfo("language_model", vocab_size=vocab, seq_len=cfg.seq_len)


def _text_classification(cfg: TextClassificationData, mesh: Mesh, rules: Mapping[str, Any], seed: int) -> Built:
    if cfg.train_file is None and cfg.eval_file is not None:
        raise ConfigError("data.eval_file is set but data.train_file is not; give both (or neither, for the "
                          "built-in docstring task).")
    if cfg.train_file is None:
        train_source, classes = python_docstrings("train", cfg.packages), tuple(cfg.packages)
        eval_source = python_docstrings("test", cfg.packages)
    else:
        train_source, classes = jsonl_texts(cfg.train_file)
        eval_source = jsonl_texts(cfg.eval_file, classes)[0] if cfg.eval_file else None
    encode = EncodeText(cfg.tokenizer, cfg.seq_len)
    sample = [train_source[i]["text"] for i in range(min(len(train_source), 10_000))]
    cut = count_truncated(sample, cfg.tokenizer, cfg.seq_len)
    if cut:
        log.warning("data.seq_len = %d cuts %d of %d%s training texts (%.1f %%); raise data.seq_len to keep them "
                    "whole.", cfg.seq_len, cut, len(sample), "" if len(sample) == len(train_source) else " sampled",
                    100 * cut / len(sample))
    train = train_loader(train_source, batch_size=cfg.batch_size, transforms=(encode,), seed=seed, mesh=mesh,
                         rules=rules, num_threads=cfg.num_threads)
    test = None
    if eval_source is not None:
        test = eval_loader(eval_source, batch_size=cfg.eval_batch_size, transforms=(encode,), mesh=mesh, rules=rules)
    return train, _eval_factory(test), DataInfo("text_classification", num_classes=len(classes),
                                                vocab_size=encode.vocab_size, seq_len=cfg.seq_len,
                                                class_names=tuple(str(c) for c in classes))


_TEXT_TO_IMAGE = ("text_ids", "text_mask", "image_codes")  # the features of pre-encoded text-to-image rows


def _meta_info(meta: Mapping[str, Any], path: str) -> DataInfo:
    """The ``DataInfo`` a prepared folder's ``metadata.json`` describes (no record is read)."""
    features = meta.get("features", {})
    extra = {**meta.get("info", {}), **meta}  # vocab_size etc.: under "info" (write_split) or top level
    if "image" in features:
        shape = tuple(features["image"].get("shape", ())) or None
        classes = extra.get("classes") or ()  # prepare images: info.classes
        num_classes = extra.get("num_classes") or len(classes) or None
        names = tuple(str(c) for c in classes) or None
        return DataInfo("classification", num_classes=num_classes, image_shape=shape, class_names=names)
    if any(k in features for k in _TEXT_TO_IMAGE):
        shapes = {k: tuple(features.get(k, {}).get("shape") or ()) for k in _TEXT_TO_IMAGE}
        vocab = {k: extra.get(k) for k in ("vocab_size", "image_vocab_size")}
        bad = [k for k, s in shapes.items() if len(s) != 1 or s[0] is None]
        if bad or shapes["text_ids"] != shapes["text_mask"] or None in vocab.values():
            raise DataError(
                f"{path}: text-to-image rows need features text_ids (S,), text_mask (S,) and image_codes (N,) of "
                f"fixed length and info vocab_size and image_vocab_size; metadata.json has shapes {shapes} and "
                f"{vocab}. Re-prepare with data.write_split(out, split, rows, info={{'vocab_size': ..., "
                f"'image_vocab_size': ...}}) and rows of equal length.")
        return DataInfo("text_to_image", vocab_size=vocab["vocab_size"], seq_len=shapes["text_ids"][0],
                        image_vocab_size=vocab["image_vocab_size"], image_len=shapes["image_codes"][0])
    return DataInfo("language_model", vocab_size=extra.get("vocab_size"))


def _prepared_info(cfg: PreparedData) -> DataInfo | None:
    """From ``metadata.json`` alone, where it tells every shape (images, text-to-image rows); None for
    token rows, whose length only the data tells."""
    info = _meta_info(read_metadata(cfg.path), cfg.path)
    complete = info.task == "text_to_image" or (info.image_shape is not None and None not in info.image_shape)
    return info if complete else None


def _prepared(cfg: PreparedData, mesh: Mesh, rules: Mapping[str, Any], seed: int) -> Built:
    meta = read_metadata(cfg.path)
    info = _meta_info(meta, cfg.path)
    source = load_prepared(cfg.path, cfg.train_split, skip_corrupt=cfg.skip_corrupt)
    norm = (Normalize(),) if info.task == "classification" else ()
    train = train_loader(source, batch_size=cfg.batch_size, transforms=norm, seed=seed, mesh=mesh, rules=rules,
                         num_threads=cfg.num_threads)
    test = None
    if cfg.eval_split:
        test = eval_loader(load_prepared(cfg.path, cfg.eval_split), batch_size=cfg.eval_batch_size,
                           transforms=norm, mesh=mesh, rules=rules)
    return train, _eval_factory(test), info


class DatasetEntry(NamedTuple):
    """One row of ``DATASETS``.

    ``config``: the config class; ``build(config, mesh, rules, seed) -> Built``;
    ``info(config) -> DataInfo | None``: the ``DataInfo`` without reading any data,
    where the config alone tells it (``baobab plan`` uses it; None: build the data).
    """

    config: type[Config]
    build: Callable[..., Built]
    info: Optional[Callable[[Any], Optional[DataInfo]]] = None


def _mnist_info(cfg: MnistData) -> DataInfo:
    side = cfg.pad_to or 28
    return DataInfo("classification", num_classes=10, image_shape=(side, side, 1), class_names=_DIGITS)


def _text_info(cfg: TextData) -> DataInfo:
    vocab = 256 if cfg.tokenizer == "bytes" else Tokenize(cfg.tokenizer).vocab_size  # loads the file, reads no text
    return DataInfo("language_model", vocab_size=vocab, seq_len=cfg.seq_len)


#: The one table from ``data.kind`` to its config class and builder. Adding a kind is
#: its config class and builder (a file of their own) plus one entry here.
DATASETS: dict[str, DatasetEntry] = {
    "mnist": DatasetEntry(MnistData, _mnist, _mnist_info),
    "image_folder": DatasetEntry(ImageFolderData, _image_folder),
    "text": DatasetEntry(TextData, _text, _text_info),
    "text_classification": DatasetEntry(TextClassificationData, _text_classification),
    "prepared": DatasetEntry(PreparedData, _prepared, _prepared_info),
    "captioned_mnist": DatasetEntry(CaptionedMnistData, _captioned_mnist),
}

#: The ``data`` section of an experiment config: any config in ``DATASETS``, by ``kind``.
DataConfig = kind_field(DATASETS, "data", lambda entry: entry.config)


def build_data(config: Config, *, mesh: Mesh, rules: Mapping[str, Any], seed: int = 0) -> Built:
    """``(train_loader, eval_iterator_factory or None, DataInfo)`` for a data section."""
    kind = getattr(config, "kind", None)
    if kind not in DATASETS:
        raise ConfigError(f"data.kind = {kind!r}: unknown; valid kinds: {sorted(DATASETS)}")
    return DATASETS[kind].build(config, mesh, rules, seed)


def data_info(config: Config) -> DataInfo | None:
    """The ``DataInfo`` of a data section from the config alone, or None if only the data tells."""
    entry = DATASETS.get(getattr(config, "kind", None))
    return entry.info(config) if entry is not None and entry.info is not None else None
