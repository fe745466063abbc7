//! [`Classifier`]: a model ready for inference with its eval transform and class names, the
//! one type an application classifies images with.

use std::path::Path;

use burn::tensor::{Device, Tensor};

use crate::error::Error;
use crate::imagenet::{Prediction, class_names, top_k};
use crate::inference::{InferenceModel, Precision};
use crate::model::efficientnet::EfficientNet;
use crate::preprocess::{ImageInput, Preprocess};
use crate::pretrained::Pretrained;
use crate::saved::{SavedModel, SavedNetwork};

/// An image classifier: a model prepared for inference ([`InferenceModel`]: batch norms
/// folded and, on the flex CPU backend in f32, run by the crate's CPU engine), the eval
/// transform it expects, and the names of its classes.
///
/// One type whatever the weights came from:
///
/// | from | call |
/// |---|---|
/// | registry weights, downloaded once and cached | [`Classifier::pretrained`] (or [`EfficientNet::pretrained`]) |
/// | registry weights in a file you have | [`Classifier::from_file`] |
/// | a model you trained (a [`SavedModel`] directory, e.g. `train`'s `OUT/model`) | [`Classifier::load`] |
/// | any model in memory | [`Classifier::new`] |
///
/// ```no_run
/// use efficientnet_burn::burn::tensor::Device;
/// use efficientnet_burn::{Classifier, Pretrained};
///
/// let classifier = Classifier::pretrained(Pretrained::TorchvisionB0V1, &Device::default())?;
/// for p in classifier.classify_file("photo.jpg", 5)? {
///     println!("{:5.1}%  {}", 100.0 * p.prob, p.label.unwrap_or_default());
/// }
/// // Many files, eight images a forward pass; one result (or error) per file.
/// let paths = ["a.jpg", "b.png", "c.webp"];
/// for (path, result) in paths.iter().zip(classifier.classify_files(&paths, 1, 8)) {
///     match result {
///         Ok(top) => println!("{path}: {}", top[0].label.as_deref().unwrap_or("?")),
///         Err(err) => eprintln!("{path}: {err}"),
///     }
/// }
/// # Ok::<(), efficientnet_burn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Classifier {
    /// The model, prepared for inference.
    pub model: InferenceModel,
    /// The eval transform (resize, crop, interpolation, mean / std).
    pub preprocess: Preprocess,
    /// Class names by output index: the ImageNet-1k labels for 1000-class registry weights,
    /// the folder names for a model trained by `train`, empty when the names are not
    /// shipped (ImageNet-21k and 12k heads).
    pub classes: Vec<String>,
}

/// The name [`Classifier`] had before it also held trained models.
#[deprecated(since = "0.1.0", note = "renamed `Classifier`")]
pub type PretrainedModel = Classifier;

impl Classifier {
    /// Prepares `model` for inference (an [`EfficientNet`] through
    /// [`EfficientNet::for_inference`]), refuses weights holding NaN or infinity
    /// ([`InferenceModel::check_finite`]) and keeps it with its transform and class names.
    ///
    /// An error ([`Error::ClassNames`]) if `classes` is neither empty nor one name per
    /// output.
    pub fn new(
        model: impl Into<InferenceModel>,
        preprocess: Preprocess,
        classes: Vec<String>,
    ) -> Result<Self, Error> {
        let model = model.into();
        model.check_finite()?;
        preprocess.validate()?;
        let outputs = model.config().num_classes;
        if !classes.is_empty() && classes.len() != outputs {
            return Err(Error::ClassNames {
                names: classes.len(),
                outputs,
            });
        }
        Ok(Self {
            model,
            preprocess,
            classes,
        })
    }

    /// The same classifier with the CPU engine's weights in `precision` (the folded network
    /// planned again; see [`Precision`]).
    ///
    /// ```no_run
    /// use efficientnet_burn::burn::tensor::Device;
    /// use efficientnet_burn::{Classifier, Precision, Pretrained};
    ///
    /// let classifier = Classifier::pretrained(Pretrained::TorchvisionB0V1, &Device::default())?
    ///     .with_precision(Precision::Bf16Weights);
    /// let top = classifier.classify_file("photo.jpg", 5)?;
    /// # Ok::<(), efficientnet_burn::Error>(())
    /// ```
    pub fn with_precision(self, precision: Precision) -> Self {
        let network = self.model.network().clone();
        Self {
            model: InferenceModel::with_precision(network, precision),
            ..self
        }
    }

