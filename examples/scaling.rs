//! The compound-scaling explorer: the paper's grid search for alpha, beta, gamma, and
//! single-dimension scaling at the same MACs (its Figures 3 and 8), with this crate's counters.
//!
//! ```text
//! cargo run --release --example scaling                       # B0, factor 2: table + plot
//! cargo run --release --example scaling -- --target 4 --json
//! # Briefly train the candidates on a small dataset and plot accuracy against MACs:
//! python3 scripts/make_shapes_dataset.py data/shapes
//! cargo run --release --features train --example scaling -- --base-width 0.25 \
//!     --base-depth 0.34 --base-resolution 64 --train data/shapes --epochs 4 --top 3
//! ```
//!
//! Writes a Markdown table (or JSON) to stdout and an SVG plot (`--plot`): MACs against
//! accuracy when trained, against parameters otherwise, one series per method.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use efficientnet_burn::explore::{
    Candidate, Grid, Method, baseline, compound_candidates, single_dimension,
};
use efficientnet_burn::{EfficientNetConfig, Error, Variant};
use plotters::prelude::*;
use serde_json::json;

/// Enumerate compound-scaling candidates and compare them with single-dimension scaling.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Baseline variant.
    #[arg(long, default_value = "b0")]
    base: String,
    /// Override the baseline's width multiplier (a small baseline trains fast).
    #[arg(long)]
    base_width: Option<f64>,
    /// Override the baseline's depth multiplier.
    #[arg(long)]
    base_depth: Option<f64>,
    /// Override the baseline's resolution.
    #[arg(long)]
    base_resolution: Option<usize>,
    /// FLOPs factor alpha * beta^2 * gamma^2 to reach.
    #[arg(long, default_value_t = 2.0)]
    target: f64,
    /// Grid step of each multiplier.
    #[arg(long, default_value_t = 0.05)]
    step: f64,
    /// Allowed distance of alpha * beta^2 * gamma^2 from the target.
    #[arg(long, default_value_t = 0.1)]
    tolerance: f64,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
    /// Where to write the SVG plot.
    #[arg(long, default_value = "scaling.svg")]
    plot: PathBuf,
    /// Train each candidate briefly on DIR/train and validate on DIR/valid (feature
    /// `train`; a folder per class, as scripts/make_shapes_dataset.py writes).
    #[arg(long)]
    train: Option<PathBuf>,
    /// Epochs per candidate with --train.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Batch size with --train.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// With --train, train only the N compound candidates (all three multipliers above 1)
    /// closest to the target; the baseline and single-dimension ones always.
    #[arg(long, default_value_t = 3)]
    top: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

struct Row {
    candidate: Candidate,
    accuracy: Option<f64>,
}

fn run(args: Args) -> Result<(), Error> {
    let mut base: EfficientNetConfig = args.base.parse::<Variant>()?.config();
    if let Some(w) = args.base_width {
        base = base.with_width(w);
    }
    if let Some(d) = args.base_depth {
        base = base.with_depth(d);
    }
    if let Some(r) = args.base_resolution {
        base = base.with_resolution(r);
    }
    let grid = Grid {
        target: args.target,
        step: args.step,
        tolerance: args.tolerance,
    };
    let base_macs = base.macs(base.resolution, base.resolution);
    let mut compound = compound_candidates(&base, &grid)?;
    let target_macs = (args.target * base_macs as f64) as u64;
    let singles = single_dimension(&base, target_macs)?;

    let mut candidates = vec![baseline(&base)?];
    if args.train.is_some() {
        // Training is slow: keep the candidates that scale all three dimensions, nearest
        // the target factor first.
        compound.retain(|c| c.alpha > 1.0 && c.beta > 1.0 && c.gamma > 1.0);
        compound.sort_by(|a, b| {
            let key = |c: &Candidate| (c.flops_factor() - args.target).abs();
            key(a).total_cmp(&key(b))
        });
        compound.truncate(args.top);
    }
    candidates.extend(compound);
    candidates.extend(singles);

    let mut rows: Vec<Row> = candidates
        .into_iter()
        .map(|candidate| Row {
            candidate,
            accuracy: None,
        })
        .collect();
    if let Some(dir) = &args.train {
        train_all(&mut rows, dir, &args)?;
    }
    print_rows(&rows, base_macs, args.json);
    plot(&rows, &args.plot, args.target)?;
    eprintln!("plot written to {}", args.plot.display());
    Ok(())
}

