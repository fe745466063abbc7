#!/usr/bin/env bash
# Writes tests/fixtures/legacy/: models saved by the crate as it was at 5484fbc, before the
# network kept one list of stages (Fused-MBConv stages were `fused_stages.*`, MBConv ones
# `stages.*` counted from 0, and block paths had no variant). tests/loading.rs checks that
# today's SavedModel::load reads them and gives the logits they were saved with.
#
#   scripts/make_legacy_burnpack.sh        # needs git history (5484fbc) and cargo
#
# The parity fixture's small V2-S (width 0.25, depth 0.34, 10 classes: three Fused-MBConv
# and three MBConv stages) with its trained-like torchvision weights
# (tests/fixtures/torchvision_v2_small.pth), saved as trained (`trainable/`) and folded
# (`folded/`), with the logits of a fixed [2, 3, 32, 32] input in each `logits.json`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/tests/fixtures/legacy
old=$(mktemp -d)
trap 'git worktree remove --force "$old"; rm -rf "$old"' EXIT
git worktree add --detach "$old" 5484fbc >/dev/null
cat >"$old/examples/legacy_burnpack.rs" <<'RS'
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use efficientnet_burn::{
    EfficientNet, EfficientNetConfig, Interpolation, Preprocess, SavedModel, WeightSource,
};

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("output dir"));
    let device = burn::tensor::Device::flex();
    let config = EfficientNetConfig::v2_s()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10);
    let model = EfficientNet::from_pytorch(
        "tests/fixtures/torchvision_v2_small.pth",
        config,
        WeightSource::Torchvision,
        &device,
    )
    .unwrap()
    .valid();
    // The same input tests/loading.rs builds.
    let values: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let input = Tensor::<4>::from_data(TensorData::new(values, [2, 3, 32, 32]), &device);
    for (name, model) in [("trainable", model.clone()), ("folded", model.fuse_batch_norm())] {
        let dir = out.join(name);
        let logits: Vec<f32> = model.forward(input.clone()).into_data().to_vec().unwrap();
        SavedModel {
            model,
            classes: (0..10).map(|i| format!("class {i}")).collect(),
            preprocess: Preprocess::imagenet(36, 32, Interpolation::Bilinear),
        }
        .save(&dir)
        .unwrap();
        std::fs::write(dir.join("logits.json"), serde_json::to_string(&logits).unwrap()).unwrap();
    }
}
RS
rm -rf "$out" && mkdir -p "$out"
cp tests/fixtures/torchvision_v2_small.pth "$old/tests/fixtures/" 2>/dev/null || true
(cd "$old" && cargo run --quiet --features train --example legacy_burnpack -- "$out")
ls -l "$out"/*
