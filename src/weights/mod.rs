//! Loading PyTorch-ecosystem checkpoints (`.pth` / `.pt` / `.bin` from `torch.save`, and
//! `.safetensors`) and saving / loading Burn's native burnpack format.
//!
//! ```no_run
//! use efficientnet_burn::burn::tensor::Device;
//! use efficientnet_burn::{EfficientNet, EfficientNetConfig, WeightSource};
//!
//! let device = Device::default();
//! // torchvision's efficientnet_b0 weights (IMAGENET1K_V1), saved with torch.save.
//! let model = EfficientNet::from_pytorch(
//!     "efficientnet_b0_rwightman-7f5810bc.pth",
//!     EfficientNetConfig::b0(),
//!     WeightSource::Torchvision,
//!     &device,
//! )?;
//! # Ok::<(), efficientnet_burn::Error>(())
//! ```

pub mod layout;
pub mod source;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnpackStore, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};
use burn::tensor::{DType, Device, TensorData};

use crate::config::EfficientNetConfig;
use crate::error::Error;
use crate::model::efficientnet::EfficientNet;
use layout::{KeyLayout, key_table};
use source::WeightSource;

/// How [`EfficientNet::load_pytorch`] reads a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The key layout; `None` detects it from the keys (and fails if it cannot).
    pub layout: Option<KeyLayout>,
    /// Load the backbone only and keep the model's own classifier (fine-tuning with a new
    /// head, e.g. a 10-class model from ImageNet weights). Classifier keys in the file are
    /// then ignored; all other keys stay strict.
    pub skip_classifier: bool,
}

impl LoadOptions {
    /// Strict loading with layout detection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expects `layout` instead of detecting it.
    pub fn with_layout(mut self, layout: KeyLayout) -> Self {
        self.layout = Some(layout);
        self
    }

    /// Loads the backbone only; see [`LoadOptions::skip_classifier`].
    pub fn with_skip_classifier(mut self, skip: bool) -> Self {
        self.skip_classifier = skip;
        self
    }
}

/// Reads every tensor of a `torch.save` or safetensors file, by extension.
fn read_tensors(path: &Path) -> Result<BTreeMap<String, PackTensor>, Error> {
    let checkpoint_error = |reason: String| Error::Checkpoint {
        path: path.display().to_string(),
        reason,
    };
    std::fs::metadata(path).map_err(Error::io(path))?;
    let is_safetensors = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("safetensors"));
    let tensors = if is_safetensors {
        SafetensorsStore::from_file(path)
            .get_all_tensors()
            .cloned()
            .map_err(|e| checkpoint_error(format!("not a readable safetensors file: {e}")))?
    } else {
        PytorchStore::from_file(path)
            .map_indices_contiguous(false)
            .get_all_tensors()
            .cloned()
            .map_err(|e| checkpoint_error(format!("not a readable torch.save checkpoint: {e}")))?
    };
    if tensors.is_empty() {
        return Err(checkpoint_error("it holds no tensors".to_string()));
    }
    Ok(tensors)
}

/// `tensor` with its values converted to `target`, the model parameter's float type. Integer
/// or boolean data where the model has a float is an error naming the key.
fn cast(tensor: PackTensor, target: DType, key: &str, path: &Path) -> Result<PackTensor, Error> {
    if tensor.dtype == target {
        return Ok(tensor);
    }
    let checkpoint_error = |reason: String| Error::Checkpoint {
        path: path.display().to_string(),
        reason,
    };
    if !matches!(
        tensor.dtype,
        DType::F64 | DType::F32 | DType::Flex32 | DType::F16 | DType::BF16
    ) {
        return Err(checkpoint_error(format!(
            "`{key}` holds {:?} values where the model has a {target:?} tensor",
            tensor.dtype
        )));
    }
    let (name, dtype, shape, param_id, bytes) = tensor
        .into_parts()
        .map_err(|e| checkpoint_error(format!("cannot read `{key}`: {e}")))?;
    let data = TensorData::from_bytes(bytes, shape.clone(), dtype).convert_dtype(target);
    Ok(PackTensor::new(
        name,
        target,
        shape,
        param_id,
        data.into_bytes(),
    ))
}

