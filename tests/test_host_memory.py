"""Host memory on the CPU: glibc keeps freed memory, so XLA:CPU steps stop faulting in fresh pages.

The setting is the process's: ``baobab.host_memory.configure()`` (the CLI calls it),
or ``GLIBC_TUNABLES``. Importing baobab changes nothing (``test_import_side_effects``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from baobab import host_memory
from baobab.errors import ConfigError

# A donating train step whose temporary buffers (activations, gradients) take ~66 MiB:
# XLA:CPU allocates them as one block on every run. Prints the block's size and the
# MiB of new pages touched by each of 12 steady-state steps.
STEPS = textwrap.dedent("""
    import functools, json, resource
    import os, sys
    from baobab import host_memory
    if sys.argv[1] == "configure":
        host_memory.configure()
    import baobab.nn, baobab.train, baobab.data, baobab.models
    import jax, jax.numpy as jnp

    def loss(w, x):
        return jnp.mean((jnp.tanh(x @ w[0]) @ w[1]) ** 2)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(w, x):
        return jax.tree.map(lambda a, g: a - 0.01 * g, w, jax.grad(loss)(w, x))

    x = jnp.ones((8192, 512)) * 0.01
    w = (jnp.ones((512, 1024)) * 0.01, jnp.ones((1024, 64)) * 0.01)
    compiled = step.lower(w, x).compile()
    for _ in range(3):
        w = compiled(w, x)
    faulted = []
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        w = compiled(w, x)
        jax.block_until_ready(w)
        faulted.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * 4096 / 2**20)
    print(json.dumps({"applied": host_memory.is_applied(), "faulted_mib": faulted,
                      "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20}))
""")


def run_steps(how: str, **env: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", STEPS, how], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


needs_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
    reason="the allocator settings are glibc's")


def reuses_pages(result: dict) -> bool:
    # Most steps touch no new page. The heap may grow a few times early on, when a small
    # allocation lands in the freed block; then the step faults in one block's worth.
    faulted = sorted(result["faulted_mib"])
    return result["temp_mib"] > 50 and faulted[len(faulted) // 2] < 1


def faults_every_step(result: dict) -> bool:
    return min(result["faulted_mib"]) > 0.9 * result["temp_mib"]  # a fresh mmap every step


@needs_glibc
def test_configure_makes_steps_reuse_their_pages():
    result = run_steps("configure")
    assert result["applied"] and reuses_pages(result), result


@needs_glibc
def test_importing_baobab_leaves_glibc_defaults():
    result = run_steps("import")
    assert not result["applied"] and faults_every_step(result), result


@needs_glibc
def test_the_documented_glibc_tunables_have_the_same_effect():
    result = run_steps("import", GLIBC_TUNABLES=host_memory.GLIBC_TUNABLES)
    assert not result["applied"] and reuses_pages(result), result


@needs_glibc
def test_the_opt_out_keeps_glibc_defaults():
    result = run_steps("configure", BAOBAB_HOST_MEMORY="system")
    assert not result["applied"] and faults_every_step(result), result


def test_only_applied_when_computing_on_the_cpu(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not host_memory.runs_on_cpu() and not host_memory.configure()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.runs_on_cpu()
    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.setattr(host_memory, "has_accelerator", lambda: True)  # a GPU or TPU attached
    assert not host_memory.runs_on_cpu()
    monkeypatch.setattr(host_memory, "has_accelerator", lambda: False)
    assert host_memory.runs_on_cpu()


def test_an_unknown_setting_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("BAOBAB_HOST_MEMORY", "off")
    with pytest.raises(ConfigError, match=r"BAOBAB_HOST_MEMORY='off' is not a choice.*=system"):
        host_memory.configure()


def test_the_cli_applies_it_first_thing(cli_leaves_the_test_process_malloc_alone, capsys):
    from baobab import cli

    before = cli_leaves_the_test_process_malloc_alone.calls
    assert cli.main([]) == 2  # no subcommand: help, exit 2, but the process was set up first
    assert cli_leaves_the_test_process_malloc_alone.calls == before + 1
    assert "usage: baobab" in capsys.readouterr().out
