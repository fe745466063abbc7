//! Known pretrained weights, with their metadata as data: where to get them, how many
//! parameters, how accurate, and the exact eval transform they were measured with.
//!
//! The table (`table.rs`) is generated from torchvision's and timm's own metadata by
//! `scripts/make_registry.py`.

#[cfg(feature = "pretrained")]
pub mod download;
mod table;

use core::fmt;
use core::str::FromStr;

use crate::config::EfficientNetConfig;
use crate::error::Error;
use crate::preprocess::{Interpolation, Preprocess};
use crate::variant::Variant;
use crate::weights::source::WeightSource;

pub use table::Pretrained;

/// Metadata of one set of pretrained weights. Serialises with the variant and source by
/// name (`"b0"`, `"torchvision"`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct PretrainedInfo {
    /// `library/model.tag`, e.g. `torchvision/efficientnet_b0.IMAGENET1K_V1`.
    pub name: &'static str,
    /// The architecture.
    pub variant: Variant,
    /// Where the checkpoint comes from (fixes padding, BN epsilon, key layout).
    pub source: WeightSource,
    /// Download address.
    pub url: &'static str,
    /// The hash prefix in the file name (the first hex digits of the file's SHA-256), where
    /// that is all the publisher gives.
    pub hash_prefix: Option<&'static str>,
    /// Trainable parameters.
    pub num_params: usize,
    /// Published ImageNet top-1 accuracy (%), where the library ships it.
    pub top1: Option<f64>,
    /// Published ImageNet top-5 accuracy (%), where the library ships it.
    pub top5: Option<f64>,
    /// Shorter side after resizing.
    pub resize: usize,
    /// Center crop.
    pub crop: usize,
    /// Resize interpolation.
    pub interpolation: Interpolation,
    /// Normalisation mean.
    pub mean: [f64; 3],
    /// Normalisation standard deviation.
    pub std: [f64; 3],
    /// Classes of the classifier.
    pub num_classes: usize,
    /// License of the weights as the publisher states it.
    pub license: &'static str,
}

impl PretrainedInfo {
    /// The most a download of these weights may take: every parameter (and batch-norm
    /// statistic) in f32, a quarter more for the file format and what else the checkpoint
    /// holds, and 16 MiB. A server sending more is refused.
    pub fn max_download_bytes(&self) -> u64 {
        self.num_params as u64 * 4 * 5 / 4 + (16 << 20)
    }
}

impl Pretrained {
    /// Every known entry.
    pub fn all() -> impl Iterator<Item = Pretrained> {
        table::TABLE.iter().map(|(p, _)| *p)
    }

    /// The entry's metadata.
    pub fn info(self) -> &'static PretrainedInfo {
        table::TABLE
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, info)| info)
            .unwrap_or_else(|| unreachable!("TABLE has a row for every entry"))
    }

    /// The config the weights load into (variant, classes, and the source's settings).
    pub fn config(self) -> EfficientNetConfig {
        let info = self.info();
        info.source
            .configure(info.variant.config().with_num_classes(info.num_classes))
    }

    /// Loads these weights from a file already on disk into a fresh model ([`config`](
    /// Self::config) with the entry's source settings).
    #[deprecated(
        since = "0.1.0",
        note = "for inference `Classifier::from_file`; to fine-tune `for_finetuning_from_file`"
    )]
    pub fn load_file(
        self,
        path: impl AsRef<std::path::Path>,
        device: &burn::tensor::Device,
    ) -> Result<crate::EfficientNet, Error> {
        self.model_from_file(path, device)
    }

    /// The entry's weights from `path` in a fresh trainable model.
    pub(crate) fn model_from_file(
        self,
        path: impl AsRef<std::path::Path>,
        device: &burn::tensor::Device,
    ) -> Result<crate::EfficientNet, Error> {
        let info = self.info();
        crate::EfficientNet::from_pytorch(path, self.config(), info.source, device)
    }

    /// These weights from a file already on disk, as a trainable model with a fresh
    /// classifier of `num_classes` outputs ([`EfficientNet::with_new_classifier`](
    /// crate::EfficientNet::with_new_classifier)), and the eval transform they were
    /// measured with (the transform to validate and classify with after fine-tuning).
    pub fn for_finetuning_from_file(
        self,
        path: impl AsRef<std::path::Path>,
        num_classes: usize,
        device: &burn::tensor::Device,
    ) -> Result<(crate::EfficientNet, Preprocess), Error> {
        let model = self
            .model_from_file(path, device)?
            .with_new_classifier(num_classes)?;
        Ok((model, self.preprocess()))
    }

    /// The default weights of `variant`: its entry with the best published ImageNet-1k
    /// top-1 accuracy (torchvision's and timm's published figures), `None` where no entry
    /// publishes one. `"b3".parse::<Pretrained>()` gives the same.
    ///
    /// ```
    /// use efficientnet_burn::{Pretrained, Variant};
    ///
    /// let b0 = Pretrained::default_for(Variant::B0).unwrap();
    /// assert_eq!(b0.to_string(), "timm/tf_efficientnet_b0.ns_jft_in1k");
    /// assert_eq!(b0.info().top1, Some(78.67));
    /// assert_eq!("b0".parse::<Pretrained>()?, b0);
    /// # Ok::<(), efficientnet_burn::Error>(())
    /// ```
    pub fn default_for(variant: Variant) -> Option<Pretrained> {
        Pretrained::all()
            .filter(|p| p.info().variant == variant && p.info().num_classes == 1000)
            .filter_map(|p| p.info().top1.map(|top1| (p, top1)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(p, _)| p)
    }

    /// The eval transform the weights were measured with.
    pub fn preprocess(self) -> Preprocess {
        let info = self.info();
        Preprocess {
            resize: info.resize,
            crop: info.crop,
            interpolation: info.interpolation,
            mean: info.mean.map(|v| v as f32),
            std: info.std.map(|v| v as f32),
        }
    }
}

