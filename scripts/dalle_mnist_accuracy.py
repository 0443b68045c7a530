"""How often a text-to-image run draws the digit its caption names, judged by a trained MNIST classifier.

    baobab train configs/mnist_cnn.py        # the classifier: the README's default job
    baobab train configs/vqgan_mnist.py
    baobab train configs/dalle_mnist.py
    python scripts/dalle_mnist_accuracy.py runs/dalle_mnist runs/mnist_cnn --scales 1 2 3 5 --grid docs/dalle_mnist.png

For each condition scale, each digit, and each phrasing (the run's training phrasings
and its held-out ones), ``--num-images`` images are sampled and classified
(``baobab.images_from_text.digit_accuracy``). Prints one JSON line per scale and
phrasing set: ``{"scale", "phrasings", "accuracy", "per_digit"}``. ``--grid`` writes a
sample grid: one row per digit, from a held-out phrasing.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dalle_run", help="a task=text_to_image run (configs/dalle_mnist.py)")
    parser.add_argument("classifier_run", help="an MNIST classification run (configs/mnist_cnn.py)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--num-images", type=int, default=16, help="images per digit and phrasing")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default=None, help="write a sample grid (PNG) at the last scale")
    args = parser.parse_args(argv)

    from PIL import Image

    from baobab import models
    from baobab.data._captions import caption
    from baobab.images_from_text import digit_accuracy, load_text_to_image
    from baobab.runs import load_run

    config, classifier = load_run(args.dalle_run), load_run(args.classifier_run)
    for scale in args.scales:
        for name, phrasings in (("seen", config.data.phrasings), ("held_out", config.data.held_out_phrasings)):
            result = digit_accuracy(config, classifier, phrasings, num_images=args.num_images, condition_scale=scale,
                                    seed=args.seed, top_k=args.top_k)
            print(json.dumps({"scale": scale, "phrasings": name, **result}), flush=True)
    if args.grid:
        t2i = load_text_to_image(config)
        template = config.data.held_out_phrasings[0]
        images = t2i([caption(template, d) for d in range(10)], seed=args.seed, num_images=10,
                     condition_scale=args.scales[-1], top_k=args.top_k).images
        grid = models.image_grid(np.asarray(images), columns=10, pad=2)
        Image.fromarray(grid[..., 0]).save(args.grid)
        print(f"wrote {args.grid} (rows: digits 0-9, {template!r}, scale {args.scales[-1]:g})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