/// Where a checkpoint tensor goes in the model.
struct Target {
    /// Position in the remap table (model order).
    order: usize,
    /// Our module path with the PyTorch leaf name, as the adapter expects it.
    name: String,
    /// Our parameter path (Burn's leaf name).
    param: String,
    /// Whether Burn stores it transposed.
    transposed: bool,
}

/// At most `n` items of a list, then how many more.
fn abbreviate(items: &[String], n: usize) -> String {
    let mut text = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        text.push_str(&format!(" and {} more", items.len() - n));
    }
    text
}

impl EfficientNet {
    /// Builds `config` adjusted for `source` (padding, batch norm, head rule; see
    /// [`WeightSource`]) and loads a PyTorch-ecosystem checkpoint into it, strictly.
    ///
    /// `path` is a `torch.save` file (`.pth`, `.pt`, `.bin`) or a `.safetensors` file.
    pub fn from_pytorch(
        path: impl AsRef<Path>,
        config: EfficientNetConfig,
        source: WeightSource,
        device: &Device,
    ) -> Result<Self, Error> {
        source
            .configure(config)
            .try_init(device)?
            .load_pytorch(path, &LoadOptions::new().with_layout(source.layout()))
    }

    /// Loads a PyTorch-ecosystem checkpoint into this model.
    ///
    /// Strict: a key the model lacks, a tensor the file lacks, or a shape that differs is an
    /// error naming them (weights of another variant fail on the first differing shape). The
    /// model's config is used as it is: build it with [`WeightSource::configure`] (or use
    /// [`from_pytorch`](Self::from_pytorch)) so padding and batch-norm epsilon match the
    /// weights.
    pub fn load_pytorch(
        mut self,
        path: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<Self, Error> {
        let path = path.as_ref();
        let tensors = read_tensors(path)?;
        let (detected, prefix) = KeyLayout::detect(tensors.keys().map(String::as_str))?;
        if let Some(expected) = options.layout
            && expected != detected
        {
            return Err(Error::LayoutMismatch { expected, detected });
        }

        // Checkpoint key -> where it goes, for every leaf tensor the model expects.
        let mut wanted: HashMap<String, Target> = HashMap::new();
        let mut classifier_keys = BTreeSet::new();
        for mapping in key_table(self.config(), detected)? {
            for &leaf in mapping.kind.leaves() {
                let source = format!("{prefix}{}.{leaf}", mapping.source);
                if mapping.target == "classifier" {
                    classifier_keys.insert(source.clone());
                    if options.skip_classifier {
                        continue;
                    }
                }
                let target = Target {
                    order: wanted.len(),
                    name: format!("{}.{leaf}", mapping.target),
                    param: format!("{}.{}", mapping.target, mapping.kind.burn_leaf(leaf)),
                    transposed: mapping.kind.is_transposed(leaf),
                };
                wanted.insert(source, target);
            }
        }

        let mut renamed = Vec::with_capacity(wanted.len());
        let mut unexpected = Vec::new();
        for (key, mut tensor) in tensors {
            if let Some(target) = wanted.remove(&key) {
                // The adapter turns the PyTorch leaf name into Burn's when applying.
                tensor.name = target.name.clone();
                renamed.push((target, key, tensor));
            } else if key.ends_with(".num_batches_tracked")
                || (options.skip_classifier && classifier_keys.contains(&key))
            {
                // Batch-norm step counters have no Burn counterpart; skipped heads are wanted.
            } else {
                unexpected.push(key);
            }
        }
        let mut missing: Vec<(usize, String)> = wanted
            .into_iter()
            .map(|(key, target)| (target.order, key))
            .collect();
        missing.sort();
        let missing: Vec<String> = missing.into_iter().map(|(_, key)| key).collect();
        // Report in model order (stem first), the order a reader follows.
        renamed.sort_by_key(|(target, _, _)| target.order);
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(Error::KeyMismatch {
                layout: detected,
                missing: abbreviate(&missing, 8),
                missing_count: missing.len(),
                unexpected: abbreviate(&unexpected, 8),
                unexpected_count: unexpected.len(),
            });
        }

        // Shapes, before anything is applied, compared in PyTorch's convention.
        let ours: HashMap<String, (Vec<usize>, DType)> = self
            .collect(None, None, false)
            .into_iter()
            .map(|t| (t.name.clone(), (t.shape.to_vec(), t.dtype)))
            .collect();
        for (target, key, tensor) in &renamed {
            let mut model_shape = ours
                .get(&target.param)
                .map(|(shape, _)| shape.clone())
                .unwrap_or_default();
            if target.transposed {
                model_shape.reverse();
            }
            let file_shape = tensor.shape.to_vec();
            if file_shape != model_shape {
                return Err(Error::ShapeMismatch {
                    key: key.clone(),
                    ours: target.param.clone(),
                    checkpoint: file_shape,
                    model: model_shape,
                });
            }
        }

        // Every float tensor in the model's float type, whatever the file stored (F16, BF16,
        // F64): as PyTorch's load_state_dict copies into the parameter's dtype.
        let tensors = renamed
            .into_iter()
            .map(|(target, key, tensor)| match ours.get(&target.param) {
                Some((_, dtype)) => cast(tensor, *dtype, &key, path),
                None => Ok(tensor),
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let result = self.apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), false);
        let missing: Vec<String> = result
            .missing
            .iter()
            .map(|(path, _)| path.clone())
            .filter(|path| !(options.skip_classifier && path.starts_with("classifier.")))
            .collect();
        if !result.errors.is_empty() || !missing.is_empty() || !result.unused.is_empty() {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                reason: format!(
                    "applying it failed: errors [{}], not loaded [{}], unused [{}]",
                    abbreviate(
                        &result
                            .errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>(),
                        4
                    ),
                    abbreviate(&missing, 4),
                    abbreviate(&result.unused, 4)
                ),
            });
        }
        Ok(self)
    }

    /// Saves the weights in Burn's native burnpack format (`path`, conventionally `.bpk`).
    /// The architecture is not stored: keep the config (it is serialisable, see
    /// [`EfficientNetConfig::save`](burn::config::Config::save)).
    pub fn save_burnpack(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let mut store = BurnpackStore::from_file(path).overwrite(true);
        self.save_into(&mut store).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("writing burnpack failed: {e}"),
        })
    }

    /// Loads weights saved by [`save_burnpack`](Self::save_burnpack) into a model built from
    /// the same config; every tensor must match (a mismatch names the tensor and both shapes).
    pub fn load_burnpack(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        if let Some(reason) = burnpack_mismatch(&self, path)? {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                reason: format!("it does not match this model: {reason}"),
            });
        }
        let mut store = BurnpackStore::from_file(path);
        let result = self.load_from(&mut store).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("not a readable burnpack file for this model: {e}"),
        })?;
        if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                reason: format!("it does not match this model: {result}"),
            });
        }
        Ok(self)
    }
}

