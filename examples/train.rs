//! Train or fine-tune EfficientNet on a folder of images (`DATA/<class>/<image>.jpg`).
//!
//! ```text
//! # Fine-tune torchvision's B0 (downloaded once) on your classes, 10% held out:
//! cargo run --release --features train --example train -- \
//!     --data photos/ --pretrained efficientnet_b0.IMAGENET1K_V1 --recipe finetune --epochs 5
//! # The paper's recipe from scratch, with a separate validation folder:
//! cargo run --release --features train --example train -- \
//!     --data train/ --valid val/ --variant b0 --recipe paper --epochs 350 --batch-size 128
//! # Then classify with the result:
//! cargo run --release --example classify -- --model runs/train/model photo.jpg
//! ```
//!
//! Burn's dashboard shows loss, accuracy and learning rate when stdout is a terminal; plain
//! progress lines otherwise. `--resume` continues from the last checkpoint in `--out`.

use std::path::PathBuf;

use burn::tensor::Device;
use clap::Parser;
use efficientnet_burn::train::{ImageFolder, TrainOptions, train};
use efficientnet_burn::{DeviceChoice, EfficientNet, Error, Preprocess, Pretrained};

mod choices;

use choices::{DeviceArg, RecipeArg, SourceArg, VariantArg};

/// Train or fine-tune EfficientNet on DATA/<class>/<image> folders.
#[derive(Parser)]
struct Args {
    /// Training images, one subdirectory per class.
    #[arg(long)]
    data: PathBuf,
    /// Validation images with the same class subdirectories; default: hold out
    /// --valid-fraction of --data.
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Share of each class held out for validation when --valid is not given.
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f64,
    /// Architecture when not starting from --pretrained.
    #[arg(long, value_enum, default_value = "b0")]
    variant: VariantArg,
    /// Start from a registry entry's weights (downloaded unless --weights gives the file).
    #[arg(long)]
    pretrained: Option<String>,
    /// Start from this checkpoint (.pth / .safetensors); with --variant and --source unless
    /// --pretrained names it.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Layout of --weights.
    #[arg(long, value_enum, default_value = "torchvision")]
    source: SourceArg,
    /// Classes of the new head; default: the number of class folders.
    #[arg(long)]
    num_classes: Option<usize>,
    /// Train only the classifier.
    #[arg(long)]
    freeze_backbone: bool,
    /// paper (RMSProp, staircase decay) or finetune (AdamW, cosine).
    #[arg(long, value_enum, default_value = "finetune")]
    recipe: RecipeArg,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate; default: the recipe's, scaled to the batch size.
    #[arg(long)]
    lr: Option<f64>,
    /// Input resolution; default: the variant's (V2: its final training size), or the
    /// pretrained weights'.
    #[arg(long)]
    resolution: Option<usize>,
    /// Checkpoints, logs and the final model (in OUT/model).
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Continue from the last checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Backend (as compiled in; several devices need cuda or wgpu).
    #[arg(long, value_enum, default_value = "flex")]
    device: DeviceArg,
    /// Devices to train on data-parallel (cuda 0..N, or wgpu discrete GPUs 0..N); the
    /// batch size is over all of them. The way to train at ImageNet scale; tested on one
    /// CPU device named twice, never on several GPUs.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Data-loading threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Seed for the split, initial weights, shuffling, augmentation and dropout: the same
    /// seed gives the same run on the CPU.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() {
    if let Err(err) = run(Args::parse()) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn devices(choice: DeviceChoice, count: usize) -> Result<Vec<Device>, Error> {
    if count <= 1 {
        return Ok(vec![choice.device()?]);
    }
    match choice {
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => Ok((0..count).map(Device::cuda).collect()),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => Ok((0..count)
            .map(|i| Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i)))
            .collect()),
        _ => Err(Error::InvalidInput(format!(
            "--devices {count} needs several GPUs (cuda or wgpu, compiled in); {choice:?} has one"
        ))),
    }
}

