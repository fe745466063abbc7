//! A trained model on disk, as `examples/train.rs` writes it and `examples/classify.rs
//! --model DIR` reads it: weights, architecture, class names and the eval transform.

use std::path::Path;

use burn::config::Config;
use burn::tensor::Device;

use crate::config::EfficientNetConfig;
use crate::error::Error;
use crate::inference::InferenceModel;
use crate::model::efficientnet::EfficientNet;
use crate::preprocess::Preprocess;

/// The weights, in Burn's burnpack format.
pub const WEIGHTS_FILE: &str = "model.bpk";
/// The architecture ([`EfficientNetConfig`] as JSON).
pub const CONFIG_FILE: &str = "config.json";
/// The eval transform ([`Preprocess`] as JSON).
pub const PREPROCESS_FILE: &str = "preprocess.json";
/// One class name a line, in label order.
pub const CLASSES_FILE: &str = "classes.txt";

/// A model with what it takes to use it: class names and input transform.
#[derive(Debug)]
pub struct SavedModel {
    /// The network, trainable or prepared for inference; [`load`](Self::load) restores the
    /// form it was saved in.
    pub model: SavedNetwork,
    /// Class names by label; as many as the model has outputs.
    pub classes: Vec<String>,
    /// The eval transform the model was validated with.
    pub preprocess: Preprocess,
}

/// A saved network in the form it was saved in.
#[derive(Clone, Debug)]
pub enum SavedNetwork {
    /// As trained: batch norms as layers, ready to train on.
    Trainable(EfficientNet),
    /// Prepared for inference: batch norms folded (saved from an [`InferenceModel`]) and, on
    /// the CPU, planned when loaded.
    Inference(InferenceModel),
}

impl SavedNetwork {
    /// The network's config.
    pub fn config(&self) -> &EfficientNetConfig {
        match self {
            SavedNetwork::Trainable(model) => model.config(),
            SavedNetwork::Inference(model) => model.config(),
        }
    }

    /// The network for inference (a trainable one prepared by
    /// [`EfficientNet::for_inference`]).
    pub fn into_inference(self) -> InferenceModel {
        match self {
            SavedNetwork::Trainable(model) => model.for_inference(),
            SavedNetwork::Inference(model) => model,
        }
    }

    /// The trainable network, if it was saved as one.
    pub fn trainable(&self) -> Option<&EfficientNet> {
        match self {
            SavedNetwork::Trainable(model) => Some(model),
            SavedNetwork::Inference(_) => None,
        }
    }

    fn save_burnpack(&self, path: &Path) -> Result<(), Error> {
        match self {
            SavedNetwork::Trainable(model) => model.save_burnpack(path),
            SavedNetwork::Inference(model) => model.save_burnpack(path),
        }
    }
}

impl From<EfficientNet> for SavedNetwork {
    fn from(model: EfficientNet) -> Self {
        SavedNetwork::Trainable(model)
    }
}

impl From<InferenceModel> for SavedNetwork {
    fn from(model: InferenceModel) -> Self {
        SavedNetwork::Inference(model)
    }
}

impl From<SavedNetwork> for InferenceModel {
    /// [`SavedNetwork::into_inference`].
    fn from(network: SavedNetwork) -> Self {
        network.into_inference()
    }
}

