"""Sampling from a language model with its KV cache: greedy, temperature, top-k and top-p.

Works with any model that has ``init_cache(batch, max_len)``, ``model.decode(ids,
cache, positions=) -> (logits, cache)`` and ``model(ids, segment_ids=, positions=)``
(every zoo LM). ``generate`` is one jitted function: a prefill of the prompt, then
``lax.scan`` over the new tokens; ``generate_stream`` runs the same steps one at a time
and yields each token as it is made.

* **Batched prompts of different lengths**: left-pad them and pass ``prompt_mask``
  (``False`` on padding); padding gets position -1 and is never attended to, so each
  row continues exactly as it would alone.
* **Past the context** (``prompt + steps > config.max_len``): a model whose
  ``init_cache`` takes ``rolling=`` (RoPE models: Llama and its variants) decodes with a
  rolling cache of ``max_len`` tokens, i.e. every layer attends to a sliding window of
  the most recent ``max_len`` tokens (exact for a model whose layers all have a shorter
  ``sliding_window``, like Mistral; Gemma 3's global layers then see the last
  ``max_len`` tokens instead of all); a model with learned positions (GPT-2) fills its cache,
  then re-reads the last ``max_len`` tokens for each new one (positions restarting at
  the window's start), as nanoGPT's sampler does.
* **Stopping**: a row that emits ``eos_id`` repeats it; text-level stop strings are
  ``baobab generate --stop`` (``commands.generate_text``).

>>> import jax, jax.numpy as jnp
>>> from baobab.models import GPT2, GPT2Config, generate
>>> model = GPT2(GPT2Config(vocab_size=50, max_len=32, hidden_size=32, num_layers=1, num_heads=2),
...              key=jax.random.key(0))
>>> prompt = jnp.array([[1, 2, 3]])  # (B, T0)
>>> generate(model, prompt, 5).shape  # greedy: the prompt and 5 new tokens
(1, 8)
>>> generate(model, prompt, 5, temperature=0.8, top_p=0.9, key=jax.random.key(1)).shape
(1, 8)
>>> generate(model, prompt, 40).shape  # past max_len=32: a sliding window
(1, 43)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from baobab import nn
from baobab.errors import ConfigError

__all__ = ["generate", "generate_stream", "sample_logits"]


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


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The static shape of one generation: what the cache holds and how many steps use it."""

    total: int  # prompt + new tokens
    start: int  # prompt columns before the prefill window (cropped off a too-long prompt)
    cache_len: int
    rolling: bool
    cached_steps: int  # decode steps after the prefill that use the cache
    window_steps: int  # then: steps re-reading the last max_len tokens (learned positions)
    window: int  # max_len
    temperature: float
    top_k: int | None
    top_p: float | None
    eos_id: int | None
    cache_dtype: object


def _plan(model, prompt_len: int, steps: int, **sampling) -> _Plan:
    total, window = prompt_len + steps, model.config.max_len
    if total <= window:
        return _Plan(total, 0, total, False, steps - 1, 0, window, **sampling)
    if "rolling" in inspect.signature(model.init_cache).parameters:
        return _Plan(total, 0, window, True, steps - 1, 0, window, **sampling)
    start = max(0, prompt_len - window)  # only the last max_len prompt tokens fit the positions
    cached = window - (prompt_len - start)
    return _Plan(total, start, window, False, cached, steps - 1 - cached, window, **sampling)


class _State(NamedTuple):
    seq: jax.Array  # (B, total) int32: prompt, then the tokens made so far
    real: jax.Array  # (B, total) bool: False on the prompt's padding
    count: jax.Array  # () int32: columns of seq filled
    offset: jax.Array  # (B,) int32: position of column c is c - offset (the padding before it)
    cache: object
    done: jax.Array  # (B,) bool: the row has emitted eos_id


def _pick(plan: _Plan, state: _State, logits: jax.Array, key: jax.Array) -> tuple[_State, jax.Array]:
    new = sample_logits(logits, jax.random.fold_in(key, state.count), temperature=plan.temperature,
                        top_k=plan.top_k, top_p=plan.top_p)  # (B,)
    done = state.done
    if plan.eos_id is not None:
        new = jnp.where(done, plan.eos_id, new)
        done = done | (new == plan.eos_id)
    seq = jax.lax.dynamic_update_slice(state.seq, new[:, None], (0, state.count))
    return state._replace(seq=seq, count=state.count + 1, done=done), new


