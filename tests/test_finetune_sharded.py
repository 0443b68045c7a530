"""Fine-tuning starts sharded: nothing pretrained is ever whole on one device or read whole.

On the 8 fake devices (fsdp=8): `nn.load_state_dict` keeps the target's sharding;
`init_from` an HF folder or a baobab run builds every array (LoRA adapters included)
in its final sharding, reads from the safetensors only the slices each device holds
(a spy on the reads), and never moves an array between devices
(`jax.transfer_guard_device_to_device("disallow")`: no "build on one device, then shard"). A subprocess
measures peak host memory while a ~1 GB Llama-shaped model starts a fine-tune.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import models, nn
from baobab.experiment import CheckpointConfig, ExperimentConfig, LoggingConfig, MeshConfig, TrainerConfig
from baobab.finetune import FinetuneConfig, LoRAConfig
from baobab.init_from import pretrained_model
from baobab.models import hf, hf_io

REPO = Path(__file__).resolve().parents[1]
LLAMA = dict(vocab_size=256, max_len=64, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
             intermediate_size=128, rope_scaling=None, tie_embeddings=False)


def _config(tmp_path, init_from, **finetune):
    return ExperimentConfig(task="language_model", model=models.LlamaConfig(**LLAMA),
                            mesh=MeshConfig(data=1, fsdp=8, tensor=1),
                            trainer=TrainerConfig(workdir=str(tmp_path / "run"), steps=1),
                            checkpoint=CheckpointConfig(every=0, async_save=False),
                            logging=LoggingConfig(progress=False), finetune=FinetuneConfig(init_from=str(init_from),
                                                                                           **finetune))


def _hf_folder(tmp_path) -> tuple[Path, nn.Module]:
    model = models.build_model(models.LlamaConfig(**LLAMA), key=jax.random.key(3))
    return hf_io.export_hf(model, tmp_path / "hf"), model


def _mesh():
    return jax.make_mesh((1, 8, 1), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)


def _assert_in_target_shardings(model, mesh):
    rules = nn.DEFAULT_RULES
    for (path, x, _), (_, want, _) in zip(nn.iter_arrays(model), nn.iter_arrays(nn.shardings(model, mesh, rules)),
                                          strict=True):
        assert x.sharding == want, f"{path}: {x.sharding} is not its target {want}"


def test_load_state_dict_keeps_the_target_sharding():
    mesh = _mesh()
    lin = nn.create_sharded(lambda k: nn.Linear(16, 32, key=k), jax.random.key(0), mesh=mesh,
                            rules=nn.DEFAULT_RULES)
    host = {"weight": np.arange(16 * 32, dtype=np.float32).reshape(16, 32), "bias": np.ones(32, np.float32)}
    for values in (host, {k: jax.device_put(v, jax.devices()[0]) for k, v in host.items()}):  # host, one device
        new = nn.load_state_dict(lin, values)
        assert new.weight.sharding == lin.weight.sharding and len(new.weight.sharding.device_set) == 8
        np.testing.assert_array_equal(np.asarray(new.weight), host["weight"])
    bf16 = nn.load_state_dict(nn.map_arrays(lambda p, x, m: x.astype(jnp.bfloat16), lin), host, cast=True)
    assert bf16.weight.dtype == jnp.bfloat16 and bf16.weight.sharding == lin.weight.sharding


def test_init_from_hf_reads_only_each_devices_slices_into_the_final_shardings(tmp_path, monkeypatch):
    folder, reference = _hf_folder(tmp_path)
    reads = []
    original = hf_io.HFSource.read

    def spy(self, name, index=None):
        out = original(self, name, index)
        reads.append((name, tuple(np.shape(out)), tuple(self.shapes[name])))
        return out

    monkeypatch.setattr(hf_io.HFSource, "read", spy)
    config = _config(tmp_path, folder, lora=LoRAConfig(targets=("*.q_proj", "*.v_proj"), rank=4))
    mesh, key = _mesh(), jax.random.key(0)
    with jax.transfer_guard_device_to_device("disallow"):  # nothing whole on one device, then moved
        model = pretrained_model(config, key, mesh=mesh, rules=nn.DEFAULT_RULES)
    _assert_in_target_shardings(model, mesh)
    assert any(isinstance(m, nn.LoRALinear) for _, m in nn.iter_modules(model))
    embed = [(got, full) for name, got, full in reads if name == "model.embed_tokens.weight"]
    assert len(embed) == 8 and all(np.prod(got) * 8 == np.prod(full) for got, full in embed)  # 8 eighths
    assert all(np.prod(got) < np.prod(full) for name, got, full in reads if np.prod(full) >= 8 * 64)  # none whole
    merged = nn.merge_lora(model)  # adapters start at zero (lora_b = 0): the pretrained model itself
    ids = jnp.arange(12, dtype=jnp.int32).reshape(1, 12)
    np.testing.assert_allclose(np.asarray(merged(ids)), np.asarray(reference(ids)), rtol=1e-5, atol=1e-5)


def test_init_from_a_run_restores_into_this_runs_shardings(tmp_path):
    from baobab.commands import run_train
    from baobab.data import TextData

    pre = ExperimentConfig(task="language_model", model=models.LlamaConfig(**LLAMA),
                           data=TextData(seq_len=16, batch_size=8, stdlib_limit=10, eval_rows=8),
                           mesh=MeshConfig(data=8, fsdp=1, tensor=1),
                           trainer=TrainerConfig(workdir=str(tmp_path / "pre"), steps=2),
                           checkpoint=CheckpointConfig(every=0, async_save=False),
                           logging=LoggingConfig(progress=False))
    run_train(pre)
    mesh, key = _mesh(), jax.random.key(0)
    with jax.transfer_guard_device_to_device("disallow"):  # nothing whole on one device, then moved
        model = pretrained_model(_config(tmp_path, tmp_path / "pre", freeze=("model.embed_tokens.*",)),
                                 key, mesh=mesh, rules=nn.DEFAULT_RULES)
    _assert_in_target_shardings(model, mesh)
    assert json.loads((tmp_path / "run" / "init_from.json").read_text())["fresh"] == []


WRITER = """
import json, sys
import jax, numpy as np
from safetensors.numpy import save_file
from baobab import models
from baobab.models import hf, hf_io
config = models.LlamaConfig(**json.loads(sys.argv[2]))
abstract = jax.eval_shape(lambda k: models.build_model(config, key=k), jax.random.key(0))
table = hf.names_for(config)
rng = np.random.default_rng(0)
files, index, part, size = [], {}, {}, 0
def flush():
    global part, size
    if part:
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(part, f"{sys.argv[1]}/{name}", metadata={"format": "pt"})
        files.append(name); index.update({k: name for k in part}); part, size = {}, 0
