//! Classify images with EfficientNet.
//!
//! ```text
//! cargo run --release --example classify -- photo.jpg   # torchvision B0, downloaded once
//! cargo run --release --example classify -- --model runs/train/model photo.jpg   # trained
//! cargo run --release --example classify -- --pretrained efficientnet_b0.IMAGENET1K_V1 \
//!     --weights efficientnet_b0_rwightman-7f5810bc.pth photo.jpg
//! cargo run --release --example classify -- --variant b3 --weights my.pth --source timm-tf photo.jpg
//! cargo run --release --example classify -- --list
//! ```
//!
//! Preprocessing (resize, crop, interpolation, mean/std) comes from the weights' registry
//! entry; `--resize` / `--crop` override it.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Device;
use clap::Parser;
use efficientnet_burn::imagenet::Prediction;
use efficientnet_burn::{Error, Precision, Preprocess, Pretrained};
use serde_json::json;

mod choices;
mod common;

use choices::{DeviceArg, PrecisionArg};

/// Classify images with a pretrained EfficientNet (torchvision's B0 by default, downloaded
/// and cached on first use; see EFFICIENTNET_CACHE and EFFICIENTNET_OFFLINE).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    weights: common::WeightArgs,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Override the resize of the shorter side.
    #[arg(long)]
    resize: Option<usize>,
    /// Override the center crop.
    #[arg(long)]
    crop: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Add the raw logits to the JSON output (needs --json).
    #[arg(long, requires = "json")]
    logits: bool,
    /// Backend (as compiled in).
    #[arg(long, value_enum, default_value = "flex")]
    device: DeviceArg,
    /// What the CPU engine keeps the weights in: f32, or bf16 (half the memory, about 10%
    /// faster on small models at batch 1, logits within a few hundredths).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
    /// List the known pretrained weights and exit.
    #[arg(long)]
    list: bool,
    /// Images to classify.
    images: Vec<PathBuf>,
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

fn run(args: Args) -> Result<(), Error> {
    if args.list {
        for p in Pretrained::all() {
            let info = p.info();
            let top1 = info.top1.map_or("-".to_string(), |t| format!("{t:.3}"));
            println!(
                "{:<48} {:>11} params  top-1 {top1:>6}  {}",
                info.name, info.num_params, info.url
            );
        }
        return Ok(());
    }
    if args.images.is_empty() {
        return Err(Error::InvalidInput("no images given".to_string()));
    }
    let device: Device = args.device.0.device()?;

    let mut loaded = args.weights.load(&device)?;
    if let Some(resize) = args.resize {
        loaded.preprocess.resize = resize;
    }
    if let Some(crop) = args.crop {
        loaded.preprocess.crop = crop;
    }
    if args.precision.0 != Precision::F32 {
        loaded = loaded.with_precision(args.precision.0);
    }

    // Each image gets its result or its own error; one bad file does not lose the others.
    let classify = |path: &PathBuf| -> Result<(Vec<Prediction>, Vec<f32>), Error> {
        let logits = loaded.logits(&[Preprocess::open(path)?])?;
        let raw = logits
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>();
        Ok((
            loaded.top_k(logits, args.top_k)?.remove(0),
            raw.unwrap_or_default(),
        ))
    };
    let results: Vec<_> = match args.logits {
        true => args.images.iter().map(|p| (p, classify(p))).collect(),
        // Batched: files decoded on all cores, `--batch-size` images a forward pass.
        false => args
            .images
            .iter()
            .zip(loaded.classify_files(&args.images, args.top_k, args.batch_size))
            .map(|(p, result)| (p, result.map(|top| (top, Vec::new()))))
            .collect(),
    };

    if args.json {
        let objects: Vec<_> = results
            .iter()
            .map(|(path, result)| match result {
                Ok((top, raw)) => {
                    let mut object = json!({ "path": path.display().to_string(), "top": top });
                    if args.logits {
                        object["logits"] = json!(raw);
                    }
                    object
                }
                Err(error) => json!({
                    "path": path.display().to_string(),
                    "error": error.to_string(),
                }),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&objects).unwrap_or_default()
        );
    } else {
        for (path, result) in &results {
            match result {
                Ok((top, _)) => {
                    println!("{}", path.display());
                    for Prediction { index, label, prob } in top {
                        let label = label.as_deref().unwrap_or("");
                        println!("  {:>6.2}%  {index:>4}  {label}", prob * 100.0);
                    }
                }
                Err(error) => eprintln!("error: {}: {error}", path.display()),
            }
        }
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if failed > 0 {
        return Err(Error::InvalidInput(format!(
            "{failed} of {} images could not be classified",
            results.len()
        )));
    }
    Ok(())
}
