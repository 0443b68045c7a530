"""ResNet-18 training on 32x32 images on CPU: baobab against PyTorch eager.

    python benchmarks/resnet_cpu.py              # ~2-3 minutes on 2 CPU cores
    python benchmarks/resnet_cpu.py --quick      # smoke run

The CIFAR variant of ResNet-18 (a 3x3 stride-1 stem and no max-pool; stages of
64/128/256/512 channels with two basic blocks each; BatchNorm in training mode),
10 classes, batch 32, AdamW (lr 1e-3, weight decay 0.01 on every parameter).

* ``baobab``: ``baobab.models.ResNet(depth=18, small_inputs=True)``, channels-last,
  BatchNorm statistics returned by ``nn.stateful_call``, ``optax.adamw`` on the
  trainable arrays (``nn.labels``), one donating ``jax.jit`` step.
* ``torch``: the same network written by hand (torchvision is not installed beside
  torch 2.13 here), NCHW as PyTorch defaults to; ``torch_channels_last`` is the same
  model and batch in ``torch.channels_last`` memory format.

Both start from the same weights (baobab's init, copied), so their losses agree
(``tests/test_bench_resnet.py``). Reported: images/s and baobab's over each.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _harness as H  # noqa: E402

IMPLEMENTATIONS = ("baobab", "torch", "torch_channels_last")
NEEDS = {"torch": "torch", "torch_channels_last": "torch"}


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    batch: int = 32
    size: int = 32
    classes: int = 10
    width: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0


@dataclasses.dataclass
class Impl:
    name: str
    step: Callable[[], Any]
    num_params: int
    flops_per_step: float | None = None


def batch(spec: ResNetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W, 3)`` float32 (channels-last) and labels ``(N,)`` int32."""
    rng = np.random.default_rng(spec.seed + 1)
    x = rng.standard_normal((spec.batch, spec.size, spec.size, 3)).astype(np.float32)
    return x, rng.integers(0, spec.classes, spec.batch).astype(np.int32)


def baobab_model(spec: ResNetSpec):
    import jax
    from baobab.models import ResNet, ResNetConfig

    config = ResNetConfig(depth=18, num_classes=spec.classes, width=spec.width, small_inputs=True)
    return ResNet(config, key=jax.random.key(spec.seed))


def build_baobab(spec: ResNetSpec) -> Impl:
    import jax
    import jax.numpy as jnp
    import optax
    from baobab import nn

    model = baobab_model(spec)
    zero = optax.set_to_zero()
    adamw = optax.adamw(spec.lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=spec.weight_decay)
    opt = optax.multi_transform({"trainable": adamw, "frozen": zero, "state": zero}, nn.labels)

    def loss_fn(model, x, y):
        logits, model = nn.stateful_call(model, x)  # new BatchNorm statistics come back in `model`
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), model

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(model, opt_state, x, y):
        (loss, new_model), grads = jax.value_and_grad(loss_fn, has_aux=True)(model, x, y)
        updates, opt_state = opt.update(grads, opt_state, model)
        return optax.apply_updates(new_model, updates), opt_state, loss

    x, y = (jnp.asarray(a) for a in batch(spec))
    state = [model, opt.init(model)]
    compiled = train_step.lower(state[0], state[1], x, y).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost

    def step():
        state[0], state[1], loss = compiled(state[0], state[1], x, y)
        return loss.block_until_ready()

    n = sum(a.size for _, a, m in nn.iter_arrays(model) if m.kind == "param")
    return Impl("baobab", step, n, float(cost["flops"]))