#[cfg(feature = "pretrained")]
impl Pretrained {
    /// The weights' file in `cache`, downloaded first if needed: checked against the
    /// published hash prefix and capped at [`PretrainedInfo::max_download_bytes`].
    pub fn fetch(self, cache: &download::Cache) -> Result<std::path::PathBuf, Error> {
        let info = self.info();
        cache.fetch_limited(info.url, info.hash_prefix, info.max_download_bytes())
    }

    /// The weights' file in the cache the environment names (`$EFFICIENTNET_CACHE`,
    /// `EFFICIENTNET_OFFLINE`), downloaded first if needed.
    pub(crate) fn fetch_from_env(self) -> Result<std::path::PathBuf, Error> {
        self.fetch(&download::Cache::from_env()?)
    }

    /// Downloads (or finds in `cache`) the weights and loads them into a fresh model.
    #[deprecated(
        since = "0.1.0",
        note = "for inference `Classifier::pretrained`; to fine-tune `for_finetuning`"
    )]
    pub fn load(
        self,
        cache: &download::Cache,
        device: &burn::tensor::Device,
    ) -> Result<crate::EfficientNet, Error> {
        self.model_from_file(self.fetch(cache)?, device)
    }

    /// These weights (downloaded once, then from the cache, as
    /// [`Classifier::pretrained`](crate::Classifier::pretrained)) as a trainable model with
    /// a fresh classifier of `num_classes` outputs, and the eval transform they were
    /// measured with: fine-tuning in one call (timm's `create_model(name, pretrained=True,
    /// num_classes=n)`).
    ///
    /// ```no_run
    /// use efficientnet_burn::Pretrained;
    /// use efficientnet_burn::burn::tensor::Device;
    ///
    /// let (model, preprocess) = Pretrained::TorchvisionB0V1.for_finetuning(10, &Device::default())?;
    /// assert_eq!(model.config().num_classes, 10);
    /// # Ok::<(), efficientnet_burn::Error>(())
    /// ```
    pub fn for_finetuning(
        self,
        num_classes: usize,
        device: &burn::tensor::Device,
    ) -> Result<(crate::EfficientNet, Preprocess), Error> {
        self.for_finetuning_from_file(self.fetch_from_env()?, num_classes, device)
    }
}

impl fmt::Display for Pretrained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().name)
    }
}

impl FromStr for Pretrained {
    type Err = Error;

