//! Images from a folder per class, and the batches training and validation read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};
use image::RgbImage;

use crate::error::Error;
use crate::preprocess::Preprocess;

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// One image and its class.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageItem {
    /// The image file.
    pub path: PathBuf,
    /// The class index, into [`ImageFolder::classes`].
    pub label: usize,
}

/// A classification dataset laid out as `root/<class>/<image>`, the layout of
/// torchvision's and Burn's `ImageFolder`: classes are the subdirectories in name order,
/// images the files with an [image extension](IMAGE_EXTENSIONS) in each.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    classes: Vec<String>,
    items: Vec<ImageItem>,
    skipped: Vec<(PathBuf, String)>,
}

impl ImageFolder {
    /// Scans `root`. Each image's header is read (not the pixels): files that are not
    /// images are left out and listed by [`skipped`](Self::skipped). An error if `root`
    /// cannot be read or holds no images.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, Error> {
        let root = root.as_ref();
        let mut classes: Vec<String> = sorted_entries(root)?
            .into_iter()
            .filter(|path| path.is_dir())
            .filter_map(|path| path.file_name()?.to_str().map(str::to_string))
            .collect();
        classes.sort();
        Self::open_with_classes(root, classes)
    }

    /// Scans `root` for exactly these classes (a validation folder must use the training
    /// folder's classes, in its order); an error names a class directory that is missing.
    pub fn open_with_classes(root: impl AsRef<Path>, classes: Vec<String>) -> Result<Self, Error> {
        let root = root.as_ref();
        let mut items = Vec::new();
        let mut skipped = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            for path in sorted_entries(&root.join(class))? {
                let is_image = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
                if !is_image || !path.is_file() {
                    continue;
                }
                match image::ImageReader::open(&path).and_then(|r| r.with_guessed_format()) {
                    Ok(reader) => match reader.into_dimensions() {
                        Ok(_) => items.push(ImageItem { path, label }),
                        Err(e) => skipped.push((path, e.to_string())),
                    },
                    Err(e) => skipped.push((path, e.to_string())),
                }
            }
        }
        if items.is_empty() {
            return Err(Error::NoImages(format!(
                "no images in {} (expected {}/<class>/<image>.jpg, classes {:?})",
                root.display(),
                root.display(),
                classes
            )));
        }
        Ok(Self {
            classes,
            items,
            skipped,
        })
    }

    /// Class names, by label.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The images.
    pub fn items(&self) -> &[ImageItem] {
        &self.items
    }

    /// Files with an image extension whose header could not be read, and why.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// Each class's images (in label order), shuffled by `seed` (Fisher-Yates, one
    /// generator across the classes).
    fn shuffled_classes(&self, seed: u64) -> Vec<Vec<ImageItem>> {
        let mut rng = SplitMix(seed);
        (0..self.classes.len())
            .map(|label| {
                let mut class: Vec<ImageItem> = self
                    .items
                    .iter()
                    .filter(|item| item.label == label)
                    .cloned()
                    .collect();
                for i in (1..class.len()).rev() {
                    class.swap(i, rng.below(i + 1));
                }
                class
            })
            .collect()
    }

    /// Splits off a validation set: `fraction` of each class (at least one image of any
    /// class with two or more), chosen by `seed`.
    pub fn split(self, fraction: f64, seed: u64) -> (Self, Self) {
        let (mut train, mut valid) = (Vec::new(), Vec::new());
        for mut class in self.shuffled_classes(seed) {
            let mut take = (class.len() as f64 * fraction).round() as usize;
            if class.len() >= 2 {
                take = take.clamp(1, class.len() - 1);
            }
            valid.extend(class.drain(..take.min(class.len())));
            train.extend(class);
        }
        let part = |items| Self {
            classes: self.classes.clone(),
            items,
            skipped: Vec::new(),
        };
        (part(train), part(valid))
    }

    /// The same images, each class shuffled by `seed`, then dealt out one class after the
    /// other (a, b, c, a, b, c, ...), so that any contiguous run holds the classes in their
    /// proportions. burn-train's data-parallel training gives each device a contiguous
    /// share of the set; listed class by class, one device would see only the first
    /// classes.
    pub(crate) fn interleaved(self, seed: u64) -> Self {
        let mut classes: Vec<std::collections::VecDeque<ImageItem>> = self
            .shuffled_classes(seed)
            .into_iter()
            .map(Into::into)
            .collect();
        // Largest remainder first: the class furthest behind its share goes next.
        let total = self.items.len();
        let sizes: Vec<usize> = classes.iter().map(|c| c.len()).collect();
        let mut items = Vec::with_capacity(total);
        while items.len() < total {
            let dealt = items.len() + 1;
            let next = (0..classes.len())
                .filter(|&c| !classes[c].is_empty())
                .max_by(|&a, &b| {
                    let behind = |c: usize| {
                        (sizes[c] * dealt) as f64 / total as f64
                            - (sizes[c] - classes[c].len()) as f64
                    };
                    behind(a).total_cmp(&behind(b)).then(b.cmp(&a))
                })
                .expect("items remain while fewer than all were dealt");
            items.extend(classes[next].pop_front());
        }
        Self { items, ..self }
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::io(dir))?;
    entries.sort();
    Ok(entries)
}

