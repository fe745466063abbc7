//! Checkpoints stored in another float type than the model's: F16, BF16 and F64 files (and
//! one mixing F32 convolutions with F64 batch norms) load converted to the model's type, as
//! PyTorch's `load_state_dict` converts; integer data where a float is expected is an error.
//!
//! The files are written here from the timm fixture (`tests/fixtures/timm_small.safetensors`)
//! with every float tensor converted; `timm_small.f16.pth` is the same state dict saved by
//! `torch.save` after `.half()` (`scripts/make_fixtures.py`).

mod common;

use burn::tensor::{DType, Device, TensorData};
use common::{argmax_rows, fixture, max_abs_diff, read_reference, tensor};
use efficientnet_burn::{EfficientNet, EfficientNetConfig, Error, WeightSource};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn timm_small() -> EfficientNetConfig {
    EfficientNetConfig::new()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10)
}

/// The timm fixture rewritten with each tensor's values in the type `choose(key)` returns
/// (F32 tensors only; the I64 step counters stay as they are).
fn rewrite(name: &str, choose: impl Fn(&str) -> Dtype) -> std::path::PathBuf {
    let bytes = std::fs::read(fixture("timm_small.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            out.push((
                key,
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            ));
            continue;
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let dtype = choose(&key);
        let data: Vec<u8> = match dtype {
            Dtype::F16 => values
                .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            Dtype::BF16 => values
                .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            Dtype::F64 => values.flat_map(|v| (v as f64).to_le_bytes()).collect(),
            Dtype::I32 => values.flat_map(|v| (v as i32).to_le_bytes()).collect(),
            _ => values.flat_map(f32::to_le_bytes).collect(),
        };
        out.push((key, dtype, view.shape().to_vec(), data));
    }
    let views: Vec<(String, TensorView)> = out
        .iter()
        .map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let dir = std::env::temp_dir().join(format!("efficientnet-dtypes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.safetensors"));
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

/// Loads `path` into the fixture's model and returns the largest logit difference from the
/// reference (unfused and folded), checking the top-1 class too.
fn logit_diff(path: &std::path::Path) -> f32 {
    let device = Device::default();
    let model = EfficientNet::from_pytorch(path, timm_small(), WeightSource::Timm, &device)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reference = read_reference("timm_small.io.safetensors");
    let input = tensor::<4>(&reference["input"], &device);
    let mut worst = 0.0f32;
    // Folding multiplies the norms into the convolutions: it must work on converted values.
    for model in [model.clone(), model.fold_batch_norms()] {
        let logits = model.forward(input.clone()).into_data();
        assert_eq!(logits.dtype(), DType::F32);
        assert_eq!(
            argmax_rows(&logits),
            argmax_rows(&reference["logits"]),
            "{}",
            path.display()
        );
        worst = worst.max(max_abs_diff(&logits, &reference["logits"]));
    }
    println!("{}: logits within {worst:.2e}", path.display());
    worst
}

#[test]
fn f64_and_mixed_checkpoints_load_exactly() {
    // F32 values widened to F64 come back exactly; so do F64 norms beside F32 convolutions.
    assert!(logit_diff(&rewrite("f64", |_| Dtype::F64)) <= 2e-6);
    let mixed = rewrite("mixed", |key| match key.contains("bn") {
        true => Dtype::F64,
        false => Dtype::F32,
    });
    assert!(logit_diff(&mixed) <= 2e-6);
}

#[test]
fn half_precision_checkpoints_load_converted() {
    // F16 keeps 11 significant bits, BF16 8: the weights move by up to 2^-11 and 2^-8
    // relative, the logits (of order 1) accordingly (measured: 3.7e-4 and 2.8e-3).
    assert!(logit_diff(&rewrite("f16", |_| Dtype::F16)) <= 2e-3);
    assert!(logit_diff(&rewrite("bf16", |_| Dtype::BF16)) <= 2e-2);
    // torch.save of the half-precision state dict.
    assert!(logit_diff(&fixture("timm_small.f16.pth")) <= 2e-3);
}

#[test]
fn integer_data_where_a_float_belongs_is_an_error_naming_the_key() {
    let path = rewrite("int", |key| match key == "conv_stem.weight" {
        true => Dtype::I32,
        false => Dtype::F32,
    });
    let err =
        EfficientNet::from_pytorch(&path, timm_small(), WeightSource::Timm, &Device::default())
            .unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("`conv_stem.weight` holds I32 values where the model has a F32 tensor"),
        "{err}"
    );
}

#[test]
fn converted_values_are_the_rounded_originals() {
    // One tensor through the same conversion the loader uses.
    let data = TensorData::new(vec![1.0f32, 1.0 + 1e-4, -2.5e-3], [3]);
    let half = data
        .clone()
        .convert_dtype(DType::F16)
        .convert_dtype(DType::F32);
    let values = half.try_to_vec::<f32>().unwrap();
    assert_eq!(values[0], 1.0);
    assert_eq!(values[1], 1.0); // 1e-4 is below F16's step at 1 (2^-10)
    assert!((values[2] + 2.5e-3).abs() < 2e-6);
}
