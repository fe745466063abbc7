//! Forward-pass latency of fresh (random-weight) models on each CPU backend compiled in:
//! prepared with `for_inference()` (as `classify` runs them: folded and, on flex, planned),
//! folded only (`fold_batch_norms()`: Burn's ops) and, for B0, as trained (unfolded); and
//! the time to load a checkpoint and to plan one.
//!
//! ```text
//! cargo bench --bench forward                       # flex
//! cargo bench --bench forward --features ndarray    # flex and ndarray
//! scripts/fetch_lite0_weights.sh                    # adds the .pth load benchmark
//! ```
//!
//! Weights do not change the cost of a forward pass, so random weights measure the same
//! thing pretrained ones would. For the comparison with PyTorch and ONNX Runtime on the same
//! machine, run `scripts/bench_peers.sh`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use efficientnet_burn::{EfficientNet, EfficientNetConfig, Variant, WeightSource};

/// One form of a model, as its forward function.
type Forward = Box<dyn Fn(Tensor<4>) -> Tensor<2>>;

/// The CPU devices this build has, with a name for the report.
fn cpu_devices() -> Vec<(&'static str, Device)> {
    [
        #[cfg(feature = "flex")]
        ("flex", Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        ("ndarray", Device::ndarray()),
    ]
    .into_iter()
    .collect()
}

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    group.sample_size(10);
    for (backend, device) in cpu_devices() {
        for variant in [Variant::B0, Variant::B3] {
            let unfused = variant.config().init(&device).valid();
            let res = variant.config().resolution;
            let prepared = unfused.clone().for_inference();
            let folded = unfused.clone().fold_batch_norms();
            let mut models: Vec<(&str, Forward)> = vec![
                ("for_inference", Box::new(move |x| prepared.forward(x))),
                ("folded", Box::new(move |x| folded.forward(x))),
            ];
            if variant == Variant::B0 {
                models.push(("unfused", Box::new(move |x| unfused.forward(x))));
            }
            for (form, forward) in &models {
                for batch in [1, 8] {
                    let input =
                        Tensor::<4>::random([batch, 3, res, res], Distribution::Default, &device);
                    // Warm up once so allocation and lazy initialisation are not timed.
                    let _ = forward(input.clone()).into_data();
                    let id = format!("{}/{backend}/{form}", variant.name());
                    group.bench_with_input(
                        BenchmarkId::new(id, format!("batch{batch}@{res}")),
                        &input,
                        |b, input| b.iter(|| forward(input.clone()).into_data()),
                    );
                }
            }
        }
    }
    group.finish();
}

fn load(c: &mut Criterion) {
    let device = Device::default();
    let mut group = c.benchmark_group("load");
    group.sample_size(10);

    // Planning: folding and packing a loaded B0 (once per model, in `for_inference`).
    let loaded = EfficientNet::b0(&device).valid();
    group.bench_function("b0/for_inference", |b| {
        b.iter(|| loaded.clone().for_inference())
    });

    // Burn's own format: a fresh B0 saved once, loaded each iteration.
    let path = std::env::temp_dir().join(format!("efficientnet-bench-{}.bpk", std::process::id()));
    EfficientNet::b0(&device)
        .save_burnpack(&path)
        .expect("temp dir is writable");
    group.bench_function("b0/burnpack", |b| {
        b.iter(|| {
            EfficientNetConfig::b0()
                .init(&device)
                .load_burnpack(&path)
                .unwrap()
        })
    });
    let _ = std::fs::remove_file(&path);

    // A real PyTorch checkpoint (pickle in a zip), remapped and shape-checked.
    let lite0 =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/efficientnet-lite0-57934424.pth");
    if lite0.exists() {
        group.bench_function("lite0/pytorch", |b| {
            b.iter(|| {
                EfficientNet::from_pytorch(
                    &lite0,
                    EfficientNetConfig::lite0(),
                    WeightSource::EfficientNetPytorch,
                    &device,
                )
                .unwrap()
            })
        });
    } else {
        eprintln!("load/lite0/pytorch skipped: run scripts/fetch_lite0_weights.sh first");
    }
    group.finish();
}

criterion_group!(benches, forward, load);
criterion_main!(benches);
