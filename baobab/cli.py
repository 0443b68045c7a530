"""The ``baobab`` command. Each subcommand is one small function.

Exit codes: 0 success (also a run stopped by SIGTERM/SIGINT after checkpointing);
2 a user error (``baobab.errors.UserError``: bad config, unknown key, missing file,
bad data, a checkpoint that does not fit): one line on stderr naming the key, path
or shape and the fix (``--debug`` shows the traceback); 1 the run failed (a
non-finite loss, a full disk, a checkpoint that cannot be read for I/O reasons:
``baobab.errors.RunError``, one line) or a bug: any other exception prints its
traceback and asks for a bug report.

The process starts here, so process-wide settings are made here and nowhere else:
glibc's malloc set to keep freed memory for XLA:CPU (``baobab.host_memory``), the
CPU platform on a machine without accelerators, and log lines on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import threading
import traceback
from pathlib import Path

from baobab import __version__, _cli_hf, host_memory
from baobab.errors import RunError, UserError
from baobab.host_memory import has_accelerator as _has_accelerator

BUG_REPORT = ("This is a bug in baobab (or in a library it calls), not a mistake in your input: please report it "
              "with the traceback above and the command you ran.")

TRAIN_EXAMPLES = """examples:
  baobab train                                   # the embedded default: a CNN on embedded MNIST
  baobab train configs/mnist_cnn.py trainer.steps=2000 optimizer.lr=3e-4
  baobab train configs/gpt_bytes.py mesh.fsdp=4 mesh.tensor=2 mesh.data=1
"""


PLAN_EXAMPLES = """examples:
  baobab plan configs/gpt2_small.py mesh.data=2 mesh.fsdp=4       # on this machine's devices
  baobab plan configs/llama_1b.py --topology v5e:4x4 mesh.data=1 mesh.fsdp=16
  baobab plan configs/gpt2_small.py --topology v5p:2x2x2           # a TPU pod slice, compiled here
  baobab plan configs/minilm_docstrings.py --json                  # one JSON object on stdout
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
    except UserError as err:  # a missing input file, bad data: the user's to fix
        print(f"baobab data prepare: error: {err}", file=sys.stderr)
        return 2
    counts = {name: split["num_examples"] for name, split in meta["splits"].items()}
    print(f"wrote {args.out}/metadata.json: splits {counts}, features {sorted(meta['features'])}")
    return 0


def _data_encode_images(args: argparse.Namespace) -> int:
    from baobab import data
    from baobab.images_from_text import encode_images

    out = encode_images(args.run, args.out)
    counts = {name: split["num_examples"] for name, split in data.read_metadata(out)["splits"].items()}
    print(f"wrote {out}: splits {counts} of image_codes + label; train a text-to-image run on it with "
          f"data.codes={out}")
    return 0


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="data tools: `baobab data prepare ...`, `baobab data encode-images RUN`")
    tools = data.add_subparsers(dest="data_command", metavar="TOOL", required=True)
    encode = tools.add_parser("encode-images", help="a VQGAN run's training digits as its codes (a prepared "
                                                    "folder for data.kind=captioned_mnist)")
    encode.add_argument("run", help="a trained VQGAN run (configs/vqgan_mnist.py)")
    encode.add_argument("--out", default=None, help="output folder (default RUN/mnist_codes)")
    encode.set_defaults(func=_data_encode_images)
    prepare = tools.add_parser(
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
    from baobab.config import ConfigError, apply_overrides, load_config
    from baobab.experiment import ExperimentConfig

    if args.config is None:
        return apply_overrides(ExperimentConfig(), args.overrides)
    if "=" in args.config and not Path(args.config).exists():  # `baobab train key=value` with no CONFIG
        return apply_overrides(ExperimentConfig(), [args.config, *args.overrides])
    config = load_config(args.config, args.overrides)
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"{args.config}: get_config() must return a baobab.experiment.ExperimentConfig")
    return config


def _train(args: argparse.Namespace) -> int:
    from baobab.commands import run_train

    config = _experiment(args)
    result = run_train(config)
    if result.preempted:
        print(f"stopped by a signal at step {result.step}; checkpoint saved in {config.trainer.workdir}",
              file=sys.stderr)
        return 0
    print(json.dumps({"step": result.step, **result.metrics, **result.eval_metrics}, sort_keys=True))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from baobab.commands import run_eval
    from baobab.runs import load_run

    metrics = run_eval(load_run(args.run, args.overrides))
    print(json.dumps(metrics, sort_keys=True))
    return 0


