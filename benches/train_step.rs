//! One training step of B0 at 224x224, batch 16, as `train` runs it on the CPU: forward in
//! training mode (batch statistics, dropout, stochastic depth), cross-entropy, backward, and
//! the fine-tuning recipe's AdamW update, on flex with autodiff. Data loading is not in it.
//!
//! ```text
//! cargo bench --features train --bench train_step
//! .venv/bin/python scripts/bench_train_peer.py   # PyTorch eager, the same step
//! ```

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use efficientnet_burn::EfficientNetConfig;
use efficientnet_burn::train::Recipe;

const BATCH: usize = 16;

fn train_step(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    device.seed(1);
    let mut model = Some(EfficientNetConfig::b0().init(&device).train());
    let images = Tensor::<4>::random([BATCH, 3, 224, 224], Distribution::Default, &device);
    let labels: Vec<i64> = (0..BATCH as i64).map(|i| i * 61 % 1000).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [BATCH]), &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut optimizer = Recipe::Finetune.optimizer();
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.bench_function("b0_224_batch16_adamw", |b| {
        b.iter(|| {
            let net = model.take().expect("the model between steps");
            let loss = loss_fn.forward(net.forward(images.clone()), targets.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            model = Some(optimizer.step(1e-4, net, grads));
        })
    });
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
