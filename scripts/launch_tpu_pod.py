"""Launch a baobab run on a Cloud TPU pod slice, after proving on this machine that it fits.

    python scripts/launch_tpu_pod.py --tpu my-pod --zone us-east5-a --topology v5p:4x4x4 \\
        configs/llama_1b.py mesh.data=1 mesh.fsdp=64 [--create --version RUNTIME] [--force] [--dry-run]

What it does, in order:

1. ``baobab plan CONFIG --topology TOPOLOGY OVERRIDES`` here: the real train step compiled
   for the pod (needs the ``tpu`` extra). A step that does not fit the chips' HBM (plan's
   exit code 1) is refused unless ``--force``; bad input (exit code 2) always stops here.
2. With ``--create``: ``gcloud compute tpus tpu-vm create`` of the matching accelerator type.
3. ``gcloud compute tpus tpu-vm scp --worker=all``: this checkout's code and configs to
   ``~/baobab`` on every host.
4. ``gcloud compute tpus tpu-vm ssh --worker=all``: ``pip install -e ".[tpu]"`` on every host.
5. ``gcloud compute tpus tpu-vm ssh --worker=all``: ``baobab train CONFIG OVERRIDES`` on every
   host (the same config and overrides that were planned).

``--dry-run`` runs the plan, then prints the gcloud commands instead of running them.
Exit codes: 0 launched (or printed), 1 refused (does not fit) or a gcloud command failed,
2 bad input.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: What a host needs to install and run baobab: the packages, the configs, the metadata.
SOURCES = ("pyproject.toml", "README.md", "baobab", "nn", "train", "data", "models", "configs")
REMOTE_DIR = "~/baobab"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="launch_tpu_pod.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("config", help="a Python config file, as for `baobab train`")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, planned and trained alike")
    parser.add_argument("--tpu", required=True, help="the TPU VM's name")
    parser.add_argument("--zone", required=True, help="its zone, e.g. us-east5-a")
    parser.add_argument("--topology", required=True, help="the slice, e.g. v5p:4x4x4, v5e:4x4, v6e:8x8")
    parser.add_argument("--project", default=None, help="the Google Cloud project (default: gcloud's)")
    parser.add_argument("--create", action="store_true", help="create the TPU VM first")
    parser.add_argument("--version", default=None, help="TPU software version for --create, e.g. v2-alpha-tpuv5")
    parser.add_argument("--force", action="store_true", help="launch even if the plan says it does not fit")
    parser.add_argument("--dry-run", action="store_true", help="plan, then print the gcloud commands only")
    args = parser.parse_args(argv)
    if args.create and not args.version:
        parser.error("--create needs --version (the TPU software version, e.g. v2-alpha-tpuv5)")
    return args


def plan_command(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "baobab.cli", "plan", args.config, *args.overrides, "--topology", args.topology]


def gcloud_commands(args: argparse.Namespace, accelerator_type: str) -> list[list[str]]:
    """The gcloud commands that create (optionally), fill and start the pod, in order."""
    where = ["--zone", args.zone] + (["--project", args.project] if args.project else [])
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    config = Path(args.config).resolve()
    try:
        remote_config = config.relative_to(REPO).as_posix()
        extra = []
    except ValueError:  # a config outside the checkout travels beside it
        remote_config, extra = config.name, [str(config)]
    sources = [str(REPO / s) for s in SOURCES if (REPO / s).exists()] + extra
    ssh = lambda command: [*tpu_vm, "ssh", args.tpu, *where, "--worker=all", "--command", command]  # noqa: E731
    train = shlex.join(["baobab", "train", remote_config, *args.overrides])
    commands = []
    if args.create:
        commands.append([*tpu_vm, "create", args.tpu, *where, "--accelerator-type", accelerator_type,
                         "--version", args.version])
    commands += [
        ssh(f"mkdir -p {REMOTE_DIR}"),
        [*tpu_vm, "scp", "--recurse", *sources, f"{args.tpu}:{REMOTE_DIR}/", *where, "--worker=all"],
        ssh(f'cd {REMOTE_DIR} && pip install -e ".[tpu]"'),
        ssh(f"cd {REMOTE_DIR} && {train}"),
    ]
    return commands


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"+ {shlex.join(plan_command(args))}", flush=True)
    planned = subprocess.run(plan_command(args), cwd=REPO)
    if planned.returncode == 2:
        print("launch_tpu_pod: the plan failed on bad input (above); nothing launched.", file=sys.stderr)
        return 2
    if planned.returncode == 1 and not args.force:
        print(f"launch_tpu_pod: refused: the run does not fit {args.topology} (see the plan above; it lists "
              f"fixes). Apply one, or pass --force to launch anyway.", file=sys.stderr)
        return 1
    if planned.returncode not in (0, 1):
        print(f"launch_tpu_pod: the plan crashed (exit code {planned.returncode}); nothing launched.",
              file=sys.stderr)
        return planned.returncode
    from baobab import tpu

    chip, shape = tpu.parse_topology(args.topology)
    commands = gcloud_commands(args, chip.accelerator_type(shape))
    if args.dry_run:
        print(f"# dry run: the commands that would launch the run on {args.topology} "
              f"({chip.accelerator_type(shape)}):")
        for command in commands:
            print(shlex.join(command))
        return 0
    for command in commands:
        print(f"+ {shlex.join(command)}", flush=True)
        done = subprocess.run(command)
        if done.returncode:
            print(f"launch_tpu_pod: failed (exit code {done.returncode}): {shlex.join(command)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
