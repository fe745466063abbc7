//! A trained model on disk, as `examples/train.rs` writes it and `examples/classify.rs
//! --model DIR` reads it: weights, architecture, class names and the eval transform.

use std::path::Path;

use burn::config::Config;
use burn::tensor::Device;

use crate::config::EfficientNetConfig;
use crate::error::Error;
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
    /// The model (unfused, as trained).
    pub model: EfficientNet,
    /// Class names by label; as many as the model has outputs.
    pub classes: Vec<String>,
    /// The eval transform the model was validated with.
    pub preprocess: Preprocess,
}

impl SavedModel {
    /// Writes the four files into `dir` (created if missing).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        self.model.save_burnpack(dir.join(WEIGHTS_FILE))?;
        let config = dir.join(CONFIG_FILE);
        self.model
            .config()
            .save(&config)
            .map_err(Error::io(&config))?;
        let preprocess = dir.join(PREPROCESS_FILE);
        let json = serde_json::to_string_pretty(&self.preprocess)
            .map_err(|e| Error::InvalidInput(format!("cannot serialise the transform: {e}")))?;
        std::fs::write(&preprocess, json).map_err(Error::io(&preprocess))?;
        let classes = dir.join(CLASSES_FILE);
        std::fs::write(&classes, self.classes.join("\n") + "\n").map_err(Error::io(&classes))
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
        let preprocess: Preprocess = serde_json::from_str(&read(PREPROCESS_FILE)?)
            .map_err(|e| bad(PREPROCESS_FILE, format!("not a transform: {e}")))?;
        let classes: Vec<String> = read(CLASSES_FILE)?.lines().map(str::to_string).collect();
        if classes.len() != config.num_classes {
            return Err(bad(
                CLASSES_FILE,
                format!(
                    "{} class names for a model with {} classes",
                    classes.len(),
                    config.num_classes
                ),
            ));
        }
        let model = config
            .try_init(device)?
            .load_burnpack(dir.join(WEIGHTS_FILE))?;
        Ok(Self {
            model,
            classes,
            preprocess,
        })
    }
}
