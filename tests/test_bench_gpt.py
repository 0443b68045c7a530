"""The GPT benchmarks' implementations compute the same model.

``benchmarks/gpt_impls.py`` writes one GPT in baobab (from ``nn`` layers, and as
``baobab.models.GPT2``, the reference), raw JAX, Equinox, Flax NNX and PyTorch (eager and
``torch.compile``). On a small configuration each must have
the same parameter count as the spec and the baobab model, the same loss at step 0
(same weights, same batch) and after two AdamW steps. The scanned and unrolled
24-layer models of ``compile_time.py`` must agree too. No timing here.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import _harness  # noqa: E402
import compile_time  # noqa: E402
import gpt_impls as G  # noqa: E402

SPEC = G.GPTSpec(layers=2, batch=2, seq=32)


def _losses(impl, n=3):
    return [float(impl.step()) for _ in range(n)]


@pytest.fixture(scope="module")
def reference():
    impl = G.build_baobab(SPEC)
    return impl, _losses(impl)


def test_baobab_matches_the_spec(reference):
    impl, losses = reference
    assert impl.num_params == SPEC.num_params()
    assert impl.flops_per_step > 6 * SPEC.num_params() * SPEC.tokens_per_step * 0.9  # 6ND, roughly
    assert losses[0] == pytest.approx(5.55, abs=0.1)  # ~ln(256) at GPT-2's init
    assert losses[2] < losses[0]


def test_default_spec_is_the_issue_s_model():
    spec = G.GPTSpec()
    assert (spec.d, spec.layers, spec.heads, spec.seq, spec.batch, spec.vocab) == (256, 4, 4, 128, 16, 256)


@pytest.mark.parametrize("name", ["baobab_nn", "raw_jax", "equinox", "nnx_jit", "nnx_cached", "torch",
                                  pytest.param("torch_compile", marks=pytest.mark.slow)])
def test_same_params_and_losses_as_baobab(name, reference):
    reason = _harness.missing(G.NEEDS[name]) if name in G.NEEDS else None
    # The anchors are in the bench extra, which the test extra includes: missing is an install error.
    assert reason is None, f"{G.NEEDS[name]} is not installed (pip install -e '.[test]'): {reason}"
    impl, losses = reference
    other = G.builders(SPEC)[name]()
    assert other.num_params == impl.num_params
    got = _losses(other)
    assert got[0] == pytest.approx(losses[0], rel=1e-5)
    assert got[1:] == pytest.approx(losses[1:], rel=1e-4)


def test_scanned_and_unrolled_layers_agree():
    spec = G.GPTSpec(layers=3, batch=2, seq=16)
    scanned = compile_time.build(spec, scan_layers=True)
    unrolled = compile_time.build(spec, scan_layers=False)
    assert scanned["loss@0"] == pytest.approx(unrolled["loss@0"], rel=1e-6)
    assert float(scanned["step"]()) == pytest.approx(float(unrolled["step"]()), rel=1e-5)
