//! Numerical parity with the reference implementations.
//!
//! Fixtures: `tests/fixtures/*.pth` (and one `.safetensors`) are small random-weight models
//! built by torchvision, timm and efficientnet_pytorch themselves, with the input, logits,
//! pre-logits and endpoint maps each library computed, in `*.io.safetensors`. Regenerate:
//!
//! ```text
//! scripts/setup_reference_env.sh && .venv/bin/python scripts/make_fixtures.py
//! ```

mod common;

use std::collections::HashMap;

use burn::tensor::{Device, Tensor, TensorData};
use common::{argmax_rows, max_abs_diff, read_reference, tensor};
use efficientnet_burn::model::Activation;
use efficientnet_burn::{EfficientNet, EfficientNetConfig, InferenceModel, WeightSource};

const TOLERANCE: f32 = 1e-4;

fn small(width: f64, depth: f64) -> EfficientNetConfig {
    EfficientNetConfig::new()
        .with_width(width)
        .with_depth(depth)
        .with_num_classes(10)
}

/// Loads `checkpoint` through the public API and compares every output with `name`'s
/// reference, for the model as loaded, with its batch norms folded
/// ([`EfficientNet::fold_batch_norms`]) and planned for the CPU kernels
/// ([`EfficientNet::for_inference`]). Returns the largest difference seen.
fn check(name: &str, checkpoint: &str, config: EfficientNetConfig, source: WeightSource) -> f32 {
    let device = Device::default();
    let model = EfficientNet::from_pytorch(common::fixture(checkpoint), config, source, &device)
        .unwrap_or_else(|e| panic!("{checkpoint}: {e}"));
    let reference = read_reference(&format!("{name}.io.safetensors"));
    let input = tensor::<4>(&reference["input"], &device);

    let unfused = compare(
        &format!("{name} ({checkpoint})"),
        &model,
        &input,
        &reference,
    );
    let fused_model = model.clone().fold_batch_norms();
    assert!(fused_model.is_folded());
    let fused = compare(&format!("{name} folded"), &fused_model, &input, &reference);
    // Folding reorders float operations only: the two agree far inside the tolerance.
    let between = max_abs_diff(
        &fused_model.forward(input.clone()).into_data(),
        &model.forward(input.clone()).into_data(),
    );
    println!("{name}: folded vs unfolded logits {between:.2e}");
    assert!(between <= 1e-5, "{name}: folded logits differ by {between}");
    let planned_model = model.clone().for_inference();
    assert!(planned_model.is_planned());
    let planned = compare(
        &format!("{name} planned"),
        &planned_model,
        &input,
        &reference,
    );
    let between = max_abs_diff(
        &planned_model.forward(input.clone()).into_data(),
        &model.forward(input).into_data(),
    );
    println!("{name}: planned vs Burn ops logits {between:.2e}");
    assert!(
        between <= 1e-5,
        "{name}: planned logits differ by {between}"
    );
    unfused.max(fused).max(planned)
}

/// What [`compare`] runs: the trainable network or the inference model.
trait Network {
    fn forward(&self, input: Tensor<4>) -> Tensor<2>;
    fn forward_features(&self, input: Tensor<4>) -> Tensor<4>;
    fn pre_logits(&self, features: Tensor<4>) -> Tensor<2>;
    fn endpoints(&self, input: Tensor<4>) -> Vec<Tensor<4>>;
}

macro_rules! network {
    ($ty:ty) => {
        impl Network for $ty {
            fn forward(&self, input: Tensor<4>) -> Tensor<2> {
                <$ty>::forward(self, input)
            }
            fn forward_features(&self, input: Tensor<4>) -> Tensor<4> {
                <$ty>::forward_features(self, input)
            }
            fn pre_logits(&self, features: Tensor<4>) -> Tensor<2> {
                <$ty>::pre_logits(self, features)
            }
            fn endpoints(&self, input: Tensor<4>) -> Vec<Tensor<4>> {
                <$ty>::endpoints(self, input)
            }
        }
    };
}

network!(EfficientNet);
network!(InferenceModel);