@functools.partial(jax.jit, static_argnames="plan")
def _prefill(model, prompt_ids, prompt_mask, key, *, plan: _Plan) -> tuple[_State, jax.Array]:
    B, T0 = prompt_ids.shape
    ids, real = prompt_ids[:, plan.start:], prompt_mask[:, plan.start:]  # (B, T) with T <= max_len or rolling
    positions = jnp.where(real, jnp.cumsum(real, axis=1) - 1, -1).astype(jnp.int32)  # (B, T); -1 = padding
    cache = model.init_cache(B, plan.cache_len, dtype=plan.cache_dtype, **({"rolling": True} if plan.rolling else {}))
    logits, cache = model.decode(ids, cache, positions=positions)  # (B, T, V)
    pad = T0 - plan.start - real.sum(axis=1)  # (B,) padding columns inside the window
    grow = plan.total - T0
    state = _State(seq=jnp.pad(prompt_ids, ((0, 0), (0, grow))), real=jnp.pad(prompt_mask, ((0, 0), (0, grow)),
                   constant_values=True), count=jnp.asarray(T0, jnp.int32),
                   offset=(plan.start + pad).astype(jnp.int32), cache=cache, done=jnp.zeros((B,), bool))
    return _pick(plan, state, logits[:, -1], key)


def _cached_step(model, state: _State, key, plan: _Plan) -> tuple[_State, jax.Array]:
    last = jax.lax.dynamic_slice_in_dim(state.seq, state.count - 1, 1, axis=1)  # (B, 1): not yet cached
    positions = (state.count - 1 - state.offset)[:, None]  # (B, 1)
    logits, cache = model.decode(last, state.cache, positions=positions)  # (B, 1, V)
    return _pick(plan, state._replace(cache=cache), logits[:, -1], key)


def _window_step(model, state: _State, key, plan: _Plan) -> tuple[_State, jax.Array]:
    begin = state.count - plan.window
    ids = jax.lax.dynamic_slice_in_dim(state.seq, begin, plan.window, axis=1)  # (B, max_len): the latest tokens
    real = jax.lax.dynamic_slice_in_dim(state.real, begin, plan.window, axis=1)
    positions = jnp.where(real, jnp.cumsum(real, axis=1) - 1, 0).astype(jnp.int32)  # restart at the window
    logits = model(ids, segment_ids=real.astype(jnp.int32), positions=positions)  # (B, max_len, V)
    return _pick(plan, state, logits[:, -1], key)


@functools.partial(jax.jit, static_argnames="plan")
def _step(model, state: _State, key, *, plan: _Plan) -> tuple[_State, jax.Array]:
    """One new token: from the cache while it has room, else by re-reading the window."""
    if plan.window_steps == 0:
        return _cached_step(model, state, key, plan)
    if plan.cached_steps == 0:
        return _window_step(model, state, key, plan)
    return jax.lax.cond(state.count <= plan.window + plan.start, functools.partial(_cached_step, plan=plan),
                        functools.partial(_window_step, plan=plan), model, state, key)


@functools.partial(jax.jit, static_argnames="plan")
def _generate(model, prompt_ids, prompt_mask, key, *, plan: _Plan) -> jax.Array:
    state, _ = _prefill(model, prompt_ids, prompt_mask, key, plan=plan)
    for steps, step in ((plan.cached_steps, _cached_step), (plan.window_steps, _window_step)):
        if steps:
            state, _ = jax.lax.scan(lambda s, _: step(model, s, key, plan), state, None, length=steps)
    return state.seq


