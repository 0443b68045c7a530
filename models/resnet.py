"""ResNet (He et al. 2015) as torchvision builds it, channels-last, with explicit BatchNorm state.

Parameter paths copy torchvision's ``state_dict`` names, so importing its weights is
a one-to-one copy (``models.hf.resnet_names(config)`` is the table):

====================================  ==========================================
torchvision                           baobab
====================================  ==========================================
``conv1.weight`` (O, I, kh, kw)       ``conv1.weight`` (kh, kw, I, O)
``bn1.running_mean``                  ``bn1.running_mean`` (state, not a param)
``layer1.0.conv1.weight``             ``layer1[0].conv1.weight``
``layer2.0.downsample.0.weight``      ``layer2[0].downsample[0].weight``
``layer2.0.downsample.1.bias``        ``layer2[0].downsample[1].bias``
``fc.weight`` (out, in)               ``fc.weight`` (in, out)
``*.num_batches_tracked``             (not kept: only used when momentum=None)
====================================  ==========================================

BatchNorm layers are built in training mode. Train through ``nn.stateful_call``
(the train step does this) so the running statistics come back, and evaluate with
``nn.eval_mode(model)``. ResNet-50 and deeper use the "v1.5" bottleneck (stride in
the 3x3 convolution), as torchvision does.

>>> import jax, jax.numpy as jnp
>>> from baobab import nn
>>> from baobab.models import ResNet, ResNetConfig
>>> model = ResNet(ResNetConfig(depth=18, num_classes=10, width=8, small_inputs=True), key=jax.random.key(0))
>>> images = jnp.ones((2, 32, 32, 3))  # (N, H, W, C)
>>> logits, model = jax.jit(nn.stateful_call)(model, images)  # training mode: new statistics come back
>>> logits.shape, model.layer1[0].bn1.running_var.shape
((2, 10), (8,))
>>> jax.jit(nn.stateful_call)(nn.eval_mode(model), images)[0].shape  # running statistics, no updates
(2, 10)
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import pydantic

from baobab import nn
from baobab.config import Config

__all__ = ["ResNetConfig", "ResNet", "BasicBlock", "Bottleneck"]

#: depth -> (block kind, blocks per stage), as in the paper and torchvision.
ARCHITECTURES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class ResNetConfig(Config):
    """ResNet-18/34 (basic blocks) or ResNet-50/101/152 (bottleneck blocks), chosen by ``depth``.

    ``width`` is the channel count of the stem and the first stage (64 in the paper);
    stage ``s`` has ``width * 2**s`` channels (times 4 after a bottleneck).
    ``small_inputs`` swaps the 7x7 stride-2 stem and its max-pool for one 3x3 stride-1
    convolution, for 32x32 images (CIFAR); torchvision has no such variant, so its
    weights only load with ``small_inputs=False``.
    """

    kind: Literal["resnet"] = "resnet"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the baobab.tasks it can run
    depth: Literal[18, 34, 50, 101, 152] = 18
    num_classes: int = pydantic.Field(1000, gt=0)
    width: int = pydantic.Field(64, gt=0)
    in_channels: int = pydantic.Field(3, gt=0)
    small_inputs: bool = False
    bn_momentum: float = pydantic.Field(0.1, gt=0.0, le=1.0, description="as torch: new = (1-m) old + m batch")
    bn_eps: float = pydantic.Field(1e-5, gt=0.0)


def _conv(c_in: int, c_out: int, k: int, *, stride: int = 1, key: jax.Array) -> nn.Conv:
    """A bias-free ``k x k`` convolution with torch's padding ``k // 2`` and torchvision's init scale.

    torchvision draws convolution weights with ``kaiming_normal_(mode="fan_out",
    nonlinearity="relu")``, variance ``2 / (k * k * c_out)``. ``nn.Conv`` draws
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; rescaling it to ``U(-sqrt(6 / fan_out), +)``
    gives the same variance without a second random draw.
    """
    conv = nn.Conv(c_in, c_out, (k, k), stride=stride, padding=k // 2, use_bias=False, key=key)
    fan_in, fan_out = k * k * c_in, k * k * c_out
    return nn.replace(conv, weight=conv.weight * math.sqrt(6.0 * fan_in / fan_out))


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``: ``(N, H, W, C_in) -> (N, H/s, W/s, C)``.

    ``downsample`` is ``(conv 1x1 stride s, BatchNorm)`` when the shape changes, else ``None``.
    """

    conv1: nn.Conv
    bn1: nn.BatchNorm
    conv2: nn.Conv
    bn2: nn.BatchNorm
    downsample: tuple[nn.Conv, nn.BatchNorm] | None

    expansion = 1

    def __init__(self, c_in: int, planes: int, *, stride: int, config: ResNetConfig, key: jax.Array):
        bn = dict(eps=config.bn_eps, momentum=config.bn_momentum)
        self.conv1 = _conv(c_in, planes, 3, stride=stride, key=nn.subkey(key, "conv1"))
        self.bn1 = nn.BatchNorm(planes, **bn)
        self.conv2 = _conv(planes, planes, 3, key=nn.subkey(key, "conv2"))
        self.bn2 = nn.BatchNorm(planes, **bn)
        self.downsample = None
        if stride != 1 or c_in != planes:
            self.downsample = (_conv(c_in, planes, 1, stride=stride, key=nn.subkey(key, "downsample")),
                               nn.BatchNorm(planes, **bn))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.bn1(self.conv1(x)))  # (N, H/s, W/s, planes)
        h = self.bn2(self.conv2(h))  # (N, H/s, W/s, planes)
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return jax.nn.relu(h + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride s), 1x1 expand to ``4 * planes``, plus the shortcut (v1.5).

    ``(N, H, W, C_in) -> (N, H/s, W/s, 4 * planes)``.
    """

    conv1: nn.Conv
    bn1: nn.BatchNorm
    conv2: nn.Conv
    bn2: nn.BatchNorm
    conv3: nn.Conv
    bn3: nn.BatchNorm
    downsample: tuple[nn.Conv, nn.BatchNorm] | None

    expansion = 4

    def __init__(self, c_in: int, planes: int, *, stride: int, config: ResNetConfig, key: jax.Array):
        bn = dict(eps=config.bn_eps, momentum=config.bn_momentum)
        c_out = planes * self.expansion
        self.conv1 = _conv(c_in, planes, 1, key=nn.subkey(key, "conv1"))
        self.bn1 = nn.BatchNorm(planes, **bn)
        self.conv2 = _conv(planes, planes, 3, stride=stride, key=nn.subkey(key, "conv2"))
        self.bn2 = nn.BatchNorm(planes, **bn)
        self.conv3 = _conv(planes, c_out, 1, key=nn.subkey(key, "conv3"))
        self.bn3 = nn.BatchNorm(c_out, **bn)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = (_conv(c_in, c_out, 1, stride=stride, key=nn.subkey(key, "downsample")),
                               nn.BatchNorm(c_out, **bn))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.bn1(self.conv1(x)))  # (N, H, W, planes)
        h = jax.nn.relu(self.bn2(self.conv2(h)))  # (N, H/s, W/s, planes)
        h = self.bn3(self.conv3(h))  # (N, H/s, W/s, 4 * planes)
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return jax.nn.relu(h + shortcut)


class ResNet(nn.Module):
    """``(N, H, W, in_channels) -> (N, num_classes)`` logits.

    Stem: ``conv1`` 7x7 stride 2, ``bn1``, ReLU, ``maxpool`` 3x3 stride 2 (or, with
    ``small_inputs``, ``conv1`` 3x3 stride 1 and no max-pool); then ``layer1`` ...
    ``layer4`` (tuples of blocks, strides 1, 2, 2, 2), global average pooling and
    ``fc``. Any input size works; 224x224 is the ImageNet setting (7x7 before pooling).
    """

    conv1: nn.Conv
    bn1: nn.BatchNorm
    maxpool: nn.MaxPool | None
    layer1: tuple[nn.Module, ...]
    layer2: tuple[nn.Module, ...]
    layer3: tuple[nn.Module, ...]
    layer4: tuple[nn.Module, ...]
    avgpool: nn.GlobalAvgPool
    fc: nn.Linear
    config: ResNetConfig = nn.static()

    def __init__(self, config: ResNetConfig, *, key: jax.Array):
        self.config = config
        kind, blocks_per_stage = ARCHITECTURES[config.depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        w = config.width
        if config.small_inputs:
            self.conv1 = _conv(config.in_channels, w, 3, key=nn.subkey(key, "conv1"))
            self.maxpool = None
        else:
            self.conv1 = _conv(config.in_channels, w, 7, stride=2, key=nn.subkey(key, "conv1"))
            self.maxpool = nn.MaxPool((3, 3), stride=2, padding=1)
        self.bn1 = nn.BatchNorm(w, eps=config.bn_eps, momentum=config.bn_momentum)
        c_in = w
        stages = []
        for s, n_blocks in enumerate(blocks_per_stage):
            planes, blocks = w * 2 ** s, []
            for b in range(n_blocks):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(block(c_in, planes, stride=stride, config=config,
                                    key=nn.subkey(key, f"layer{s + 1}[{b}]")))
                c_in = planes * block.expansion
            stages.append(tuple(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.GlobalAvgPool()
        self.fc = nn.Linear(c_in, config.num_classes, key=nn.subkey(key, "fc"), axes=("embed", "classes"))

    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        if x.ndim != 4 or x.shape[-1] != c.in_channels or not jnp.issubdtype(x.dtype, jnp.floating):
            raise nn.ShapeError(
                f"ResNet expects floating-point images (N, H, W, {c.in_channels}) channels-last, got "
                f"{x.dtype}{list(x.shape)}. PyTorch-layout batches (N, C, H, W) need "
                f"x.transpose(0, 2, 3, 1); uint8 pixels need scaling (data.Normalize())."
            )
        h = jax.nn.relu(self.bn1(self.conv1(x)))  # (N, H/2, W/2, width), or (N, H, W, width) for small inputs
        if self.maxpool is not None:
            h = self.maxpool(h)  # (N, H/4, W/4, width)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                h = block(h)  # stages 2-4 halve H and W and double the channels
        return self.fc(self.avgpool(h))  # (N, C_final) -> (N, num_classes)
