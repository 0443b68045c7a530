"""The ``baobab`` command. Each subcommand is one small function.

Exit codes: 0 success (also a run stopped by SIGTERM/SIGINT after checkpointing),
1 the run itself failed (non-finite loss, a target not reached), 2 a user error
(bad config, unknown key, missing file): one line on stderr, no traceback
(``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys
from pathlib import Path

from baobab import __version__, _cli_hf
from baobab._host_memory import has_accelerator as _has_accelerator

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, TypeError)

TRAIN_EXAMPLES = """examples:
  baobab train                                   # the embedded default: a CNN on embedded MNIST
  baobab train configs/mnist_cnn.py trainer.steps=2000 optimizer.lr=3e-4
  baobab train configs/gpt_bytes.py mesh.fsdp=4 mesh.tensor=2 mesh.data=1
"""


PLAN_EXAMPLES = """examples:
  baobab plan configs/gpt2_small.py mesh.data=2 mesh.fsdp=4       # on this machine's devices
  baobab plan configs/llama_1b.py --topology v5e:4x4 mesh.data=1 mesh.fsdp=16
  baobab plan configs/gpt2_small.py --topology v5p:2x2x2           # a TPU pod slice, compiled here
exit codes: 0 fits (or no topology given), 1 does not fit a TPU topology's HBM, 2 bad input
"""


def _demo(args: argparse.Namespace) -> int:
    from baobab import _demo

    metrics = _demo.run(steps=args.steps, seed=args.seed)
    return 0 if metrics["accuracy"] > 0.9 else 1


def _data_prepare(args: argparse.Namespace) -> int:
    from baobab import data

    common = {"split": args.split, "num_shards": args.num_shards, "progress": not args.quiet}
    if args.kind != "text" and len(args.inputs) != 1:
        print(f"baobab data prepare {args.kind}: give one input, got {len(args.inputs)}.", file=sys.stderr)
        return 2
    try:
        if args.kind == "images":
            meta = data.prepare_image_folder(args.inputs[0], args.out, decode=args.decode, **common)
        elif args.kind == "text":
            meta = data.prepare_text(args.inputs, args.out, unit=args.unit, tokenizer=args.tokenizer, **common)
        else:
            meta = data.prepare_arrays(args.inputs[0], args.out, **common)
    except (ValueError, FileNotFoundError, KeyError) as err:  # DataError is a ValueError
        print(f"baobab data prepare: error: {err}", file=sys.stderr)
        return 1
    counts = {name: split["num_examples"] for name, split in meta["splits"].items()}
    print(f"wrote {args.out}/metadata.json: splits {counts}, features {sorted(meta['features'])}")
    return 0


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="data tools: `baobab data prepare ...`")
    prepare = data.add_subparsers(dest="data_command", metavar="TOOL", required=True).add_parser(
        "prepare", help="convert an image folder, text files or a .npz into ArrayRecord shards + metadata.json")
    prepare.add_argument("kind", choices=["images", "text", "arrays"],
                         help="images: ROOT/<class>/*.png|jpg; text: one or more UTF-8 files; arrays: a .npz")
    prepare.add_argument("inputs", nargs="+", help="the image folder, the text files, or the .npz file")
    prepare.add_argument("--out", required=True, help="output folder (created; other splits there are kept)")
    prepare.add_argument("--split", default="train", help="split name to write (default train)")
    prepare.add_argument("--num-shards", type=int, default=1, help="ArrayRecord files for this split (default 1)")
    prepare.add_argument("--decode", action="store_true", help="images: store decoded uint8 arrays, not file bytes")
    prepare.add_argument("--unit", default="file", choices=["file", "paragraph", "line"],
                         help="text: what one document is (default file)")
    prepare.add_argument("--tokenizer", default=None,
                         help="text: also store token ids: 'bytes' or the path of a tokenizer.json")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(func=_data_prepare)


def _experiment(args: argparse.Namespace):
    from baobab.config import load_config
    from baobab.experiment import ExperimentConfig
    from baobab.config import apply_overrides

    if args.config is None:
        return apply_overrides(ExperimentConfig(), args.overrides)
    if "=" in args.config and not Path(args.config).exists():  # `baobab train key=value` with no CONFIG
        return apply_overrides(ExperimentConfig(), [args.config, *args.overrides])
    config = load_config(args.config, args.overrides)
    if not isinstance(config, ExperimentConfig):
        from baobab.config import ConfigError

        raise ConfigError(f"{args.config}: get_config() must return a baobab.experiment.ExperimentConfig")
    return config


def _train(args: argparse.Namespace) -> int:
    from baobab.experiment import run_train

    config = _experiment(args)
    result = run_train(config)
    if result.preempted:
        print(f"stopped by a signal at step {result.step}; checkpoint saved in {config.trainer.workdir}",
              file=sys.stderr)
        return 0
    print(json.dumps({"step": result.step, **result.metrics, **result.eval_metrics}, sort_keys=True))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from baobab.experiment import load_run, run_eval

    metrics = run_eval(load_run(args.run, args.overrides))
    print(json.dumps(metrics, sort_keys=True))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from baobab.experiment import plan

    if args.topology:
        topology, *rest = args.topology
        if args.config is None and rest:  # `baobab plan --topology T CONFIG key=value ...`
            args.config, *rest = rest
        args.overrides = [*args.overrides, *rest, f"mesh.topology={topology}"]
    config = _experiment(args)
    if config.mesh.topology:  # compile-only TPU devices; keep any local accelerator out of it
        import jax

        jax.config.update("jax_platforms", "cpu")
    report = plan(config)
    print(report["summary"])
    print()
    print(_plan_text(report))
    return 1 if report.get("fits") is False or report["problems"] else 0


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _plan_text(report: dict, indent: str = "") -> str:
    """The human-readable plan: one labelled line per fact (see ``baobab.experiment.plan``)."""
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
        text += _plan_text(replan, indent + "    ")
    elif "fixes" in report:
        text += (f"\n{indent}{'':<16} none fits: try more chips, a chip with more HBM (v5p has 95 GiB), a shorter "
                 f"data.seq_len or a smaller data.batch_size")
    return text


def _generate(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from baobab import models
    from baobab.config import ConfigError
    from baobab.experiment import load_run, restore_model

    config = load_run(args.run, args.overrides)
    if config.model.kind not in ("gpt2", "llama"):
        raise ConfigError(f"{args.run}: model.kind = {config.model.kind!r} is not a language model")
    tokenizer = getattr(config.data, "tokenizer", "bytes")
    if tokenizer == "bytes":
        ids = list(args.prompt.encode("utf-8"))
        decode = lambda toks: bytes(int(t) for t in toks if t < 256).decode("utf-8", errors="replace")
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tokenizer)
        ids = tok.encode(args.prompt).ids
        decode = lambda toks: tok.decode([int(t) for t in toks])
    if not ids:
        raise ConfigError("--prompt is empty; give at least one character")
    model, step = restore_model(config)
    out = models.generate(nn_eval(model), jnp.asarray([ids], jnp.int32), args.steps, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, key=jax.random.key(args.seed))
    print(args.prompt + decode(np.asarray(out[0, len(ids):])))
    return 0


def nn_eval(model):
    from baobab import nn

    return nn.eval_mode(model)


def _plot(args: argparse.Namespace) -> int:
    from baobab.plot import plot_runs

    written = plot_runs(args.runs, args.out, keys=args.keys)
    print(f"wrote {written}")
    return 0


def _add_run_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    train = sub.add_parser("train", help="train (or resume) a run from a config", epilog=TRAIN_EXAMPLES,
                           formatter_class=fmt)
    train.add_argument("config", nargs="?", default=None,
                       help="a Python config file with get_config(); none: the embedded default")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optimizer.lr=3e-4")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a run's newest checkpoint on its eval split", formatter_class=fmt,
                        epilog="examples:\n  baobab eval runs/default\n  baobab eval runs/default data.eval_batch_size=100\n")
    ev.add_argument("run", help="a run directory (trainer.workdir) or a checkpoint inside it")
    ev.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    ev.set_defaults(func=_eval)

    pl = sub.add_parser("plan", help="parameters, FLOPs, memory and shardings of a run, compiled ahead of time",
                        formatter_class=fmt, epilog=PLAN_EXAMPLES)
    pl.add_argument("config", nargs="?", default=None, help="a Python config file; none: the embedded default")
    pl.add_argument("overrides", nargs="*", help="key=value overrides")
    # nargs="+": argparse cannot take positionals after an option in the middle, so the
    # overrides that follow `--topology T` are collected here and handed back by _plan.
    pl.add_argument("--topology", nargs="+", default=None, metavar=("GEN:SHAPE", "KEY=VALUE"),
                    help="compile for this TPU slice (needs the tpu extra), e.g. v5p:4x4x4, v5e:4x4, v6e:8x8; "
                         "same as mesh.topology=...; exit code 1 if the step does not fit the chips' HBM")
    pl.set_defaults(func=_plan)

    gen = sub.add_parser("generate", help="sample text from a trained language-model run", formatter_class=fmt,
                         epilog='examples:\n  baobab generate runs/gpt_bytes --prompt "def " --steps 200\n'
                                '  baobab generate runs/gpt_bytes --prompt "import" --temperature 0.8 --top-p 0.9\n')
    gen.add_argument("run", help="a run directory of a gpt2/llama run")
    gen.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    gen.add_argument("--prompt", required=True, help="text to continue")
    gen.add_argument("--steps", type=int, default=100, help="new tokens (default 100)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    gen.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    gen.set_defaults(func=_generate)

    plot = sub.add_parser("plot", help="PNG curves of runs' metrics.jsonl", formatter_class=fmt,
                          epilog="examples:\n  baobab plot runs/a runs/b --out curves.png --keys train/loss eval/accuracy\n")
    plot.add_argument("runs", nargs="+", help="run directories to overlay")
    plot.add_argument("--out", default="curves.png", help="PNG file to write (default curves.png)")
    plot.add_argument("--keys", nargs="*", default=None, help="metrics to plot (default: every loss/accuracy)")
    plot.set_defaults(func=_plot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baobab", description="baobab: neural networks on a functional core.")
    parser.add_argument("--version", action="version", version=f"baobab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train a small residual net with BatchNorm on generated spirals")
    demo.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)
    _add_run_parsers(sub)
    _add_data_parser(sub)
    _cli_hf.add_parsers(sub)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of errors")
    return parser


def _cpu_when_no_accelerator() -> None:
    """Run on the CPU, without loading libtpu, on a machine that has no accelerator at all.

    The test extra installs libtpu (for ``plan --topology``); left alone, JAX loads it
    on every command and it prints pages of TPU-detection warnings on a laptop.
    ``JAX_PLATFORMS`` set by the user always wins.
    """
    if os.environ.get("JAX_PLATFORMS") or "JAX_FORCE_TPU_INIT" in os.environ:
        return
    if importlib.util.find_spec("libtpu") is None or _has_accelerator():
        return
    import jax

    jax.config.update("jax_platforms", "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _cpu_when_no_accelerator()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, KeyError) and message.startswith(("'", '"')):
            message = message[1:-1]
        print(f"baobab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # train.NonFiniteError: the run failed, the user's input was fine
        if args.debug:
            raise
        print(f"baobab {args.command}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
