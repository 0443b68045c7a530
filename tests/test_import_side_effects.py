"""Importing baobab changes nothing in the process: memory, flags, environment, logging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# Imports every baobab package, then allocates and frees a 512 MiB numpy array. With
# glibc's defaults a block that large is an mmap, returned to the OS when freed; had an
# import changed malloc's settings (as `mallopt` did), the pages would stay resident.
SCRIPT = textwrap.dedent("""
    import json, logging, os, sys
    env_before = dict(os.environ)
    root_handlers = list(logging.getLogger().handlers)
    import numpy as np
    import baobab, baobab.nn, baobab.train, baobab.data, baobab.models, baobab.cli
    import baobab.experiment, baobab.runs, baobab.commands, baobab.planner, baobab.tasks
    import baobab.optimizers, baobab.finetune, baobab.host_memory

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    after_import = rss_mib()
    block = np.ones(512 * 2**20 // 8)
    with_block = rss_mib()
    del block
    freed = rss_mib()
    from absl import flags
    print(json.dumps({"after_import": after_import, "with_block": with_block, "freed": freed,
                      "absl_parsed": flags.FLAGS.is_parsed(),
                      "env_changed": sorted(k for k in set(os.environ) | set(env_before)
                                            if os.environ.get(k) != env_before.get(k)),
                      "root_handlers_added": [type(h).__module__ + "." + type(h).__name__
                                              for h in logging.getLogger().handlers if h not in root_handlers],
                      "configured": baobab.host_memory.is_applied()}))
""")


def run() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "XLA_FLAGS")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_every_package_changes_no_process_state():
    r = run()
    assert r["with_block"] - r["after_import"] > 400, r  # the block was resident...
    assert r["freed"] - r["after_import"] < 64, r  # ...and freeing it gave the memory back
    assert not r["configured"]
    assert r["absl_parsed"] is False, "an import parsed absl flags (sys.argv) for the process"
    assert r["env_changed"] == [], f"an import changed os.environ: {r['env_changed']}"
    # Not asserted: absl.logging, when orbax logs while it imports, calls logging.basicConfig()
    # (absl does this on any log call before its flags are parsed), so the root logger may
    # have gained absl's stderr handler; baobab itself adds none (checked below).
    added = [h for h in r["root_handlers_added"] if not h.startswith("logging.")]
    assert added == [], f"an import added handlers to the root logger: {added}"
