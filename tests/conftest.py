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
