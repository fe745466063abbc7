//! The model's building blocks, one file each, the network assembled from them
//! ([`EfficientNet`](crate::EfficientNet), at the crate root), and the architecture's
//! tables: stage tables, published presets and the rounding rules of compound scaling.
//!
//! These files are plain Burn modules: no backend or kernel code. The inference engine runs
//! beside them, through [`InferenceModel`](crate::InferenceModel).

pub(crate) mod activation;
pub(crate) mod block;
pub(crate) mod conv_bn_act;
pub(crate) mod efficientnet;
pub(crate) mod fused_mbconv;
pub(crate) mod mbconv;
pub(crate) mod squeeze_excitation;
pub(crate) mod stochastic_depth;

pub use crate::config::{
    B0_STAGES, BlockKind, HeadRule, StageConfig, V2_BASE_STAGES, V2_L_STAGES, V2_M_STAGES,
    V2_S_STAGES, V2_XL_STAGES,
};
pub use crate::scaling::{
    CHANNEL_DIVISOR, DEFAULT_ROUND_LIMIT, round_channels, round_channels_with_limit, round_repeats,
};
pub use crate::variant::{Family, PRESETS, Preset, ProgressiveLearning, V2_MAX_RESOLUTION, V2Spec};
pub use activation::Activation;
pub use block::{Block, BlockConfig};
pub use conv_bn_act::{ConvBnAct, ConvBnActConfig, LayerStyle, Padding};
pub use fused_mbconv::{FusedMBConv, FusedMBConvConfig};
pub use mbconv::{MBConv, MBConvConfig};
pub use squeeze_excitation::{SqueezeExcitation, SqueezeExcitationConfig, squeeze_channels};
pub use stochastic_depth::{StochasticDepth, StochasticDepthConfig};
