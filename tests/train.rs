//! Training end to end on a synthetic dataset (feature `train`):
//!
//! ```text
//! cargo test --features train --test train -- --nocapture
//! ```
//!
//! Three classes of procedurally drawn 64x64 images (a red disc, a green square, blue
//! stripes, each at a random place and size on a noisy grey background); a tiny EfficientNet
//! trains on them on the CPU for a few epochs.
#![cfg(feature = "train")]

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use efficientnet_burn::train::{
    Evaluation, ImageFolder, Recipe, TrainOptions, evaluate, last_checkpoint, train,
};
use efficientnet_burn::{EfficientNetConfig, Interpolation, Preprocess, SavedModel};
use image::{Rgb, RgbImage};

const CLASSES: [&str; 3] = ["disc", "square", "stripes"];

/// The training tests run one at a time: they seed the one CPU device and draw from its
/// random stream (initialisation, dropout, stochastic depth), which two concurrent runs
/// would interleave, making both nondeterministic.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Deterministic pseudo-random numbers for drawing.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as u32
    }
}

fn draw(class: usize, rng: &mut Lcg) -> RgbImage {
    let mut image = RgbImage::from_fn(64, 64, |_, _| {
        let v = 100 + rng.next(60) as u8;
        Rgb([v, v, v])
    });
    let size = 14 + rng.next(14);
    let (cx, cy) = (
        size + rng.next(64 - 2 * size),
        size + rng.next(64 - 2 * size),
    );
    for y in 0..64u32 {
        for x in 0..64u32 {
            let (dx, dy) = (x as i32 - cx as i32, y as i32 - cy as i32);
            let inside = match class {
                0 => dx * dx + dy * dy <= (size * size) as i32,
                1 => dx.unsigned_abs() <= size && dy.unsigned_abs() <= size,
                _ => dx.unsigned_abs() <= size && dy.unsigned_abs() <= size && (y / 4) % 2 == 0,
            };
            if inside {
                image.put_pixel(
                    x,
                    y,
                    [Rgb([220, 40, 40]), Rgb([40, 200, 60]), Rgb([40, 60, 220])][class],
                );
            }
        }
    }
    image
}

/// Writes `per_class` images of each class under `root/<class>/`.
fn synthetic_dataset(root: &Path, per_class: usize, seed: u64) {
    let mut rng = Lcg(seed);
    for (class, name) in CLASSES.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            draw(class, &mut rng)
                .save(dir.join(format!("{i:03}.png")))
                .unwrap();
        }
    }
}

