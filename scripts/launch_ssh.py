#!/usr/bin/env python3
"""Run the same ``baobab train CONFIG`` on several hosts over plain ssh.

Process ``i`` runs on the ``i``-th host with ``JAX_COORDINATOR_ADDRESS`` (the first
host, ``--port``), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` set, which is what
``baobab.train.initialize_distributed`` reads. Every host needs the same checkout
at ``--workdir`` and the same virtual environment.

Exact commands::

    # print what would run, touching nothing
    python scripts/launch_ssh.py --hosts node1,node2 --dry-run -- configs/gpt_bytes.py trainer.steps=2000
    # run it (logs in logs/launch_ssh/<i>-<host>.log, the first failure stops the rest)
    python scripts/launch_ssh.py --hosts node1,node2 --workdir /srv/baobab --venv /srv/venv -- configs/gpt_bytes.py
    # 2 processes on this machine, the same code path (no ssh: --local)
    python scripts/launch_ssh.py --hosts localhost,localhost --local -- configs/gpt_bytes.py

Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def commands(hosts: list[str], train_args: list[str], *, port: int, workdir: str, venv: str | None,
             local: bool, coordinator: str | None = None) -> list[list[str]]:
    """One argv per process: ``ssh HOST 'cd ... && env ... baobab train ...'`` (or the bare shell line)."""
    coordinator = coordinator or f"{'127.0.0.1' if local else hosts[0]}:{port}"
    out = []
    for i, host in enumerate(hosts):
        env = {"JAX_COORDINATOR_ADDRESS": coordinator, "JAX_NUM_PROCESSES": str(len(hosts)),
               "JAX_PROCESS_ID": str(i)}
        activate = f"source {shlex.quote(venv)}/bin/activate && " if venv else ""
        line = (f"cd {shlex.quote(workdir)} && {activate}"
                + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                + " baobab train " + " ".join(shlex.quote(a) for a in train_args))
        out.append(["bash", "-c", line] if local else ["ssh", "-o", "BatchMode=yes", host, line])
    return out


def wait_all(procs: list[subprocess.Popen], *, grace_s: float = 10.0) -> list[int]:
    """Wait for every process; once one fails, SIGTERM the rest, then SIGKILL them after ``grace_s``.

    The survivors of a failed multi-process run would otherwise wait in a collective for
    their lost peer until ``jax.distributed``'s heartbeat gives up (over a minute).
    """
    while None in (codes := [p.poll() for p in procs]) and not any(codes):
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
    return [p.wait() for p in procs]


def exit_code(codes: list[int]) -> int:
    """One exit status for all: the largest, with a death by signal N counted as 128 + N (as shells do)."""
    return max(128 - c if c < 0 else c for c in codes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", required=True, help="comma-separated hosts; the first is the coordinator")
    parser.add_argument("--port", type=int, default=29500, help="coordinator port (default 29500)")
    parser.add_argument("--workdir", default=os.getcwd(), help="the checkout on every host (default: here)")
    parser.add_argument("--venv", default=None, help="a virtual environment to activate on every host")
    parser.add_argument("--local", action="store_true", help="run the processes here, without ssh")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("train_args", nargs="+", help="CONFIG and overrides for `baobab train` (after --)")
    args = parser.parse_args(argv)
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    cmds = commands(hosts, args.train_args, port=args.port, workdir=args.workdir, venv=args.venv, local=args.local)
    if args.dry_run:
        for cmd in cmds:
            print(shlex.join(cmd))
        return 0
    logs = Path("logs/launch_ssh")
    logs.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(cmd, stdout=open(logs / f"{i}-{h}.log", "w"), stderr=subprocess.STDOUT)
             for i, (h, cmd) in enumerate(zip(hosts, cmds, strict=True))]
    codes = wait_all(procs)
    print(f"exit codes: {codes}; logs in {logs}/", file=sys.stderr)
    return exit_code(codes)


if __name__ == "__main__":
    sys.exit(main())
