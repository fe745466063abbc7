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
        // Paths without the blocks' enum variants (`stages.1.0.depthwise.conv.weight`), as
        // the key tables name them.
        let ours: HashMap<String, (Vec<usize>, DType)> = self
            .collect(None, None, true)
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
        let result = self.apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), true);
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

    /// The keys a `layout` checkpoint of this model holds, with their shapes, in PyTorch's
    /// naming and convention (a Linear weight `[out, in]`), as the reference library's
    /// `state_dict()` lists them, batch norms' `num_batches_tracked` included: what
    /// [`load_pytorch`](Self::load_pytorch) reads, and what a file must hold to load into
    /// this model.
    pub fn checkpoint_keys(
        &self,
        layout: KeyLayout,
    ) -> Result<BTreeMap<String, Vec<usize>>, Error> {
        let shapes: HashMap<String, Vec<usize>> = self
            .collect(None, None, true)
            .into_iter()
            .map(|t| (t.name.clone(), t.shape.to_vec()))
            .collect();
        let mut keys = BTreeMap::new();
        for mapping in key_table(self.config(), layout)? {
            for &leaf in mapping.kind.leaves() {
                let param = format!("{}.{}", mapping.target, mapping.kind.burn_leaf(leaf));
                let mut shape = shapes.get(&param).cloned().unwrap_or_default();
                if mapping.kind.is_transposed(leaf) {
                    shape.reverse();
                }
                keys.insert(format!("{}.{leaf}", mapping.source), shape);
            }
            if mapping.kind == layout::LayerKind::BatchNorm {
                keys.insert(format!("{}.num_batches_tracked", mapping.source), vec![]);
            }
        }
        Ok(keys)
    }

    /// Saves the weights in Burn's native burnpack format (`path`, conventionally `.bpk`).
    /// The architecture is not stored: keep the config (it is serialisable, see
    /// [`EfficientNetConfig::save`](burn::config::Config::save)).
    pub fn save_burnpack(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let mut store = BurnpackStore::from_file(path).overwrite(true);
        self.save_into(&mut store)
            .map_err(|e| Error::write(path)(std::io::Error::other(format!("burnpack: {e}"))))
    }

    /// Loads weights saved by [`save_burnpack`](Self::save_burnpack) into a model built from
    /// the same config; every tensor must match (a mismatch names the tensor and both shapes).
    ///
    /// Files saved before the model kept one list of stages (with `fused_stages.*` and
    /// `stages.*` counted apart, and no block variant in the paths) load too: their names
    /// are read into today's.
    pub fn load_burnpack(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let fused_stages = self.config().fused_stage_count();
        let index = burnpack_index(path)?
            .into_iter()
            .map(|(name, shape)| (burnpack_name(&name, fused_stages), shape))
            .collect();
        if let Some(reason) = index_mismatch(&self, &index, true) {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                reason: format!("it does not match this model: {reason}"),
            });
        }
        let not_readable = |e: &dyn std::fmt::Display| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("not a readable burnpack file for this model: {e}"),
        };
        let tensors: Vec<PackTensor> = BurnpackStore::from_file(path)
            .get_all_tensors()
            .map_err(|e| not_readable(&e))?
            .values()
            .cloned()
            .map(|mut tensor| {
                tensor.name = burnpack_name(&tensor.name, fused_stages);
                tensor
            })
            .collect();
        let result = self.apply(tensors, None, None, true);
        if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                reason: format!("it does not match this model: {result}"),
            });
        }
        Ok(self)
    }
}

/// A burnpack tensor name as the model's paths without enum variants
/// (`collect(.., true)`) read it: today's files name each block's variant
/// (`stages.1.0.MBConv.depthwise.conv.weight`), which is dropped; files from before the one
/// stage list named Fused-MBConv stages `fused_stages.{s}` and MBConv stages `stages.{i}`
/// from 0, which become `stages.{s}` and `stages.{i + fused_stages}`.
pub(crate) fn burnpack_name(name: &str, fused_stages: usize) -> String {
    let segments: Vec<&str> = name.split('.').collect();
    match segments.as_slice() {
        ["stages", stage, block, "MBConv" | "FusedMBConv", rest @ ..] => {
            format!("stages.{stage}.{block}.{}", rest.join("."))
        }
        ["fused_stages", rest @ ..] => format!("stages.{}", rest.join(".")),
        ["stages", stage, rest @ ..] => match stage.parse::<usize>() {
            Ok(stage) => format!("stages.{}.{}", stage + fused_stages, rest.join(".")),
            Err(_) => name.to_string(),
        },
        _ => name.to_string(),
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
/// names. Reads the file's index, not its data; names compare exactly, as Burn loads them.
#[cfg(feature = "train")]
pub(crate) fn burnpack_mismatch<M: ModuleSnapshot>(
    module: &M,
    path: &Path,
) -> Result<Option<String>, Error> {
    Ok(index_mismatch(module, &burnpack_index(path)?, false))
}

/// How a file's tensors (`file`: names and shapes) differ from `module`'s, with `module`'s
/// paths taken with or without enum variants.
fn index_mismatch<M: ModuleSnapshot>(
    module: &M,
    file: &BTreeMap<String, Vec<usize>>,
    skip_enum_variants: bool,
) -> Option<String> {
    let ours: BTreeMap<String, Vec<usize>> = module
        .collect(None, None, skip_enum_variants)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    for (name, shape) in &ours {
        if let Some(theirs) = file.get(name)
            && theirs != shape
        {
            return Some(format!(
                "`{name}` is {theirs:?} in the file and {shape:?} in the model"
            ));
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
        return None;
    }
    Some(format!(
        "{} tensors missing [{}], {} unexpected [{}]",
        missing.len(),
        abbreviate(&missing, 4),
        unexpected.len(),
        abbreviate(&unexpected, 4)
    ))
}

#[cfg(test)]
mod tests {
    use super::burnpack_name;

    #[test]
    fn burnpack_names_read_into_todays_paths() {
        // Today's files: the block's variant is dropped.
        assert_eq!(
            burnpack_name("stages.4.2.MBConv.se.reduce.weight", 3),
            "stages.4.2.se.reduce.weight"
        );
        assert_eq!(
            burnpack_name("stages.0.1.FusedMBConv.conv.conv.weight", 3),
            "stages.0.1.conv.conv.weight"
        );
        // Before the one stage list: Fused-MBConv stages kept their index, MBConv stages
        // come after them.
        assert_eq!(
            burnpack_name("fused_stages.2.0.project.bn.gamma", 3),
            "stages.2.0.project.bn.gamma"
        );
        assert_eq!(
            burnpack_name("stages.0.0.depthwise.conv.weight", 3),
            "stages.3.0.depthwise.conv.weight"
        );
        // V1 files (no Fused-MBConv stages) keep their names; the rest is left alone.
        assert_eq!(
            burnpack_name("stages.6.0.project.conv.weight", 0),
            "stages.6.0.project.conv.weight"
        );
        assert_eq!(burnpack_name("stem.conv.weight", 3), "stem.conv.weight");
        assert_eq!(burnpack_name("classifier.bias", 3), "classifier.bias");
    }
}
