"""BERT (Devlin et al. 2018): a post-norm transformer encoder, in one file; it also covers MiniLM.

Word, position and token-type embeddings summed and normalised, then
``num_layers`` encoder layers (self-attention with a padding mask, add & LayerNorm,
GELU MLP, add & LayerNorm), an optional pooler (``tanh(dense(h[:, 0]))``) and an
optional classifier on the pooled vector. ``mean_pool`` turns hidden states into
sentence embeddings, as sentence-transformers does (all-MiniLM-L6-v2 is this model
with ``hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536``).

Parameter paths copy Hugging Face ``BertModel`` (``models.hf.bert_names(config)`` is the
import table; a ``bert.`` prefix, as in ``BertForSequenceClassification``, is stripped).
Linear weights are stored ``(in, out)``, the transpose of HF's:

====================================================  ============================================
Hugging Face                                          baobab
====================================================  ============================================
``embeddings.word_embeddings.weight`` (V, D)          same
``embeddings.position_embeddings.weight``             same
``embeddings.token_type_embeddings.weight``           same
``embeddings.LayerNorm.weight`` / ``bias``            same
``encoder.layer.{i}.attention.self.query`` / key/value  ``encoder.layer[i].attention.self.query`` ...
``encoder.layer.{i}.attention.output.dense`` / ``LayerNorm``  same pattern
``encoder.layer.{i}.intermediate.dense``              same pattern
``encoder.layer.{i}.output.dense`` / ``LayerNorm``    same pattern
``pooler.dense``                                      same (``pooler=True``)
``classifier`` (``BertForSequenceClassification``)   same (``num_classes > 0``)
====================================================  ============================================

Attention is written out here (``BertSelfAttention``) because HF names its
projections ``query/key/value``, not ``nn.MultiHeadAttention``'s ``q/k/v/o``.
There is no attention-probability dropout.

>>> import jax, jax.numpy as jnp
>>> from baobab.models import Bert, BertConfig, mean_pool
>>> config = BertConfig(vocab_size=100, max_len=32, hidden_size=32, num_layers=2, num_heads=4,
...                     intermediate_size=64)
>>> model = Bert(config, key=jax.random.key(0))
>>> ids = jnp.array([[5, 6, 7, 0], [8, 9, 0, 0]])  # (B, T), 0-padded
>>> mask = ids != 0  # (B, T): True for real tokens
>>> hidden = model(ids, mask)  # no classifier: the last hidden states
>>> hidden.shape, mean_pool(hidden, mask).shape
((2, 4, 32), (2, 32))
"""

from __future__ import annotations

import functools
from typing import ClassVar, Literal

import einops
import jax
import jax.numpy as jnp
import pydantic

from baobab import nn
from baobab.config import Config

__all__ = ["BertConfig", "Bert", "BertLayer", "mean_pool"]

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # HF "gelu" (erf), BERT's
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # HF "gelu_new"
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


class BertConfig(Config):
    """BERT. The defaults are BERT-base (110M parameters, with the pooler).

    Hugging Face ``BertConfig`` names in brackets: ``vocab_size``, ``max_len``
    [max_position_embeddings], ``type_vocab_size``, ``hidden_size``, ``num_layers``
    [num_hidden_layers], ``num_heads`` [num_attention_heads], ``intermediate_size``,
    ``activation`` [hidden_act], ``norm_eps`` [layer_norm_eps], ``dropout``
    [hidden_dropout_prob; attention dropout is not implemented]. ``pooler`` is HF's
    ``add_pooling_layer``; ``num_classes > 0`` adds a ``classifier`` on the pooled
    ``[CLS]`` vector, as ``BertForSequenceClassification``.
    """

    kind: Literal["bert"] = "bert"
    tasks: ClassVar[tuple[str, ...]] = ("text_classification",)  # the baobab.tasks it can run
    vocab_size: int = pydantic.Field(30522, gt=0)
    max_len: int = pydantic.Field(512, gt=0)
    type_vocab_size: int = pydantic.Field(2, gt=0)
    hidden_size: int = pydantic.Field(768, gt=0)
    num_layers: int = pydantic.Field(12, gt=0)
    num_heads: int = pydantic.Field(12, gt=0)
    intermediate_size: int = pydantic.Field(3072, gt=0)
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu"
    norm_eps: float = pydantic.Field(1e-12, gt=0.0)
    dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    pooler: bool = True
    num_classes: int = pydantic.Field(0, ge=0, description="0: no classifier")

    @pydantic.model_validator(mode="after")
    def _fits(self) -> "BertConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}.")
        if self.num_classes and not self.pooler:
            raise ValueError("num_classes > 0 needs pooler=True: the classifier reads the pooled [CLS] vector.")
        return self