def _plan(args: argparse.Namespace) -> int:
    import contextlib

    from baobab.plan_report import format_plan, plan_json
    from baobab.planner import plan

    if args.topology:
        topology, *rest = args.topology
        if args.config is None and rest:  # `baobab plan --topology T CONFIG key=value ...`
            args.config, *rest = rest
        args.overrides = [*args.overrides, *rest, f"mesh.topology={topology}"]
    config = _experiment(args)
    if config.mesh.topology:  # compile-only TPU devices; keep any local accelerator out of it
        import jax

        jax.config.update("jax_platforms", "cpu")
    if args.json:  # stdout holds the JSON object and nothing else: anything printed on the way goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            report = plan(config)
        print(json.dumps(plan_json(report), sort_keys=True))
    else:
        report = plan(config)
        print(report["summary"])
        print()
        print(format_plan(report))
    return 1 if report.get("fits") is False or report["problems"] else 0


def _generate(args: argparse.Namespace) -> int:
    from baobab.commands import generate_text
    from baobab.config import ConfigError
    from baobab.runs import load_run

    config = load_run(args.run, args.overrides)
    if config.task == "text_to_image":
        from baobab.images_from_text import generate_grid

        out = generate_grid(config, args.prompt, args.out or "grid.png", num_images=args.num_images, seed=args.seed,
                            temperature=1.0 if args.temperature is None else args.temperature, top_k=args.top_k,
                            top_p=args.top_p, condition_scale=args.condition_scale)
        print(f"wrote {out} ({args.num_images} images for {args.prompt!r})")
        return 0
    image_only = [flag for flag, value in (("--out", args.out), ("--num-images", args.num_images != 16),
                                           ("--condition-scale", args.condition_scale != 1.0)) if value]
    if image_only:
        raise ConfigError(f"{', '.join(image_only)} only apply to text-to-image runs; {args.run} is a "
                          f"task={config.task} run")

    def show(text: str) -> None:
        print(text, end="", flush=True)

    show(args.prompt)
    generate_text(config, args.prompt, args.steps, temperature=args.temperature or 0.0, top_k=args.top_k,
                  top_p=args.top_p, seed=args.seed, stop=tuple(args.stop), eos_id=args.eos_id, on_text=show)
    print()
    return 0


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
    pl.add_argument("--json", action="store_true",
                    help="print the report as one JSON object (flops_per_step, bytes_per_device, "
                         "trainable_params, total_params, ...) and nothing else on stdout")
    pl.set_defaults(func=_plan)

    gen = sub.add_parser("generate", help="sample text from a language-model run, or images from a text-to-image "
                                          "run", formatter_class=fmt,
                         epilog='examples:\n  baobab generate runs/gpt_bytes --prompt "def " --steps 200\n'
                                '  baobab generate runs/gpt_bytes --prompt "import" --temperature 0.8 --top-p 0.9\n'
                                '  baobab generate runs/char_lm --prompt "- Issue " --steps 400 --stop $\'\\n\\n\'\n'
                                '  baobab generate runs/dalle_mnist --prompt "a handwritten seven" --num-images 16 '
                                '--out grid.png --condition-scale 3\n'
                                'Tokens are printed as they are made; images are written as one PNG grid.\n')
    gen.add_argument("run", help="a run directory of a gpt2/llama run, or of a text_to_image (DalleBart) run")
    gen.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    gen.add_argument("--prompt", required=True, help="text to continue")
    gen.add_argument("--steps", type=int, default=100, help="new tokens (default 100)")
    gen.add_argument("--temperature", type=float, default=None,
                     help="0 is greedy (the default for text; images default to 1)")
    gen.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    gen.add_argument("--stop", action="append", default=[], metavar="TEXT",
                     help="stop before this text (repeatable), e.g. --stop $'\\n\\n'")
    gen.add_argument("--eos-id", type=int, default=None, help="stop at this token id (the tokenizer's end of text)")
    gen.add_argument("--num-images", type=int, default=16, help="text-to-image: images to sample (default 16)")
    gen.add_argument("--out", default=None, help="text-to-image: the PNG grid to write (default grid.png)")
    gen.add_argument("--condition-scale", type=float, default=1.0,
                     help="text-to-image: super-conditioning, uncond + scale * (cond - uncond); 1 is unguided")
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


