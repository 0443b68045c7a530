"""The ResNet-18 benchmark's baobab and PyTorch models compute the same thing.

``benchmarks/resnet_cpu.py`` writes ResNet-18 (CIFAR stem) by hand in PyTorch and
copies baobab's initial weights into it. On a narrow version the parameter counts
and the losses at step 0 and after two AdamW steps (BatchNorm in training mode)
must agree, in NCHW and channels-last memory formats. No timing here.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import resnet_cpu as R  # noqa: E402

import torch  # noqa: E402,F401  (test extra; the PyTorch side of the benchmark)

SPEC = R.ResNetSpec(batch=4, width=8)


def _losses(impl, n=3):
    return [float(impl.step()) for _ in range(n)]


@pytest.fixture(scope="module")
def reference():
    impl = R.build_baobab(SPEC)
    return impl, _losses(impl)


def test_full_width_has_resnet18_parameter_count():
    import jax
    from baobab import nn

    model = jax.eval_shape(lambda: R.baobab_model(R.ResNetSpec()))
    params = sum(a.size for _, a, m in nn.iter_arrays(model) if m.kind == "param")
    assert params == 11_173_962  # torchvision's resnet18 with a 3x3 stem and 10 classes


@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_matches_baobab(channels_last, reference):
    impl, losses = reference
    other = R.build_torch(SPEC, channels_last=channels_last)
    assert other.num_params == impl.num_params
    got = _losses(other)
    assert got[0] == pytest.approx(losses[0], rel=1e-5)
    assert got[1:] == pytest.approx(losses[1:], rel=1e-3)
