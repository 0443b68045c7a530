"""A ``baobab plan`` report as the CLI prints it: labelled text lines, or one JSON object.

``format_plan(report)`` is the text; ``plan_json(report)`` the ``--json`` record:
every fact of the report (the per-layer summary table aside) plus the four a
script asks for first, under stable names:

* ``flops_per_step``: XLA's cost analysis of the compiled train step, per device;
* ``bytes_per_device``: what one device needs for the step (``needed_bytes``);
* ``trainable_params`` / ``total_params``: parameter counts (LoRA: the adapters).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["format_plan", "plan_json"]


def plan_json(report: dict) -> dict[str, Any]:
    """The report as a JSON-ready dict (``baobab plan --json``); a re-plan is nested the same way.

    >>> record = plan_json({"flops_per_step": 2.0e9, "needed_bytes": 1024, "parameters": 10,
    ...                     "trainable_parameters": 4, "summary": "(table)"})
    >>> record["bytes_per_device"], record["trainable_params"], record["total_params"], "summary" in record
    (1024, 4, 10, False)
    """
    out = {k: _plain(v) for k, v in report.items() if k not in ("summary", "replan")}
    out.update(flops_per_step=report["flops_per_step"], bytes_per_device=report["needed_bytes"],
               trainable_params=report["trainable_parameters"], total_params=report["parameters"])
    if report.get("replan"):
        out["replan"] = plan_json(report["replan"])
    return out


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and numpy scalars as Python numbers (what ``json`` takes)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def format_plan(report: dict, indent: str = "") -> str:
    """The human-readable plan: one labelled line per fact (see ``baobab.planner.plan``)."""
    lines: list[tuple[str, str]] = []
    add = lambda label, text: lines.append((label, text))  # noqa: E731
    trainable = report["trainable_parameters"]
    add("parameters", f"{report['parameters']:,}" + ("" if trainable == report["parameters"]
                                                      else f" ({trainable:,} trainable)"))
    add("mesh", f"{report['mesh']} ({report['devices']} devices), rules {report['rules']}")
    if report["topology"]:
        add("topology", f"{report['topology']}: {report['devices']} chips ({report['device_kind']}), "
                        f"{report['hosts']} hosts, gcloud accelerator type {report['accelerator_type']}, "
                        f"{_size(report['hbm_bytes'])} HBM per chip")
    tokens = f"; {report['tokens_per_step']:,} tokens per step" if report["tokens_per_step"] else ""
    add("global batch", f"{report['global_batch']} (per host {report['per_host_batch']}, per device "
                        f"{report['global_batch'] // report['batch_shards']}{tokens})")
    shards = report["data_shards"]
    if len(shards) > 1:
        n = len(shards)
        add("data shards", f"host p of {n} reads examples p, p+{n}, p+{2 * n}, ... of the shuffled stream, "
                           f"{report['per_host_batch']} per step, onto these rows of the global batch:")
        shown = shards if n <= 6 else [*shards[:3], None, shards[-1]]
        for s in shown:
            add("", "  ..." if s is None else
                f"  host {s['host']}: global rows {s['rows']} ({s['devices']} devices)")
    add("per device", f"parameters {_size(report['param_bytes'])}, optimizer state {_size(report['optimizer_bytes'])}, "
                      f"gradients {_size(report['gradient_bytes'])}, batch {_size(report['batch_bytes'])}, "
                      f"activations and workspace {_size(report['activation_bytes'])}")
    if report["argument_bytes"] is not None:
        add("XLA memory", f"arguments {_size(report['argument_bytes'])}, outputs {_size(report['output_bytes'])} "
                          f"(aliased {_size(report['alias_bytes'])}), temporaries {_size(report['temp_bytes'])}"
                          + (f", peak {_size(report['peak_bytes'])}" if report["peak_bytes"] else "")
                          + f"; needs {_size(report['needed_bytes'])} per device")
    xla = report["flops_per_step"]
    add("FLOPs per step", ("?" if xla is None else f"{xla:.4g}") +
        " per device (XLA cost analysis, per device: counts each loop body once)")
    add("", f"{report['counted_flops_per_device']:.4g} per device counted in the program (matmuls, loops times "
            f"their trip count, remat included)")
    if report["mfu_bound"] is not None:
        speed = ""
        if report["topology"]:
            tps = report["tokens_per_second_bound"]
            speed = (f"; a step takes at least {report['step_seconds_bound'] * 1e3:.3g} ms at "
                     f"{report['peak_flops_per_chip'] / 1e12:.0f} TFLOP/s bf16 per chip"
                     + (f", at most {tps:,.0f} tokens/s" if tps else ""))
        add("MFU bound", f"{report['mfu_bound']:.2f} (model FLOPs / executed FLOPs: remat recompute lowers it){speed}")
    for problem in report["problems"]:
        add("PROBLEM", problem)
    if report["topology"]:
        hbm = report["hbm_bytes"]
        if report["fits"]:
            add("fits", f"yes: needs {_size(report['needed_bytes'])} of {_size(hbm)} HBM per chip "
                        f"({_size(hbm - report['needed_bytes'])} free)")
        else:
            refused = report["compiler_hbm_bytes"]
            add("fits", f"NO: needs {_size(report['needed_bytes'])} per chip, the chip has {_size(hbm)}: over by "
                        f"{_size(report['needed_bytes'] - hbm)}" + (
                            f" (the TPU compiler refused it; it allows {_size(refused)})" if refused else ""))
    add("compile", f"{report['compile_seconds']:.1f} s")
    if "fixes" in report:
        add("fixes", "tried in order, least intrusive first, until one fits:")
        for fix in report["fixes"]:
            outcome = (f"error: {fix['error']}" if fix["error"] else
                       f"fits: needs {_size(fix['needed_bytes'])}" if fix["fits"] else
                       f"needs {_size(fix['needed_bytes'])}: does not fit")
            add("", f"  {' '.join(fix['overrides'])}  ->  {outcome}  ({fix['why']})")
        for note in report["not_expressible"]:
            add("not expressible", note)
    text = "\n".join(f"{indent}{label:<16} {value}" for label, value in lines)
    replan = report.get("fixes") and report.get("replan")
    if replan:
        text += f"\n\n{indent}re-planned with {' '.join(report['fixes'][-1]['overrides'])}:\n"
        text += format_plan(replan, indent + "    ")
    elif "fixes" in report:
        text += (f"\n{indent}{'':<16} none fits: try more chips, a chip with more HBM (v5p has 95 GiB), a shorter "
                 f"data.seq_len or a smaller data.batch_size")
    return text
