"""The ``baobab`` command. Each subcommand is one small function; later issues add more."""

from __future__ import annotations

import argparse
import sys

from baobab import __version__


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baobab", description="baobab: neural networks on a functional core.")
    parser.add_argument("--version", action="version", version=f"baobab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train a small residual net with BatchNorm on generated spirals")
    demo.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)
    _add_data_parser(sub)
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