#[cfg(feature = "train")]
fn train_all(rows: &mut [Row], dir: &std::path::Path, args: &Args) -> Result<(), Error> {
    use burn::tensor::Device;
    use efficientnet_burn::train::{ImageFolder, Recipe, TrainOptions, train};

    let train_set = ImageFolder::open(dir.join("train"))?;
    let valid_set =
        ImageFolder::open_with_classes(dir.join("valid"), train_set.classes().to_vec())?;
    let classes = train_set.classes().len();
    let device = Device::default();
    for (i, row) in rows.iter_mut().enumerate() {
        // Brief runs from scratch: the norms' running statistics must forget their initial
        // value within a few dozen steps (at momentum 0.1 every candidate evaluated at
        // chance while training accuracy reached 79%, measured), and random-resized crops
        // would leave them describing zoomed images; flips only.
        let config = row
            .candidate
            .config
            .clone()
            .with_num_classes(classes)
            .with_bn_momentum(0.5);
        let res = config.resolution;
        let mut options = TrainOptions::new(
            Recipe::Finetune,
            std::env::temp_dir().join(format!("efficientnet-scaling-{}-{i}", std::process::id())),
        )
        .with_epochs(args.epochs)
        .with_batch_size(args.batch_size);
        options.learning_rate = Some(1e-3);
        options.summary = false;
        options.augment.scale = (1.0, 1.0);
        options.augment.ratio = (1.0, 1.0);
        options.preprocess = Some(efficientnet_burn::Preprocess::imagenet(
            res,
            res,
            efficientnet_burn::Interpolation::Bilinear,
        ));
        eprintln!(
            "training {} {:.2}/{:.2}/{:.2} ({} px)...",
            row.candidate.method, row.candidate.alpha, row.candidate.beta, row.candidate.gamma, res
        );
        let run = train(
            config.init(&device),
            train_set.clone(),
            valid_set.clone(),
            &options,
        )?;
        row.accuracy = Some(run.valid.accuracy);
        let _ = std::fs::remove_dir_all(&options.out_dir);
    }
    Ok(())
}

#[cfg(not(feature = "train"))]
fn train_all(_rows: &mut [Row], _dir: &std::path::Path, _args: &Args) -> Result<(), Error> {
    Err(Error::InvalidInput(
        "--train needs the `train` feature: cargo run --release --features train --example scaling"
            .to_string(),
    ))
}

fn print_rows(rows: &[Row], base_macs: u64, as_json: bool) {
    if as_json {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                let c = &r.candidate;
                json!({
                    "method": c.method.to_string(), "alpha": c.alpha, "beta": c.beta,
                    "gamma": c.gamma, "flops_factor": c.flops_factor(),
                    "depth": c.config.depth, "width": c.config.width,
                    "resolution": c.config.resolution, "params": c.params, "macs": c.macs,
                    "macs_ratio": c.macs as f64 / base_macs as f64, "accuracy": r.accuracy,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("JSON values")
        );
        return;
    }
    println!(
        "| method | alpha | beta | gamma | a*b^2*g^2 | resolution | params | GMACs | MACs / base | valid acc |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let c = &r.candidate;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {} | {:.3} | x{:.2} | {} |",
            c.method,
            c.alpha,
            c.beta,
            c.gamma,
            c.flops_factor(),
            c.config.resolution,
            c.params,
            c.macs as f64 / 1e9,
            c.macs as f64 / base_macs as f64,
            r.accuracy
                .map_or("-".to_string(), |a| format!("{:.1}%", 100.0 * a))
        );
    }
}

fn plot(rows: &[Row], path: &std::path::Path, target: f64) -> Result<(), Error> {
    let trained = rows.iter().all(|r| r.accuracy.is_some());
    let y = |r: &Row| match r.accuracy {
        Some(a) if trained => 100.0 * a,
        _ => r.candidate.params as f64 / 1e6,
    };
    let x = |r: &Row| r.candidate.macs as f64 / 1e6;
    let (x_max, y_max) = rows
        .iter()
        .fold((0.0f64, 0.0f64), |(a, b), r| (a.max(x(r)), b.max(y(r))));
    let (x_min, y_min) = rows
        .iter()
        .fold((f64::MAX, f64::MAX), |(a, b), r| (a.min(x(r)), b.min(y(r))));
    let pad = |lo: f64, hi: f64| ((lo - 0.1 * (hi - lo)).max(0.0), hi + 0.1 * (hi - lo) + 1e-9);
    let (x0, x1) = pad(x_min, x_max);
    let (y0, y1) = pad(y_min, y_max);
    let err = |e: &dyn std::fmt::Display| Error::InvalidInput(format!("plotting failed: {e}"));

    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "Scaling to x{target} FLOPs: MACs vs {}",
        if trained { "accuracy" } else { "parameters" }
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("MMACs")
        .y_desc(if trained {
            "validation accuracy (%)"
        } else {
            "parameters (M)"
        })
        .draw()
        .map_err(|e| err(&e))?;
    let series = [
        (Method::Baseline, RGBColor(0, 0, 0)),
        (Method::Compound, RGBColor(214, 39, 40)),
        (Method::Width, RGBColor(31, 119, 180)),
        (Method::Depth, RGBColor(44, 160, 44)),
        (Method::Resolution, RGBColor(148, 103, 189)),
    ];
    for (method, colour) in series {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.candidate.method == method)
            .map(|r| (x(r), y(r)))
            .collect();
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 5, colour.filled())))
            .map_err(|e| err(&e))?
            .label(method.to_string())
            .legend(move |(px, py)| Circle::new((px + 8, py), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
