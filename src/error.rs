//! The crate's error type.

/// Everything that can go wrong in this crate that a caller could cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration that cannot describe a network (zero channels, even kernels, ...).
    #[error("invalid EfficientNet config: {0}")]
    InvalidConfig(String),
    /// A variant name that is not one of the published ones.
    #[error("unknown EfficientNet variant {0:?} (expected b0..b8, l2 or lite0..lite4)")]
    UnknownVariant(String),
}
