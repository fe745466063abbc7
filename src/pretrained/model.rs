//! [`PretrainedModel`]: a model ready for inference with its eval transform and class names.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use image::RgbImage;

use crate::error::Error;
use crate::imagenet::{Prediction, class_names, top_k};
use crate::inference::InferenceModel;
use crate::model::efficientnet::EfficientNet;
use crate::preprocess::Preprocess;
use crate::pretrained::Pretrained;

/// A model ready for inference ([`InferenceModel`]: batch norms folded and, on the flex CPU
/// backend, the network planned for the fast kernels), the exact eval transform its weights
/// were measured with, and the names of its classes.
///
/// From the registry, [`EfficientNet::pretrained`] (downloads once, then uses the cache) or
/// [`PretrainedModel::from_file`] (a checkpoint already on disk, no network); from anything
/// else, [`PretrainedModel::new`].
#[derive(Debug)]
pub struct PretrainedModel {
    /// The model, prepared for inference.
    pub model: InferenceModel,
    /// The eval transform (resize, crop, interpolation, mean / std).
    pub preprocess: Preprocess,
    /// Class names by output index: the ImageNet-1k labels for 1000-class registry weights,
    /// empty when the names are not shipped (ImageNet-21k and 12k heads).
    pub classes: Vec<String>,
}

impl PretrainedModel {
    /// Prepares `model` for inference (an [`EfficientNet`] through
    /// [`EfficientNet::for_inference`]), refuses weights holding NaN or infinity
    /// ([`EfficientNet::check_finite`]) and keeps it with its transform and class names.
    pub fn new(
        model: impl Into<InferenceModel>,
        preprocess: Preprocess,
        classes: Vec<String>,
    ) -> Result<Self, Error> {
        let model = model.into();
        model.network().check_finite()?;
        Ok(Self {
            model,
            preprocess,
            classes,
        })
    }

    /// Loads registry weights from a file already on disk (nothing is downloaded): checked
    /// like any checkpoint, then as [`new`](Self::new), with the entry's transform and class
    /// names.
    pub fn from_file(
        weights: Pretrained,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self, Error> {
        Self::for_weights(weights, weights.load_file(path, device)?)
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

    /// Logits of decoded images, transformed as the weights expect.
    ///
    /// # Shapes
    ///
    /// - output: `[images.len(), num_classes]`
    pub fn logits(&self, images: &[RgbImage]) -> Result<Tensor<2>, Error> {
        let batch = self.preprocess.batch(images, &self.device())?;
        self.model.try_forward(batch)
    }

    /// The `k` most probable classes of each image, best first, named from
    /// [`classes`](Self::classes).
    pub fn classify(&self, images: &[RgbImage], k: usize) -> Result<Vec<Vec<Prediction>>, Error> {
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
}

#[cfg(feature = "pretrained")]
impl EfficientNet {
    /// Registry weights as a model ready for inference, with their eval transform and class
    /// names: the one call for "a pretrained EfficientNet".
    ///
    /// The checkpoint is downloaded on first use into the cache (`$EFFICIENTNET_CACHE`, else
    /// `~/.cache/efficientnet-burn` on Linux, the platform cache directory elsewhere),
    /// checked against the published SHA-256 prefix where there is one, and read from the
    /// cache afterwards. With `EFFICIENTNET_OFFLINE=1` nothing is downloaded: a cached file
    /// is used or the call fails with [`Error::Download`]. For a file fetched some other way,
    /// [`PretrainedModel::from_file`].
    ///
    /// ```no_run
    /// use efficientnet_burn::burn::tensor::Device;
    /// use efficientnet_burn::{EfficientNet, Pretrained};
    ///
    /// let model = EfficientNet::pretrained(Pretrained::TorchvisionB0V1, &Device::default())?;
    /// for p in model.classify_file("photo.jpg", 5)? {
    ///     println!("{:5.1}%  {}", 100.0 * p.prob, p.label.unwrap_or_default());
    /// }
    /// # Ok::<(), efficientnet_burn::Error>(())
    /// ```
    pub fn pretrained(weights: Pretrained, device: &Device) -> Result<PretrainedModel, Error> {
        let cache = crate::pretrained::download::Cache::from_env()?;
        PretrainedModel::for_weights(weights, weights.load(&cache, device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_weights_come_folded_with_transform_and_labels() {
        let device = Device::default();
        // Fresh weights in the entry's architecture stand in for the download.
        let weights = Pretrained::TorchvisionB0V1;
        let model = weights.config().init(&device);
        let ready = PretrainedModel::for_weights(weights, model).unwrap();
        assert!(ready.model.network().is_folded());
        assert_eq!(ready.model.is_planned(), cfg!(feature = "flex"));
        assert_eq!(ready.preprocess, weights.preprocess());
        assert_eq!(ready.classes.len(), 1000);
        assert_eq!(ready.classes[0], "tench");
        let image = RgbImage::from_pixel(300, 260, image::Rgb([120, 80, 40]));
        let top = ready.classify(&[image.clone(), image], 3).unwrap();
        assert_eq!((top.len(), top[0].len()), (2, 3));
        assert!(top[0].iter().all(|p| p.label.is_some()));
        assert!(top[0][0].prob >= top[0][1].prob);

        // ImageNet-21k heads: no names shipped, predictions carry indices only.
        let weights: Pretrained = "timm/tf_efficientnetv2_b3.in21k".parse().unwrap();
        let model = weights.config().with_width(0.25).init(&device);
        let ready = PretrainedModel::for_weights(weights, model).unwrap();
        assert!(ready.classes.is_empty());
    }

    #[test]
    fn missing_files_and_non_finite_weights_are_errors() {
        let device = Device::default();
        let err = PretrainedModel::from_file(Pretrained::TorchvisionB0V1, "no/such.pth", &device)
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let mut model = Pretrained::TorchvisionB0V1.config().init(&device);
        let nan = Tensor::<1>::full([1000], f32::NAN, &device);
        model.classifier.bias = Some(burn::module::Param::from_tensor(nan));
        let err = PretrainedModel::for_weights(Pretrained::TorchvisionB0V1, model).unwrap_err();
        assert!(matches!(err, Error::NonFiniteWeights { .. }), "{err}");
    }
}
