"""What every benchmark shares: interleaved timing, the machine's description, tables and JSON.

The rule for every figure: warm each implementation up, then measure them in
rounds, each round running every implementation for a few steps in a rotating
order, so that a change in machine load (other jobs on the 2 cores) hits all of
them alike. A figure is the median over all timed steps; a ratio is taken between
medians measured in the same process run. Steps are timed individually and end on a
blocking call (``block_until_ready``, or PyTorch's synchronous execution).

Nothing here imports an anchor framework: each benchmark imports the ones it runs,
so a missing optional package only drops that row. The harness first calls
``baobab.host_memory.configure()``, before numpy starts its threads: on a CPU-only Linux
machine that sets glibc to reuse freed memory for the whole process, as the ``baobab``
command does, so every framework in the run, anchors included, runs under the same
allocator settings. (Importing baobab alone changes nothing.) ``BAOBAB_HOST_MEMORY=system``
leaves glibc's defaults; the JSON records which was used.
"""

from __future__ import annotations

from baobab import host_memory

host_memory.configure()  # first, before numpy's and JAX's threads allocate (module docstring)

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

RESULTS_DIR = Path(__file__).parent / "results"

#: The packages whose versions are recorded with every result.
PACKAGES = ("jax", "jaxlib", "optax", "orbax-checkpoint", "grain", "equinox", "flax", "torch", "numpy")

#: CPU flags worth knowing for fp32/bf16 matmul speed.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "amx_bf16", "amx_tile", "avx_vnni")


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Timing:
    """All timed steps of one implementation, in seconds."""

    name: str
    times: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def spread(self) -> tuple[float, float]:
        """The 25th and 75th percentiles."""
        return float(np.percentile(self.times, 25)), float(np.percentile(self.times, 75))


def interleaved(steps: Mapping[str, Callable[[], Any]], *, rounds: int, steps_per_round: int,
                warmup: int = 2, log: Callable[[str], None] | None = print) -> dict[str, Timing]:
    """Time each ``steps[name]()`` (one blocking step) in rotating, interleaved rounds.

    Each implementation first runs ``warmup`` untimed steps. Then, ``rounds`` times,
    every implementation runs one untimed step (to re-warm caches after the others
    ran) and ``steps_per_round`` timed steps; the order rotates by one each round.
    """
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    out = {name: Timing(name) for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            step = steps[name]
            step()
            for _ in range(steps_per_round):
                start = time.perf_counter()
                step()
                out[name].times.append(time.perf_counter() - start)
        if log:
            log(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{n} {1e3 * np.median(out[n].times[-steps_per_round:]):.1f} ms" for n in names))
    return out


def time_once(fn: Callable[[], Any]) -> float:
    """Seconds taken by one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# The peak and model FLOPs
# ---------------------------------------------------------------------------------------------

def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a jitted ``n x n`` fp32 matmul on the default device: the best of ``repeats``.

    The best (not the median) is the roof: it is what the cores deliver when
    nothing else runs; MFU is quoted against it.
    """
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    best = min(time_once(lambda: mm(a, b).block_until_ready()) for _ in range(repeats))
    return 2 * n ** 3 / best


def xla_flops(jitted: Any, *args: Any) -> float:
    """FLOPs of one call of ``jitted(*args)``, from XLA's cost analysis of the compiled program."""
    cost = jitted.lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
        cost = cost[0]
    return float(cost["flops"])


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------

def _cpu_model_and_flags() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", []
    model, flags = "unknown", set()
    for line in text.splitlines():
        if line.startswith("model name") and model == "unknown":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    return model, [f for f in CPU_FLAGS if f in flags]


def _usable_cores() -> int | None:
    """Cores this process may run on (``taskset`` narrows it); None where the OS does not say."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, Any]:
    """Cores, CPU model and flags, memory, load average, versions and XLA flags."""
    model, flags = _cpu_model_and_flags()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError):
        mem = float("nan")
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "usable_cores": _usable_cores(),  # fewer than "cores" under taskset / a CPU quota on the affinity mask
        "cpu": model,
        "cpu_flags": flags,
        "memory_gib": round(mem, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "host_memory": "reuse freed memory (baobab)" if host_memory.is_applied() else "glibc defaults",
        "versions": versions(),
    }


def describe(info: Mapping[str, Any]) -> str:
    v = info["versions"]
    usable = info.get("usable_cores")
    pinned = f" ({usable} usable)" if usable and usable != info["cores"] else ""
    return (f"{info['cores']} cores{pinned}, {info['cpu']} ({' '.join(info['cpu_flags'])}), "
            f"load average {info['load_average']}, host memory: {info.get('host_memory', '?')}; "
            + ", ".join(f"{k} {v[k]}" for k in v))


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` (dicts) with the given ``columns``."""

    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:,.3g}" if abs(x) < 10 else f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}"
        return "" if x is None else str(x)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def parser(description: str, *, name: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--rounds``, ``--steps``, ``--json``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 2 steps")
    p.add_argument("--rounds", type=int, default=None, help="measurement rounds (interleaved)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per implementation per round")
    p.add_argument("--only", default=None, help="comma-separated implementation names to run")
    p.add_argument("--json", default=str(RESULTS_DIR / f"{name}.json"), help="where to write the results")
    return p


def selected(names: Sequence[str], only: str | None) -> list[str]:
    if not only:
        return list(names)
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise SystemExit(f"--only: unknown implementation(s) {unknown}; choose from {list(names)}.")
    return [n for n in names if n in wanted]


def missing(module: str) -> str | None:
    """None if ``module`` imports, else a one-line reason (the benchmark skips that row)."""
    try:
        __import__(module)
    except Exception as e:  # noqa: BLE001 - any import failure drops the row, with the reason
        return f"{type(e).__name__}: {e}"[:200]
    return None


# ---------------------------------------------------------------------------------------------
# Anchor steps written the way each framework's users write them (shared by the benchmarks)
# ---------------------------------------------------------------------------------------------


def equinox_step(model: Any, opt: Any, xy: tuple[Any, Any], xent: Callable[[Any, Any], Any]) -> Callable[[], Any]:
    """One AdamW step of an Equinox model on the fixed batch ``xy``: ``filter_value_and_grad`` of the
    per-example model under ``vmap``, ``filter_jit`` donating model and optimizer state."""
    import equinox as eqx
    import jax

    @eqx.filter_value_and_grad
    def loss_fn(model, x, y):
        return xent(jax.vmap(model)(x), y)

    @eqx.filter_jit(donate="all-except-first")
    def train_step(xy, model, opt_state):
        loss, grads = loss_fn(model, *xy)
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    state = [model, opt.init(eqx.filter(model, eqx.is_array))]

    def step():
        state[0], state[1], loss = train_step(xy, state[0], state[1])
        return loss.block_until_ready()

    return step


def torch_classifier_step(model: Any, opt: Any, x: Any, y: Any) -> Callable[[], Any]:
    """One eager PyTorch step: zero grads, cross-entropy of ``model(x)`` against ``y``, backward, ``opt.step``."""
    import torch

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step