/// Training and validation folders of synthetic shapes in `temp_dir(name)`, each given as
/// (images per class, seed); validation with the training classes.
fn shapes_folders(
    name: &str,
    train: (usize, u64),
    valid: (usize, u64),
) -> (ImageFolder, ImageFolder) {
    let data = temp_dir(name);
    synthetic_dataset(&data.join("train"), train.0, train.1);
    synthetic_dataset(&data.join("valid"), valid.0, valid.1);
    let train_set = ImageFolder::open(data.join("train")).unwrap();
    let valid_set =
        ImageFolder::open_with_classes(data.join("valid"), train_set.classes().to_vec()).unwrap();
    (train_set, valid_set)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("efficientnet-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The mean of a metric over an epoch's batches, from burn-train's log (`value,count` lines).
fn epoch_mean(out: &Path, epoch: usize, metric: &str) -> f64 {
    let log =
        std::fs::read_to_string(out.join(format!("train/epoch-{epoch}/{metric}.log"))).unwrap();
    let values: Vec<f64> = log
        .lines()
        .filter_map(|line| line.split(',').next()?.parse().ok())
        .collect();
    values.iter().sum::<f64>() / values.len() as f64
}

/// A finished [`train_tiny`] run.
struct TinyRun {
    config: EfficientNetConfig,
    options: TrainOptions,
    train_set: ImageFolder,
    valid_set: ImageFolder,
    out: PathBuf,
    preprocess: Preprocess,
    /// Where the final model was saved, and its validation result.
    model_dir: PathBuf,
    valid: Evaluation,
}

/// Trains `config` (slimmed to width 0.25, depth 0.34, 64 px, 3 classes) for 5 epochs on
/// the synthetic shapes and checks that it learned: training loss falling, accuracy above
/// chance on the training and the validation images, a checkpoint per epoch.
fn train_tiny(name: &str, config: EfficientNetConfig) -> TinyRun {
    let (train_set, valid_set) = shapes_folders(&format!("{name}-data"), (40, 1), (12, 2));
    assert_eq!(train_set.classes(), CLASSES);

    let device = Device::default();
    device.seed(5);
    let config = config
        .with_width(0.25)
        .with_depth(0.34)
        .with_resolution(64)
        // A 75-step run: the norms' running statistics must forget their initial value (var 1)
        // within it. Fresh depthwise layers have activations of variance ~2/C, far below 1:
        // at the default momentum 0.1 and 40 steps, evaluation collapsed to chance while
        // training-mode accuracy was 80% (measured).
        .with_bn_momentum(0.5)
        .with_num_classes(3);
    let model = config.init(&device);
    let preprocess = Preprocess::imagenet(64, 64, Interpolation::Bilinear);
    let before = evaluate(&model.valid().for_inference(), &train_set, &preprocess, 32).unwrap();

    let out = temp_dir(&format!("{name}-run"));
    let mut options = TrainOptions::new(Recipe::Finetune, &out)
        .with_epochs(5)
        .with_batch_size(8);
    options.learning_rate = Some(1e-3);
    options.num_workers = 1;
    options.preprocess = Some(preprocess.clone());
    // Flips only: with random-resized crops (even of 50-100% area) the running statistics
    // describe zoomed-in images, and after 75 steps the model in eval mode did no better than
    // 58-61% (measured), its training-mode accuracy 80%.
    options.augment.scale = (1.0, 1.0);
    options.augment.ratio = (1.0, 1.0);
    let run = train(model, train_set.clone(), valid_set.clone(), &options).unwrap();
    let trained = run.saved.model.clone().into_inference();
    let after = evaluate(&trained, &train_set, &preprocess, 32).unwrap();
    println!("before {before:?}\nafter {after:?}\nvalid {:?}", run.valid);
    // Training loss as burn-train logged it, per epoch: falling.
    let losses: Vec<f64> = (1..=5)
        .map(|epoch| epoch_mean(&out, epoch, "Loss"))
        .collect();
    println!("training loss by epoch {losses:.3?}");
    assert!(losses[4] < 0.7 * losses[0], "{losses:?}");
    assert!(
        after.accuracy > before.accuracy.max(0.6),
        "{before:?} -> {after:?}"
    );
    assert!(run.valid.accuracy >= 0.6, "chance is 1/3: {:?}", run.valid);
    assert_eq!(run.first_epoch, 1);
    assert_eq!(last_checkpoint(&out), Some(5));
    TinyRun {
        config,
        options,
        train_set,
        valid_set,
        out,
        preprocess,
        model_dir: run.model_dir,
        valid: run.valid,
    }
}

#[test]
fn a_tiny_model_learns_synthetic_shapes_checkpoints_resumes_and_reloads() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = train_tiny("v1", EfficientNetConfig::b0());
    let (config, options, out) = (&run.config, &run.options, &run.out);
    let (train_set, valid_set) = (run.train_set.clone(), &run.valid_set);
    let device = Device::default();

    // Resume: one more epoch, from the checkpoint of epoch 5.
    let mut more = options.clone().with_epochs(6);
    more.resume = true;
    let resumed = train(
        config.init(&device),
        train_set.clone(),
        valid_set.clone(),
        &more,
    )
    .unwrap();
    assert_eq!(resumed.first_epoch, 6);
    assert_eq!(last_checkpoint(out), Some(6));
    println!("resumed {:?}", resumed.valid);
    assert!(resumed.valid.accuracy >= 0.6, "{:?}", resumed.valid);

    // The saved model reloads and classifies as the trained one does.
    let saved = SavedModel::load(&resumed.model_dir, &device).unwrap();
    assert_eq!(saved.classes, CLASSES);
    assert_eq!(saved.preprocess, run.preprocess);
    let model = saved.model.into_inference();
    let reloaded = evaluate(&model, valid_set, &saved.preprocess, 32).unwrap();
    assert_eq!(reloaded.accuracy, resumed.valid.accuracy);
    assert!(
        (reloaded.loss - resumed.valid.loss).abs() < 1e-6,
        "{reloaded:?}"
    );

    // A model of another width cannot resume from these checkpoints: an error naming a
    // tensor and both shapes, not a panic inside burn-train. (Last, so the model it builds
    // does not shift the device's random stream for the runs above.)
    let other = config.clone().with_width(0.5).init(&device);
    let err = train(other, train_set, valid_set.clone(), &more).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("training: cannot resume from ") && text.contains("in the file and"),
        "{text}"
    );
}

#[test]
fn a_tiny_v2_model_learns_synthetic_shapes() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // V2-B0's structure (Fused-MBConv stages with and without expansion, then MBConv).
    let run = train_tiny("v2", EfficientNetConfig::v2_b0());
    assert_eq!(run.config.fused_stage_count(), 3);
    // The saved model (config with fused stages, weights) reloads and scores the same.
    let saved = SavedModel::load(&run.model_dir, &Device::default()).unwrap();
    assert_eq!(saved.model.config().fused_stage_count(), 3);
    assert!(
        saved.model.trainable().is_some(),
        "saved as trained, to train on"
    );
    let model = saved.model.into_inference();
    let reloaded = evaluate(&model, &run.valid_set, &saved.preprocess, 32).unwrap();
    assert_eq!(reloaded.accuracy, run.valid.accuracy);
}

