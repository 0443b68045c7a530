"""Sampling from a language model with its KV cache: greedy, temperature, top-k and top-p.

Works with any model that has ``init_cache(batch, max_len)`` and
``model.decode(ids, cache) -> (logits, cache)`` (``GPT2`` and ``Llama``). The whole
loop is one jitted function: a prefill of the prompt, then ``lax.scan`` over the
new tokens, one position per step.

>>> import jax, jax.numpy as jnp
>>> from baobab.models import GPT2, GPT2Config, generate
>>> model = GPT2(GPT2Config(vocab_size=50, max_len=32, hidden_size=32, num_layers=1, num_heads=2),
...              key=jax.random.key(0))
>>> prompt = jnp.array([[1, 2, 3]])  # (B, T0)
>>> generate(model, prompt, 5).shape  # greedy: the prompt and 5 new tokens
(1, 8)
>>> generate(model, prompt, 5, temperature=0.8, top_p=0.9, key=jax.random.key(1)).shape
(1, 8)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from baobab import nn
from baobab.errors import ConfigError

__all__ = ["generate", "sample_logits"]


def sample_logits(logits: jax.Array, key: jax.Array | None, *, temperature: float = 0.0,
                  top_k: int | None = None, top_p: float | None = None) -> jax.Array:
    """Pick one token per row: ``(B, V) -> (B,)`` int32.

    ``temperature=0`` is greedy (``argmax``; ``key`` unused). Otherwise the logits are
    divided by ``temperature``, restricted to the ``top_k`` most likely tokens and to
    the smallest set whose probability reaches ``top_p`` (nucleus), then sampled.

    >>> import jax.numpy as jnp
    >>> sample_logits(jnp.array([[0.0, 3.0, 1.0]]), None).tolist()
    [1]
    """
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature  # (B, V)
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # (B, 1), the k-th largest
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None:
        order = jnp.argsort(-logits, axis=-1)  # (B, V), most likely first
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability of the more likely tokens
        sorted_logits = jnp.where(before < top_p, sorted_logits, -jnp.inf)  # keeps at least the first
        logits = jnp.full_like(logits, -jnp.inf).at[jnp.arange(logits.shape[0])[:, None], order].set(sorted_logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def generate(model, prompt_ids: jax.Array, steps: int, *, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, key: jax.Array | None = None, eos_id: int | None = None,
             cache_dtype=jnp.float32) -> jax.Array:
    """Extend ``prompt_ids`` ``(B, T0)`` by ``steps`` tokens: returns ``(B, T0 + steps)`` int32.

    Greedy when ``temperature == 0`` (the default); sampling needs a ``key``. All
    prompts in the batch have the same length (no padding). After a row emits
    ``eos_id`` it repeats ``eos_id``. The cache holds exactly ``T0 + steps`` positions,
    which must fit the model's ``config.max_len``. The model runs in evaluation mode
    (``nn.eval_mode``), so dropout is off whatever mode it was given in.
    """
    prompt_ids = jnp.asarray(prompt_ids)
    if prompt_ids.ndim != 2 or not jnp.issubdtype(prompt_ids.dtype, jnp.integer):
        raise ConfigError(
            f"generate: prompt_ids must be integer (B, T0), got {prompt_ids.dtype}{list(prompt_ids.shape)}.")
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"generate: steps must be a positive int, got {steps!r}.")
    if temperature < 0:
        raise ConfigError(f"generate: temperature must be >= 0 (0 is greedy), got {temperature}.")
    if temperature > 0 and key is None:
        raise ConfigError("generate: sampling (temperature > 0) needs key=jax.random.key(...).")
    if top_k is not None and not 1 <= top_k <= model.config.vocab_size:
        raise ConfigError(f"generate: top_k must be in [1, vocab_size={model.config.vocab_size}], got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"generate: top_p must be in (0, 1], got {top_p}.")
    total = prompt_ids.shape[1] + steps
    if total > model.config.max_len:
        raise ConfigError(
            f"generate: the prompt ({prompt_ids.shape[1]} tokens) plus {steps} steps is {total} positions, "
            f"more than the model's max_len={model.config.max_len}."
        )
    key = jax.random.key(0) if key is None else key  # unused when greedy
    model = nn.eval_mode(model)  # inference: dropout off, BatchNorm on running statistics
    return _generate(model, prompt_ids.astype(jnp.int32), key, steps=steps, temperature=float(temperature),
                     top_k=top_k, top_p=top_p, eos_id=eos_id, cache_dtype=cache_dtype)


@functools.partial(jax.jit, static_argnames=("steps", "temperature", "top_k", "top_p", "eos_id", "cache_dtype"))
def _generate(model, prompt_ids, key, *, steps, temperature, top_k, top_p, eos_id, cache_dtype):
    B, T0 = prompt_ids.shape
    pick = functools.partial(sample_logits, temperature=temperature, top_k=top_k, top_p=top_p)
    cache = model.init_cache(B, T0 + steps, dtype=cache_dtype)
    logits, cache = model.decode(prompt_ids, cache)  # (B, T0, V): the prefill
    first = pick(logits[:, -1], jax.random.fold_in(key, 0))  # (B,)
    done = jnp.zeros((B,), bool) if eos_id is None else first == eos_id

    def step(carry, i):
        token, cache, done = carry
        logits, cache = model.decode(token[:, None], cache)  # (B, 1, V)
        new = pick(logits[:, -1], jax.random.fold_in(key, i))  # (B,)
        if eos_id is not None:
            new = jnp.where(done, eos_id, new)
            done = done | (new == eos_id)
        return (new, cache, done), new

    _, rest = jax.lax.scan(step, (first, cache, done), jnp.arange(1, steps))  # (steps - 1, B)
    return jnp.concatenate([prompt_ids, first[:, None], rest.T], axis=1)  # (B, T0 + steps)
