"""torchvision ResNet-18/50 ``state_dict`` (safetensors) -> ``baobab import hf`` -> same logits as torchvision.

The reference is torchvision's own ``resnet18`` / ``resnet50`` with random weights,
random BatchNorm statistics and a non-default class count, in eval mode.
"""

import jax
import numpy as np
import pytest

from baobab import cli, nn
from baobab.runs import load_run, restore_model

import torch  # noqa: E402


def _reference(depth: int, num_classes: int):
    import torchvision  # importable: conftest declared its missing ops
    torch.manual_seed(depth)
    ref = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # statistics and affine far from the defaults
                module.running_mean.copy_(0.2 * torch.randn(module.num_features, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=gen))
                module.weight.copy_(0.5 + torch.rand(module.num_features, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.num_features, generator=gen))
    return ref.eval()


@pytest.mark.parametrize("depth,num_classes", [(18, 7), (50, 13)])
def test_torchvision_resnet_imports_with_the_same_logits(depth, num_classes, tmp_path):
    from safetensors.torch import save_file

    ref = _reference(depth, num_classes)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, tmp_path / "resnet.safetensors")
    assert cli.main(["import", "hf", str(tmp_path / "resnet.safetensors"), str(tmp_path / "run")]) == 0
    model, _ = restore_model(load_run(tmp_path / "run"))
    assert (model.config.depth, model.config.num_classes) == (depth, num_classes)

    x = np.random.RandomState(0).randn(2, 64, 64, 3).astype(np.float32)  # (B, H, W, C)
    with torch.no_grad():
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()  # torch is NCHW
    got = np.asarray(jax.jit(lambda m, x: m(x))(nn.eval_mode(model), x))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(want).max() > 0.1  # logits of a real size, not a degenerate all-zero comparison
