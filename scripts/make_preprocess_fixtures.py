#!/usr/bin/env python3
"""Preprocessing fixtures: real photographs (scikit-image's sample data) and what
torchvision's own eval transforms (PIL) make of them.

    .venv/bin/python scripts/make_preprocess_fixtures.py

Writes `tests/fixtures/images/<photo>.png` (lossless, so decoding is not what is compared;
`astronaut.jpg` as JPEG to cover that decoder too), and for each transform the resized and
center-cropped image PIL produced, `<photo>.<interp>_<resize>_<crop>.png`, before ToTensor and
Normalize (those are exact arithmetic, tested in Rust). Also `src/imagenet_classes.txt` from
torchvision's weight metadata.
"""

import os

import skimage.data
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.models import EfficientNet_B0_Weights

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "images")

# (interpolation, resize, crop): B0 V1, B1 V2, B3 V1.
TRANSFORMS = [("bicubic", 256, 224), ("bilinear", 255, 240), ("bicubic", 320, 300)]


def main():
    os.makedirs(OUT, exist_ok=True)
    photos = {}
    for name in ["chelsea", "coffee", "rocket"]:
        path = os.path.join(OUT, f"{name}.png")
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        photos[name] = path
    path = os.path.join(OUT, "astronaut.jpg")
    Image.fromarray(skimage.data.astronaut()).save(path, quality=90)
    photos["astronaut"] = path
    # What PIL (libjpeg) decodes the JPEG to, to tell decoding apart from resizing.
    Image.open(path).convert("RGB").save(os.path.join(OUT, "astronaut.jpg.decoded.png"))

    for name, path in photos.items():
        image = Image.open(path).convert("RGB")
        for interp, resize, crop in TRANSFORMS:
            mode = InterpolationMode.BICUBIC if interp == "bicubic" else InterpolationMode.BILINEAR
            t = transforms.Compose([transforms.Resize(resize, interpolation=mode), transforms.CenterCrop(crop)])
            t(image).save(os.path.join(OUT, f"{name}.{interp}_{resize}_{crop}.png"))
        print(name, image.size)

    categories = EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(categories) == 1000
    with open(os.path.join(ROOT, "src", "imagenet_classes.txt"), "w") as f:
        f.write("\n".join(categories) + "\n")


if __name__ == "__main__":
    main()
