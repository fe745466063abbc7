//! What the inference examples share: choosing weights on the command line.

use std::path::PathBuf;

use burn::tensor::Device;
use clap::Args;
use efficientnet_burn::imagenet::class_names;
use efficientnet_burn::{Classifier, EfficientNet, Error, Pretrained};

use crate::choices::{SourceArg, VariantArg};

/// Which weights to run (default: torchvision's B0, downloaded and cached on first use).
#[derive(Args, Debug)]
pub struct WeightArgs {
    /// Known weights (see classify --list): sets variant, source and preprocessing.
    #[arg(long)]
    pub pretrained: Option<String>,
    /// Checkpoint file (.pth / .safetensors) to load.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// A model directory written by the train example (weights, config, classes and
    /// transform); replaces --pretrained, --weights, --variant and --source.
    #[arg(long, conflicts_with_all = ["pretrained", "weights"])]
    pub model: Option<PathBuf>,
    /// Variant, when not given by --pretrained.
    #[arg(long, value_enum, default_value = "b0")]
    pub variant: VariantArg,
    /// Weight source, when not given by --pretrained.
    #[arg(long, value_enum, default_value = "torchvision")]
    pub source: SourceArg,
}

impl WeightArgs {
    /// Loads the chosen weights as a model ready for inference (folded, NaN-free), with its
    /// eval transform and class names (empty when unknown).
    pub fn load(&self, device: &Device) -> Result<Classifier, Error> {
        match (&self.model, &self.pretrained, &self.weights) {
            (Some(dir), _, _) => Classifier::load(dir, device),
            (None, Some(name), Some(weights)) => {
                Classifier::from_file(name.parse()?, weights, device)
            }
            (None, Some(name), None) => download_and_load(name.parse()?, device),
            (None, None, Some(weights)) => {
                let (variant, source) = (self.variant.0, self.source.0);
                let model = EfficientNet::from_pytorch(weights, variant.config(), source, device)?;
                // Without registry metadata: the architecture's default transform, and the
                // ImageNet labels for a 1000-class head.
                let preprocess = model.config().default_preprocess();
                let classes = class_names(model.config().num_classes);
                Classifier::new(model, preprocess, classes)
            }
            (None, None, None) => download_and_load(Pretrained::TorchvisionB0V1, device),
        }
    }
}

#[cfg(feature = "pretrained")]
fn download_and_load(pretrained: Pretrained, device: &Device) -> Result<Classifier, Error> {
    Classifier::pretrained(pretrained, device)
}

#[cfg(not(feature = "pretrained"))]
fn download_and_load(pretrained: Pretrained, _device: &Device) -> Result<Classifier, Error> {
    Err(Error::InvalidInput(format!(
        "built without the `pretrained` feature: fetch {} and pass it with --weights",
        pretrained.info().url
    )))
}