stored = __import__("baobab").nn.state_dict(abstract)
for path, (where, row) in hf._per_layer(abstract).items():
    assert row is None
    x = stored[where]
    theirs, layout = table.to_theirs(path)
    value = hf.to_torch_layout(rng.standard_normal(x.shape, np.float32) * 0.02, layout)
    part[theirs] = np.ascontiguousarray(value); size += value.nbytes
    if size > 300e6:
        flush()
flush()
json.dump({"metadata": {}, "weight_map": index}, open(f"{sys.argv[1]}/model.safetensors.index.json", "w"))
json.dump(hf_io.config_to_hf(config), open(f"{sys.argv[1]}/config.json", "w"))
print(sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(abstract)))
"""

MEASURER = """
import json, sys
import jax
from baobab import models, nn
from baobab.experiment import ExperimentConfig, MeshConfig, TrainerConfig
from baobab.finetune import FinetuneConfig, LoRAConfig
from baobab.init_from import pretrained_model
from baobab.models import hf_io
def memory():  # VmHWM: this process image's peak (ru_maxrss would keep the forking parent's size)
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile", "VmHWM")}
config = ExperimentConfig(task="language_model", model=models.LlamaConfig(**json.loads(sys.argv[2])),
                          mesh=MeshConfig(data=1, fsdp=8, tensor=1), trainer=TrainerConfig(workdir=sys.argv[3]),
                          finetune=FinetuneConfig(init_from=sys.argv[1],
                                                  lora=LoRAConfig(targets=("*.q_proj", "*.v_proj"), rank=8)))