def torch_model(spec: ResNetSpec):
    """ResNet-18 (CIFAR stem) in torch, with baobab's initial weights copied in."""
    import torch
    from baobab import nn

    tnn = torch.nn

    class BasicBlock(tnn.Module):
        def __init__(self, c_in: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = tnn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or c_in != planes:
                self.downsample = tnn.Sequential(tnn.Conv2d(c_in, planes, 1, stride, bias=False),
                                                 tnn.BatchNorm2d(planes))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return torch.relu(h + (x if self.downsample is None else self.downsample(x)))

    class ResNet18(tnn.Module):
        def __init__(self):
            super().__init__()
            w = spec.width
            self.conv1 = tnn.Conv2d(3, w, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(w)
            c_in, stages = w, []
            for s in range(4):
                planes = w * 2 ** s
                stages.append(tnn.Sequential(BasicBlock(c_in, planes, 1 if s == 0 else 2),
                                             BasicBlock(planes, planes, 1)))
                c_in = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.fc = tnn.Linear(c_in, spec.classes)

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
            return self.fc(h.mean((2, 3)))

    model = ResNet18()
    ours = {k: np.asarray(v) for k, v in nn.state_dict(baobab_model(spec)).items()}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            key = name
            for s in range(1, 5):  # torch "layer1.0.conv1" is baobab "layer1[0].conv1"
                for b in range(2):
                    key = key.replace(f"layer{s}.{b}.", f"layer{s}[{b}].")
            key = key.replace("downsample.0.", "downsample[0].").replace("downsample.1.", "downsample[1].")
            value = ours[key]
            if value.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
                value = value.transpose(3, 2, 0, 1)
            elif value.ndim == 2:  # Linear (in, out) -> (out, in)
                value = value.T
            tensor.copy_(torch.from_numpy(np.array(value)))
    return model


def build_torch(spec: ResNetSpec, *, channels_last: bool = False) -> Impl:
    import torch

    model = torch_model(spec)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=spec.weight_decay)
    xn, yn = batch(spec)
    x = torch.from_numpy(xn.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt)
    y = torch.from_numpy(yn.astype(np.int64))
    model.train()
    step = H.torch_classifier_step(model, opt, x, y)
    return Impl("torch_channels_last" if channels_last else "torch", step,
                sum(p.numel() for p in model.parameters()))


def builders(spec: ResNetSpec) -> dict[str, Callable[[], Impl]]:
    return {"baobab": lambda: build_baobab(spec), "torch": lambda: build_torch(spec),
            "torch_channels_last": lambda: build_torch(spec, channels_last=True)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = H.parser(__doc__.split("\n")[0], name="resnet_cpu")
    args = p.parse_args(argv)
    spec = ResNetSpec()
    rounds = args.rounds or (1 if args.quick else 4)
    steps = args.steps or (1 if args.quick else 3)
    info = H.machine()
    print(f"ResNet-18 (CIFAR stem), {spec.size}x{spec.size}x3, batch {spec.batch}, AdamW; {H.describe(info)}")
    impls, skipped, loss0, first = {}, {}, {}, {}
    for name in H.selected(IMPLEMENTATIONS, args.only):
        reason = H.missing(NEEDS[name]) if name in NEEDS else None
        if reason:
            skipped[name] = reason
            continue
        start = time.perf_counter()
        impls[name] = builders(spec)[name]()
        loss0[name] = float(impls[name].step())
        first[name] = time.perf_counter() - start
    timings = H.interleaved({n: i.step for n, i in impls.items()}, rounds=rounds, steps_per_round=steps)
    rows = []
    for name, impl in impls.items():
        t = timings[name].median
        row = {"implementation": name, "params": impl.num_params, "loss@0": round(loss0[name], 4),
               "first_step_s": first[name], "step_ms": 1e3 * t, "images_per_s": spec.batch / t}
        if name != "baobab" and "baobab" in timings:
            row["baobab_speedup"] = t / timings["baobab"].median
        rows.append(row)
    print()
    print(H.table(rows, ["implementation", "params", "loss@0", "first_step_s", "step_ms", "images_per_s",
                         "baobab_speedup"]))
    print("baobab_speedup = baobab images/s / that row's images/s")
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    flops = impls["baobab"].flops_per_step if "baobab" in impls else None
    result = {"benchmark": "resnet_cpu", "spec": vars(spec), "machine": info, "flops_per_step": flops,
              "rounds": rounds, "steps_per_round": steps, "rows": rows, "skipped": skipped}
    print(f"wrote {H.write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