def _linear(d_in: int, d_out: int, axes: tuple[str, str], *, key: jax.Array) -> nn.Linear:
    """A ``Linear`` with HF BERT's init: weights ``N(0, 0.02)``, zero bias."""
    return nn.Linear(d_in, d_out, key=key, axes=axes, weight_init=jax.nn.initializers.normal(0.02),
                     bias_init=jax.nn.initializers.zeros)


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Average of the hidden states over real tokens: ``(B, T, D), (B, T) -> (B, D)``.

    sentence-transformers' mean pooling (``clamp(count, 1e-9)``); L2-normalise the
    result for cosine similarity.

    >>> import jax.numpy as jnp
    >>> mean_pool(jnp.arange(6.0).reshape(1, 3, 2), jnp.array([[1, 1, 0]])).tolist()
    [[1.0, 2.0]]
    """
    m = jnp.asarray(mask).astype(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1e-9)  # (B, D)


# ----------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """``LayerNorm(word + position + token_type)``: ids ``(B, T)`` -> ``(B, T, D)``."""

    word_embeddings: nn.Embedding
    position_embeddings: nn.Embedding
    token_type_embeddings: nn.Embedding
    LayerNorm: nn.LayerNorm  # noqa: N815 (HF's name)
    dropout: nn.Dropout

    def __init__(self, config: BertConfig, *, key: jax.Array):
        D, init = config.hidden_size, jax.nn.initializers.normal(0.02)
        self.word_embeddings = nn.Embedding(config.vocab_size, D, key=nn.subkey(key, "word_embeddings"),
                                            weight_init=init)
        self.position_embeddings = nn.Embedding(config.max_len, D, key=nn.subkey(key, "position_embeddings"),
                                                weight_init=init, axes=("length", "embed"))
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, D, weight_init=init,
                                                  key=nn.subkey(key, "token_type_embeddings"),
                                                  axes=(None, "embed"))
        self.LayerNorm = nn.LayerNorm(D, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def __call__(self, ids: jax.Array, token_type_ids: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        positions = jnp.arange(ids.shape[1])  # (T,)
        h = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings(
            token_type_ids)  # (B, T, D)
        return self.dropout(self.LayerNorm(h), key=key)


# ----------------------------------------------------------------------------------------
# Encoder layer
# ----------------------------------------------------------------------------------------


class BertSelfAttention(nn.Module):
    """Multi-head self-attention over unmasked keys: ``(B, T, D), (B, T) -> (B, T, D)``."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    num_heads: int = nn.static()

    def __init__(self, config: BertConfig, *, key: jax.Array):
        D = config.hidden_size
        self.num_heads = config.num_heads
        self.query = _linear(D, D, ("embed", "heads"), key=nn.subkey(key, "query"))
        self.key = _linear(D, D, ("embed", "heads"), key=nn.subkey(key, "key"))
        self.value = _linear(D, D, ("embed", "heads"), key=nn.subkey(key, "value"))

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        split = functools.partial(einops.rearrange, pattern="b t (h d) -> b t h d", h=self.num_heads)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))  # (B, T, H, Dh)
        out = nn.attention(q, k, v, mask=mask[:, None, None, :])  # key padding (B, 1, 1, S)
        return einops.rearrange(out, "b t h d -> b t (h d)")  # (B, T, D)


