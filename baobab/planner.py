"""``baobab plan``: compile the real train step ahead of time and report what it costs.

Nothing is allocated: the state comes from ``jax.eval_shape``, the batch is a
``ShapeDtypeStruct``, and ``jit(...).lower(...).compile()`` gives XLA's memory and
cost analyses per device. With ``mesh.topology`` (e.g. ``"v5p:4x4x4"``) the mesh is
built over that TPU slice's devices (``baobab.tpu``), and the report says whether
the step fits the chips' HBM and which config changes would make it fit.
``baobab.plan_report.format_plan`` renders the report as text.
"""

from __future__ import annotations

import collections
import contextlib
import re
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from baobab import data as bdata
from baobab import experiment as ex
from baobab import nn, tpu
from baobab import train as btrain
from baobab.config import ConfigError, apply_overrides
from baobab.experiment import ExperimentConfig
from baobab.train._core import call_loss

__all__ = ["plan", "NOT_EXPRESSIBLE", "MAX_FIX_TRIES"]


def plan(config: ExperimentConfig, *, mesh=None, fix: bool = True) -> dict[str, Any]:
    """Compile the real train step ahead of time on abstract inputs and report its cost.

    Nothing is allocated: the state comes from ``jax.eval_shape``, the batch is a
    ``ShapeDtypeStruct``, and ``jit(...).lower(...).compile()`` gives XLA's memory and
    cost analyses per device. The step is the one ``baobab train`` runs (same
    constructor, optimizer, ``make_train_step`` and ``jit_step``).

    With ``mesh.topology`` set (e.g. ``"v5p:4x4x4"``; needs the ``tpu`` extra) the mesh
    is built over that TPU slice's devices (``baobab.tpu``) and the step is compiled
    for the pod. The report then says whether it fits the chip's HBM and, when it does
    not, by how much, which config changes would help (``"fixes"``) and, with
    ``fix=True``, the plan of the first of them that fits (``"replan"``).
    """
    topo = None
    if mesh is None:
        mesh, topo = _plan_mesh(config)
    rules = ex.rules(config)
    _, _, info = _data_info(config, None if topo else mesh, rules)
    ex.check_fits(config, info)
    optimizer = ex.build_optimizer(config)
    t = config.trainer
    state = btrain.abstract_state(ex.model_constructor(config), optimizer, mesh=mesh, rules=rules, seed=t.seed,
                                  ema=t.ema_decay is not None, precision=t.precision)
    task = ex.task_of(config)
    loss_fn, tokens_key = task.loss, task.tokens_key
    step = btrain.jit_step(btrain.make_train_step(loss_fn, optimizer, microbatches=t.microbatches,
                                                  ema_decay=t.ema_decay), state, mesh=mesh, rules=rules)
    batch = _abstract_batch(task, config, info, mesh, rules)
    traced = step.trace(state, batch)
    start = time.perf_counter()
    compiled, out_of_memory = _compile(traced, topo)
    compile_s = time.perf_counter() - start

    memory = compiled.memory_analysis() if compiled is not None else None
    cost = compiled.cost_analysis() if compiled is not None else None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    size = lambda name: getattr(memory, name, None)  # noqa: E731
    global_batch = int(next(iter(batch.values())).shape[0])
    shards = _data_shards(mesh, rules, global_batch)
    platform = "tpu" if topo is not None else jax.default_backend()  # the branches the compiled program runs
    counted = tpu.matmul_flops(traced.jaxpr, platform)
    model_flops = 3 * tpu.matmul_flops(jax.make_jaxpr(_loss_only(loss_fn))(state.model, batch, _abstract_key()),
                                       platform)
    report = {
        "parameters": nn.count_parameters(state.model),
        "trainable_parameters": nn.count_parameters(state.model, trainable_only=True),
        "flops_per_step": float(cost.get("flops", 0.0)) if cost else None,
        "counted_flops_per_device": counted / mesh.size,
        "model_flops_per_step": model_flops,
        # 3 x forward is the usual convention (6 N per token); it also counts an input gradient
        # that a first conv or matmul on the data never computes, hence the cap.
        "mfu_bound": min(1.0, model_flops / counted) if counted else None,
        "mesh": dict(mesh.shape),
        "devices": mesh.size,
        "rules": config.mesh.rules,
        "global_batch": global_batch,
        # the tokens a step predicts per row: an LM's seq_len, text_to_image's image_len codes (not the caption's)
        "tokens_per_step": global_batch * (info.image_len or info.seq_len) if tokens_key else None,
        "hosts": len(shards["hosts"]),
        "per_host_batch": global_batch // len(shards["hosts"]),
        "data_shards": shards["hosts"],
        "problems": shards["problems"],
        "batch_shards": shards["batch_shards"],
        "param_bytes": _bytes_per_device(state.model) + _bytes_per_device(state.ema),
        "optimizer_bytes": _bytes_per_device(state.opt_state),
        "batch_bytes": _bytes_per_device(batch),
        "gradient_bytes": _bytes_per_device(_trainable_leaves(state.model)),
        "argument_bytes": size("argument_size_in_bytes"),
        "output_bytes": size("output_size_in_bytes"),
        "temp_bytes": size("temp_size_in_bytes"),
        "alias_bytes": size("alias_size_in_bytes"),
        "peak_bytes": size("peak_memory_in_bytes") if topo is not None else None,  # CPU: no real peak
        "needed_bytes": _needed_bytes(memory) if out_of_memory is None else out_of_memory[0],
        "compile_seconds": compile_s,
        # Hand-written kernels in the compiled program (the TPU's splash attention is a tpu_custom_call).
        "kernel_calls": _kernel_calls(compiled),
        "summary": nn.summary(state.model, mesh=mesh, rules=rules),
        "topology": None,
        "not_expressible": NOT_EXPRESSIBLE,
    }
    held = sum(report[k] for k in ("param_bytes", "optimizer_bytes", "batch_bytes", "gradient_bytes"))
    report["activation_bytes"] = max(0, report["needed_bytes"] - held) if report["needed_bytes"] else None
    if topo is not None:
        report.update(_tpu_fit(report, topo, out_of_memory))
        if fix and not report["fits"]:
            report["fixes"], report["replan"] = _find_fix(config, report)
    return report


