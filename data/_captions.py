"""Captioned digits for text-to-image: MNIST labels turned into phrases, images into VQGAN codes.

A caption comes from a template with ``{word}`` (``seven``) and ``{digit}`` (``7``)
placeholders, e.g. ``"a handwritten {word}"`` or ``"the digit {digit}"``. Training pairs
every training image with every training template; evaluation pairs every test image
with every held-out template, so the eval loss measures phrasings the model never saw.

``CaptionTokenizer`` is word-level: lower-cased words and punctuation marks, with ids
``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2, ``<unk>`` = 3 (BART's order, which DalleBart
keeps), then the words of the training templates and the ten digits' words and
numerals, sorted. A word only a held-out template has is ``<unk>``. The empty prompt,
which super-conditioning needs, is ``[<s>, </s>]``.

>>> tok = CaptionTokenizer.from_templates(["a handwritten {word}", "the digit {digit}"])
>>> ids, mask = tok.encode(["a handwritten seven", "the numeral 7"], length=6)
>>> ids.tolist()
[[0, 14, 19, 22, 2, 1], [0, 24, 3, 11, 2, 1]]
>>> mask.tolist()[1]
[True, True, True, True, True, False]
>>> caption("number {word}, written by hand", 3)
'number three, written by hand'
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from ._errors import DataError

__all__ = ["DIGIT_WORDS", "caption", "CaptionTokenizer", "CaptionedCodes"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BOS, PAD, EOS, UNK = range(4)
_WORDS = re.compile(r"\w+|[^\w\s]")


def caption(template: str, label: int) -> str:
    """The template with ``{word}`` / ``{digit}`` filled in for digit ``label``."""
    if "{word}" not in template and "{digit}" not in template:
        raise DataError(f"caption template {template!r} names no digit: put {{word}} (seven) or {{digit}} (7) in it.")
    return template.replace("{word}", DIGIT_WORDS[label]).replace("{digit}", str(label))


def _split(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


class CaptionTokenizer:
    """Word-level ids for captions; see the module docstring."""

    def __init__(self, words: Sequence[str]):
        self.vocab = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def from_templates(cls, templates: Iterable[str]) -> "CaptionTokenizer":
        words = [w for t in templates for w in _split(t.replace("{word}", " ").replace("{digit}", " "))]
        return cls(words + list(DIGIT_WORDS) + [str(d) for d in range(10)])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, texts: Sequence[str], *, length: int) -> tuple[np.ndarray, np.ndarray]:
        """``(len(texts), length)`` int32 ids and bool mask (``False`` on padding).

        A caption longer than ``length - 2`` words is refused (never cut silently).
        """
        ids = np.full((len(texts), length), PAD, np.int32)
        for row, text in enumerate(texts):
            tokens = [BOS] + [self.ids.get(w, UNK) for w in _split(text)] + [EOS]
            if len(tokens) > length:
                raise DataError(f"caption {text!r} is {len(tokens)} tokens with <s> and </s>, more than "
                                f"data.text_len = {length}; raise data.text_len or shorten it.")
            ids[row, :len(tokens)] = tokens
        return ids, ids != PAD

    def empty(self, *, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The empty prompt ``[<s>, </s>]``, ``(1, length)``: what guidance compares against."""
        return self.encode([""], length=length)


class CaptionedCodes:
    """Random-access pairs ``(image i, template j)``: ``{"text_ids", "text_mask", "image_codes", "label"}``.

    ``codes`` ``(N, image_len)`` int32 and ``labels`` ``(N,)``; row ``k`` is image
    ``k // len(templates)`` with template ``k % len(templates)``.
    """

    def __init__(self, codes: np.ndarray, labels: np.ndarray, templates: Sequence[str], tokenizer: CaptionTokenizer,
                 *, text_len: int):
        if len(codes) != len(labels):
            raise DataError(f"{len(codes)} code rows for {len(labels)} labels")
        self.codes, self.labels, self.templates = codes, labels, list(templates)
        self.text = {(d, j): tokenizer.encode([caption(t, d)], length=text_len)
                     for d in range(10) for j, t in enumerate(self.templates)}  # all captions, checked up front

    def __len__(self) -> int:
        return len(self.codes) * len(self.templates)

    def __getitem__(self, k: int) -> dict[str, np.ndarray]:
        image, template = divmod(int(k), len(self.templates))
        label = int(self.labels[image])
        ids, mask = self.text[label, template]
        return {"text_ids": ids[0], "text_mask": mask[0], "image_codes": self.codes[image],
                "label": np.int32(label)}

    def __repr__(self) -> str:
        return f"CaptionedCodes({len(self.codes)} images x {len(self.templates)} phrasings)"


def mnist_codes(vqgan_run: str, split: str, *, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray, int]:
    """The embedded MNIST ``split`` through a trained VQGAN run: ``(codes (N, h*w), labels (N,), n_embed)``.

    The digits are padded to the VQGAN's resolution and scaled to [0, 1], as its
    training data was (``MnistData(pad_to=...)``).
    """
    import jax

    from baobab import runs  # a run reader: imported here, since baobab.runs imports baobab.data

    from ._image import CenterPad, Normalize
    from ._mnist import mnist

    config = runs.load_run(vqgan_run)
    if config.model.kind != "vqgan":
        raise DataError(f"data.vqgan_run = {vqgan_run!r} is a {config.model.kind!r} run, not a VQGAN run: point it at "
                        f"a finished `baobab train configs/vqgan_mnist.py` run directory.")
    model, _ = runs.restore_model(config)
    side = config.model.resolution
    source = mnist(split)
    pad, norm = CenterPad((side, side)), Normalize()
    images = np.stack([norm(pad(source[i]))["image"] for i in range(len(source))])  # (N, side, side, 1)
    labels = np.array([source[i]["label"] for i in range(len(source))], np.int32)
    encode = jax.jit(lambda m, x: m.quantize.codes(m.encode(x)))
    codes = np.concatenate([np.asarray(encode(model, images[i:i + batch_size]))
                            for i in range(0, len(images), batch_size)])
    return codes.astype(np.int32).reshape(len(images), -1), labels, config.model.n_embed
