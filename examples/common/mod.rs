//! What the inference examples share: choosing weights on the command line.

use std::path::PathBuf;

use burn::tensor::Device;
use clap::Args;
use efficientnet_burn::{
    EfficientNet, Error, Interpolation, Preprocess, Pretrained, SavedModel, Variant, WeightSource,
};

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
    /// Variant, when not given by --pretrained: b0..b8, l2, lite0..lite4, v2-s, v2-m, v2-l,
    /// v2-xl, v2-b0..v2-b3.
    #[arg(long, default_value = "b0")]
    pub variant: String,
    /// Weight source, when not given by --pretrained: torchvision, timm, timm-tf,
    /// efficientnet-pytorch.
    #[arg(long, default_value = "torchvision")]
    pub source: String,
}

/// A model ready for inference, its eval transform and, for trained models, class names.
pub struct Loaded {
    pub model: EfficientNet,
    pub preprocess: Preprocess,
    pub classes: Option<Vec<String>>,
}

impl WeightArgs {
    /// Loads the chosen weights, refuses non-finite ones, and folds the batch norms.
    pub fn load(&self, device: &Device) -> Result<Loaded, Error> {
        let mut classes = None;
        let (model, preprocess) = match (&self.model, &self.pretrained, &self.weights) {
            (Some(dir), _, _) => {
                let saved = SavedModel::load(dir, device)?;
                classes = Some(saved.classes);
                (saved.model, saved.preprocess)
            }
            (None, Some(name), Some(weights)) => {
                let pretrained: Pretrained = name.parse()?;
                (
                    pretrained.load_file(weights, device)?,
                    pretrained.preprocess(),
                )
            }
            (None, Some(name), None) => {
                let pretrained: Pretrained = name.parse()?;
                (
                    download_and_load(pretrained, device)?,
                    pretrained.preprocess(),
                )
            }
            (None, None, Some(weights)) => {
                let variant: Variant = self.variant.parse()?;
                let source: WeightSource = self.source.parse()?;
                let model = EfficientNet::from_pytorch(weights, variant.config(), source, device)?;
                // Without registry metadata: the variant's resolution, timm's default crop
                // ratio 0.875 (V2-S/M/L/XL: uncropped, as torchvision and timm evaluate
                // them), and (as timm's tf_efficientnet_lite configs) mean = std = 0.5
                // for Lite.
                let res = variant.config().resolution;
                let uncropped = variant.is_v2() && variant.preset().width == 1.0 && res > 300;
                let resize = if uncropped { res } else { res * 8 / 7 };
                let mut preprocess = Preprocess::imagenet(resize, res, Interpolation::Bicubic);
                if variant.is_lite() {
                    preprocess.mean = [0.5; 3];
                    preprocess.std = [0.5; 3];
                }
                (model, preprocess)
            }
            (None, None, None) => {
                let pretrained = Pretrained::TorchvisionB0V1;
                (
                    download_and_load(pretrained, device)?,
                    pretrained.preprocess(),
                )
            }
        };
        // Weights with NaN or infinity would make every answer NaN: refuse them by name.
        model.check_finite()?;
        Ok(Loaded {
            // Inference only: fold the batch norms into the convolutions.
            model: model.fuse_batch_norm(),
            preprocess,
            classes,
        })
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
