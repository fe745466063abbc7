//! The crate's error type.

/// Everything that can go wrong in this crate that a caller could cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration that cannot describe a network (zero channels, even kernels, ...).
    #[error("invalid EfficientNet config: {0}")]
    InvalidConfig(String),
    /// A variant name that is not one of the published ones.
    #[error(
        "unknown EfficientNet variant {0:?} (expected {names})",
        names = crate::variant::Variant::names_summary()
    )]
    UnknownVariant(String),
    /// A weight-source name that is not one of [`WeightSource`](crate::WeightSource)'s.
    #[error(
        "unknown weight source {0:?} (expected torchvision, timm, timm-tf or efficientnet-pytorch)"
    )]
    UnknownWeightSource(String),
    /// A pretrained-weights name that is not in the registry.
    #[error(
        "unknown pretrained weights {0:?} (the `classify --list` example prints the known ones)"
    )]
    UnknownPretrained(String),
    /// A download failed (network, HTTP status, connection cut, offline mode).
    #[error("download of {url} failed: {reason}")]
    Download {
        /// What was being downloaded.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A downloaded file does not have the published hash; nothing was cached.
    #[error("checksum mismatch for {url}: expected SHA-256 starting {expected}, got {actual}")]
    ChecksumMismatch {
        /// What was downloaded.
        url: String,
        /// The published hash or hash prefix.
        expected: String,
        /// The SHA-256 of what arrived.
        actual: String,
    },
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file or directory could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: String,
        /// What the OS (or the serialiser) said.
        source: std::io::Error,
    },
    /// The download cache cannot be used (no cache directory on this platform).
    #[error("weights cache: {0}")]
    Cache(String),
    /// A backend that is not compiled in, or a GPU without an adapter or driver.
    #[error("backend unavailable: {0}")]
    Backend(String),
    /// Training could not start (data and model disagree, nothing to resume) or failed.
    #[error("training: {0}")]
    Training(String),
    /// A file was read but is not a usable checkpoint.
    #[error("bad checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An input tensor of the wrong shape: not `[batch, in_channels, height, width]` with
    /// every size at least 1.
    #[error(
        "invalid input: EfficientNet expects input of shape [batch, {expected_channels}, height, \
         width] with every size at least 1, got {got:?}"
    )]
    InputShape {
        /// The model's input channels.
        expected_channels: usize,
        /// The input's shape.
        got: [usize; 4],
    },
    /// An endpoint index (timm's `out_indices`) past the model's endpoints.
    #[error(
        "invalid input: endpoint index {index} out of range: this model has {endpoints} endpoints"
    )]
    EndpointIndex {
        /// The index asked for.
        index: usize,
        /// How many endpoints the model has.
        endpoints: usize,
    },
    /// A class index past the model's classes.
    #[error("invalid input: class {class} does not exist: the model has {classes} classes")]
    ClassIndex {
        /// The class asked for.
        class: usize,
        /// How many classes the model has.
        classes: usize,
    },
    /// A preprocessing transform that cannot run (sizes, means, standard deviations).
    #[error("invalid input: {0}")]
    InvalidTransform(String),
    /// Nothing to work on: no images given, or none found in a folder.
    #[error("invalid input: {0}")]
    NoImages(String),
    /// Logits that cannot be read as f32.
    #[error("invalid input: logits are not f32: {0}")]
    InvalidLogits(String),
    /// A device name that is not one of [`DeviceChoice`](crate::device::DeviceChoice)'s.
    #[error("invalid input: unknown device {0:?} (expected cpu, ndarray, wgpu or cuda)")]
    UnknownDevice(String),
    /// A training recipe name that is not `paper` or `finetune`.
    #[error("invalid input: unknown recipe {0:?} (expected paper or finetune)")]
    UnknownRecipe(String),
    /// A compound-scaling search that cannot run or cannot reach its target
    /// ([`explore`](crate::explore)).
    #[error("invalid input: {0}")]
    InvalidSearch(String),
    /// Class names that are neither none nor one per model output ([`Classifier::new`](
    /// crate::Classifier::new)).
    #[error("invalid input: {names} class names for a model with {outputs} outputs")]
    ClassNames {
        /// Names given.
        names: usize,
        /// The model's outputs.
        outputs: usize,
    },
    /// An input an application refuses (its own checks: the examples' command lines, say).
    /// The crate's own checks use the specific variants above.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An image could not be decoded.
    #[error("cannot decode image {path}: {reason}")]
    Image {
        /// The file.
        path: String,
        /// What the decoder said.
        reason: String,
    },
    /// The checkpoint's keys match no known layout, or more than one.
    #[error("unknown checkpoint layout: {0}")]
    UnknownLayout(String),
    /// The checkpoint has another layout than the caller said.
    #[error("checkpoint has the {detected} key layout, but {expected} was expected")]
    LayoutMismatch {
        /// The layout the caller asked for.
        expected: crate::KeyLayout,
        /// The layout the keys show.
        detected: crate::KeyLayout,
    },
    /// Keys the model needs are absent, or the file has keys the model does not.
    #[error(
        "checkpoint ({layout} layout) does not fit the model: {missing_count} missing [{missing}], \
         {unexpected_count} unexpected [{unexpected}]"
    )]
    KeyMismatch {
        /// The layout the keys were read as.
        layout: crate::KeyLayout,
        /// The first missing checkpoint keys.
        missing: String,
        /// How many are missing.
        missing_count: usize,
        /// The first unexpected checkpoint keys.
        unexpected: String,
        /// How many are unexpected.
        unexpected_count: usize,
    },
    /// A tensor's shape differs from the model's: typically weights of another variant.
    #[error(
        "shape mismatch for `{key}` (model parameter `{ours}`): checkpoint {checkpoint:?}, \
         model {model:?}; are these weights of another variant or width?"
    )]
    ShapeMismatch {
        /// The checkpoint key.
        key: String,
        /// The model's parameter path.
        ours: String,
        /// The checkpoint's shape (PyTorch convention).
        checkpoint: Vec<usize>,
        /// The model's shape (PyTorch convention).
        model: Vec<usize>,
    },
    /// Weights hold NaN or infinity (see [`EfficientNet::non_finite_parameters`]); every
    /// output of such a model would be NaN.
    ///
    /// [`EfficientNet::non_finite_parameters`]: crate::EfficientNet::non_finite_parameters
    #[error("weights hold NaN or infinity in {} tensor(s), first `{}`", .parameters.len(), .parameters[0])]
    NonFiniteWeights {
        /// The Burn paths of the tensors with non-finite values (never empty).
        parameters: Vec<String>,
    },
}

impl Error {
    /// Turns an I/O error reading `path` into [`Error::Io`]: `.map_err(Error::io(path))`.
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Turns an I/O error writing `path` into [`Error::Write`]:
    /// `.map_err(Error::write(path))`.
    pub fn write(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Write {
            path: path.display().to_string(),
            source,
        }
    }
}
