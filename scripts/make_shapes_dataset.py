#!/usr/bin/env python3
"""A small synthetic classification dataset for trying the train and scaling examples.

    python3 scripts/make_shapes_dataset.py data/shapes [--per-class 60] [--size 64]

Writes OUT/train/<class>/*.png and OUT/valid/<class>/*.png for three classes drawn at a
random place and size on a noisy grey background: a red disc, a green square, blue stripes
(the same recipe as tests/train.rs). Needs only Pillow.
"""

import argparse
import os
import random

from PIL import Image, ImageDraw

CLASSES = ["disc", "square", "stripes"]
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220)]


def draw(label, size, rng):
    image = Image.new("RGB", (size, size))
    pixels = image.load()
    for y in range(size):
        for x in range(size):
            v = 100 + rng.randrange(60)
            pixels[x, y] = (v, v, v)
    r = rng.randrange(size // 5, size * 2 // 5)
    cx, cy = rng.randrange(r, size - r), rng.randrange(r, size - r)
    canvas = ImageDraw.Draw(image)
    if label == 0:
        canvas.ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLOURS[0])
    elif label == 1:
        canvas.rectangle([cx - r, cy - r, cx + r, cy + r], fill=COLOURS[1])
    else:
        for top in range(cy - r, cy + r, 8):
            canvas.rectangle([cx - r, top, cx + r, min(top + 3, cy + r)], fill=COLOURS[2])
    return image


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for split, count in [("train", args.per_class), ("valid", max(1, args.per_class // 4))]:
        for label, name in enumerate(CLASSES):
            directory = os.path.join(args.out, split, name)
            os.makedirs(directory, exist_ok=True)
            for i in range(count):
                draw(label, args.size, rng).save(os.path.join(directory, f"{i:04d}.png"))
    print(f"wrote {args.out}/train and {args.out}/valid ({len(CLASSES)} classes)")


if __name__ == "__main__":
    main()
