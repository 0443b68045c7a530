"""baobab.data never pulls in TensorFlow or PyTorch, even through a full pipeline run."""

import subprocess
import sys
import textwrap

FULL_RUN = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    import baobab.data as data

    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    tf = [data.RandomCrop((28, 28), padding=2), data.RandomFlip(), data.Normalize(), data.OneHot(10)]
    with iter(data.train_loader(data.mnist("train"), batch_size=16, transforms=tf, mesh=mesh,
                                rules={"batch": "data"})) as it:
        batch = next(it)
        state = it.get_state()
    assert batch["image"].shape == (16, 28, 28, 1) and batch["label"].shape == (16, 10)
    text = data.text_corpus(data.stdlib_text_files(limit=5)).map(data.ByteTokenize())
    with iter(data.train_loader(text, batch_size=2, pack=data.Pack(length=64))) as it:
        next(it)
    for batch in data.eval_loader(data.mnist("test"), batch_size=300, transforms=tf[2:]):
        pass
    data.from_tfds  # the TFDS source imports tensorflow_datasets lazily; reading needs no TF either
    import tensorflow_datasets
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "torch"))
    print("LEAKED", leaked)
""")


def test_import_and_a_full_pipeline_leave_tensorflow_and_torch_out():
    out = subprocess.run([sys.executable, "-c", FULL_RUN], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LEAKED []" in out.stdout, out.stdout