def _kernel_calls(compiled) -> Optional[dict[str, int]]:
    """How many custom calls of each target the compiled program makes, e.g. ``{"tpu_custom_call": 8}``."""
    if compiled is None:
        return None
    targets = re.findall(r'custom_call_target="([^"]+)"', compiled.as_text())
    return dict(collections.Counter(targets))


#: What ``plan`` would suggest but the config cannot express yet (nothing, at present).
NOT_EXPRESSIBLE: tuple[str, ...] = ()


def _plan_mesh(config: ExperimentConfig):
    """The mesh ``plan`` compiles for: the config's devices, or a TPU topology's."""
    if config.mesh.topology is None:
        return ex.make_mesh(config), None
    topo = tpu.topology(config.mesh.topology)
    spec = config.mesh
    try:
        mesh = btrain.make_mesh(spec, devices=topo.devices)
    except ConfigError:
        raise ConfigError(f"mesh data={spec.data} fsdp={spec.fsdp} tensor={spec.tensor} does not divide the "
                          f"{topo.num_chips} chips of {topo.name}: give sizes whose product is {topo.num_chips}, "
                          f"or -1 for one axis to take the rest (e.g. mesh.data=-1)") from None
    return mesh, topo


def _compile(traced, topo):
    """``(compiled, None)``, or ``(None, (needed, available))`` when the TPU compiler runs out of HBM."""
    try:
        with tpu.quiet_libtpu() if topo is not None else contextlib.nullcontext():
            return traced.lower().compile(), None
    except jax.errors.JaxRuntimeError as err:
        out_of_memory = tpu.compiler_out_of_memory(str(err)) if topo is not None else None
        if out_of_memory is None:
            raise
        return None, out_of_memory


def _needed_bytes(memory) -> Optional[int]:
    """Bytes one device needs for the step: live arguments and outputs plus temporaries.

    The TPU backend also reports a ``peak_memory_in_bytes`` from its liveness analysis,
    which can be lower; this sum is the conservative figure (MaxText reports the same).
    """
    if memory is None:
        return None
    return int(memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
               + memory.temp_size_in_bytes)