impl SavedModel {
    /// Writes the four files into `dir` (created if missing).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(Error::write(dir))?;
        self.model.save_burnpack(&dir.join(WEIGHTS_FILE))?;
        let config = dir.join(CONFIG_FILE);
        self.model
            .config()
            .save(&config)
            .map_err(Error::write(&config))?;
        let preprocess = dir.join(PREPROCESS_FILE);
        let json = serde_json::to_string_pretty(&self.preprocess)
            .map_err(|e| Error::write(&preprocess)(std::io::Error::other(e)))?;
        std::fs::write(&preprocess, json).map_err(Error::write(&preprocess))?;
        let classes = dir.join(CLASSES_FILE);
        std::fs::write(&classes, self.classes.join("\n") + "\n").map_err(Error::write(&classes))
    }

    /// Reads what [`save`](Self::save) wrote, building the model on `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(Error::io(&path))
        };
        let bad = |name: &str, reason: String| Error::Checkpoint {
            path: dir.join(name).display().to_string(),
            reason,
        };
        let config = EfficientNetConfig::from_json(&read(CONFIG_FILE)?)
            .map_err(|e| bad(CONFIG_FILE, format!("not an EfficientNet config: {e}")))?;
        // Building validates the config (within the crate's limits): name the file on failure.
        let mut model = config
            .try_init(device)
            .map_err(|e| bad(CONFIG_FILE, e.to_string()))?;
        let preprocess: Preprocess = serde_json::from_str(&read(PREPROCESS_FILE)?)
            .map_err(|e| bad(PREPROCESS_FILE, format!("not a transform: {e}")))?;
        preprocess
            .validate()
            .map_err(|e| bad(PREPROCESS_FILE, e.to_string()))?;
        let classes: Vec<String> = read(CLASSES_FILE)?.lines().map(str::to_string).collect();
        let num_classes = model.config().num_classes;
        if classes.len() != num_classes {
            return Err(bad(
                CLASSES_FILE,
                format!(
                    "{} class names for a model with {num_classes} classes",
                    classes.len()
                ),
            ));
        }
        // A folded network has a bias on its stem convolution and no norm there; build the
        // same form before loading.
        let weights = dir.join(WEIGHTS_FILE);
        let folded = crate::weights::burnpack_index(&weights)?.contains_key("stem.conv.bias");
        if folded {
            model = model.fold_batch_norms();
        }
        let model = model.load_burnpack(&weights)?;
        let model = match folded {
            // Folded weights are for inference only: prepare them (folding again is a no-op).
            true => SavedNetwork::Inference(model.for_inference()),
            false => SavedNetwork::Trainable(model),
        };
        Ok(Self {
            model,
            classes,
            preprocess,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::tensor::{Distribution, Tensor};

    #[test]
    fn folded_and_unfolded_models_round_trip() {
        let device = Device::default();
        let model = EfficientNetConfig::v2_b0()
            .with_width(0.25)
            .with_num_classes(3)
            .init(&device);
        let input = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &device);
        let dir = std::env::temp_dir().join(format!("efficientnet-saved-{}", std::process::id()));
        let trainable = SavedNetwork::Trainable(model.clone().valid());
        let inference = SavedNetwork::Inference(model.for_inference());
        for network in [trainable, inference] {
            let expected = network.clone().into_inference().forward(input.clone());
            let for_inference = network.trainable().is_none();
            let saved = SavedModel {
                model: network,
                classes: vec!["a".into(), "b".into(), "c".into()],
                preprocess: Preprocess::imagenet(36, 32, crate::Interpolation::Bilinear),
            };
            saved.save(&dir).unwrap();
            let back = SavedModel::load(&dir, &device).unwrap();
            // Back in the form it was saved in; a folded one prepared (on the CPU, planned).
            assert_eq!(back.model.trainable().is_none(), for_inference);
            let back = back.model.into_inference();
            assert_eq!(back.is_planned(), cfg!(feature = "flex"));
            back.forward(input.clone())
                .into_data()
                .assert_approx_eq::<f32>(
                    &expected.into_data(),
                    burn::tensor::Tolerance::absolute(1e-5),
                );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn absurd_configs_and_transforms_are_refused_naming_the_file() {
        let device = Device::default();
        let dir = std::env::temp_dir().join(format!("efficientnet-absurd-{}", std::process::id()));
        let model = EfficientNetConfig::b0()
            .with_width(0.1)
            .with_num_classes(1)
            .init(&device);
        SavedModel {
            model: model.into(),
            classes: vec!["x".into()],
            preprocess: Preprocess::imagenet(36, 32, crate::Interpolation::Bilinear),
        }
        .save(&dir)
        .unwrap();
        let config = dir.join(CONFIG_FILE);
        let good = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            good.replace("\"depth\": 1.0", "\"depth\": 1000000.0"),
        )
        .unwrap();
        let err = SavedModel::load(&dir, &device).unwrap_err().to_string();
        assert!(
            err.contains("config.json")
                && err.contains("depth multiplier must be finite and at most 16"),
            "{err}"
        );
        std::fs::write(&config, good).unwrap();
        let transform = dir.join(PREPROCESS_FILE);
        let text = std::fs::read_to_string(&transform).unwrap();
        std::fs::write(
            &transform,
            text.replace("\"crop\": 32", "\"crop\": 4000000"),
        )
        .unwrap();
        let err = SavedModel::load(&dir, &device).unwrap_err().to_string();
        assert!(
            err.contains("preprocess.json") && err.contains("must be between 1 and 16384"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_save_says_it_could_not_write() {
        let model = EfficientNetConfig::b0()
            .with_width(0.1)
            .with_num_classes(1)
            .init(&Device::default());
        let saved = SavedModel {
            model: model.into(),
            classes: vec!["x".into()],
            preprocess: Preprocess::imagenet(36, 32, crate::Interpolation::Bilinear),
        };
        // A directory cannot be made inside a file.
        let err = saved.save("/dev/null/model").unwrap_err();
        assert!(matches!(err, Error::Write { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cannot write /dev/null/model: "),
            "{err}"
        );
    }
}