impl Dataset<ImageItem> for ImageFolder {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        Ok(self.items[index].clone())
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// Images and their labels, on one device.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    /// `[batch, 3, crop, crop]`, normalised.
    pub images: Tensor<4>,
    /// `[batch]` class indices.
    pub targets: Tensor<1, Int>,
}

/// Training augmentation: torchvision's `RandomResizedCrop` and a horizontal flip.
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    /// Range of the crop's area as a fraction of the image's. Default 0.08..1.
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio (width / height). Default 3/4..4/3.
    pub ratio: (f64, f64),
    /// Flip half the images left-right. Default true.
    pub flip: bool,
}

impl Default for Augment {
    /// torchvision's and the paper's ImageNet training: crops of 8% to all of the image.
    fn default() -> Self {
        Self {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: true,
        }
    }
}

impl Augment {
    /// For fine-tuning on small datasets ([`Recipe::Finetune`](super::Recipe::Finetune)'s
    /// default): crops of 35% to all of the image, so the object mostly stays in view. An 8%
    /// crop of a photo of one object often holds none of it, a wrong label that a short run
    /// on a few hundred images does not average out.
    pub fn finetune() -> Self {
        Self {
            scale: (0.35, 1.0),
            ..Self::default()
        }
    }
}

/// Decodes, transforms and batches [`ImageItem`]s; the data loader runs it.
///
/// Training (with [`Augment`]): a random crop of random area and aspect ratio resized to
/// `preprocess.crop` (the interpolation of `preprocess`), maybe flipped, normalised.
/// Validation (without): `preprocess` itself, resize and center crop.
///
/// Reproducible: the augmentation of an image is drawn from the seed, the image's class
/// folder and file name, and how many times the image was drawn before (its epoch), so it
/// does not depend on which thread decodes it, in what order, or where the dataset is. A batch's images are decoded on
/// [`with_threads`](Self::with_threads) threads.
///
/// A file that passed [`ImageFolder::open`]'s header check but fails to decode (truncated
/// pixel data, say) is reported on stderr and replaced by a black image with its label, so
/// one bad file does not end a run.
#[derive(Clone, Debug)]
pub struct ImageBatcher {
    preprocess: Preprocess,
    augment: Option<Augment>,
    seed: u64,
    threads: usize,
    /// How many times each image has been augmented so far.
    draws: Arc<Mutex<HashMap<PathBuf, u64>>>,
}

impl ImageBatcher {
    /// The training batcher: `augment`, then `preprocess`'s crop size and normalisation.
    pub fn train(preprocess: Preprocess, augment: Augment, seed: u64) -> Self {
        Self {
            preprocess,
            augment: Some(augment),
            seed,
            threads: 1,
            draws: Arc::default(),
        }
    }

    /// The validation batcher: `preprocess` as is.
    pub fn eval(preprocess: Preprocess) -> Self {
        Self {
            preprocess,
            augment: None,
            seed: 0,
            threads: 1,
            draws: Arc::default(),
        }
    }