    /// Registry weights as a classifier: downloaded on first use into the cache
    /// (`$EFFICIENTNET_CACHE`, else `~/.cache/efficientnet-burn` on Linux, the platform
    /// cache directory elsewhere), checked against the published SHA-256 prefix where there
    /// is one, and read from the cache afterwards. With `EFFICIENTNET_OFFLINE=1` nothing is
    /// downloaded: a cached file is used or the call fails with [`Error::Download`].
    /// The entry's eval transform and class names come along.
    #[cfg(feature = "pretrained")]
    pub fn pretrained(weights: Pretrained, device: &Device) -> Result<Self, Error> {
        Self::from_file(weights, weights.fetch_from_env()?, device)
    }

    /// Registry weights from a file already on disk (nothing is downloaded), checked like any
    /// checkpoint (strict keys and shapes), with the entry's transform and class names.
    pub fn from_file(
        weights: Pretrained,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self, Error> {
        Self::for_weights(weights, weights.model_from_file(path, device)?)
    }

    /// A model saved with [`SavedModel::save`] or [`save`](Self::save) (what `train` writes
    /// to `OUT/model`), prepared for inference whichever form it was saved in.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        Self::try_from(SavedModel::load(dir, device)?)
    }

    /// Writes the classifier as a [`SavedModel`] directory (folded weights, config, transform,
    /// class names), which [`load`](Self::load) reads back.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), Error> {
        SavedModel {
            model: SavedNetwork::Inference(self.model.clone()),
            classes: self.classes.clone(),
            preprocess: self.preprocess.clone(),
        }
        .save(dir)
    }

    /// `model` (holding `weights`) with the entry's transform and class names.
    pub(crate) fn for_weights(weights: Pretrained, model: EfficientNet) -> Result<Self, Error> {
        let classes = class_names(weights.info().num_classes);
        Self::new(model, weights.preprocess(), classes)
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.model.device()
    }

    /// Logits of decoded images, transformed as the model expects.
    ///
    /// # Shapes
    ///
    /// - output: `[images.len(), num_classes]`
    pub fn logits<I: ImageInput>(&self, images: &[I]) -> Result<Tensor<2>, Error> {
        let batch = self.preprocess.batch(images, &self.device())?;
        self.model.try_forward(batch)
    }

    /// The `k` most probable classes of each decoded image (an [`image::RgbImage`] or
    /// [`image::DynamicImage`]), best first, named from [`classes`](Self::classes). The
    /// images go through the model as one batch.
    pub fn classify<I: ImageInput>(
        &self,
        images: &[I],
        k: usize,
    ) -> Result<Vec<Vec<Prediction>>, Error> {
        self.top_k(self.logits(images)?, k)
    }

    /// The `k` most probable classes of each row of `logits` (from [`logits`](Self::logits)),
    /// best first, named from [`classes`](Self::classes).
    ///
    /// # Shapes
    ///
    /// - `logits`: `[batch, num_classes]`
    pub fn top_k(&self, logits: Tensor<2>, k: usize) -> Result<Vec<Vec<Prediction>>, Error> {
        let names: Vec<&str> = self.classes.iter().map(String::as_str).collect();
        top_k(logits, k, &names)
    }

    /// Reads, decodes and classifies one image file.
    pub fn classify_file(
        &self,
        path: impl AsRef<Path>,
        k: usize,
    ) -> Result<Vec<Prediction>, Error> {
        let image = Preprocess::open(path)?;
        Ok(self.classify(&[image], k)?.remove(0))
    }

    /// Classifies image files `batch_size` at a time: each batch is read, decoded and
    /// transformed on all cores, then run as one forward pass. One result per path, in
    /// order: the `k` best classes, or that file's own error (unreadable, undecodable,
    /// too large); a bad file does not stop the others. A `batch_size` of 0 counts as 1.
    ///
    /// Faster per image than [`classify_file`](Self::classify_file) in a loop: decoding runs
    /// in parallel and the model runs fewer, larger passes (`cargo bench --bench classify`).
    pub fn classify_files<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
        k: usize,
        batch_size: usize,
    ) -> Vec<Result<Vec<Prediction>, Error>> {
        let mut results = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(batch_size.max(1)) {
            // The decoded images in one list, and per file whether it has one there.
            let mut images = Vec::new();
            let slots: Vec<Result<(), Error>> = self
                .prepare_files(chunk)
                .into_iter()
                .map(|prepared| prepared.map(|values| images.push(values)))
                .collect();
            let ranked = match images.is_empty() {
                true => Ok(Vec::new()),
                false => self.rank(images, k),
            };
            match ranked {
                Ok(ranked) => {
                    let mut ranked = ranked.into_iter();
                    let per_file = slots
                        .into_iter()
                        .map(|slot| slot.map(|()| ranked.next().unwrap_or_default()));
                    results.extend(per_file);
                }
                // Not expected (every image is `crop` square): each file then gets the
                // result or error of its own pass.
                Err(_) => results.extend(chunk.iter().map(|path| self.classify_file(path, k))),
            }
        }
        results
    }

    /// Decodes and transforms `paths` on up to all cores, keeping the order.
    fn prepare_files<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Vec<Result<Vec<f32>, Error>> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        crate::threads::map_in_order(paths, cores, |path| {
            self.preprocess.prepare(&Preprocess::open(path)?)
        })
    }

    /// The `k` best classes of prepared images, run as one batch.
    fn rank(&self, images: Vec<Vec<f32>>, k: usize) -> Result<Vec<Vec<Prediction>>, Error> {
        let batch = self.preprocess.stack(images, &self.device())?;
        self.top_k(self.model.try_forward(batch)?, k)
    }
}

