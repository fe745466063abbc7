#!/usr/bin/env python3
"""Multiply-adds of the reference EfficientNetV2 models, counted by forward hooks on every
convolution and linear layer of the library's own model (the figure torchvision publishes
as `_ops`). Source of the V2 GMACs pinned in tests/variants.rs:

    .venv/bin/python scripts/count_macs.py
"""

import torch
from torch import nn

import timm
import torchvision

# (name, constructor, evaluation resolution)
MODELS = [
    ("torchvision efficientnet_v2_s", torchvision.models.efficientnet_v2_s, 384),
    ("torchvision efficientnet_v2_m", torchvision.models.efficientnet_v2_m, 480),
    ("torchvision efficientnet_v2_l", torchvision.models.efficientnet_v2_l, 480),
    ("timm tf_efficientnetv2_xl", lambda: timm.create_model("tf_efficientnetv2_xl"), 512),
    ("timm tf_efficientnetv2_b0", lambda: timm.create_model("tf_efficientnetv2_b0"), 224),
    ("timm tf_efficientnetv2_b1", lambda: timm.create_model("tf_efficientnetv2_b1"), 240),
    ("timm tf_efficientnetv2_b2", lambda: timm.create_model("tf_efficientnetv2_b2"), 260),
    ("timm tf_efficientnetv2_b3", lambda: timm.create_model("tf_efficientnetv2_b3"), 300),
]


def count(model, resolution):
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_pixel = module.out_channels * module.in_channels // module.groups
            total += per_pixel * module.kernel_size[0] * module.kernel_size[1] * output.shape[2] * output.shape[3]
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    return total


def main():
    for name, constructor, resolution in MODELS:
        model = constructor()
        params = sum(p.numel() for p in model.parameters())
        print(f"{name} @ {resolution}: {params} params, {count(model, resolution) / 1e9:.3f} GMACs")
    for size in "SML":
        weights = getattr(torchvision.models, f"EfficientNet_V2_{size}_Weights").IMAGENET1K_V1
        print(f"torchvision EfficientNet_V2_{size}_Weights: num_params {weights.meta['num_params']}, "
              f"_ops {weights.meta['_ops']}")


if __name__ == "__main__":
    main()