class BertSelfOutput(nn.Module):
    """``LayerNorm(dropout(dense(a)) + x)``: the attention's projection, residual and norm."""

    dense: nn.Linear
    LayerNorm: nn.LayerNorm  # noqa: N815
    dropout: nn.Dropout

    def __init__(self, config: BertConfig, *, key: jax.Array):
        D = config.hidden_size
        self.dense = _linear(D, D, ("heads", "embed"), key=nn.subkey(key, "dense"))
        self.LayerNorm = nn.LayerNorm(D, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def __call__(self, a: jax.Array, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.LayerNorm(self.dropout(self.dense(a), key=key) + x)  # (B, T, D)


class BertAttention(nn.Module):
    self: BertSelfAttention  # HF's name: paths read attention.self.query
    output: BertSelfOutput

    def __init__(self, config: BertConfig, *, key: jax.Array):
        self.self = BertSelfAttention(config, key=nn.subkey(key, "self"))
        self.output = BertSelfOutput(config, key=nn.subkey(key, "output"))

    def __call__(self, x: jax.Array, mask: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.output(self.self(x, mask), x, key=key)  # (B, T, D)


class BertIntermediate(nn.Module):
    dense: nn.Linear
    activation: str = nn.static()

    def __init__(self, config: BertConfig, *, key: jax.Array):
        self.activation = config.activation
        self.dense = _linear(config.hidden_size, config.intermediate_size, ("embed", "mlp"),
                             key=nn.subkey(key, "dense"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.activation](self.dense(x))  # (B, T, intermediate)


class BertOutput(nn.Module):
    """``LayerNorm(dropout(dense(i)) + h)``: the MLP's projection, residual and norm."""

    dense: nn.Linear
    LayerNorm: nn.LayerNorm  # noqa: N815
    dropout: nn.Dropout

    def __init__(self, config: BertConfig, *, key: jax.Array):
        self.dense = _linear(config.intermediate_size, config.hidden_size, ("mlp", "embed"),
                             key=nn.subkey(key, "dense"))
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def __call__(self, i: jax.Array, h: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.LayerNorm(self.dropout(self.dense(i), key=key) + h)  # (B, T, D)


class BertLayer(nn.Module):
    """Post-norm encoder layer: ``(B, T, D), mask (B, T) -> (B, T, D)``."""

    attention: BertAttention
    intermediate: BertIntermediate
    output: BertOutput

    def __init__(self, config: BertConfig, *, key: jax.Array):
        self.attention = BertAttention(config, key=nn.subkey(key, "attention"))
        self.intermediate = BertIntermediate(config, key=nn.subkey(key, "intermediate"))
        self.output = BertOutput(config, key=nn.subkey(key, "output"))

    def __call__(self, x: jax.Array, mask: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        h = self.attention(x, mask, key=k1)  # (B, T, D)
        return self.output(self.intermediate(h), h, key=k2)  # (B, T, D)


class BertEncoder(nn.Module):
    layer: tuple[BertLayer, ...]

    def __init__(self, config: BertConfig, *, key: jax.Array):
        self.layer = tuple(BertLayer(config, key=nn.subkey(key, f"layer[{i}]")) for i in range(config.num_layers))

    def __call__(self, x: jax.Array, mask: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        keys = [None] * len(self.layer) if key is None else list(jax.random.split(key, len(self.layer)))
        for layer, layer_key in zip(self.layer, keys, strict=True):
            x = layer(x, mask, key=layer_key)  # (B, T, D)
        return x


class BertPooler(nn.Module):
    """``tanh(dense(h[:, 0]))``: ``(B, T, D) -> (B, D)``."""

    dense: nn.Linear

    def __init__(self, config: BertConfig, *, key: jax.Array):
        D = config.hidden_size
        self.dense = _linear(D, D, ("embed", "mlp"), key=nn.subkey(key, "dense"))

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(hidden[:, 0]))  # (B, D)


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------


class Bert(nn.Module):
    """Token ids ``(B, T)`` and a padding mask ``(B, T)`` -> hidden states ``(B, T, D)`` or logits.

    ``model(ids, attention_mask=None, token_type_ids=None, *, key=None, head=True)``:

    * ``attention_mask``: ``(B, T)``, true/1 for real tokens, false/0 for padding
      (HF's convention); ``None`` attends everywhere. Padded positions still get
      outputs; ignore them (``mean_pool`` does).
    * ``token_type_ids``: ``(B, T)`` segment ids, default zeros.
    * Returns the final hidden states ``(B, T, D)`` (HF's ``last_hidden_state``), or,
      with a classifier (``num_classes > 0``) and ``head=True``, the logits
      ``(B, num_classes)`` of ``classifier(dropout(pool(hidden)))``.

    ``encode(...)`` always returns hidden states; ``pool(hidden)`` gives ``pooler_output``.
    With ``config.dropout > 0`` a call in training mode needs ``key=`` (``nn.eval_mode(model)`` turns dropout off).
    """

    embeddings: BertEmbeddings
    encoder: BertEncoder
    pooler: BertPooler | None
    dropout: nn.Dropout
    classifier: nn.Linear | None
    config: BertConfig = nn.static()

    def __init__(self, config: BertConfig, *, key: jax.Array):
        self.config = config
        self.embeddings = BertEmbeddings(config, key=nn.subkey(key, "embeddings"))
        self.encoder = BertEncoder(config, key=nn.subkey(key, "encoder"))
        self.pooler = BertPooler(config, key=nn.subkey(key, "pooler")) if config.pooler else None
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = None
        if config.num_classes:
            self.classifier = _linear(config.hidden_size, config.num_classes, ("embed", "classes"),
                                      key=nn.subkey(key, "classifier"))

    def __call__(self, ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None, *, key: jax.Array | None = None,
                 head: bool = True) -> jax.Array:
        ids = jnp.asarray(ids)
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise nn.ShapeError(
                f"Bert expects integer token ids (B, T), got {ids.dtype}{list(ids.shape)}. "
                f"A single sequence needs ids[None]."
            )
        B, T = ids.shape
        if T > self.config.max_len:
            raise nn.ShapeError(f"Bert got {T} tokens but has max_len={self.config.max_len} positions.")
        for name, extra in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if extra is not None and tuple(jnp.shape(extra)) != (B, T):
                raise nn.ShapeError(f"Bert: {name} must have the ids' shape {(B, T)}, got {tuple(jnp.shape(extra))}.")
        mask = jnp.ones((B, T), bool) if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
        types = jnp.zeros((B, T), jnp.int32) if token_type_ids is None else jnp.asarray(token_type_ids)
        k_emb, k_enc, k_head = (None, None, None) if key is None else jax.random.split(key, 3)
        h = self.embeddings(ids, types, key=k_emb)  # (B, T, D)
        h = self.encoder(h, mask, key=k_enc)  # (B, T, D)
        if not head or self.classifier is None:
            return h
        return self.classifier(self.dropout(self.pooler(h), key=k_head))  # (B, num_classes)

    def encode(self, ids: jax.Array, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None, *, key: jax.Array | None = None) -> jax.Array:
        """``(B, T) -> (B, T, D)``: the final hidden states, without the classifier."""
        return self(ids, attention_mask, token_type_ids, key=key, head=False)

    def pool(self, hidden: jax.Array) -> jax.Array:
        """``(B, T, D) -> (B, D)``: HF's ``pooler_output``, ``tanh(dense(hidden[:, 0]))``."""
        if self.pooler is None:
            raise ValueError("This Bert has no pooler; build it with BertConfig(pooler=True).")
        return self.pooler(hidden)
