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
use efficientnet_burn::imagenet::{Prediction, labels, top_k};
use efficientnet_burn::{
    DeviceChoice, EfficientNet, Error, Interpolation, Preprocess, Pretrained, Variant, WeightSource,
};
use serde_json::json;

/// Classify images with a pretrained EfficientNet (torchvision's B0 by default, downloaded
/// and cached on first use; see EFFICIENTNET_CACHE and EFFICIENTNET_OFFLINE).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Known weights (see --list): sets variant, source and preprocessing.
    #[arg(long)]
    pretrained: Option<String>,
    /// Checkpoint file (.pth / .safetensors) to load.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A model directory written by the train example (weights, config, classes and
    /// transform); replaces --pretrained, --weights, --variant and --source.
    #[arg(long, conflicts_with_all = ["pretrained", "weights"])]
    model: Option<PathBuf>,
    /// Variant, when not given by --pretrained.
    #[arg(long, default_value = "b0")]
    variant: String,
    /// Weight source, when not given by --pretrained: torchvision, timm, timm-tf,
    /// efficientnet-pytorch.
    #[arg(long, default_value = "torchvision")]
    source: String,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Override the resize of the shorter side.
    #[arg(long)]
    resize: Option<usize>,
    /// Override the center crop.
    #[arg(long)]
    crop: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Add the raw logits to the JSON output.
    #[arg(long)]
    logits: bool,
    /// cpu, ndarray, wgpu or cuda (as compiled in).
    #[arg(long, default_value = "cpu")]
    device: String,
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

#[cfg(feature = "pretrained")]
fn download_and_load(pretrained: Pretrained, device: &Device) -> Result<EfficientNet, Error> {
    use efficientnet_burn::pretrained::download::Cache;
    pretrained.load(&Cache::from_env()?, device)
}

#[cfg(not(feature = "pretrained"))]
fn download_and_load(pretrained: Pretrained, _device: &Device) -> Result<EfficientNet, Error> {
    Err(Error::InvalidInput(format!(
        "built without the `pretrained` feature: fetch {} and pass it with --weights",
        pretrained.info().url
    )))
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
    let device: Device = args.device.parse::<DeviceChoice>()?.device()?;

    let mut class_names = None;
    let (model, mut preprocess) = match (&args.pretrained, &args.weights) {
        _ if args.model.is_some() => {
            let dir = args.model.as_ref().expect("checked by the guard");
            let saved = efficientnet_burn::SavedModel::load(dir, &device)?;
            class_names = Some(saved.classes);
            (saved.model, saved.preprocess)
        }
        (Some(name), Some(weights)) => {
            let pretrained: Pretrained = name.parse()?;
            (
                pretrained.load_file(weights, &device)?,
                pretrained.preprocess(),
            )
        }
        (Some(name), None) => {
            let pretrained: Pretrained = name.parse()?;
            (
                download_and_load(pretrained, &device)?,
                pretrained.preprocess(),
            )
        }
        (None, Some(weights)) => {
            let variant: Variant = args.variant.parse()?;
            let source: WeightSource = args.source.parse()?;
            let model = EfficientNet::from_pytorch(weights, variant.config(), source, &device)?;
            // Without registry metadata: the variant's resolution, timm's default crop ratio
            // 0.875, and (as timm's tf_efficientnet_lite configs) mean = std = 0.5 for Lite.
            let res = variant.config().resolution;
            let mut preprocess = Preprocess::imagenet(res * 8 / 7, res, Interpolation::Bicubic);
            if variant.preset().lite {
                preprocess.mean = [0.5; 3];
                preprocess.std = [0.5; 3];
            }
            (model, preprocess)
        }
        (None, None) => {
            // The default: torchvision's B0, downloaded on first use.
            let pretrained = Pretrained::TorchvisionB0V1;
            (
                download_and_load(pretrained, &device)?,
                pretrained.preprocess(),
            )
        }
    };
    // Weights with NaN or infinity would make every answer NaN: refuse them by name.
    model.check_finite()?;
    // Inference only: fold the batch norms into the convolutions (one pass less a layer).
    let model = model.fuse_batch_norm();
    if let Some(resize) = args.resize {
        preprocess.resize = resize;
    }
    if let Some(crop) = args.crop {
        preprocess.crop = crop;
    }

    let names = labels();
    let trained: Vec<&str>;
    let label_list: &[&str] = if let Some(classes) = &class_names {
        trained = classes.iter().map(String::as_str).collect();
        &trained
    } else if model.config().num_classes == names.len() {
        &names
    } else {
        &[]
    };
    let mut results = Vec::new();
    for path in &args.images {
        let image = Preprocess::open(path)?;
        let batch = preprocess.batch(&[image], &device)?;
        let logits = model.forward(batch);
        let raw = logits
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let top = top_k(logits, args.top_k, label_list)?.remove(0);
        results.push((path.clone(), top, raw));
    }

    if args.json {
        let objects: Vec<_> = results
            .iter()
            .map(|(path, top, raw)| {
                let mut object = json!({
                    "path": path.display().to_string(),
                    "top": top.iter().map(|p| json!({
                        "index": p.index, "label": p.label, "prob": p.prob,
                    })).collect::<Vec<_>>(),
                });
                if args.logits {
                    object["logits"] = json!(raw);
                }
                object
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&objects).unwrap_or_default()
        );
    } else {
        for (path, top, _) in &results {
            println!("{}", path.display());
            for Prediction { index, label, prob } in top {
                let label = label.as_deref().unwrap_or("");
                println!("  {:>6.2}%  {index:>4}  {label}", prob * 100.0);
            }
        }
    }
    Ok(())
}
