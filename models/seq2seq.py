"""Sampling from an encoder-decoder: encode once, then decode token by token with the cache.

Works with any model that keeps the encoder-decoder contract of ``models.bart``:
``encode(input_ids, attention_mask) -> states``, ``init_cache(states, attention_mask,
*, max_len) -> cache`` and ``decode(decoder_ids, cache) -> (logits, cache)`` (BART, and
DalleBart). ``generate_seq2seq`` is one jitted function: the encoder, the cache (the
cross-attention keys and values are computed once), then ``lax.scan`` over the new
tokens, so no step recompiles.

Greedy by default; ``temperature``, ``top_k`` and ``top_p`` sample as
``models.generate.sample_logits``. A row that emits ``eos_token_id`` repeats it
(``models.generate``'s rule; Hugging Face writes ``pad_token_id`` after it instead).

>>> import jax, jax.numpy as jnp
>>> from baobab.models import Bart, BartConfig, generate_seq2seq
>>> config = BartConfig(vocab_size=40, max_len=16, hidden_size=16, encoder_layers=1, decoder_layers=1,
...                     encoder_heads=2, decoder_heads=2, encoder_ffn_size=32, decoder_ffn_size=32)
>>> model = Bart(config, key=jax.random.key(0))
>>> ids = jnp.array([[5, 6, 7, 2], [8, 9, 2, 1]])  # (B, S), right-padded with pad id 1
>>> out = generate_seq2seq(model, ids, ids != 1, max_new_tokens=6)  # greedy
>>> out.shape, out[:, 0].tolist()  # the start token, then 6 new ones
((2, 7), [2, 2])
>>> generate_seq2seq(model, ids, ids != 1, max_new_tokens=6, temperature=0.8, top_k=10,
...                  key=jax.random.key(1)).shape
(2, 7)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .generate import sample_logits

__all__ = ["generate_seq2seq"]


@functools.partial(jax.jit, static_argnames=("steps", "start", "eos", "temperature", "top_k", "top_p"))
def _generate(model, input_ids, attention_mask, key, *, steps: int, start: int, eos: int | None,
              temperature: float, top_k: int | None, top_p: float | None) -> jax.Array:
    states = model.encode(input_ids, attention_mask)  # (B, S, D)
    cache = model.init_cache(states, attention_mask, max_len=steps)
    B = input_ids.shape[0]
    first = jnp.full((B,), start, jnp.int32)

    def step(carry, step_key):
        token, done, cache = carry
        logits, cache = model.decode(token[:, None], cache)  # (B, 1, V)
        new = sample_logits(logits[:, -1], step_key, temperature=temperature, top_k=top_k, top_p=top_p)  # (B,)
        if eos is not None:
            new = jnp.where(done, eos, new)
            done = done | (new == eos)
        return (new, done, cache), new

    _, tokens = jax.lax.scan(step, (first, jnp.zeros((B,), bool), cache), jax.random.split(key, steps))
    return jnp.concatenate([first[:, None], tokens.T], axis=1)  # (B, 1 + steps)


def generate_seq2seq(model, input_ids: jax.Array, attention_mask: jax.Array, *, max_new_tokens: int,
                     decoder_start_token_id: int | None = None, eos_token_id: int | None = None,
                     key: jax.Array | None = None, temperature: float = 0.0, top_k: int | None = None,
                     top_p: float | None = None) -> jax.Array:
    """Decoder tokens ``(B, 1 + max_new_tokens)`` int32 for ``input_ids`` ``(B, S)``: the start token
    then the new ones (Hugging Face ``generate``'s output for encoder-decoders).

    ``attention_mask`` ``(B, S)``: True (or 1) on real tokens. ``decoder_start_token_id``
    defaults to ``model.config.decoder_start_token_id``. ``eos_token_id`` (default: none,
    every row runs ``max_new_tokens``) ends a row, which then repeats it. ``temperature=0``
    is greedy; sampling needs ``key``. Put the model in ``nn.eval_mode`` first if it has dropout.
    """
    config = getattr(model, "config", None)
    start = decoder_start_token_id if decoder_start_token_id is not None else getattr(
        config, "decoder_start_token_id", None)
    if start is None:
        raise ValueError("generate_seq2seq: no decoder_start_token_id given and the model's config has none; "
                         "pass decoder_start_token_id= (BART: 2).")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"generate_seq2seq: max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    limit = getattr(config, "max_len", None)
    if limit is not None and max_new_tokens > limit:
        raise ValueError(f"generate_seq2seq: max_new_tokens={max_new_tokens} needs {max_new_tokens} decoder "
                         f"positions but the model has max_len={limit}.")
    if temperature < 0:
        raise ValueError(f"generate_seq2seq: temperature must be >= 0 (0 is greedy), got {temperature}.")
    if temperature > 0 and key is None:
        raise ValueError(f"generate_seq2seq: sampling (temperature={temperature}) needs key=jax.random.key(...).")
    input_ids = jnp.asarray(input_ids)
    attention_mask = jnp.asarray(attention_mask)
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"generate_seq2seq: expected input_ids (B, S) and an attention_mask of the same shape, got "
                         f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}.")
    key = jax.random.key(0) if key is None else key  # unused when greedy
    return _generate(model, input_ids, attention_mask.astype(bool), key, steps=max_new_tokens, start=int(start),
                     eos=None if eos_token_id is None else int(eos_token_id), temperature=float(temperature),
                     top_k=top_k, top_p=top_p)
