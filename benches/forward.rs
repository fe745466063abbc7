//! Forward-pass latency of fresh (random-weight) models on the default device.
//!
//! ```text
//! cargo bench --bench forward
//! ```
//!
//! Weights do not change the cost of a forward pass, so random weights measure the same
//! thing pretrained ones would.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use efficientnet_burn::Variant;

fn forward(c: &mut Criterion) {
    let device = Device::default();
    let mut group = c.benchmark_group("forward");
    group.sample_size(10);
    for variant in [Variant::B0, Variant::B3] {
        let model = variant.config().init(&device).valid();
        let res = variant.config().resolution;
        for batch in [1, 8] {
            let input = Tensor::<4>::random([batch, 3, res, res], Distribution::Default, &device);
            // Warm up once so allocation and lazy initialisation are not timed.
            let _ = model.forward(input.clone()).into_data();
            group.bench_with_input(
                BenchmarkId::new(variant.name(), format!("batch{batch}@{res}")),
                &input,
                |b, input| b.iter(|| model.forward(input.clone()).into_data()),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