def _bytes_per_device(tree: Any) -> int:
    """Bytes of one device's shards of an abstract tree (the largest shard of each leaf)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
        total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
    return total


def _trainable_leaves(model: nn.Module) -> list[Any]:
    """The parameters that get gradients (what the update holds at once besides the state)."""
    return [x for x, t in zip(jax.tree.leaves(model), jax.tree.leaves(nn.trainable(model)), strict=True) if t]


def _abstract_key() -> jax.ShapeDtypeStruct:
    return jax.eval_shape(lambda: jax.random.key(0))


def _loss_only(loss_fn: Callable) -> Callable:
    return lambda model, batch, key: call_loss(loss_fn, model, batch, key)[0]


def _data_shards(mesh, rules, global_batch: int) -> dict[str, Any]:
    """Which rows of the global batch each host's devices hold, and what would break the loader.

    baobab's loaders give host ``p`` of ``n`` examples ``p, p + n, ...`` of the shuffled
    stream, ``global_batch / n`` rows per step, and ``jax.make_array_from_process_local_data``
    places them, in order, on the rows that host's devices hold (which need not be one
    block). So each host's devices must hold exactly ``global_batch / n`` distinct rows.
    """
    sharding = btrain.batch_sharding(1, mesh=mesh, rules=rules)
    rows: dict[int, set[int]] = {}
    devices: dict[int, int] = {}
    for device, index in sharding.devices_indices_map((global_batch,)).items():
        rows.setdefault(device.process_index, set()).update(range(*index[0].indices(global_batch)))
        devices[device.process_index] = devices.get(device.process_index, 0) + 1
    hosts = sorted(rows)
    problems = []
    if global_batch % len(hosts):
        problems.append(f"data.batch_size={global_batch} is not a multiple of the {len(hosts)} hosts; each host "
                        f"loads batch_size / hosts rows")
    per_host = global_batch // len(hosts)
    shared = [h for h in hosts if len(rows[h]) != per_host]
    if shared and not problems:
        problems.append(f"host {shared[0]}'s devices hold {len(rows[shared[0]])} rows of the global batch, but "
                        f"each host loads {per_host} different ones: the 'batch' rule's mesh axes must split the "
                        f"batch over the hosts (keep the tensor axis within a host)")
    spec = sharding.spec[0] if len(sharding.spec) else None
    axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
    return {"hosts": [{"host": h, "devices": devices[h], "rows": _ranges(rows[h])} for h in hosts],
            "problems": problems, "batch_shards": int(np.prod([mesh.shape[a] for a in axes]))}


def _ranges(rows: set[int]) -> str:
    """``{0, 1, 2, 3, 8, 9}`` -> ``"0-3, 8-9"``."""
    out, ordered = [], sorted(rows)
    start = prev = ordered[0]
    for r in [*ordered[1:], None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
        if r is not None:
            start = prev = r
    return ", ".join(out)


def _tpu_fit(report: dict[str, Any], topo, out_of_memory) -> dict[str, Any]:
    """Whether the compiled step fits the chip's HBM, by how much, and the speed it is bounded by."""
    chip = topo.chip
    needed = report["needed_bytes"]
    step_s = report["counted_flops_per_device"] / chip.peak_bf16_flops
    tokens = report["tokens_per_step"]
    return {
        "topology": topo.name,
        "chip": chip.generation,
        "device_kind": topo.devices[0].device_kind,
        "accelerator_type": topo.accelerator_type,
        "hbm_bytes": chip.hbm_bytes,
        "fits": out_of_memory is None and needed <= chip.hbm_bytes,
        "compiler_hbm_bytes": None if out_of_memory is None else out_of_memory[1],
        "peak_flops_per_chip": chip.peak_bf16_flops,
        "step_seconds_bound": step_s,
        "tokens_per_second_bound": tokens / step_s if tokens and step_s else None,
    }


