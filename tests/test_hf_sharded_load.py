"""Sharded loading: each array is built in its target sharding from the slices its devices need.

A Llama checkpoint split over several safetensors files (with an index) is imported
onto the fake 8-device mesh (data x fsdp x tensor = 2 x 2 x 2). Host memory is
measured with ``tracemalloc`` (numpy buffers and the bytes safetensors reads are
traced; device buffers are not) and compared with reading the files whole.
"""

import gc
import json
import tracemalloc

import jax
import numpy as np
import pytest

from baobab import models, nn
from baobab.models import hf_io

import safetensors.numpy as safetensors_numpy

CONFIG = models.LlamaConfig(vocab_size=8192, max_len=64, hidden_size=512, num_layers=2, num_heads=8, num_kv_heads=4,
                            intermediate_size=1024, rope_scaling=None, tie_embeddings=False)


def _write_sharded(model, folder):
    """One safetensors file per layer, plus one for embeddings and head: what save_pretrained shards do."""
    folder.mkdir()
    hf_io.export_hf(model, folder)
    tensors = safetensors_numpy.load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    groups: dict[str, dict] = {}
    for name, x in tensors.items():
        file = f"model-{name.split('.')[2] if '.layers.' in name else 'rest'}.safetensors"
        groups.setdefault(file, {})[name] = x
    for file, part in groups.items():
        safetensors_numpy.save_file(part, folder / file)
    index = {"metadata": {}, "weight_map": {n: f for f, part in groups.items() for n in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return tensors, {f: sum(x.nbytes for x in part.values()) for f, part in groups.items()}


def _peak(fn):
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        current, peak = tracemalloc.get_traced_memory()
        return result, peak, current
    finally:
        tracemalloc.stop()


def test_sharded_import_reads_only_device_slices(tmp_path, mesh8):
    model = models.build_model(CONFIG, key=jax.random.key(0))
    tensors, file_bytes = _write_sharded(model, tmp_path / "src")
    total, largest_file = sum(file_bytes.values()), max(file_bytes.values())
    largest_tensor = max(x.nbytes for x in tensors.values())
    del model

    (loaded, report), peak, resident = _peak(lambda: hf_io.import_hf(tmp_path / "src", mesh=mesh8, rules=nn.DEFAULT_RULES))
    _, whole_peak, _ = _peak(lambda: [safetensors_numpy.load_file(tmp_path / "src" / f) for f in file_bytes])
    print(f"checkpoint {total / 2**20:.1f} MiB in {len(file_bytes)} files (largest file {largest_file / 2**20:.1f} "
          f"MiB, largest tensor {largest_tensor / 2**20:.1f} MiB); host peak: sharded import "
          f"{peak / 2**20:.2f} MiB of which {resident / 2**20:.2f} MiB stays as the 8 CPU devices' shards and "
          f"{(peak - resident) / 2**20:.2f} MiB was transient; reading the files whole {whole_peak / 2**20:.1f} MiB")

    # the right values, in the target shardings
    want = nn.shardings(loaded, mesh8, nn.DEFAULT_RULES)
    for (path, x, _), (_, s, _) in zip(nn.iter_arrays(loaded), nn.iter_arrays(want), strict=True):
        assert x.sharding.is_equivalent_to(s, x.ndim), path
    table = hf_io.hf.names_for(CONFIG)
    again = hf_io.hf.hf_state_dict(jax.device_get(loaded), table)
    assert all(np.array_equal(again[n], tensors[n]) for n in tensors)
    emb = nn.state_dict(loaded)["model.embed_tokens.weight"]
    assert emb.addressable_shards[0].data.shape == (8192 // 2, 512 // 2)  # each device holds a quarter

    # On CPU the devices' buffers alias host numpy memory, so they are traced too: what the
    # loader adds on top of the sharded result is the transient part, at most one tensor.
    # (How much the devices themselves hold depends on replication across the mesh, so
    # the bound is on the loader's own, transient memory.)
    assert peak - resident <= largest_tensor
    assert whole_peak >= total
