//! Arbitrary bytes as an image file: decoding and preprocessing must return `Ok` or an
//! error, never panic, abort or allocate past the documented limits. Run: see TESTING.md.
#![no_main]

use burn::tensor::Device;
use efficientnet_burn::{Interpolation, Preprocess};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = Preprocess::decode(data) else {
        return;
    };
    // Small sizes keep each run fast; the code path is the one classify takes.
    let preprocess = Preprocess::imagenet(36, 32, Interpolation::Bicubic);
    let _ = preprocess.batch(&[image], &Device::default());
});