def _fix_candidates(config: ExperimentConfig, report: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Config changes that lower per-device memory, least intrusive first: ``(overrides, why)``."""
    candidates: list[tuple[tuple[str, ...], str]] = []
    mesh = report["mesh"]
    top = report["devices"] // mesh["tensor"]
    rules = () if config.mesh.rules in ("default", "fsdp") else ("mesh.rules=fsdp",)
    fsdp = mesh["fsdp"] * 2
    while fsdp <= top:
        if top % fsdp == 0:
            candidates.append(((f"mesh.data={top // fsdp}", f"mesh.fsdp={fsdp}", *rules),
                               f"more FSDP: parameters, gradients and Adam state split over {fsdp} chips"))
        fsdp *= 2
    model = config.model
    if getattr(model, "remat", "nothing_saveable") not in ("nothing_saveable", "full"):
        scan = () if getattr(model, "scan_layers", True) else ("model.scan_layers=True",)
        candidates.append((("model.remat=nothing_saveable", *scan),
                           "remat: keep only each layer's input, recompute the rest in the backward pass"))
    rows = report["global_batch"] // report["batch_shards"]  # per device
    k = config.trainer.microbatches * 2
    while rows and rows % k == 0:
        candidates.append(((f"trainer.microbatches={k}",),
                           f"microbatches: {k} gradient-accumulation steps, 1/{k} of the activations at a time"))
        k *= 2
    if config.optimizer.mu_dtype is None and config.optimizer.kind in ("adam", "adamw", "lion", "nadam", "nadamw"):
        candidates.append((("optimizer.mu_dtype=bfloat16",),
                           "bf16 first moments (Adam's mu), fp32 master weights kept"))
    policy = nn.Policy.from_string(config.trainer.precision) if config.trainer.precision else None
    if policy is None or jnp.dtype(policy.param_dtype) != jnp.bfloat16:
        compute = "bfloat16" if policy is None else jnp.dtype(policy.compute_dtype).name
        output = "float32" if policy is None else jnp.dtype(policy.output_dtype).name
        candidates.append(((f"trainer.precision=params=bfloat16,compute={compute},output={output}",),
                           "bf16 parameters and optimizer state: half the bytes, but bf16 master weights"))
    if len(candidates) > 1:  # every change at once, strongest of each kind
        strongest: dict[str, str] = {}
        for overrides, _ in candidates:
            for item in overrides:
                strongest[item.split("=", 1)[0]] = item
        candidates.append((tuple(strongest.values()), "all of the above together"))
    return candidates


#: At most this many fixes are compiled; failing compiles stop early (the TPU compiler
#: refuses a program that does not fit in seconds), the first that fits compiles fully.
MAX_FIX_TRIES = 8


def _find_fix(config: ExperimentConfig, report: dict[str, Any]) -> tuple[list[dict[str, Any]], Optional[dict]]:
    """Re-plan with each candidate fix in turn; stop at the first that fits."""
    candidates = _fix_candidates(config, report)
    if len(candidates) > MAX_FIX_TRIES:  # keep "all of the above together" last
        candidates = [*candidates[:MAX_FIX_TRIES - 1], candidates[-1]]
    tried = []
    for overrides, why in candidates:
        entry: dict[str, Any] = {"overrides": list(overrides), "why": why, "fits": False, "needed_bytes": None,
                                 "error": None}
        tried.append(entry)
        try:
            result = plan(apply_overrides(config, overrides), fix=False)
        except ValueError as err:  # e.g. an array dimension that does not split over the new mesh
            entry["error"] = str(err).strip().splitlines()[0]
            continue
        entry.update(fits=result["fits"], needed_bytes=result["needed_bytes"])
        if result["fits"]:
            return tried, result
    return tried, None


def _data_info(config: ExperimentConfig, mesh, rules) -> tuple[None, None, bdata.DataInfo]:
    """The DataInfo of the data section without reading data where the kind allows it."""
    info = bdata.data_info(config.data)
    if info is not None:
        return None, None, info
    return bdata.build_data(config.data, mesh=mesh, rules=rules, seed=config.trainer.seed)


def _abstract_batch(task, config: ExperimentConfig, info: bdata.DataInfo, mesh,
                    rules) -> dict[str, jax.ShapeDtypeStruct]:
    shapes = task.batch(info, config.data.batch_size)
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=btrain.batch_sharding(len(shape), mesh=mesh, rules=rules))
            for k, (shape, dtype) in shapes.items()}
