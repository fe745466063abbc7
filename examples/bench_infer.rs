//! Inference timing for the peer comparison (`scripts/bench_peers.sh`): builds a model with
//! fresh weights (by default prepared with `for_inference()`, as `classify` runs it), runs
//! `--warmup` then `--runs` forwards on one input (each on a copy of its own, made before its
//! timer starts), and prints one JSON line with the median and fastest latency, images per
//! second and peak RSS.
//!
//! ```text
//! cargo run --release --example bench_infer -- --variant b0 --batch 1 --resolution 224
//! ```
//!
//! `--serve` takes turns with other runtimes instead (`scripts/bench_pair.py`): after the
//! warm-up it reads a count from each line of standard input, runs that many forwards and
//! answers with one JSON line of their times, until standard input ends.
//!
//! `--steps` prints instead the 10th percentile of each step's time over the runs (the stem,
//! every block, the head, the classifier), named and laid out as
//! `scripts/profile_ort_layers.py` prints ONNX Runtime's, so the two compare line by line.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use clap::Parser;
use efficientnet_burn::Precision;
use serde_json::json;

mod choices;

use choices::{DeviceArg, PrecisionArg, VariantArg};

/// Time EfficientNet inference.
#[derive(Parser)]
struct Args {
    /// Variant.
    #[arg(long, value_enum, default_value = "b0")]
    variant: VariantArg,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Input resolution (square).
    #[arg(long, default_value_t = 224)]
    resolution: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Keep the batch norms as separate layers (by default the model is
    /// `for_inference()`: folded and planned, as `classify` runs it).
    #[arg(long, conflicts_with = "unplanned")]
    unfused: bool,
    /// Fold the batch norms but do not plan the model (`fold_batch_norms()` only: Burn's
    /// ops).
    #[arg(long)]
    unplanned: bool,
    /// Backend (as compiled in).
    #[arg(long, value_enum, default_value = "flex")]
    device: DeviceArg,
    /// The CPU engine's weights (`for_inference_with`): f32, or rounded to bf16.
    #[arg(long, value_enum, default_value = "f32", conflicts_with_all = ["unfused", "unplanned"])]
    precision: PrecisionArg,
    /// Print each step's time (10th percentile over the runs) instead: the planned CPU
    /// engine only (flex, f32).
    #[arg(long, conflicts_with_all = ["unfused", "unplanned"])]
    steps: bool,
    /// Take turns instead: after the warm-up, read a count a line from standard input, run
    /// that many forwards and print their times as one JSON line (`scripts/bench_pair.py`).
    #[arg(long, conflicts_with = "steps")]
    serve: bool,
}

/// A tensor of its own with `input`'s values, made before the timer starts: a forward
/// given a clone would share the values with `input`, so the engine would copy them before
/// reading them in place (0.15-0.2 ms at B0 224, batch 1), which an application that hands
/// its input over does not pay.
fn own_copy(input: &Tensor<4>) -> Tensor<4> {
    Tensor::from_data(input.to_data(), &input.device())
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), efficientnet_burn::Error> {
    let args = Args::parse();
    let device = args.device.0.device()?;
    let variant = args.variant.0;
    let model = variant.config().init(&device).valid();
    let input = Tensor::<4>::random(
        [args.batch, 3, args.resolution, args.resolution],
        Distribution::Default,
        &device,
    );
    if args.steps {
        #[cfg(feature = "flex")]
        print_step_times(&model.for_inference_with(args.precision.0), input, &args);
        #[cfg(not(feature = "flex"))]
        eprintln!("--steps times the planned CPU engine: build with the `flex` feature");
        return Ok(());
    }
    // The three forms, each as a forward function.
    let forward: Box<dyn Fn(Tensor<4>) -> Tensor<2>> = if args.unfused {
        Box::new(move |x| model.forward(x))
    } else if args.unplanned {
        let model = model.fold_batch_norms();
        Box::new(move |x| model.forward(x))
    } else {
        let model = model.for_inference_with(args.precision.0);
        Box::new(move |x| model.forward(x))
    };
    // One timed forward, in milliseconds.
    let time_one = || {
        let input = own_copy(&input);
        let start = Instant::now();
        let _ = forward(input).into_data();
        start.elapsed().as_secs_f64() * 1e3
    };
    for _ in 0..args.warmup {
        time_one();
    }
    if args.serve {
        serve(time_one);
        return Ok(());
    }
    let mut times: Vec<f64> = (0..args.runs).map(|_| time_one()).collect();
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "{}",
        json!({
            "peer": format!(
                "efficientnet-burn ({}{})",
                args.device.0.name(),
                if args.unfused {
                    ", unfused"
                } else if args.unplanned {
                    ", folded, Burn ops"
                } else if args.precision.0 == Precision::Bf16Weights {
                    ", for_inference, bf16 weights"
                } else {
                    ", for_inference"
                }
            ),
            "variant": variant.name(),
            "batch": args.batch,
            "resolution": args.resolution,
            "median_ms": median,
            "min_ms": times.first().copied().unwrap_or(f64::NAN),
            "images_per_s": args.batch as f64 * 1e3 / median,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// `--serve`: for each line of standard input, a count, that many forwards timed by
/// `time_one`, answered with one JSON line `{"times_ms": [...], "peak_rss_mib": ...}`. A line
/// that is not a count ends the loop, as the end of the input does.
fn serve(mut time_one: impl FnMut() -> f64) {
    use std::io::{BufRead, Write};

    let mut stdout = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Some(count) = line.ok().and_then(|l| l.trim().parse::<usize>().ok()) else {
            break;
        };
        let times: Vec<f64> = (0..count).map(|_| time_one()).collect();
        let answer = json!({
            "times_ms": times,
            "peak_rss_mib": peak_rss_mib(),
        });
        if writeln!(stdout, "{answer}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
}

/// `--steps`: the 10th percentile of each step's time over `args.runs` forwards (after
/// `args.warmup`), in microseconds, one line a step.
#[cfg(feature = "flex")]
fn print_step_times(model: &efficientnet_burn::InferenceModel, input: Tensor<4>, args: &Args) {
    use efficientnet_burn::__bench::step_times;

    let mut steps: Vec<(String, Vec<u128>)> = Vec::new();
    for run in 0..args.warmup + args.runs {
        let Some(times) = step_times(model, own_copy(&input)) else {
            eprintln!("--steps times the planned CPU engine: run it on flex in f32");
            std::process::exit(2);
        };
        if run < args.warmup {
            continue;
        }
        for (index, (name, time)) in times.into_iter().enumerate() {
            if steps.len() <= index {
                steps.push((name, Vec::new()));
            }
            steps[index].1.push(time.as_micros());
        }
    }
    println!(
        "efficientnet-burn, {} thread(s), 10th percentile of {} runs, us",
        rayon::current_num_threads(),
        args.runs
    );
    let mut total = 0;
    for (name, mut times) in steps {
        times.sort_unstable();
        let p10 = times[times.len() / 10];
        total += p10;
        println!("{name:24} {p10:7}");
    }
    println!("{:24} {total:7}", "total");
}
