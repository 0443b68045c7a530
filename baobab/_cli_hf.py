"""``baobab import hf SRC OUT`` and ``baobab export hf RUN_DIR OUT``.

``cli.build_parser`` calls ``add_parsers(sub)``; the work is in ``baobab.hf_runs``.
"""

from __future__ import annotations

import argparse
import json

from baobab.errors import ConfigError

IMPORT_EXAMPLES = """examples:
  baobab import hf ~/models/all-MiniLM-L6-v2 runs/minilm     # config.json + model.safetensors
  baobab import hf resnet18.safetensors runs/resnet18        # a torchvision state_dict
  baobab import hf ~/models/gpt2 runs/gpt2 --set scan_layers=true
"""

EXPORT_EXAMPLES = """examples:
  baobab export hf runs/minilm_sst runs/minilm_sst_hf
  python -c "import transformers; transformers.AutoModel.from_pretrained('runs/minilm_sst_hf')"
  baobab export hf runs/minilm_lora runs/minilm_lora_peft --adapters   # PEFT adapters of a LoRA run
"""


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _import(args: argparse.Namespace) -> int:
    from baobab.hf_runs import import_run

    overrides = {}
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set scan_layers=true")
        overrides[key] = _value(value)
    out, report = import_run(args.src, args.out, **overrides)
    print(json.dumps({"out": str(out), "kind": report.kind, "tensors": report.loaded}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from baobab.hf_runs import export_run

    out = export_run(args.run_dir, args.out, adapters=args.adapters)
    print(json.dumps({"out": str(out), "files": sorted(p.name for p in out.iterdir())}))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``import`` and ``export`` (each with the ``hf`` format) to the CLI."""
    fmt = argparse.RawDescriptionHelpFormatter
    imp = sub.add_parser("import", help="import pretrained weights as a baobab run (Hugging Face safetensors)")
    imp_sub = imp.add_subparsers(dest="format", metavar="FORMAT", required=True)
    hf = imp_sub.add_parser("hf", help="a Hugging Face folder or torchvision .safetensors -> a run directory",
                            epilog=IMPORT_EXAMPLES, formatter_class=fmt)
    hf.add_argument("src", help="model folder (config.json + *.safetensors) or a torchvision .safetensors file")
    hf.add_argument("out", help="the run directory to create (a checkpoint at step 0 + its config)")
    hf.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a field of the model config")
    hf.set_defaults(func=_import)

    exp = sub.add_parser("export", help="export a run's model (Hugging Face safetensors)")
    exp_sub = exp.add_subparsers(dest="format", metavar="FORMAT", required=True)
    hf = exp_sub.add_parser("hf", help="a run directory -> a Hugging Face folder (config.json + safetensors)",
                            epilog=EXPORT_EXAMPLES, formatter_class=fmt)
    hf.add_argument("run_dir", help="a run's trainer.workdir (trained, or made by `baobab import hf`)")
    hf.add_argument("out", help="the folder to write")
    hf.add_argument("--adapters", action="store_true",
                    help="a LoRA run: write only its adapters, in the PEFT format (adapter_config.json + "
                         "adapter_model.safetensors), for peft.PeftModel.from_pretrained(base, OUT)")
    hf.set_defaults(func=_export)
