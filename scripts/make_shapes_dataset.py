"""Write a small image-folder dataset: Pillow-drawn circles, squares and triangles.

    python scripts/make_shapes_dataset.py OUT [--train 300] [--test 90] [--size 32] [--seed 0]

writes ``OUT/train/<class>/*.png`` and ``OUT/test/<class>/*.png``. Shapes vary in
position, size, colour and background, so the task needs a real (if small) model.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def draw(kind: str, size: int, rng: random.Random) -> Image.Image:
    bg = tuple(rng.randint(0, 120) for _ in range(3))
    fg = tuple(rng.randint(130, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), bg)
    pen = ImageDraw.Draw(image)
    r = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    if kind == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif kind == "square":
        pen.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fg)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    return image


def write(out: Path, *, train: int = 300, test: int = 90, size: int = 32, seed: int = 0) -> None:
    rng = random.Random(seed)
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            kind = CLASSES[i % len(CLASSES)]
            folder = out / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            draw(kind, size, rng).save(folder / f"{i:05d}.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=90)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    write(a.out, train=a.train, test=a.test, size=a.size, seed=a.seed)
    print(f"wrote {a.out}/train and {a.out}/test")
