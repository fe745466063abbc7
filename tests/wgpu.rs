//! The model on wgpu (feature `wgpu`): shapes, the checkpoint parity fixtures, and agreement
//! with the CPU. CI runs these on Mesa's lavapipe (a software Vulkan driver):
//!
//! ```text
//! scripts/install_vulkan.sh                 # mesa-vulkan-drivers, libvulkan1
//! cargo test --profile gpu-test --features wgpu --test wgpu -- --nocapture
//! ```
//!
//! On lavapipe every new input shape compiles its shaders first (minutes), so the tests use
//! one small input size and few distinct shapes, and share one model load per fixture.
#![cfg(feature = "wgpu")]

mod common;

use burn::tensor::{Device, DeviceKind};
use common::{argmax_rows, fixture, max_abs_diff, read_reference, tensor};
use efficientnet_burn::{DeviceChoice, EfficientNet, EfficientNetConfig, WeightSource};

/// With `wgpu` compiled in, Burn's `Device::default()` is the GPU: the CPU side of each
/// comparison names flex explicitly.
fn gpu() -> Device {
    DeviceChoice::Wgpu
        .device()
        .expect("the wgpu feature is compiled in")
}

#[test]
fn device_choice_names_wgpu() {
    assert_eq!(gpu(), Device::wgpu(DeviceKind::DefaultDevice));
    assert_ne!(gpu(), Device::flex());
}

/// Loads a parity fixture on `device` and returns the logits and the reference.
fn run_fixture(device: &Device) -> (burn::tensor::TensorData, burn::tensor::TensorData) {
    let config = EfficientNetConfig::new()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10);
    let model = EfficientNet::from_pytorch(
        fixture("timm_small.pth"),
        config,
        WeightSource::Timm,
        device,
    )
    .unwrap();
    let reference = read_reference("timm_small.io.safetensors");
    let input = tensor::<4>(&reference["input"], device);
    let logits = model.forward(input).into_data();
    (logits, reference["logits"].clone())
}

#[test]
fn parity_fixture_and_cpu_agree_on_wgpu() {
    let (gpu_logits, reference) = run_fixture(&gpu());
    let (cpu_logits, _) = run_fixture(&Device::flex());
    let vs_reference = max_abs_diff(&gpu_logits, &reference);
    let vs_cpu = max_abs_diff(&gpu_logits, &cpu_logits);
    println!("wgpu logits: {vs_reference:.2e} from timm, {vs_cpu:.2e} from the CPU");
    assert!(vs_reference <= 1e-3 && vs_cpu <= 1e-3);
    assert_eq!(argmax_rows(&gpu_logits), argmax_rows(&reference));
}

#[test]
fn shapes_and_folded_model_on_wgpu() {
    let device = gpu();
    let config = EfficientNetConfig::b0()
        .with_width(0.25)
        .with_num_classes(5);
    let model = config.init(&device);
    let input = burn::tensor::Tensor::<4>::ones([2, 3, 64, 64], &device);
    let dims: Vec<_> = model
        .endpoints(input.clone())
        .iter()
        .map(|e| e.dims())
        .collect();
    // Reductions 2 to 32, with the channels the same config has on the CPU.
    let cpu = Device::flex();
    let on_cpu = config
        .init(&cpu)
        .endpoints(burn::tensor::Tensor::<4>::ones([2, 3, 64, 64], &cpu));
    let expected: Vec<_> = on_cpu.iter().map(|e| e.dims()).collect();
    assert_eq!(dims, expected);
    assert_eq!(
        dims.iter().map(|d| d[2]).collect::<Vec<_>>(),
        [32, 16, 8, 4, 2]
    );
    let logits = model.forward(input.clone());
    assert_eq!(logits.dims(), [2, 5]);
    // Prepared for inference, the model is the same function on the GPU too: folded, and
    // run on Burn's ops (the CPU engine plans flex models only).
    let prepared = model.clone().for_inference();
    assert!(!prepared.is_planned());
    let folded = prepared.forward(input);
    let diff = max_abs_diff(&folded.into_data(), &logits.into_data());
    println!("wgpu folded vs unfolded: {diff:.2e}");
    assert!(diff <= 1e-4);
}
