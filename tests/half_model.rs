//! A model built and run in half precision: Burn's float type is a property of the device
//! (`Device::configure`), so this file is its own test binary (its own process) with the
//! CPU device set to F16 before anything runs on it.

use burn::tensor::{DType, Device, FloatDType, Tensor};
use efficientnet_burn::EfficientNetConfig;
use efficientnet_burn::imagenet::top_k;

#[test]
fn an_f16_model_runs_and_the_helpers_read_its_outputs() {
    let mut device = Device::flex();
    device
        .configure(FloatDType::F16)
        .expect("the flex device takes F16 before first use");
    let config = EfficientNetConfig::b0()
        .with_width(0.25)
        .with_num_classes(5);
    let model = config.init(&device);
    assert_eq!(model.classifier.weight.val().dtype(), DType::F16);
    let input = Tensor::<4>::ones([2, 3, 64, 64], &device);
    let logits = model.forward(input.clone());
    assert_eq!(logits.dtype(), DType::F16);
    assert!(logits.clone().into_data().iter::<f32>().all(f32::is_finite));
    // Folded, and through the helpers that turn outputs into answers.
    let folded = model.clone().fuse_batch_norm();
    assert_eq!(folded.forward(input.clone()).dtype(), DType::F16);
    let top = top_k(logits, 3, &[]).unwrap();
    assert_eq!((top.len(), top[0].len()), (2, 3));
    assert!(top[0][0].prob >= top[0][1].prob);
    let cam = model.class_activation_map(input, None).unwrap();
    assert_eq!(cam.maps.dims(), [2, 2, 2]);
    assert!(cam.probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
}