impl TryFrom<SavedModel> for Classifier {
    type Error = Error;

    /// The saved network prepared for inference ([`SavedNetwork::into_inference`]), with its
    /// transform and class names.
    fn try_from(saved: SavedModel) -> Result<Self, Error> {
        Self::new(saved.model, saved.preprocess, saved.classes)
    }
}

#[cfg(feature = "pretrained")]
impl EfficientNet {
    /// Registry weights as a [`Classifier`], ready for inference: the same as
    /// [`Classifier::pretrained`], here because it is where one looks first.
    ///
    /// ```no_run
    /// use efficientnet_burn::burn::tensor::Device;
    /// use efficientnet_burn::{EfficientNet, Pretrained};
    ///
    /// let classifier = EfficientNet::pretrained(Pretrained::TorchvisionB0V1, &Device::default())?;
    /// for p in classifier.classify_file("photo.jpg", 5)? {
    ///     println!("{:5.1}%  {}", 100.0 * p.prob, p.label.unwrap_or_default());
    /// }
    /// # Ok::<(), efficientnet_burn::Error>(())
    /// ```
    ///
    /// For a trainable model from registry weights (fine-tuning), see
    /// [`Pretrained::for_finetuning`].
    pub fn pretrained(weights: Pretrained, device: &Device) -> Result<Classifier, Error> {
        Classifier::pretrained(weights, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, Rgb, RgbImage};

    fn tiny(device: &Device) -> Classifier {
        // Fresh weights in the entry's architecture, narrowed, stand in for a download.
        let weights = Pretrained::TorchvisionB0V1;
        let model = weights.config().with_width(0.25).init(device);
        let mut classifier = Classifier::for_weights(weights, model).unwrap();
        classifier.preprocess = Preprocess::imagenet(40, 32, crate::Interpolation::Bilinear);
        classifier
    }

    #[test]
    fn registry_weights_come_folded_with_transform_and_labels() {
        let device = Device::default();
        let weights = Pretrained::TorchvisionB0V1;
        let model = weights.config().init(&device);
        let ready = Classifier::for_weights(weights, model).unwrap();
        assert!(ready.model.network().is_folded());
        assert_eq!(ready.model.is_planned(), cfg!(feature = "flex"));
        assert_eq!(ready.preprocess, weights.preprocess());
        assert_eq!(ready.classes.len(), 1000);
        assert_eq!(ready.classes[0], "tench");
        let image = RgbImage::from_pixel(300, 260, Rgb([120, 80, 40]));
        let top = ready.classify(&[image.clone(), image], 3).unwrap();
        assert_eq!((top.len(), top[0].len()), (2, 3));
        assert!(top[0].iter().all(|p| p.label.is_some()));
        assert!(top[0][0].prob >= top[0][1].prob);

        // ImageNet-21k heads: no names shipped, predictions carry indices only.
        let weights: Pretrained = "timm/tf_efficientnetv2_b3.in21k".parse().unwrap();
        let model = weights.config().with_width(0.25).init(&device);
        let ready = Classifier::for_weights(weights, model).unwrap();
        assert!(ready.classes.is_empty());
    }

    #[test]
    fn dynamic_images_classify_as_their_rgb_conversion() {
        let classifier = tiny(&Device::default());
        let rgb = RgbImage::from_fn(48, 40, |x, y| Rgb([(x * 5) as u8, (y * 6) as u8, 90]));
        let rgba = DynamicImage::ImageRgb8(rgb.clone()).to_rgba8();
        let expected = classifier.logits(&[&rgb]).unwrap();
        for image in [
            DynamicImage::ImageRgb8(rgb.clone()),
            DynamicImage::ImageRgba8(rgba),
        ] {
            let logits = classifier.logits(&[&image]).unwrap();
            logits
                .into_data()
                .assert_eq(&expected.clone().into_data(), true);
        }
    }

    #[test]
    fn files_classify_in_batches_with_one_result_each() {
        let classifier = tiny(&Device::default());
        let dir = std::env::temp_dir().join(format!("efficientnet-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut paths = Vec::new();
        for i in 0..7u32 {
            let path = dir.join(format!("{i}.png"));
            let image = RgbImage::from_fn(44 + i, 40, |x, y| Rgb([(x * i) as u8, y as u8, 200]));
            image.save(&path).unwrap();
            paths.push(path);
        }
        // A broken file and a missing one among good ones.
        std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
        paths.insert(2, dir.join("broken.png"));
        paths.insert(5, dir.join("missing.png"));
        let one_by_one: Vec<_> = paths
            .iter()
            .map(|p| classifier.classify_file(p, 3))
            .collect();
        for batch_size in [0, 1, 3, 8, 20] {
            let batched = classifier.classify_files(&paths, 3, batch_size);
            assert_eq!(batched.len(), paths.len());
            for (single, batched) in one_by_one.iter().zip(&batched) {
                match (single, batched) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.len(), 3);
                        for (a, b) in a.iter().zip(b) {
                            assert_eq!(a.index, b.index);
                            assert!((a.prob - b.prob).abs() < 1e-5, "{a:?} {b:?}");
                        }
                    }
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    other => panic!("batch size {batch_size}: {other:?}"),
                }
            }
        }
        assert!(one_by_one[2].is_err() && one_by_one[5].is_err());
        assert_eq!(one_by_one.iter().filter(|r| r.is_ok()).count(), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_saved_classifier_loads_back_the_same() {
        let device = Device::default();
        let classifier = tiny(&device);
        let dir = std::env::temp_dir().join(format!("efficientnet-clf-{}", std::process::id()));
        classifier.save(&dir).unwrap();
        let back = Classifier::load(&dir, &device).unwrap();
        assert_eq!(back.classes, classifier.classes);
        assert_eq!(back.preprocess, classifier.preprocess);
        let image = RgbImage::from_fn(50, 41, |x, y| Rgb([x as u8 * 3, y as u8 * 4, 7]));
        let (a, b) = (
            classifier.logits(&[&image]).unwrap(),
            back.logits(&[&image]).unwrap(),
        );
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::absolute(1e-5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_bad_names_and_non_finite_weights_are_errors() {
        let device = Device::default();
        let err =
            Classifier::from_file(Pretrained::TorchvisionB0V1, "no/such.pth", &device).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let mut model = Pretrained::TorchvisionB0V1.config().init(&device);
        let nan = Tensor::<1>::full([1000], f32::NAN, &device);
        model.classifier.bias = Some(burn::module::Param::from_tensor(nan));
        let err = Classifier::for_weights(Pretrained::TorchvisionB0V1, model).unwrap_err();
        assert!(matches!(err, Error::NonFiniteWeights { .. }), "{err}");
        let model = crate::EfficientNetConfig::b0()
            .with_width(0.25)
            .with_num_classes(3)
            .init(&device);
        let preprocess = Preprocess::imagenet(40, 32, crate::Interpolation::Bilinear);
        let err = Classifier::new(model, preprocess, vec!["a".into(), "b".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: 2 class names for a model with 3 outputs"
        );
    }
}
