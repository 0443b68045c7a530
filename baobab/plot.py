"""``baobab plot``: PNG curves from runs' ``metrics.jsonl``, several runs overlaid."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from baobab.errors import MissingFileError, UnknownKeyError

__all__ = ["plot_runs"]


def plot_runs(runs: Sequence[str | Path], out: str | Path, *, keys: Sequence[str] | None = None) -> Path:
    """Plot each metric in ``keys`` (default: those containing "loss" or "accuracy")
    against the step, one panel per metric, one line per run; write a PNG to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from baobab.train import read_metrics

    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for run in runs:
        if not (Path(run) / "metrics.jsonl").is_file():
            raise MissingFileError(f"{run}: no metrics.jsonl; pass run directories written by `baobab train`")
        for record in read_metrics(run):
            for name, value in record.items():
                if name == "step" or not isinstance(value, (int, float)):
                    continue
                steps, values = series.setdefault(name, {}).setdefault(str(run), ([], []))
                steps.append(int(record["step"]))
                values.append(float(value))
    names = list(keys) if keys else sorted(n for n in series if "loss" in n or "accuracy" in n)
    missing = [n for n in names if n not in series]
    if missing or not names:
        raise UnknownKeyError(f"metrics {missing or names} not found; the runs have {sorted(series)}")
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 2.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        for run, (steps, values) in series[name].items():
            ax.plot(steps, values, label=run, marker="." if len(steps) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