fn compare(
    name: &str,
    model: &impl Network,
    input: &Tensor<4>,
    reference: &HashMap<String, TensorData>,
) -> f32 {
    let logits = model.forward(input.clone()).into_data();
    let features = model.forward_features(input.clone());
    let pre_logits = model.pre_logits(features).into_data();
    let endpoints = model.endpoints(input.clone());

    let mut diffs = vec![
        ("logits", max_abs_diff(&logits, &reference["logits"])),
        (
            "pre_logits",
            max_abs_diff(&pre_logits, &reference["pre_logits"]),
        ),
    ];
    assert_eq!(endpoints.len(), 5, "{name}: endpoints");
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        let expected = &reference[&format!("endpoint.{i}")];
        diffs.push(("endpoint", max_abs_diff(&endpoint.into_data(), expected)));
    }
    let worst = diffs.iter().map(|d| d.1).fold(0.0, f32::max);
    println!("{name}: max abs diff {worst:.2e} {diffs:?}");
    for (what, diff) in &diffs {
        assert!(*diff <= TOLERANCE, "{name}: {what} differs by {diff}");
    }
    assert_eq!(
        argmax_rows(&logits),
        argmax_rows(&reference["logits"]),
        "{name}: top-1"
    );
    worst
}

#[test]
fn torchvision_parity() {
    // Width 0.1, B1's depth: stage 1 has two MBConv1 blocks (expand ratio 1, SE, residual).
    check(
        "torchvision_small",
        "torchvision_small.pth",
        small(0.1, 1.1),
        WeightSource::Torchvision,
    );
}

#[test]
fn timm_parity() {
    check(
        "timm_small",
        "timm_small.pth",
        small(0.25, 0.34),
        WeightSource::Timm,
    );
}

#[test]
fn timm_parity_from_safetensors() {
    check(
        "timm_small",
        "timm_small.safetensors",
        small(0.25, 0.34),
        WeightSource::Timm,
    );
}

#[test]
fn timm_tf_same_padding_parity_at_an_odd_size() {
    // 65x67 input: TF "SAME" pads stride-2 layers asymmetrically (extra pixel bottom/right).
    check(
        "timm_tf_small_odd",
        "timm_tf_small_odd.pth",
        small(0.25, 0.34),
        WeightSource::TimmTf,
    );
}

#[test]
fn timm_tf_lite_parity() {
    let config = EfficientNetConfig::lite0()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10);
    check(
        "timm_tf_lite_small",
        "timm_tf_lite_small.pth",
        config,
        WeightSource::TimmTf,
    );
}

#[test]
fn efficientnet_pytorch_parity() {
    check(
        "effnet_pytorch_small",
        "effnet_pytorch_small.pth",
        small(0.5, 0.34),
        WeightSource::EfficientNetPytorch,
    );
}

#[test]
fn efficientnet_pytorch_lite_layout_parity() {
    // A Lite-style checkpoint (no SE keys, ReLU6) in efficientnet_pytorch's flat layout.
    let config = small(0.5, 0.34)
        .with_se_ratio(0.0)
        .with_activation(Activation::ReLU6);
    check(
        "effnet_pytorch_lite_small",
        "effnet_pytorch_lite_small.pth",
        config,
        WeightSource::EfficientNetPytorch,
    );
}

#[test]
fn torchvision_v2_parity() {
    // V2-S's table at width 0.25, depth 0.34 (torchvision's own EfficientNet class, BN eps
    // 1e-3): an expand-1 Fused-MBConv with a residual, expanding Fused-MBConv blocks with and
    // without one, then MBConv stages with SE.
    let config = EfficientNetConfig::v2_s()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10);
    check(
        "torchvision_v2_small",
        "torchvision_v2_small.pth",
        config,
        WeightSource::Torchvision,
    );
}

#[test]
fn timm_v2_parity() {
    let config = EfficientNetConfig::v2_s()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10);
    check(
        "timm_v2_small",
        "timm_v2_small.pth",
        config,
        WeightSource::Timm,
    );
}

#[test]
fn timm_tf_v2_base_parity_at_an_odd_size() {
    // tf_efficientnetv2_b* at width 0.3: channel rounding without the 10% limit (stem and
    // stage 2: 32 * 0.3 = 9.6 -> 8, not 16), TF "SAME" padding, eps 1e-3, 65x67 input.
    let config = EfficientNetConfig::v2_b0()
        .with_width(0.3)
        .with_depth(0.5)
        .with_num_classes(10);
    assert_eq!(config.scaled_stem_channels(), 8);
    check(
        "timm_tf_v2_base_small_odd",
        "timm_tf_v2_base_small_odd.pth",
        config,
        WeightSource::TimmTf,
    );
}

