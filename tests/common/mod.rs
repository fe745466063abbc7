//! Helpers shared by the integration tests: fixture paths and reading reference tensors.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// The f32 tensors of a safetensors file written by `scripts/make_fixtures.py` (a fixture
/// name, or an absolute path).
pub fn read_reference(name: &str) -> HashMap<String, TensorData> {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    file.tensors()
        .into_iter()
        .map(|(key, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{key}");
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (key, TensorData::new(values, view.shape().to_vec()))
        })
        .collect()
}

/// A reference tensor as a Burn tensor on `device`.
pub fn tensor<const D: usize>(data: &TensorData, device: &Device) -> Tensor<D> {
    Tensor::from_data(data.clone(), device)
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &TensorData, b: &TensorData) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let a = a.try_to_vec::<f32>().expect("f32");
    let b = b.try_to_vec::<f32>().expect("f32");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Index of the largest value in each row of a `[batch, classes]` tensor.
pub fn argmax_rows(data: &TensorData) -> Vec<usize> {
    let classes = data.shape()[1];
    let values = data.try_to_vec::<f32>().expect("f32");
    values
        .chunks(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, v)| {
                    if *v > best.1 { (i, *v) } else { best }
                })
                .0
        })
        .collect()
}

/// Builds a slim B0 on the CPU device configured for `dtype` (F16, BF16), runs it unfused
/// and folded, and reads its outputs through the top-k and CAM helpers. The float type is a
/// property of the device for the whole process, so each caller is a test binary of its own.
pub fn model_runs_in(dtype: burn::tensor::FloatDType) {
    use burn::tensor::DType;
    use efficientnet_burn::EfficientNetConfig;
    use efficientnet_burn::imagenet::top_k;

    let mut device = Device::flex();
    device
        .configure(dtype)
        .expect("the flex device takes a float type before first use");
    let expected: DType = dtype.into();
    let model = EfficientNetConfig::b0()
        .with_width(0.25)
        .with_num_classes(5)
        .init(&device);
    assert_eq!(model.classifier.weight.val().dtype(), expected);
    let input = Tensor::<4>::ones([2, 3, 64, 64], &device);
    let logits = model.forward(input.clone());
    assert_eq!(logits.dtype(), expected);
    assert!(logits.clone().into_data().iter::<f32>().all(f32::is_finite));
    let folded = model.clone().fold_batch_norms();
    assert_eq!(folded.forward(input.clone()).dtype(), expected);
    // Not f32: an InferenceModel runs the folded network on Burn's ops, not the CPU engine.
    let prepared = model.clone().for_inference();
    assert!(!prepared.is_planned());
    let prepared_logits = prepared.forward(input.clone());
    assert_eq!(prepared_logits.dtype(), expected);
    assert!(
        prepared_logits
            .into_data()
            .iter::<f32>()
            .all(f32::is_finite)
    );
    let top = top_k(logits, 3, &[]).unwrap();
    assert_eq!((top.len(), top[0].len()), (2, 3));
    assert!(top[0][0].prob >= top[0][1].prob);
    let cam = model.class_activation_map(input, None).unwrap();
    assert_eq!(cam.maps.dims(), [2, 2, 2]);
    assert!(cam.probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
}