mesh = jax.make_mesh((1, 8, 1), ("data", "fsdp", "tensor"))
before = memory()
if sys.argv[4] == "sharded":
    model = pretrained_model(config, jax.random.key(0), mesh=mesh, rules=nn.DEFAULT_RULES)
else:  # what init_from did before: build on the default device, read whole, then shard
    whole = models.build_model(config.model, key=jax.random.key(0))
    whole, _ = hf_io.load_into(whole, sys.argv[1])
    model = jax.device_put(whole, nn.shardings(whole, mesh, nn.DEFAULT_RULES))
    del whole
jax.block_until_ready(model)
assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(model))
after = memory()
print(json.dumps({"held": after["RssAnon"] - before["RssAnon"], "file_pages": after["RssFile"],
                  "peak": after["VmHWM"] - before["RssAnon"] - before["RssFile"]}))
"""


@pytest.mark.slow
def test_peak_host_memory_while_a_1gb_llama_starts_a_fine_tune(tmp_path):
    shape = dict(vocab_size=32000, max_len=2048, hidden_size=1024, num_layers=16, num_heads=16, num_kv_heads=4,
                 intermediate_size=2816, rope_scaling=None, tie_embeddings=False)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    folder = tmp_path / "llama"
    folder.mkdir()
    wrote = subprocess.run([sys.executable, "-c", textwrap.dedent(WRITER), str(folder), json.dumps(shape)],
                           capture_output=True, text=True, env=env, check=False)
    assert wrote.returncode == 0, wrote.stderr[-3000:]
    model_bytes = int(wrote.stdout.split()[-1])
    assert 0.9e9 < model_bytes < 1.3e9 and len(list(folder.glob("*.safetensors"))) >= 3
    m = {}
    for mode in ("sharded", "whole"):
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURER), str(folder), json.dumps(shape),
                              str(tmp_path / mode), mode], capture_output=True, text=True, env=env, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        m[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{mode}: model {model_bytes / 1e9:.2f} GB; arrays held after {m[mode]['held'] / 1e9:.2f} GB; "
              f"peak above the start {m[mode]['peak'] / 1e9:.2f} GB; safetensors pages mapped "
              f"{m[mode]['file_pages'] / 1e9:.2f} GB")
    # One process holds all 8 fake devices, so it ends holding the model once (anonymous memory).
    # Loading sharded adds no second copy: the peak stays within the arrays plus the mapped file
    # pages, where building whole on one device and then sharding holds the model twice.
    # (Anonymous memory held includes what glibc keeps of the freed read buffers.)
    sharded, whole = m["sharded"], m["whole"]
    assert sharded["peak"] - sharded["held"] < 0.15 * model_bytes, sharded  # the transient: about a slice
    assert sharded["peak"] < 1.6 * model_bytes, sharded
    assert sharded["peak"] < whole["peak"] - 0.5 * model_bytes, m


def test_restoring_a_run_for_eval_reads_only_the_model_sharded_and_read_only(tmp_path, monkeypatch):
    from baobab.commands import run_train
    from baobab.data import TextData
    from baobab.runs import load_run, restore_model
    from baobab.train import _checkpoint_read

    run = ExperimentConfig(task="language_model", model=models.LlamaConfig(**LLAMA),
                           data=TextData(seq_len=16, batch_size=8, stdlib_limit=10, eval_rows=8),
                           mesh=MeshConfig(data=1, fsdp=8, tensor=1),
                           trainer=TrainerConfig(workdir=str(tmp_path / "run"), steps=2),
                           checkpoint=CheckpointConfig(every=0, async_save=False),
                           logging=LoggingConfig(progress=False))
    run_train(run)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    restored_branches = []
    original = _checkpoint_read.ocp.args.PyTreeRestore

    def spy(*args, **kwargs):
        restored_branches.append(sorted(kwargs["item"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(_checkpoint_read.ocp.args, "PyTreeRestore", spy)
    mesh = _mesh()
    with jax.transfer_guard_device_to_device("disallow"):
        model, step = restore_model(load_run(tmp_path / "run"), mesh)
    assert step == 2 and restored_branches == [["model"]]  # no optimizer moments, no data state
    _assert_in_target_shardings(model, mesh)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == before  # nothing written