def _prepare(model, prompt_ids, steps, prompt_mask, temperature, top_k, top_p, key, eos_id, cache_dtype):
    prompt_ids = jnp.asarray(prompt_ids)
    if prompt_ids.ndim != 2 or not jnp.issubdtype(prompt_ids.dtype, jnp.integer):
        raise ConfigError(
            f"generate: prompt_ids must be integer (B, T0), got {prompt_ids.dtype}{list(prompt_ids.shape)}.")
    if prompt_mask is None:
        prompt_mask = jnp.ones(prompt_ids.shape, bool)
    prompt_mask = jnp.asarray(prompt_mask)
    if prompt_mask.shape != prompt_ids.shape or prompt_mask.dtype != jnp.bool_:
        raise ConfigError(f"generate: prompt_mask must be bool shaped like prompt_ids {tuple(prompt_ids.shape)}, "
                          f"got {prompt_mask.dtype}{list(prompt_mask.shape)}.")
    if not isinstance(prompt_mask, jax.core.Tracer):
        mask = np.asarray(prompt_mask)
        bad = np.flatnonzero((np.diff(mask.astype(np.int8), axis=1) < 0).any(axis=1) | ~mask[:, -1])
        if bad.size:
            raise ConfigError(f"generate: prompt row {int(bad[0])} is not left-padded (prompt_mask "
                              f"{mask[bad[0]].astype(int).tolist()}); put the padding before the prompt, so every "
                              f"row's last column is a real token.")
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
    plan = _plan(model, prompt_ids.shape[1], steps, temperature=float(temperature), top_k=top_k, top_p=top_p,
                 eos_id=eos_id, cache_dtype=cache_dtype)
    key = jax.random.key(0) if key is None else key  # unused when greedy
    model = nn.eval_mode(model)  # inference: dropout off, BatchNorm on running statistics
    return model, prompt_ids.astype(jnp.int32), prompt_mask, key, plan


def generate(model, prompt_ids: jax.Array, steps: int, *, prompt_mask: jax.Array | None = None,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             key: jax.Array | None = None, eos_id: int | None = None, cache_dtype=jnp.float32) -> jax.Array:
    """Extend ``prompt_ids`` ``(B, T0)`` by ``steps`` tokens: returns ``(B, T0 + steps)`` int32.

    Greedy when ``temperature == 0`` (the default); sampling needs a ``key``.
    ``prompt_mask`` ``(B, T0)`` bool marks real tokens of left-padded prompts (default:
    no padding). After a row emits ``eos_id`` it repeats ``eos_id``. Any length works:
    past ``config.max_len`` the model sees a sliding window of the most recent
    ``max_len`` tokens (see the module docstring). The model runs in evaluation mode
    (``nn.eval_mode``), so dropout is off whatever mode it was given in.
    """
    model, prompt_ids, prompt_mask, key, plan = _prepare(model, prompt_ids, steps, prompt_mask, temperature,
                                                         top_k, top_p, key, eos_id, cache_dtype)
    return _generate(model, prompt_ids, prompt_mask, key, plan=plan)


def generate_stream(model, prompt_ids: jax.Array, steps: int, *, prompt_mask: jax.Array | None = None,
                    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                    key: jax.Array | None = None, eos_id: int | None = None,
                    cache_dtype=jnp.float32) -> Iterator[np.ndarray]:
    """``generate``'s tokens as they are made: yields ``steps`` arrays ``(B,)`` int32.

    The same tokens as ``generate`` with the same arguments, one jitted step per token,
    so a caller can print them (``baobab generate``) or stop early (close the iterator).

    >>> import jax, jax.numpy as jnp
    >>> from baobab.models import GPT2, GPT2Config, generate, generate_stream
    >>> model = GPT2(GPT2Config(vocab_size=50, max_len=32, hidden_size=32, num_layers=1, num_heads=2),
    ...              key=jax.random.key(0))
    >>> tokens = [int(t[0]) for t in generate_stream(model, jnp.array([[1, 2, 3]]), 5)]
    >>> tokens == generate(model, jnp.array([[1, 2, 3]]), 5)[0, 3:].tolist()
    True
    """
    model, prompt_ids, prompt_mask, key, plan = _prepare(model, prompt_ids, steps, prompt_mask, temperature,
                                                         top_k, top_p, key, eos_id, cache_dtype)
    state, new = _prefill(model, prompt_ids, prompt_mask, key, plan=plan)
    yield np.asarray(new)
    for _ in range(steps - 1):
        state, new = _step(model, state, key, plan=plan)
        yield np.asarray(new)
