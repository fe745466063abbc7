#!/usr/bin/env python3
"""Parity fixtures for efficientnet-burn, made by the reference implementations themselves.

Run from the repository root (after scripts/setup_reference_env.sh):

    .venv/bin/python scripts/make_fixtures.py

For each weight source it builds small random-weight models through the library's own
constructors, randomises every batch norm (so epsilon and running statistics matter), saves
the checkpoint the way the library does (torch.save of the state dict; one also as
safetensors), and stores input, logits, pre-logits features and the five endpoint maps in
`tests/fixtures/<name>.io.safetensors`. It also writes the key-and-shape list of every
full-size checkpoint each source offers to `tests/fixtures/keys/` (built on the meta device,
so no weights are allocated).
"""

import json
import math
import os
import sys
from functools import partial

import torch
from torch import nn
from safetensors.torch import save_file

import timm
from timm.models import efficientnet as timm_effnet
import torchvision
from torchvision.models import efficientnet as tv_effnet
import efficientnet_pytorch
from efficientnet_pytorch import EfficientNet as LukeEfficientNet
from efficientnet_pytorch import utils as luke_utils
from efficientnet_pytorch.utils import get_model_params

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
KEYS = os.path.join(FIXTURES, "keys")

# Stages whose outputs are the endpoints (reductions 2, 4, 8, 16, 32), 0-based, for the
# seven-stage EfficientNet; V2 computes its own from the stage strides.
ENDPOINT_STAGES = [0, 1, 2, 4, 6]


def endpoint_stages(strides):
    """The last stage at each resolution: before every stride-2 stage, and the last one."""
    n = len(strides)
    return [i for i in range(n) if i + 1 == n or strides[i + 1] == 2]


