"""The ``baobab`` command. Each subcommand is one small function; later issues add more."""

from __future__ import annotations

import argparse
import sys

from baobab import __version__


def _demo(args: argparse.Namespace) -> int:
    from baobab import _demo

    metrics = _demo.run(steps=args.steps, seed=args.seed)
    return 0 if metrics["accuracy"] > 0.9 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baobab", description="baobab: neural networks on a functional core.")
    parser.add_argument("--version", action="version", version=f"baobab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train a small residual net with BatchNorm on generated spirals")
    demo.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