    /// Decodes each batch on `threads` threads (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The random stream of `path`'s next augmentation.
    fn stream(&self, path: &Path) -> SplitMix {
        let mut draws = self.draws.lock().unwrap_or_else(PoisonError::into_inner);
        let count = draws.entry(path.to_path_buf()).or_insert(0);
        let draw = *count;
        *count += 1;
        // FNV-1a of the class folder and file name (not the whole path, so a dataset draws
        // the same wherever it is): the same on every run and platform build.
        let mut hash = 0xCBF2_9CE4_8422_2325u64;
        for part in path.iter().rev().take(2) {
            for byte in part.as_encoded_bytes() {
                hash = (hash ^ *byte as u64).wrapping_mul(0x0100_0000_01B3);
            }
        }
        let mut mix = SplitMix(self.seed ^ hash);
        SplitMix(mix.next() ^ draw.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn transform(&self, image: &RgbImage, path: &Path) -> Result<RgbImage, Error> {
        let Some(augment) = &self.augment else {
            return self.preprocess.resize_and_crop(image);
        };
        let mut rng = self.stream(path);
        let (x, y, w, h) = random_crop(image.width(), image.height(), augment, &mut rng);
        let crop = image::imageops::crop_imm(image, x, y, w, h).to_image();
        let size = self.preprocess.crop as u32;
        let filter = self.preprocess.interpolation.filter();
        let mut resized = image::imageops::resize(&crop, size, size, filter);
        if augment.flip && rng.next() & 1 == 1 {
            image::imageops::flip_horizontal_in_place(&mut resized);
        }
        Ok(resized)
    }

    /// One item decoded, transformed and normalised (a black image if it cannot be read).
    fn values(&self, item: &ImageItem) -> Vec<f32> {
        let crop = self.preprocess.crop;
        let image =
            Preprocess::open(&item.path).and_then(|image| self.transform(&image, &item.path));
        let image = image.unwrap_or_else(|err| {
            eprintln!("warning: {err}; using a black image for this sample");
            RgbImage::new(crop as u32, crop as u32)
        });
        self.preprocess.normalized(&image)
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let crop = self.preprocess.crop;
        let parts = crate::threads::map_in_order(&items, self.threads, |item| self.values(item));
        let labels: Vec<i64> = items.iter().map(|item| item.label as i64).collect();
        let images = TensorData::new(parts.concat(), [items.len(), 3, crop, crop]);
        ImageBatch {
            images: Tensor::from_data(images, device),
            targets: Tensor::from_data(TensorData::new(labels, [items.len()]), device),
        }
    }
}

/// A crop `(x, y, width, height)` as torchvision's `RandomResizedCrop` draws it: ten tries at
/// a random area and log-uniform aspect ratio that fits, else the whole image's center,
/// clamped to the ratio range.
fn random_crop(
    width: u32,
    height: u32,
    augment: &Augment,
    rng: &mut SplitMix,
) -> (u32, u32, u32, u32) {
    let area = (width * height) as f64;
    let (log_lo, log_hi) = (augment.ratio.0.ln(), augment.ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform(augment.scale.0, augment.scale.1);
        let ratio = rng.uniform(log_lo, log_hi).exp();
        let w = (target * ratio).sqrt().round() as u32;
        let h = (target / ratio).sqrt().round() as u32;
        if 0 < w && w <= width && 0 < h && h <= height {
            let x = rng.below((width - w + 1) as usize) as u32;
            let y = rng.below((height - h + 1) as usize) as u32;
            return (x, y, w, h);
        }
    }
    let ratio = width as f64 / height as f64;
    let (w, h) = if ratio < augment.ratio.0 {
        (
            width,
            ((width as f64 / augment.ratio.0).round() as u32).max(1),
        )
    } else if ratio > augment.ratio.1 {
        (
            ((height as f64 * augment.ratio.1).round() as u32).max(1),
            height,
        )
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// SplitMix64: a few lines of well-mixed randomness for augmentation and splits.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_keeps_every_image_and_each_share_holds_the_classes_in_proportion() {
        // 6, 3 and 1 images: every contiguous half holds 3, 1-2 and 0-1 of them.
        let items: Vec<ImageItem> = [(0, 6), (1, 3), (2, 1)]
            .iter()
            .flat_map(|&(label, count)| {
                (0..count).map(move |i| ImageItem {
                    path: PathBuf::from(format!("{label}/{i}.png")),
                    label,
                })
            })
            .collect();
        let folder = ImageFolder {
            classes: vec!["a".into(), "b".into(), "c".into()],
            items: items.clone(),
            skipped: Vec::new(),
        };
        let dealt = folder.interleaved(3).items;
        let mut paths: Vec<_> = dealt.iter().map(|item| item.path.clone()).collect();
        paths.sort();
        let mut expected: Vec<_> = items.iter().map(|item| item.path.clone()).collect();
        expected.sort();
        assert_eq!(paths, expected);
        for half in dealt.chunks(5) {
            let count = |label| half.iter().filter(|item| item.label == label).count();
            assert_eq!(count(0), 3, "{half:?}");
            assert!((1..=2).contains(&count(1)), "{half:?}");
        }
        // Each class in a seeded order: another seed, another order.
        let folder = |seed| {
            ImageFolder {
                classes: vec!["a".into(), "b".into(), "c".into()],
                items: items.clone(),
                skipped: Vec::new(),
            }
            .interleaved(seed)
            .items
        };
        assert_eq!(folder(3), dealt);
        assert_ne!(folder(4), dealt);
    }

    #[test]
    fn random_crops_fit_and_respect_the_ranges() {
        let augment = Augment::default();
        let mut rng = SplitMix(7);
        for (width, height) in [(64, 64), (300, 40), (1, 1), (13, 200)] {
            for _ in 0..200 {
                let (x, y, w, h) = random_crop(width, height, &augment, &mut rng);
                assert!(w >= 1 && h >= 1 && x + w <= width && y + h <= height);
            }
        }
        // On a square image every try fits: area within 8%..100%.
        for _ in 0..200 {
            let (_, _, w, h) = random_crop(100, 100, &augment, &mut rng);
            let area = (w * h) as f64 / 10_000.0;
            assert!((0.06..=1.0).contains(&area), "{area}");
        }
    }

    #[test]
    fn uniform_and_below_stay_in_range() {
        let mut rng = SplitMix(1);
        for _ in 0..1000 {
            assert!((2.0..3.0).contains(&rng.uniform(2.0, 3.0)));
            assert!(rng.below(5) < 5);
        }
    }
}