#[test]
fn resume_without_a_checkpoint_and_class_mismatches_are_errors() {
    // It builds models on the device too: not while a training test draws from it.
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let data = temp_dir("errors");
    synthetic_dataset(&data, 2, 3);
    let set = ImageFolder::open(&data).unwrap();
    let device = Device::default();
    let tiny = EfficientNetConfig::b0()
        .with_width(0.1)
        .with_depth(0.1)
        .with_resolution(32);

    let mut options = TrainOptions::new(Recipe::Paper, data.join("nothing-here"));
    options.resume = true;
    let err = train(
        tiny.clone().with_num_classes(3).init(&device),
        set.clone(),
        set.clone(),
        &options,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nothing to resume"), "{err}");

    let err = train(
        tiny.clone().init(&device),
        set.clone(),
        set.clone(),
        &options,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("the data has 3 classes but the model 1000"),
        "{err}"
    );

    let uneven = TrainOptions::new(Recipe::Paper, data.join("uneven"))
        .with_batch_size(7)
        .with_devices(vec![device.clone(), device.clone()]);
    let err = train(
        tiny.with_num_classes(3).init(&device),
        set.clone(),
        set,
        &uneven,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("a batch of 7 images does not split evenly over 2 devices"),
        "{err}"
    );

    let err = ImageFolder::open(data.join("disc").join("000.png")).unwrap_err();
    println!("{err}");
}

#[test]
fn split_is_stratified_and_deterministic() {
    let data = temp_dir("split");
    synthetic_dataset(&data, 10, 4);
    let set = ImageFolder::open(&data).unwrap();
    let (train_a, valid_a) = set.clone().split(0.2, 7);
    let (_, valid_b) = set.split(0.2, 7);
    assert_eq!(valid_a.items(), valid_b.items());
    assert_eq!(valid_a.items().len(), 6);
    assert_eq!(train_a.items().len(), 24);
    for label in 0..3 {
        assert_eq!(
            valid_a.items().iter().filter(|i| i.label == label).count(),
            2
        );
    }
}

/// Every line burn-train logged for `metric` over `epochs`, as text.
fn metric_log(out: &Path, epochs: usize, metric: &str) -> Vec<String> {
    (1..=epochs)
        .flat_map(|epoch| {
            let path = out.join(format!("train/epoch-{epoch}/{metric}.log"));
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (train_set, valid_set) = shapes_folders("seeded-data", (12, 4), (4, 5));
    let config = EfficientNetConfig::b0()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(3);
    // Everything random on: shuffling, random-resized crops and flips on two decoding
    // threads, dropout and stochastic depth.
    let run = |seed: u64, name: &str| {
        let device = Device::default();
        device.seed(11);
        let model = config.init(&device);
        let out = temp_dir(name);
        let options = TrainOptions::new(Recipe::Finetune, &out)
            .with_epochs(2)
            .with_batch_size(6)
            .with_num_workers(2)
            .with_seed(seed)
            .with_summary(false)
            .with_preprocess(Some(Preprocess::imagenet(40, 32, Interpolation::Bilinear)));
        let result = train(model, train_set.clone(), valid_set.clone(), &options).unwrap();
        (metric_log(&out, 2, "Loss"), result.valid)
    };
    let (losses, valid) = run(7, "seeded-a");
    let (again, valid_again) = run(7, "seeded-b");
    // 6 batches and the epoch's final value, per epoch.
    assert_eq!(losses.len(), 14, "{losses:?}");
    assert_eq!(losses, again, "the same seed, another run");
    assert_eq!(valid, valid_again);
    let (other, _) = run(8, "seeded-c");
    assert_ne!(
        losses, other,
        "another seed should draw other batches and crops"
    );
}

/// Fine-tuning real pretrained Lite0 with the defaults (only data, epochs and batch size
/// given) must learn an easy folder in two epochs, whatever the seed. Needs the weights and
/// takes ~6 minutes in release on 2 cores:
///
/// ```text
/// scripts/fetch_lite0_weights.sh
/// cargo test --release --features train --test train -- --ignored --nocapture defaults
/// ```
#[test]
#[ignore = "needs weights/efficientnet-lite0-57934424.pth (scripts/fetch_lite0_weights.sh); ~6 min in release"]
fn finetuning_pretrained_lite0_with_defaults_learns_an_easy_folder() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/efficientnet-lite0-57934424.pth");
    let (train_set, valid_set) = shapes_folders("lite0-data", (40, 21), (10, 22));
    let mut accuracies = Vec::new();
    for seed in [1, 2, 3] {
        let device = Device::default();
        let model = efficientnet_burn::EfficientNet::from_pytorch(
            &weights,
            EfficientNetConfig::lite0(),
            efficientnet_burn::WeightSource::EfficientNetPytorch,
            &device,
        )
        .unwrap()
        .with_new_classifier(3)
        .unwrap();
        let preprocess = model.config().default_preprocess();
        let options = TrainOptions::new(Recipe::Finetune, temp_dir(&format!("lite0-{seed}")))
            .with_epochs(2)
            .with_batch_size(8)
            .with_seed(seed)
            .with_summary(false)
            .with_preprocess(Some(preprocess));
        let run = train(model, train_set.clone(), valid_set.clone(), &options).unwrap();
        println!("seed {seed}: {:?}", run.valid);
        accuracies.push(run.valid.accuracy);
    }
    assert!(accuracies.iter().all(|&a| a >= 0.9), "{accuracies:?}");
}

/// Data-parallel training (`TrainOptions::devices`, burn-train's multi-device strategy) on
/// two devices at half the batch each follows one device at the whole batch: the same
/// logged loss at every step and the same validation loss at the end, to 1e-4 relative.
///
/// The CPU has one flex device, named twice here: burn-train runs one worker thread per
/// entry, each with its own copy of the model, and adds up their gradients on the first.
/// For the two runs to be comparable step by step, each device's half of a step must be
/// the same mix as the whole: every class folder holds four copies of one image, the batch
/// is the whole set (12), and augmentation, dropout and stochastic depth are off. Each
/// half (2 + 2 + 2 images, as `interleaved` deals them) then has the whole batch's
/// batch-norm statistics and mean loss. Both recipes: RMSProp (the paper's, epsilon outside
/// the root, weight decay added to the gradient) follows the gradient's scale, so it also
/// checks that the devices' gradients add up to the mean's, not to twice it.
#[test]
fn two_devices_at_half_the_batch_follow_one_device() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = temp_dir("parallel-data");
    let mut rng = Lcg(3);
    for (class, name) in CLASSES.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let image = draw(class, &mut rng);
        for i in 0..4 {
            image.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
    let set = ImageFolder::open(&root).unwrap();
    let config = EfficientNetConfig::b0()
        .with_width(0.25)
        .with_depth(0.34)
        .with_dropout(0.0)
        .with_stochastic_depth_prob(0.0)
        .with_num_classes(3);
    let run = |recipe: Recipe, devices: usize, name: &str| {
        let device = Device::default();
        device.seed(13);
        let model = config.init(&device);
        let out = temp_dir(name);
        let mut options = TrainOptions::new(recipe, &out)
            .with_epochs(4)
            .with_batch_size(12)
            .with_learning_rate(Some(1e-3))
            .with_num_workers(1)
            .with_summary(false)
            .with_devices(vec![device; devices])
            .with_preprocess(Some(Preprocess::imagenet(64, 64, Interpolation::Bilinear)));
        options.augment.scale = (1.0, 1.0);
        options.augment.ratio = (1.0, 1.0);
        options.augment.flip = false;
        let result = train(model, set.clone(), set.clone(), &options).unwrap();
        let losses: Vec<f64> = (1..=4)
            .flat_map(|epoch| {
                let path = out.join(format!("train/epoch-{epoch}/Loss.log"));
                let log = std::fs::read_to_string(path).unwrap();
                // burn-train logs each device's batch, then the epoch's running value.
                let values: Vec<f64> = log
                    .lines()
                    .filter_map(|line| line.split(',').next()?.parse().ok())
                    .collect();
                values[..devices].to_vec()
            })
            .collect();
        (losses, result.valid)
    };
    for recipe in [Recipe::Finetune, Recipe::Paper] {
        let (one, one_valid) = run(recipe, 1, "parallel-one");
        let (two, two_valid) = run(recipe, 2, "parallel-two");
        println!("{recipe:?}: one device {one:.5?}\ntwo devices {two:.5?}");
        assert_eq!(two.len(), 2 * one.len(), "{two:?}");
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        for (step, loss) in one.iter().enumerate() {
            for device_loss in &two[2 * step..2 * step + 2] {
                assert!(
                    close(*device_loss, *loss),
                    "{recipe:?} step {step}: {two:?} vs {one:?}"
                );
            }
        }
        // The steps moved the model: the curve is not flat.
        assert!((one[3] - one[0]).abs() > 0.01, "{recipe:?}: {one:?}");
        assert!(
            close(two_valid.loss, one_valid.loss),
            "{recipe:?}: {two_valid:?} vs {one_valid:?}"
        );
    }
}
