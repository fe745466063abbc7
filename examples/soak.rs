//! Long-run check: many inferences of a small model, resident memory sampled along the way.
//!
//! ```text
//! cargo run --release --example soak -- --runs 10000
//! ```
//!
//! Prints the RSS after warm-up, at every tenth of the run and at the end, and the growth;
//! TESTING.md records the figures. Each run also checks the output is the first run's, bit
//! for bit, so a leak that corrupted state would show too.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;
use efficientnet_burn::EfficientNetConfig;

/// Run a small EfficientNet many times and watch memory.
#[derive(Parser)]
struct Args {
    /// Inferences after warm-up.
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Input resolution.
    #[arg(long, default_value_t = 64)]
    resolution: usize,
    /// Keep the batch norms unfused.
    #[arg(long)]
    unfused: bool,
}

/// Resident set size of this process in KiB (Linux `VmRSS`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn main() {
    let args = Args::parse();
    let device = Device::default();
    let model = EfficientNetConfig::b0()
        .with_width(0.5)
        .with_depth(0.5)
        .with_num_classes(100)
        .init(&device)
        .valid();
    let forward: Box<dyn Fn(Tensor<4>) -> Tensor<2>> = match args.unfused {
        true => Box::new(move |x| model.forward(x)),
        false => {
            let model = model.for_inference();
            Box::new(move |x| model.forward(x))
        }
    };
    let input = Tensor::<4>::random(
        [args.batch, 3, args.resolution, args.resolution],
        Distribution::Default,
        &device,
    );
    let first: Vec<f32> = forward(input.clone()).into_data().try_to_vec().unwrap();
    for _ in 0..100 {
        let _ = forward(input.clone()).into_data();
    }
    let start_rss = rss_kib();
    let start = Instant::now();
    println!("after 100 warm-up runs: RSS {start_rss} KiB");
    for run in 1..=args.runs {
        let output: Vec<f32> = forward(input.clone()).into_data().try_to_vec().unwrap();
        assert!(
            output
                .iter()
                .zip(&first)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "run {run}: output changed"
        );
        if run % (args.runs / 10).max(1) == 0 {
            println!("run {run}: RSS {} KiB", rss_kib());
        }
    }
    let end_rss = rss_kib();
    println!(
        "{} runs in {:.1} s; RSS {start_rss} -> {end_rss} KiB ({:+.2}%)",
        args.runs,
        start.elapsed().as_secs_f64(),
        100.0 * (end_rss as f64 - start_rss as f64) / start_rss as f64
    );
}
