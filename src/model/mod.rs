//! The model's building blocks, one file each, and the network assembled from them.

pub mod activation;
pub mod block;
pub mod conv_bn_act;
#[cfg(feature = "flex")]
pub(crate) mod cpu;
pub mod efficientnet;
pub mod fused_mbconv;
pub mod mbconv;
pub mod squeeze_excitation;
pub mod stochastic_depth;