def randomise(model, generator):
    """Variance-preserving conv weights (std sqrt(1 / fan_in)), so an early error is not
    squashed by later layers, and non-trivial BN affine parameters and running statistics,
    so epsilon and the statistics are tested."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in ** 0.5)
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


# Each builder returns (model, run) where run(x) -> (logits, pre_logits, [endpoints]).

def torchvision_run(model, wanted=ENDPOINT_STAGES):
    stages = len(model.features) - 2

    def run(x):
        x = model.features[0](x)
        endpoints = []
        for stage in range(stages):
            x = model.features[stage + 1](x)
            if stage in wanted:
                endpoints.append(x)
        x = model.features[stages + 1](x)
        pre = torch.flatten(model.avgpool(x), 1)
        return model.classifier(pre), pre, endpoints

    return run


def torchvision_small():
    # B1's depth (stage 1 gets two MBConv1 blocks: expand ratio 1 *with* a residual) at 1/10 width.
    setting, last_channel = tv_effnet._efficientnet_conf("efficientnet_b0", width_mult=0.1, depth_mult=1.1)
    model = tv_effnet.EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=last_channel)
    return model, torchvision_run(model)


def timm_run(model, wanted=ENDPOINT_STAGES):
    def run(x):
        x = model.bn1(model.conv_stem(x))
        endpoints = []
        for stage, blocks in enumerate(model.blocks):
            x = blocks(x)
            if stage in wanted:
                endpoints.append(x)
        x = model.bn2(model.conv_head(x))
        pre = model.forward_head(x, pre_logits=True)
        return model.classifier(pre), pre, endpoints

    return run


def timm_small():
    model = timm_effnet._gen_efficientnet(
        "efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.34, num_classes=10)
    return model, timm_run(model)


def timm_tf_small():
    model = timm_effnet._gen_efficientnet(
        "tf_efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.34, num_classes=10,
        bn_eps=timm_effnet.BN_EPS_TF_DEFAULT, pad_type="same")
    return model, timm_run(model)


def timm_tf_lite_small():
    model = timm_effnet._gen_efficientnet_lite(
        "tf_efficientnet_lite0", channel_multiplier=0.25, depth_multiplier=0.34, num_classes=10,
        bn_eps=timm_effnet.BN_EPS_TF_DEFAULT, pad_type="same")
    return model, timm_run(model)


# EfficientNetV2-S's table (paper Table 4): (fused, expand, kernel, stride, in, out, repeats).
V2_S = [
    (True, 1, 3, 1, 24, 24, 2), (True, 4, 3, 2, 24, 48, 4), (True, 4, 3, 2, 48, 64, 4),
    (False, 4, 3, 2, 64, 128, 6), (False, 6, 3, 1, 128, 160, 9), (False, 6, 3, 2, 160, 256, 15),
]


def torchvision_v2_small():
    # torchvision has no width/depth knobs for V2, so its own EfficientNet class is given
    # V2-S's table scaled to width 0.25, depth 0.34 with its own _make_divisible, as
    # efficientnet_v2_s builds it (BN eps 1e-3, 1280 * w head). Stage 1 keeps 8 -> 8
    # channels (expand-1 Fused-MBConv with a residual); stages 2-3 have expanding
    # Fused-MBConv blocks with and without a residual.
    width, depth = 0.25, 0.34
    ch = lambda c: tv_effnet._make_divisible(c * width, 8)
    setting = []
    for fused, e, k, s, i, o, r in V2_S:
        config = tv_effnet.FusedMBConvConfig if fused else tv_effnet.MBConvConfig
        setting.append(config(e, k, s, ch(i), ch(o), int(math.ceil(r * depth))))
    model = tv_effnet.EfficientNet(
        setting, dropout=0.2, num_classes=10, last_channel=ch(1280),
        norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    return model, torchvision_run(model, endpoint_stages([row[3] for row in V2_S]))


def timm_v2_small():
    model = timm_effnet._gen_efficientnetv2_s(
        "efficientnetv2_s", channel_multiplier=0.25, depth_multiplier=0.34, num_classes=10)
    return model, timm_run(model, endpoint_stages([row[3] for row in V2_S]))


def timm_tf_v2_base_small():
    # The V2-B0..B3 table (round_limit 0: 32 * 0.3 = 9.6 rounds to 8, not 16) with TF
    # "SAME" padding and eps 1e-3, as tf_efficientnetv2_b* are built.
    model = timm_effnet._gen_efficientnetv2_base(
        "tf_efficientnetv2_b0", channel_multiplier=0.3, depth_multiplier=0.5, num_classes=10,
        bn_eps=timm_effnet.BN_EPS_TF_DEFAULT, pad_type="same")
    return model, timm_run(model, endpoint_stages([1, 2, 2, 2, 1, 2]))


def luke_run(model):
    # The blocks are flattened; stage s has round_repeats(num_repeat) of them, as the library
    # computes when it builds the model.
    lengths = [luke_utils.round_repeats(b.num_repeat, model._global_params) for b in model._blocks_args]
    stage_of_end = {sum(lengths[:s + 1]) - 1: s for s in range(len(lengths))}
    assert sum(lengths) == len(model._blocks)

    def run(x):
        x = model._swish(model._bn0(model._conv_stem(x)))
        endpoints = []
        n = len(model._blocks)
        for i, block in enumerate(model._blocks):
            x = block(x, drop_connect_rate=model._global_params.drop_connect_rate * float(i) / n)
            if stage_of_end.get(i) in ENDPOINT_STAGES:
                endpoints.append(x)
        x = model._swish(model._bn1(model._conv_head(x)))
        pre = model._avg_pooling(x).flatten(start_dim=1)
        return model._fc(pre), pre, endpoints

    return run


def luke_small():
    # Width 0.5, not 0.25: efficientnet_pytorch never gives a stage's first block a residual
    # (it compares the list stride [1] with 1), while timm and torchvision do when the block
    # keeps its channels, which at width 0.25 happens (8 -> 8). At 0.5 every first block
    # changes channels or stride, as in every published width.
    model = LukeEfficientNet.from_name(
        "efficientnet-b0", width_coefficient=0.5, depth_coefficient=0.34, image_size=64,
        num_classes=10)
    return model, luke_run(model)


def luke_lite_small():
    # A Lite-style checkpoint in efficientnet_pytorch's layout: no SE, ReLU6 (the library has
    # no Lite constructor, so its own block args are edited and its swish swapped for ReLU6).
    blocks_args, global_params = get_model_params(
        "efficientnet-b0",
        dict(width_coefficient=0.5, depth_coefficient=0.34, image_size=64, num_classes=10))
    blocks_args = [b._replace(se_ratio=None) for b in blocks_args]
    model = LukeEfficientNet(blocks_args, global_params)
    model._swish = nn.ReLU6()
    for block in model._blocks:
        block._swish = nn.ReLU6()
    return model, luke_run(model)


# name -> (builder, input height, input width, also save safetensors)
FIXTURE_MODELS = {
    "torchvision_small": (torchvision_small, 64, 64, False),
    "timm_small": (timm_small, 64, 64, True),
    "timm_tf_small_odd": (timm_tf_small, 65, 67, False),
    "timm_tf_lite_small": (timm_tf_lite_small, 64, 64, False),
    "effnet_pytorch_small": (luke_small, 64, 64, False),
    "effnet_pytorch_lite_small": (luke_lite_small, 64, 64, False),
    "torchvision_v2_small": (torchvision_v2_small, 64, 64, False),
    "timm_v2_small": (timm_v2_small, 64, 64, False),
    "timm_tf_v2_base_small_odd": (timm_tf_v2_base_small, 65, 67, False),
}


def make_fixture(name, builder, height, width, also_safetensors):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    model, run = builder()
    randomise(model, generator)
    model.eval()
    state = model.state_dict()
    torch.save(state, os.path.join(FIXTURES, f"{name}.pth"))
    if name == "torchvision_small":
        # As training scripts save it: wrapped in a dict, under DataParallel's `module.`.
        wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 7}
        torch.save(wrapped, os.path.join(FIXTURES, f"{name}_wrapped.pth"))
    if also_safetensors:
        save_file({k: v.contiguous() for k, v in state.items()},
                  os.path.join(FIXTURES, f"{name}.safetensors"))
        # The same weights in half precision, as fine-tuned checkpoints are often shared
        # (tests/dtypes.rs loads it into an F32 model).
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
                   os.path.join(FIXTURES, f"{name}.f16.pth"))
    x = torch.randn(2, 3, height, width, generator=generator)
    with torch.no_grad():
        logits, pre, endpoints = run(x)
        reference = model(x)
    # The staged run must be the library's own forward.
    assert torch.allclose(logits, reference, atol=1e-6), (name, (logits - reference).abs().max())
    tensors = {"input": x, "logits": logits, "pre_logits": pre}
    for i, e in enumerate(endpoints):
        tensors[f"endpoint.{i}"] = e
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(FIXTURES, f"{name}.io.safetensors"))
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {len(state)} keys, {params} params, input {list(x.shape)}, "
          f"endpoints {[list(e.shape) for e in endpoints]}, |logits| max {logits.abs().max():.3f}")


def full_size_models():
    """(file stem, constructor) for every full-size checkpoint each source offers."""
    models = []
    for b in range(8):
        models.append((f"torchvision__efficientnet_b{b}", getattr(torchvision.models, f"efficientnet_b{b}")))
    for b in range(9):
        models.append((f"timm__efficientnet_b{b}", partial(timm.create_model, f"efficientnet_b{b}")))
        models.append((f"timm__tf_efficientnet_b{b}", partial(timm.create_model, f"tf_efficientnet_b{b}")))
    models.append(("timm__tf_efficientnet_l2", partial(timm.create_model, "tf_efficientnet_l2")))
    for lite in range(5):
        models.append((f"timm__tf_efficientnet_lite{lite}", partial(timm.create_model, f"tf_efficientnet_lite{lite}")))
    for b in range(9):
        models.append((f"effnet_pytorch__efficientnet-b{b}", partial(LukeEfficientNet.from_name, f"efficientnet-b{b}")))
    # EfficientNetV2.
    for size in "sml":
        models.append((f"torchvision__efficientnet_v2_{size}", getattr(torchvision.models, f"efficientnet_v2_{size}")))
    for size in ["s", "m", "l", "xl"]:
        models.append((f"timm__efficientnetv2_{size}", partial(timm.create_model, f"efficientnetv2_{size}")))
    for size in ["s", "m", "l", "xl", "b0", "b1", "b2", "b3"]:
        models.append((f"timm__tf_efficientnetv2_{size}", partial(timm.create_model, f"tf_efficientnetv2_{size}")))
    return models


def write_key_lists():
    os.makedirs(KEYS, exist_ok=True)
    for stem, constructor in full_size_models():
        with torch.device("meta"):
            model = constructor()
        lines = [f"{k}\t{list(v.shape)}" for k, v in model.state_dict().items()]
        with open(os.path.join(KEYS, f"{stem}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"keys/{stem}.txt: {len(lines)} keys")


def main():
    os.makedirs(FIXTURES, exist_ok=True)
    # `make_fixtures.py NAME...` regenerates only those fixtures (and the key lists).
    only = sys.argv[1:]
    for name, (builder, h, w, st) in FIXTURE_MODELS.items():
        if not only or name in only:
            make_fixture(name, builder, h, w, st)
    write_key_lists()
    versions = {
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "timm": timm.__version__, "efficientnet_pytorch": "0.7.1",
        "command": ".venv/bin/python scripts/make_fixtures.py",
    }
    with open(os.path.join(FIXTURES, "VERSIONS.json"), "w") as f:
        json.dump(versions, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
