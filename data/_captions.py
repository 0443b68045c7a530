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

__all__ = ["DIGIT_WORDS", "caption", "CaptionTokenizer", "CaptionedCodes", "read_codes"]

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



def read_codes(folder: str, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """A folder made by ``baobab data encode-images``: ``(codes (N, h*w) int32, labels (N,), info)``.

    ``info`` holds ``n_embed`` (the codebook size), ``latent_size`` and ``vqgan_run``.
    """
    from ._metadata import read_metadata
    from ._prepared import load_prepared

    info = read_metadata(folder).get("info", {})
    missing = [k for k in ("n_embed", "vqgan_run") if k not in info]
    if missing:
        raise DataError(f"{folder}: its metadata.json has no {', '.join(missing)} in 'info': this is not a folder "
                        f"of image codes. Make one with `baobab data encode-images VQGAN_RUN --out {folder}`.")
    rows = load_prepared(folder, split)
    codes = np.stack([np.asarray(rows[i]["image_codes"], np.int32) for i in range(len(rows))])
    labels = np.array([rows[i]["label"] for i in range(len(rows))], np.int32)
    return codes, labels, info
