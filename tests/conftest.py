"""Shared test setup: a fake 8-device CPU mesh, and strict checks.

XLA_FLAGS must be set before jax is imported anywhere, so it is set here, at the
top of the first file pytest loads.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

AUTO = jax.sharding.AxisType.Auto


@pytest.fixture(scope="session")
def mesh8():
    """data x fsdp x tensor = 2 x 2 x 2 over 8 fake CPU devices."""
    assert jax.device_count() == 8, "conftest must set XLA_FLAGS before jax is imported"
    return jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AUTO,) * 3)


@pytest.fixture
def key():
    return jax.random.key(0)


class _HostMemoryLeftAlone:
    """Stands in for ``baobab.host_memory`` inside ``baobab.cli`` during the tests."""

    calls = 0

    @classmethod
    def configure(cls):
        cls.calls += 1
        return False


@pytest.fixture(scope="session", autouse=True)
def cli_leaves_the_test_process_malloc_alone():
    """``cli.main`` called in this process does not apply ``host_memory.configure()``.

    That setting is the process's (one arena, never trim), right for a ``baobab`` run,
    wrong for a pytest process that hosts ~1000 tests: once one test called ``cli.main``
    in-process, glibc kept every later test's peak heap and the suite's RSS climbed past
    10 GB. Subprocess runs of the CLI (tests/test_cli.py, tests/test_host_memory.py) still
    apply it; ``tests/test_host_memory.py`` tests ``configure`` itself.
    """
    import baobab.cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(baobab.cli, "host_memory", _HostMemoryLeftAlone)
        yield _HostMemoryLeftAlone


@pytest.fixture(scope="module", autouse=True)
def free_compiled_programs_after_each_file():
    """After each test file: drop JAX's compiled programs and give freed pages back.

    Every jitted function keeps its executables for the life of the process, so ~1000
    tests that each compile their own programs only ever add: the suite's RSS climbed by
    ~50 MB per conformance test (test_conformance.py alone: 265 MB -> 2,455 MB; with its
    caches cleared it ends at 265 MB). Clearing per file keeps a file's own reuse (per test
    it made test_conformance.py 3.5x slower). ``malloc_trim(0)`` then returns the freed
    blocks that glibc would keep in fragmented heaps.
    """
    yield
    import ctypes
    import gc
    import sys

    jax.clear_caches()
    gc.collect()
    if sys.platform == "linux":
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
