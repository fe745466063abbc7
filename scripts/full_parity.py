#!/usr/bin/env python3
"""Full-size parity cases for the ignored test `tests/full_parity.rs`.

Builds full-size models of each source with random weights (no download: weights do not
change what is compared), randomised as in make_fixtures.py, and writes for each case
`<out>/<name>.pth` and `<out>/<name>.io.safetensors` (input 2x3x160x160, logits, pre-logits,
endpoints). Run through the test:

    scripts/setup_reference_env.sh
    cargo test --release --test full_parity -- --ignored --nocapture
"""

import os
import sys

import torch
import torchvision
import timm
from efficientnet_pytorch import EfficientNet as LukeEfficientNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

CASES = {
    # name: (constructor, run builder)
    "torchvision_b0": (lambda: torchvision.models.efficientnet_b0(), mf.torchvision_run),
    "torchvision_b5": (lambda: torchvision.models.efficientnet_b5(), mf.torchvision_run),
    "timm_efficientnet_b2": (lambda: timm.create_model("efficientnet_b2"), mf.timm_run),
    "timm_tf_efficientnet_b3": (lambda: timm.create_model("tf_efficientnet_b3"), mf.timm_run),
    "timm_tf_efficientnet_lite2": (lambda: timm.create_model("tf_efficientnet_lite2"), mf.timm_run),
    "effnet_pytorch_b1": (lambda: LukeEfficientNet.from_name("efficientnet-b1", image_size=160), mf.luke_run),
    # EfficientNetV2: the endpoints are the last stage at each resolution of V2's own tables.
    "torchvision_v2_s": (
        lambda: torchvision.models.efficientnet_v2_s(),
        lambda m: mf.torchvision_run(m, mf.endpoint_stages([row[3] for row in mf.V2_S])),
    ),
    "timm_tf_efficientnetv2_b3": (
        lambda: timm.create_model("tf_efficientnetv2_b3"),
        lambda m: mf.timm_run(m, mf.endpoint_stages([1, 2, 2, 2, 1, 2])),
    ),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, (constructor, run_builder) in CASES.items():
        def builder(constructor=constructor, run_builder=run_builder):
            model = constructor()
            return model, run_builder(model)
        mf.FIXTURES = out
        mf.make_fixture(name, builder, 160, 160, False)


if __name__ == "__main__":
    main()
