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
