"""A torchvision-named ResNet-18/50 ``state_dict`` (safetensors) -> ``baobab import hf`` -> the reference's logits.

The reference is transformers' ``ResNetForImageClassification``, the same network as
torchvision's ``resnet18`` / ``resnet50`` (v1.5: the stride in the 3x3 convolution, a
1x1 convolution + BatchNorm shortcut), written independently. Its ``state_dict`` is
renamed one to one to torchvision's names (``TORCHVISION_NAMES``) and saved as the file
torchvision's ``save_file(model.state_dict())`` would write, with random weights, random
BatchNorm statistics and a non-default class count, in eval mode.

torchvision itself is not in the test extra: on x86_64 its only wheels on PyPI are built
against CUDA torch and do not import beside the CPU build of torch 2.13 (issue #14).
"""

import re

import jax
import numpy as np
import pytest

from baobab import cli, nn
from baobab.runs import load_run, restore_model

import torch  # noqa: E402

#: transformers' ResNet names -> torchvision's, in order: (pattern, replacement).
TORCHVISION_NAMES = [
    (r"^resnet\.embedder\.embedder\.convolution\.", "conv1."),
    (r"^resnet\.embedder\.embedder\.normalization\.", "bn1."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.", r"layer{\1}.\2.downsample.0."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.", r"layer{\1}.\2.downsample.1."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.", r"layer{\1}.\2.conv{\3}."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.", r"layer{\1}.\2.bn{\3}."),
    (r"^classifier\.1\.", "fc."),
]
TORCHVISION_STATE_DICT_LEN = {18: 122, 50: 320}  # len(torchvision.models.resnetN().state_dict())


def _torchvision_name(name: str) -> str:
    for pattern, replacement in TORCHVISION_NAMES:
        renamed = re.sub(pattern, replacement, name)
        if renamed != name:  # stage, block and layer indices count from 0 here, from 1 in torchvision
            return re.sub(r"\{(\d+)\}", lambda m: str(int(m[1]) + 1), renamed)
    raise AssertionError(f"{name}: no torchvision name for this transformers ResNet tensor")


def _reference(depth: int, num_classes: int):
    import transformers

    kind, depths, widths = {18: ("basic", [2, 2, 2, 2], [64, 128, 256, 512]),
                            50: ("bottleneck", [3, 4, 6, 3], [256, 512, 1024, 2048])}[depth]
    torch.manual_seed(depth)
    ref = transformers.ResNetForImageClassification(transformers.ResNetConfig(
        layer_type=kind, depths=depths, hidden_sizes=widths, embedding_size=64, num_labels=num_classes))
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
    state = {_torchvision_name(k): v.contiguous() for k, v in ref.state_dict().items()}
    assert len(state) == TORCHVISION_STATE_DICT_LEN[depth]  # one to one, num_batches_tracked included
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "layer4.1.bn2.bias",
            "fc.weight", "fc.bias"} <= set(state)
    save_file(state, tmp_path / "resnet.safetensors")
    assert cli.main(["import", "hf", str(tmp_path / "resnet.safetensors"), str(tmp_path / "run")]) == 0
    model, _ = restore_model(load_run(tmp_path / "run"))
    assert (model.config.depth, model.config.num_classes) == (depth, num_classes)

    x = np.random.RandomState(0).randn(2, 64, 64, 3).astype(np.float32)  # (B, H, W, C)
    with torch.no_grad():
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits.numpy()  # torch is NCHW
    got = np.asarray(jax.jit(lambda m, x: m(x))(nn.eval_mode(model), x))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(want).max() > 0.1  # logits of a real size, not a degenerate all-zero comparison
