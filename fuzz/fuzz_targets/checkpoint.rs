//! Arbitrary bytes as a checkpoint file: loading must return `Ok` or the crate's error,
//! never panic, abort or hang. The first byte picks the reader (even: torch.save, odd:
//! safetensors), the rest is the file. Run: see TESTING.md.
#![no_main]

use std::path::PathBuf;

use burn::tensor::Device;
use efficientnet_burn::{EfficientNet, EfficientNetConfig, WeightSource};
use libfuzzer_sys::fuzz_target;

fn scratch(extension: &str) -> PathBuf {
    std::env::temp_dir().join(format!("efficientnet-fuzz-{}.{extension}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let extension = if selector % 2 == 0 { "pth" } else { "safetensors" };
    let path = scratch(extension);
    std::fs::write(&path, bytes).expect("temp dir is writable");
    // The config of tests/fixtures/timm_small.pth, whose files seed the corpus.
    let config = EfficientNetConfig::new()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10);
    let _ = EfficientNet::from_pytorch(&path, config, WeightSource::Timm, &Device::default());
});
