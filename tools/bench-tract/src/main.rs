//! tract's side of `scripts/bench_peers.sh`: loads the ONNX file the script exported (the
//! same torchvision model ONNX Runtime runs), optimises it for the batch and resolution,
//! runs `--warmup` then `--runs` forwards on one input with `--threads` threads, and prints
//! one JSON line in the shape the other peers print.
//!
//! ```text
//! cargo run --release -- model.onnx --variant b0 --batch 1 --resolution 224 --threads 2
//! ```

use std::time::Instant;

use tract_linalg::multithread::{Executor, set_default_executor};
use tract_onnx::prelude::*;

/// `--name value` from the command line, or `default`.
fn option(args: &[String], name: &str, default: &str) -> String {
    args.windows(2)
        .find(|pair| pair[0] == name)
        .map_or(default.to_string(), |pair| pair[1].clone())
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).filter(|a| !a.starts_with("--")).cloned();
    let Some(path) = path else {
        eprintln!("usage: bench-tract MODEL.onnx [--variant b0] [--batch 1] [--resolution 224] [--threads N] [--warmup 3] [--runs 20]");
        std::process::exit(2);
    };
    let number = |name: &str, default: &str| -> usize {
        option(&args, name, default)
            .parse()
            .unwrap_or_else(|_| panic!("{name} takes a number"))
    };
    let (batch, resolution) = (number("--batch", "1"), number("--resolution", "224"));
    let (warmup, runs) = (number("--warmup", "3"), number("--runs", "20"));
    let threads = number("--threads", "1");
    if threads > 1 {
        set_default_executor(Executor::multithread(threads));
    }
    let model = tract_onnx::onnx()
        .model_for_path(&path)?
        .with_input_fact(0, f32::fact([batch, 3, resolution, resolution]).into())?
        .into_optimized()?
        .into_runnable()?;
    let input: Tensor =
        tract_ndarray::Array4::<f32>::from_shape_fn((batch, 3, resolution, resolution), |(
            b,
            c,
            y,
            x,
        )| {
            ((b * 7 + c * 5 + y * 3 + x) % 17) as f32 / 17.0 - 0.5
        })
        .into();
    for _ in 0..warmup {
        model.run(tvec!(input.clone().into()))?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        model.run(tvec!(input.clone().into()))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let rss = peak_rss_mib().map_or("null".to_string(), |m| format!("{m}"));
    println!(
        "{{\"peer\": \"tract 0.23.9\", \"variant\": \"{}\", \"batch\": {batch}, \"resolution\": {resolution}, \"median_ms\": {median}, \"images_per_s\": {}, \"peak_rss_mib\": {rss}}}",
        option(&args, "--variant", "b0"),
        batch as f64 * 1e3 / median,
    );
    Ok(())
}
