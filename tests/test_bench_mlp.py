"""The per-step-overhead benchmark's implementations compute the same thing.

Each MLP implementation in ``benchmarks/mlp_overhead.py`` starts from the same
weights and batch, so the loss before the first step and after two AdamW steps
must agree with baobab's, and the parameter counts must match. Anchors whose
package is not installed (the ``bench`` extra) are skipped. No timing here.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import _harness  # noqa: E402
import mlp_overhead as M  # noqa: E402

EXPECTED_PARAMS = 64 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10


def _losses(impl, n=3):
    return [float(impl.step()) for _ in range(n)]


@pytest.fixture(scope="module")
def reference():
    impl = M.build_baobab()
    return impl.num_params, _losses(impl)


def test_baobab_counts_and_first_loss(reference):
    params, losses = reference
    assert params == EXPECTED_PARAMS
    assert 1.5 < losses[0] < 3.5  # ~ln(10) for a fresh classifier
    assert losses[2] < losses[0]  # AdamW makes progress on the fixed batch


@pytest.mark.parametrize("name", [n for n in M.IMPLEMENTATIONS if n != "baobab"])
def test_same_params_and_losses_as_baobab(name, reference):
    reason = _harness.missing(M.NEEDS[name]) if name in M.NEEDS else None
    # The anchors are in the bench extra, which the test extra includes: missing is an install error.
    assert reason is None, f"{M.NEEDS[name]} is not installed (pip install -e '.[test]'): {reason}"
    params, losses = reference
    impl = M.BUILDERS[name]()
    assert impl.num_params == params
    got = _losses(impl)
    assert got[0] == pytest.approx(losses[0], rel=1e-5)  # step 0: same weights, same batch
    assert got[1:] == pytest.approx(losses[1:], rel=1e-4)  # then the same AdamW updates