class _LibraryHandler(logging.StreamHandler):
    """Other libraries' warnings on stderr, in baobab's line format; baobab's own lines have their handler."""


def _library_warnings_to_stderr() -> None:
    """Give the root logger one handler, so absl does not add its default one on first use.

    absl's ``logging.log`` calls ``logging.basicConfig()`` when the root logger has no
    handler (orbax logs through absl at import), and that handler printed every baobab
    line a second time as ``INFO:baobab.train:...``.
    """
    root = logging.getLogger()
    for h in list(root.handlers):  # absl's implicit basicConfig, if an import already triggered it
        if type(h) is logging.StreamHandler and h.formatter is not None and h.formatter._fmt == logging.BASIC_FORMAT:
            root.removeHandler(h)
    if any(isinstance(h, _LibraryHandler) for h in root.handlers):
        return
    handler = _LibraryHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(lambda record: not record.name.startswith("baobab"))
    root.addHandler(handler)


def _without_traceback(record: logging.LogRecord) -> bool:
    """Keep a library's log record, but as its message only (``--debug`` keeps the tracebacks)."""
    if record.exc_info or record.exc_text:
        record.exc_info, record.exc_text = None, None
        record.msg = f"{record.getMessage()} (traceback hidden; --debug shows it)"
        record.args = ()
    return True


def _one_line(exc: BaseException | None) -> str:
    return "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1] if exc is not None else "?"


def _background_errors_in_one_line() -> None:
    """Errors that a library's background thread or finaliser ignores, as one log line each.

    orbax's save threads and asyncio loops may raise after the run has already stopped
    (``Event loop is closed`` while the interpreter shuts down, a write error that the
    trainer has already reported). Python prints each as a full traceback, after
    baobab's own one-line error. ``--debug`` keeps Python's default hooks.
    """
    log = logging.getLogger("baobab.cli")

    def unraisable(info) -> None:
        if isinstance(info.exc_value, RuntimeError) and "Event loop is closed" in str(info.exc_value):
            log.debug("ignored at shutdown: %s", _one_line(info.exc_value))  # asyncio's loop gone before orbax's
            return
        log.warning("ignored error in %r: %s (traceback hidden; --debug shows it)", info.object, _one_line(info.exc_value))

    def thread_failed(args) -> None:
        name = args.thread.name if args.thread is not None else "a thread"
        log.warning("background thread %s failed: %s (traceback hidden; --debug shows it)", name,
                    _one_line(args.exc_value))

    sys.unraisablehook = unraisable
    threading.excepthook = thread_failed


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    host_memory.configure()  # before JAX computes anything; BAOBAB_HOST_MEMORY=system opts out
    _cpu_when_no_accelerator()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from baobab import train

    train.log_to_stderr()  # progress, banner and warnings as plain lines, also when stderr is not a terminal
    _library_warnings_to_stderr()
    if not args.debug:  # orbax logs its background threads' failures with tracebacks; we report them in one line
        for handler in logging.getLogger().handlers:  # every library's records (absl, asyncio), not baobab's
            if isinstance(handler, _LibraryHandler):
                handler.addFilter(_without_traceback)
        _background_errors_in_one_line()
    try:
        return args.func(args)
    except UserError as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"baobab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except (FloatingPointError, RunError) as err:  # NonFiniteError, a full disk: the run failed, the input was fine
        if args.debug:
            raise
        print(f"baobab {args.command}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"baobab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # not the user's mistake: show everything (a full disk aside)
        from baobab.train._checkpoint_faults import is_disk_full

        if is_disk_full(err) and not args.debug:
            print(f"baobab {args.command}: no space left on the device writing "
                  f"{getattr(err, 'filename', None) or 'a file'}; free space and rerun the same command "
                  f"(a train run resumes from its last checkpoint).", file=sys.stderr)
            return 1
        traceback.print_exc()
        print(f"baobab {args.command}: {BUG_REPORT}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