#[test]
fn folded_and_planned_models_on_the_cpu_kernels_match_burn_ops() {
    // The folded and the unfolded model run Burn's own ops; the planned one
    // (`for_inference`) the crate's CPU engine. Trained-like weights from the fixtures: V1 and
    // V2, PyTorch and TF "SAME" padding, SiLU and ReLU6 (Lite); batch 1 and 8; square, odd
    // and tiny inputs (a 1x1 image still runs every layer).
    let device = Device::default();
    let cases = [
        (
            "torchvision_small.pth",
            small(0.1, 1.1),
            WeightSource::Torchvision,
            // 224: stage 2's expanded map (112x112x48) is large enough to be fused with its
            // depthwise convolution.
            vec![[64, 64], [1, 1], [224, 224]],
        ),
        (
            "timm_tf_small_odd.pth",
            small(0.25, 0.34),
            WeightSource::TimmTf,
            vec![[65, 67], [7, 5]],
        ),
        (
            "timm_tf_lite_small.pth",
            EfficientNetConfig::lite0()
                .with_width(0.25)
                .with_depth(0.34),
            WeightSource::TimmTf,
            vec![[64, 64], [33, 47]],
        ),
        (
            "torchvision_v2_small.pth",
            EfficientNetConfig::v2_s().with_width(0.25).with_depth(0.34),
            WeightSource::Torchvision,
            vec![[128, 128], [31, 33]],
        ),
        (
            "timm_tf_v2_base_small_odd.pth",
            EfficientNetConfig::v2_b0().with_width(0.3).with_depth(0.5),
            WeightSource::TimmTf,
            vec![[131, 117], [2, 3]],
        ),
    ];
    for (checkpoint, config, source, sizes) in cases {
        let config = config.with_num_classes(10);
        let model =
            EfficientNet::from_pytorch(common::fixture(checkpoint), config, source, &device)
                .unwrap();
        let fused = model.clone().fold_batch_norms();
        let planned = model.clone().for_inference();
        assert!(planned.is_planned(), "{checkpoint}");
        for [height, width] in sizes {
            for batch in [1, 8] {
                let input = Tensor::<4>::random(
                    [batch, 3, height, width],
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let expected = model.forward(input.clone()).into_data();
                let case = format!("{checkpoint} batch {batch} {height}x{width}");
                let forms = [
                    ("folded", fused.forward(input.clone()).into_data()),
                    ("planned", planned.forward(input.clone()).into_data()),
                ];
                for (form, got) in forms {
                    let diff = max_abs_diff(&got, &expected);
                    println!("{case}: {form} vs Burn ops {diff:.2e}");
                    assert!(diff <= 1e-5, "{case}: {form} differs by {diff}");
                }
                let diff = max_abs_diff(
                    &planned.forward_features(input.clone()).into_data(),
                    &model.forward_features(input).into_data(),
                );
                assert!(diff <= 1e-5, "{case}: planned features differ by {diff}");
            }
        }
    }
}

#[test]
fn wrong_padding_or_epsilon_breaks_parity() {
    // The reason WeightSource sets them: TF-ported weights with PyTorch settings are wrong.
    let device = Device::default();
    // 64x64: every stride-2 layer pads TF-style asymmetrically (at odd sizes TF "SAME" is
    // often symmetric: 65 -> 33 with k = 3 pads 1 and 1).
    let reference = read_reference("timm_tf_lite_small.io.safetensors");
    let config = EfficientNetConfig::lite0()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10);
    let model = config
        .init(&device)
        .load_pytorch(
            common::fixture("timm_tf_lite_small.pth"),
            &Default::default(),
        )
        .unwrap();
    let endpoints = model.endpoints(tensor(&reference["input"], &device));
    let diff = max_abs_diff(&endpoints[0].clone().into_data(), &reference["endpoint.0"]);
    println!("TF weights with PyTorch settings: first endpoint off by {diff}");
    assert!(
        diff > 1e-2,
        "symmetric padding and eps 1e-5 should not match TF weights: {diff}"
    );
}
