//! Full-size parity against the Python libraries: published architectures of each source
//! (V1, Lite and V2) at full width and depth, random weights, 160x160 input. Needs the reference venv:
//!
//! ```text
//! scripts/setup_reference_env.sh
//! cargo test --release --test full_parity -- --ignored --nocapture
//! ```

mod common;

use std::process::Command;

use burn::tensor::Device;
use common::{argmax_rows, max_abs_diff, read_reference, tensor};
use efficientnet_burn::{EfficientNet, EfficientNetConfig, WeightSource};

#[test]
#[ignore = "needs the Python reference venv (scripts/setup_reference_env.sh); see the module docs"]
fn full_size_models_match_the_python_libraries() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join("efficientnet-burn-full-parity");
    let status = Command::new(format!("{root}/.venv/bin/python"))
        .arg(format!("{root}/scripts/full_parity.py"))
        .arg(&out)
        .status()
        .expect("run scripts/full_parity.py with .venv/bin/python");
    assert!(status.success(), "scripts/full_parity.py failed");

    let cases = [
        (
            "torchvision_b0",
            EfficientNetConfig::b0(),
            WeightSource::Torchvision,
        ),
        (
            "torchvision_b5",
            EfficientNetConfig::b5(),
            WeightSource::Torchvision,
        ),
        (
            "timm_efficientnet_b2",
            EfficientNetConfig::b2(),
            WeightSource::Timm,
        ),
        (
            "timm_tf_efficientnet_b3",
            EfficientNetConfig::b3(),
            WeightSource::TimmTf,
        ),
        (
            "timm_tf_efficientnet_lite2",
            EfficientNetConfig::lite2(),
            WeightSource::TimmTf,
        ),
        (
            "effnet_pytorch_b1",
            EfficientNetConfig::b1(),
            WeightSource::EfficientNetPytorch,
        ),
        (
            "torchvision_v2_s",
            EfficientNetConfig::v2_s(),
            WeightSource::Torchvision,
        ),
        (
            "timm_tf_efficientnetv2_b3",
            EfficientNetConfig::v2_b3(),
            WeightSource::TimmTf,
        ),
    ];
    let device = Device::default();
    for (name, config, source) in cases {
        let model =
            EfficientNet::from_pytorch(out.join(format!("{name}.pth")), config, source, &device)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = out.join(format!("{name}.io.safetensors"));
        let reference = read_reference(path.to_str().unwrap());
        let input = tensor::<4>(&reference["input"], &device);
        // As loaded, and with the norms folded (the CPU fast path's fused kernels).
        for (form, model) in [("", model.clone()), (" fused", model.fold_batch_norms())] {
            let logits = model.forward(input.clone()).into_data();
            let pre = model
                .pre_logits(model.forward_features(input.clone()))
                .into_data();
            let logit_diff = max_abs_diff(&logits, &reference["logits"]);
            let pre_diff = max_abs_diff(&pre, &reference["pre_logits"]);
            println!("{name}{form}: logits {logit_diff:.2e}, pre-logits {pre_diff:.2e}");
            assert!(logit_diff <= 1e-4 && pre_diff <= 1e-4, "{name}{form}");
            assert_eq!(
                argmax_rows(&logits),
                argmax_rows(&reference["logits"]),
                "{name}{form}"
            );
        }
    }
}