/// The starting model and its eval transform.
fn starting_point(
    args: &Args,
    classes: usize,
    device: &Device,
) -> Result<(EfficientNet, Preprocess), Error> {
    let num_classes = args.num_classes.unwrap_or(classes);
    let resized = |mut preprocess: Preprocess| {
        if let Some(r) = args.resolution {
            preprocess.crop = r;
            preprocess.resize = r * 8 / 7;
        }
        preprocess
    };
    if let Some(name) = &args.pretrained {
        let pretrained: Pretrained = name.parse()?;
        let (model, preprocess) = match &args.weights {
            Some(file) => pretrained.for_finetuning_from_file(file, num_classes, device)?,
            None => finetune_downloaded(pretrained, num_classes, device)?,
        };
        return Ok((model, resized(preprocess)));
    }
    let variant = args.variant.0;
    let mut config = variant.config();
    if let Some(r) = args.resolution {
        config = config.with_resolution(r);
    }
    let model = match &args.weights {
        Some(file) => EfficientNet::from_pytorch(file, config, args.source.0, device)?
            .with_new_classifier(num_classes)?,
        None => config.with_num_classes(num_classes).try_init(device)?,
    };
    // V2 trains smaller than it evaluates (progressive learning): by default at the size
    // its schedule ends with (V2-S: 300, evaluated at 384).
    let res = match (args.resolution, variant.progressive_learning()) {
        (None, Some(progressive)) => progressive.max_resolution,
        _ => model.config().resolution,
    };
    // The architecture's default transform at that size (Lite: mean = std = 0.5).
    let preprocess = model
        .config()
        .clone()
        .with_resolution(res)
        .default_preprocess();
    Ok((model, preprocess))
}

#[cfg(feature = "pretrained")]
fn finetune_downloaded(
    pretrained: Pretrained,
    num_classes: usize,
    device: &Device,
) -> Result<(EfficientNet, Preprocess), Error> {
    pretrained.for_finetuning(num_classes, device)
}

#[cfg(not(feature = "pretrained"))]
fn finetune_downloaded(
    _pretrained: Pretrained,
    _num_classes: usize,
    _device: &Device,
) -> Result<(EfficientNet, Preprocess), Error> {
    Err(Error::InvalidInput(
        "downloads need the `pretrained` feature; pass the file with --weights".to_string(),
    ))
}

fn run(args: Args) -> Result<(), Error> {
    let devices = devices(args.device.0, args.devices)?;
    let (train_set, valid_set) = match &args.valid {
        Some(valid) => {
            let train_set = ImageFolder::open(&args.data)?;
            let valid_set = ImageFolder::open_with_classes(valid, train_set.classes().to_vec())?;
            (train_set, valid_set)
        }
        None => ImageFolder::open(&args.data)?.split(args.valid_fraction, args.seed),
    };
    for (path, reason) in train_set.skipped().iter().chain(valid_set.skipped()) {
        eprintln!("warning: skipping {}: {reason}", path.display());
    }
    println!(
        "{} classes, {} training and {} validation images",
        train_set.classes().len(),
        train_set.items().len(),
        valid_set.items().len()
    );
    // Fresh weights (from scratch) come from the device's generator: seeded, so a run
    // repeats exactly on the CPU.
    devices[0].seed(args.seed);
    let (model, preprocess) = starting_point(&args, train_set.classes().len(), &devices[0])?;

    let options = TrainOptions::new(args.recipe.0, &args.out)
        .with_epochs(args.epochs)
        .with_batch_size(args.batch_size)
        .with_learning_rate(args.lr)
        .with_freeze_backbone(args.freeze_backbone)
        .with_preprocess(Some(preprocess))
        .with_num_workers(args.workers)
        .with_seed(args.seed)
        .with_resume(args.resume)
        .with_devices(devices);

    let run = train(model, train_set, valid_set, &options)?;
    println!(
        "validation: top-1 {:.1}%, top-5 {:.1}%, loss {:.4} ({} images)",
        100.0 * run.valid.accuracy,
        100.0 * run.valid.top5,
        run.valid.loss,
        run.valid.images
    );
    println!(
        "model saved in {}; classify with: cargo run --release --example classify -- --model {} IMAGE",
        run.model_dir.display(),
        run.model_dir.display()
    );
    Ok(())
}
