//! Classifying image files: [`Classifier::classify_files`] (decoding on all cores, batches of
//! 8) against [`Classifier::classify_file`] called once per file, on 64 JPEG photos-sized
//! files (640x480) with B0 and torchvision's eval transform, on the flex CPU backend.
//!
//! ```text
//! cargo bench --bench classify
//! ```
//!
//! Random weights: they do not change the cost. Each iteration classifies all 64 files, so
//! the per-image time is the reported time / 64.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use efficientnet_burn::burn::tensor::Device;
use efficientnet_burn::image::{Rgb, RgbImage};
use efficientnet_burn::{Classifier, EfficientNet, Pretrained};

const FILES: u32 = 64;
const BATCH: usize = 8;

/// `FILES` distinct 640x480 JPEGs in a temporary directory.
fn photos() -> Vec<PathBuf> {
    let dir = std::env::temp_dir().join(format!("efficientnet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    (0..FILES)
        .map(|i| {
            let image = RgbImage::from_fn(640, 480, |x, y| {
                let v = (x * 7 + y * 3 + i * 11) % 251;
                Rgb([v as u8, ((x ^ y) % 256) as u8, ((y + i) % 256) as u8])
            });
            let path = dir.join(format!("{i}.jpg"));
            image.save(&path).expect("a JPEG written");
            path
        })
        .collect()
}

fn classify(c: &mut Criterion) {
    let device = Device::flex();
    let weights = Pretrained::TorchvisionB0V1;
    let model: EfficientNet = weights.config().init(&device);
    let classifier = Classifier::new(model, weights.preprocess(), Vec::new()).expect("finite");
    let paths = photos();
    let mut group = c.benchmark_group("classify_64_files");
    group.sample_size(10);
    group.bench_function("classify_file_each", |b| {
        b.iter(|| {
            for path in &paths {
                classifier.classify_file(path, 5).expect("classified");
            }
        })
    });
    group.bench_function("classify_files_batch_8", |b| {
        b.iter(|| {
            for result in classifier.classify_files(&paths, 5, BATCH) {
                result.expect("classified");
            }
        })
    });
    group.finish();
    if let Some(dir) = paths[0].parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

criterion_group!(benches, classify);
criterion_main!(benches);