    /// Parses a full name (`timm/tf_efficientnet_b3.ns_jft_in1k`), the part after the
    /// library (`efficientnet_b0.IMAGENET1K_V1`), or a variant alone (`b3`, `v2-s`): its
    /// [`default_for`](Self::default_for) weights.
    fn from_str(s: &str) -> Result<Self, Error> {
        let named = Pretrained::all().find(|p| {
            let name = p.info().name;
            name == s || name.split_once('/').is_some_and(|(_, short)| short == s)
        });
        named
            .or_else(|| s.parse().ok().and_then(Pretrained::default_for))
            .ok_or_else(|| Error::UnknownPretrained(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_builds_a_model_with_its_published_parameter_count() {
        let device = burn::tensor::Device::default();
        for p in Pretrained::all() {
            // Lazy initialisation: counting allocates nothing, even for L2.
            let model = p.config().init(&device);
            assert_eq!(model.num_trainable_params(), p.info().num_params, "{p}");
        }
    }

    #[test]
    fn torchvision_entries_carry_their_eval_transforms() {
        let b0: Pretrained = "torchvision/efficientnet_b0.IMAGENET1K_V1".parse().unwrap();
        let info = b0.info();
        assert_eq!((info.resize, info.crop), (256, 224));
        assert_eq!(info.top1, Some(77.692));
        assert_eq!(info.hash_prefix, Some("7f5810bc"));
        let b1v2: Pretrained = "efficientnet_b1.IMAGENET1K_V2".parse().unwrap();
        assert_eq!(b1v2.preprocess().interpolation, Interpolation::Bilinear);
        assert_eq!((b1v2.info().resize, b1v2.info().crop), (255, 240));
        // TF ports get TF settings.
        let tf: Pretrained = "timm/tf_efficientnet_b3.ns_jft_in1k".parse().unwrap();
        assert_eq!(tf.config().bn_epsilon, 1e-3);
    }

    #[test]
    fn v2_entries_evaluate_at_their_test_size() {
        // torchvision: resize 384, crop 384, bilinear; eps 1e-3 and a 1280 head.
        let s: Pretrained = "efficientnet_v2_s.IMAGENET1K_V1".parse().unwrap();
        assert_eq!(s.info().variant, Variant::V2S);
        assert_eq!((s.info().resize, s.info().crop), (384, 384));
        assert_eq!(s.preprocess().interpolation, Interpolation::Bilinear);
        assert_eq!(s.config().bn_epsilon, 1e-3);
        // timm trains tf_efficientnetv2_s at 300 but evaluates at its test size, 384, with
        // the TF port's mean = std = 0.5.
        let tf: Pretrained = "timm/tf_efficientnetv2_s.in21k_ft_in1k".parse().unwrap();
        assert_eq!((tf.info().resize, tf.info().crop), (384, 384));
        assert_eq!(tf.info().mean, [0.5; 3]);
        assert_eq!(tf.config().padding, crate::model::Padding::TfSame);
        // ImageNet-21k heads: 21,843 classes.
        let xl: Pretrained = "timm/tf_efficientnetv2_xl.in21k".parse().unwrap();
        assert_eq!(xl.config().num_classes, 21_843);
    }

    #[test]
    fn metadata_serialises_with_names() {
        let json = serde_json::to_value(Pretrained::TorchvisionB0V1.info()).unwrap();
        assert_eq!(json["variant"], "b0");
        assert_eq!(json["source"], "torchvision");
        assert_eq!(json["crop"], 224);
        assert_eq!(json["interpolation"], "Bicubic");
    }

    #[test]
    fn each_variant_defaults_to_its_best_published_weights() {
        for variant in Variant::ALL {
            let published: Vec<Pretrained> = Pretrained::all()
                .filter(|p| p.info().variant == variant && p.info().num_classes == 1000)
                .filter(|p| p.info().top1.is_some())
                .collect();
            let Some(default) = Pretrained::default_for(variant) else {
                assert!(published.is_empty(), "{variant:?}");
                continue;
            };
            assert_eq!(default.info().variant, variant);
            let best = default.info().top1.unwrap();
            assert!(
                published.iter().all(|p| p.info().top1.unwrap() <= best),
                "{variant:?}"
            );
            assert_eq!(variant.name().parse::<Pretrained>().unwrap(), default);
        }
        // torchvision's V2-S (84.228) against timm's TF port fine-tuned from 21k (84.288).
        assert_eq!(
            Pretrained::default_for(Variant::V2S).unwrap().to_string(),
            "timm/tf_efficientnetv2_s.in21k_ft_in1k"
        );
        assert_eq!(
            Pretrained::default_for(Variant::Lite0),
            Some(Pretrained::TimmTfLite0In1k)
        );
        // Exact names win over variant names.
        let b1v2: Pretrained = "efficientnet_b1.IMAGENET1K_V2".parse().unwrap();
        assert_eq!(b1v2, Pretrained::TorchvisionB1V2);
    }

    #[test]
    fn unknown_names_are_errors() {
        let err = "resnet50".parse::<Pretrained>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown pretrained weights \"resnet50\" (the `classify --list` example prints the known ones)"
        );
    }
}