/// A burnpack file's tensor names and shapes, read from its index (not its data).
pub(crate) fn burnpack_index(path: &Path) -> Result<BTreeMap<String, Vec<usize>>, Error> {
    std::fs::metadata(path).map_err(Error::io(path))?;
    let mut store = BurnpackStore::from_file(path);
    Ok(store
        .get_all_tensors()
        .map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("not a readable burnpack file: {e}"),
        })?
        .iter()
        .map(|(name, tensor)| (name.clone(), tensor.shape.to_vec()))
        .collect())
}

/// How a burnpack file's tensors differ from `module`'s, or `None` if they fit: the first
/// tensor whose shape differs (its name and both shapes), else the missing and unexpected
/// names. Reads the file's index, not its data.
pub(crate) fn burnpack_mismatch<M: ModuleSnapshot>(
    module: &M,
    path: &Path,
) -> Result<Option<String>, Error> {
    let file = burnpack_index(path)?;
    let ours: BTreeMap<String, Vec<usize>> = module
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    for (name, shape) in &ours {
        if let Some(theirs) = file.get(name)
            && theirs != shape
        {
            return Ok(Some(format!(
                "`{name}` is {theirs:?} in the file and {shape:?} in the model"
            )));
        }
    }
    let missing: Vec<String> = ours
        .keys()
        .filter(|k| !file.contains_key(*k))
        .cloned()
        .collect();
    let unexpected: Vec<String> = file
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .cloned()
        .collect();
    if missing.is_empty() && unexpected.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{} tensors missing [{}], {} unexpected [{}]",
        missing.len(),
        abbreviate(&missing, 4),
        unexpected.len(),
        abbreviate(&unexpected, 4)
    )))
}
