#![warn(missing_docs)]
// Every unsafe operation in its own block, and every block says which duty it relies on.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
//! # efficientnet-burn
//!
//! EfficientNet (Tan & Le, ICML 2019) and EfficientNetV2 (Tan & Le, ICML 2021) for the
//! [Burn](https://burn.dev) deep-learning framework: B0..B8, L2, Lite0..4 and V2-S, M, L, XL
//! and B0..B3 with their published parameter counts, a
//! [`CompoundScaling`] rule for custom models, and every setting that depends on where
//! weights came from (padding, batch-norm epsilon, head rule) as a config field.
//!
//! Models take no backend type parameter: in Burn 0.22 the backend lives in the
//! [`Device`](burn::tensor::Device), chosen by this crate's Cargo features (`flex`, the
//! default CPU backend; `ndarray`; `wgpu`; `cuda`).
//!
//! ## What is where
//!
//! The crate root holds what an application uses:
//! - the network: [`EfficientNet`] (the Burn module, for training and any backend),
//!   [`EfficientNetConfig`], [`Variant`], [`CompoundScaling`], [`FeatureInfo`];
//! - classifying images: [`Classifier`] (a model prepared for inference, its eval transform
//!   and class names; from registry weights, a file, or a saved run), [`Prediction`],
//!   [`ImageInput`];
//! - inference: [`InferenceModel`] (what [`EfficientNet::for_inference`] returns: folded
//!   and, on the flex CPU backend in f32, run by the crate's CPU engine),
//!   [`ClassActivationMap`];
//! - weights: [`Pretrained`] (with [`Pretrained::for_finetuning`]), [`PretrainedInfo`],
//!   [`WeightsCache`], [`WeightSource`], [`KeyLayout`], [`LoadOptions`], and a trained
//!   model on disk: [`SavedModel`], [`SavedNetwork`];
//! - preprocessing: [`Preprocess`], [`Interpolation`], [`MAX_IMAGE_SIDE`];
//! - devices and errors: [`DeviceChoice`], [`Error`]; and [`burn`] and [`image`]
//!   themselves.
//!
//! Which call for which need:
//!
//! | you have | for inference | to fine-tune |
//! |---|---|---|
//! | a registry name | [`Classifier::pretrained`] | [`Pretrained::for_finetuning`] |
//! | a registry entry's file | [`Classifier::from_file`] | [`Pretrained::for_finetuning_from_file`] |
//! | any PyTorch checkpoint | [`Classifier::new`] on [`EfficientNet::from_pytorch`] | [`EfficientNet::from_pytorch`], then [`EfficientNet::with_new_classifier`] |
//! | a saved run | [`Classifier::load`] | [`SavedModel::load`] |
//!
//! Modules hold the rest: [`model`] the building blocks (`ConvBnAct`,
//! `SqueezeExcitation`, `MBConv`, `FusedMBConv`...) and the architecture's tables (stage
//! tables, presets, rounding rules); [`imagenet`] the labels and ranking helpers;
//! [`explore`] the paper's scaling search; `train` (feature `train`) fine-tuning and
//! training. Everything else is internal.
//!
//! ```
//! use efficientnet_burn::burn::tensor::{Device, Tensor};
//! use efficientnet_burn::{EfficientNet, EfficientNetConfig};
//!
//! let device = Device::default();
//! let model = EfficientNet::b0(&device);
//! assert_eq!(model.num_trainable_params(), 5_288_548);
//!
//! // For inference: norms folded and, on the CPU, the network planned for fast kernels.
//! let model = model.for_inference();
//! let logits = model.forward(Tensor::<4>::zeros([1, 3, 224, 224], &device));
//! assert_eq!(logits.dims(), [1, 1000]);
//!
//! // A ten-class B3 for fine-tuning, and its feature pyramid.
//! let model = EfficientNetConfig::b3().with_num_classes(10).init(&device);
//! let images = Tensor::<4>::zeros([1, 3, 64, 64], &device);
//! assert_eq!(model.forward(images.clone()).dims(), [1, 10]);
//! let pyramid = model.endpoints(images);
//! assert_eq!(pyramid[4].dims(), [1, 384, 2, 2]); // reduction 32
//! ```

/// Burn, re-exported: `efficientnet_burn::burn` is the exact Burn this crate is built on, so an
/// application needs no `burn` dependency of its own to build devices and tensors (add one,
/// `burn = "0.22"`, to use more of Burn; Cargo resolves both to one copy).
pub use burn;

/// The `image` crate, re-exported: [`Classifier`] takes its [`RgbImage`](image::RgbImage) and
/// [`DynamicImage`](image::DynamicImage), so an application needs no `image` dependency of its
/// own to decode, build or convert images.
pub use image;

/// Serialises a type as its `name()` and deserialises it through its `FromStr`.
macro_rules! serde_by_name {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

mod cam;
mod classifier;
mod config;
#[cfg(feature = "flex")]
mod cpu;
mod device;
mod error;
pub mod explore;
pub mod imagenet;
mod inference;
pub mod model;
mod ops;
mod preprocess;
mod pretrained;
mod saved;
mod scaling;
mod threads;
#[cfg(feature = "train")]
pub mod train;
mod variant;
mod weights;

/// The CPU engine's kernels for `benches/`: not API, hidden from the docs.
#[cfg(feature = "flex")]
#[doc(hidden)]
pub use cpu::bench as __bench;

pub use cam::ClassActivationMap;
pub use classifier::Classifier;
#[allow(deprecated)]
pub use classifier::PretrainedModel;
pub use config::{EfficientNetConfig, FeatureInfo};
pub use device::DeviceChoice;
pub use error::Error;
pub use imagenet::Prediction;
pub use inference::{InferenceModel, Precision};
pub use model::efficientnet::EfficientNet;
pub use preprocess::{ImageInput, Interpolation, MAX_IMAGE_SIDE, Preprocess};
#[cfg(feature = "pretrained")]
pub use pretrained::download::Cache as WeightsCache;
pub use pretrained::{Pretrained, PretrainedInfo};
pub use saved::{SavedModel, SavedNetwork};
pub use scaling::CompoundScaling;
pub use variant::Variant;
pub use weights::LoadOptions;
pub use weights::layout::KeyLayout;
pub use weights::source::WeightSource;

// The README's and docs/'s Rust blocks are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/weights.md")]
struct WeightsDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/variants.md")]
struct VariantsDoctests;
