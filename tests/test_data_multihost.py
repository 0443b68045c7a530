"""Per-host sharding with 2 real JAX processes on localhost (gloo CPU collectives).

Each process has 2 CPU devices; the mesh spans all 4. The hosts must read disjoint
examples that together cover the epoch, and the global batches they assemble with
``jax.make_array_from_process_local_data`` must agree.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import test_train_support as S

WORKER = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import numpy as np
    from jax.experimental import multihost_utils
    from baobab import data

    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    ids = data.from_arrays({"id": np.arange(40, dtype=np.int32)})
    out = {"process": jax.process_index(), "devices": jax.device_count(), "train": [], "global": [], "eval": []}
    loader = data.train_loader(ids, batch_size=8, seed=3, num_epochs=1, mesh=mesh, rules={"batch": "data"})
    with iter(loader) as it:
        for batch in it:
            array = batch["id"]
            assert array.shape == (8,) and len(array.addressable_shards) == 2
            local = sorted(int(v) for s in array.addressable_shards for v in np.asarray(s.data))
            out["train"].append(local)
            out["global"].append(sorted(multihost_utils.process_allgather(array, tiled=True).tolist()))
    evals = data.eval_loader(data.from_arrays({"id": np.arange(21, dtype=np.int32)}), batch_size=8,
                             mesh=mesh, rules={"batch": "data"})
    with iter(evals) as it:
        for batch in it:
            ids_, mask = (np.concatenate([np.asarray(s.data) for s in sorted(batch[k].addressable_shards,
                          key=lambda s: s.index[0].start)]) for k in ("id", "mask"))
            out["eval"] += ids_[mask].tolist()
    print("RESULT " + json.dumps(out), flush=True)
    jax.distributed.shutdown()
""")


@pytest.mark.slow
def test_two_processes_see_disjoint_examples_covering_the_epoch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = S.free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, str(script), str(port), str(pid)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in range(2)]
    results = [json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
               for stdout, _ in S.finish_all(procs, timeout=240)]
    a, b = sorted(results, key=lambda r: r["process"])
    assert a["devices"] == b["devices"] == 4
    assert len(a["train"]) == len(b["train"]) == 5
    seen_a = [i for batch in a["train"] for i in batch]
    seen_b = [i for batch in b["train"] for i in batch]
    assert not set(seen_a) & set(seen_b)                               # disjoint
    assert sorted(seen_a + seen_b) == list(range(40))                  # together: the whole epoch
    for step in range(5):                                              # the global batch is both halves
        assert a["global"][step] == b["global"][step] == sorted(a["train"][step] + b["train"][step])
    assert sorted(a["eval"] + b["eval"]) == list(range(21))            # eval: every example exactly once
