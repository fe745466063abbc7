//! [`BlockConfig`]: one block of the scaled network, MBConv or Fused-MBConv.

use crate::model::fused_mbconv::FusedMBConvConfig;
use crate::model::mbconv::MBConvConfig;

/// The config of one block of a scaled network, as
/// [`EfficientNetConfig::blocks`](crate::EfficientNetConfig::blocks) plans it.
#[derive(Clone, Debug)]
pub enum BlockConfig {
    /// An MBConv block (every stage of EfficientNet, the later stages of EfficientNetV2).
    MBConv(MBConvConfig),
    /// A Fused-MBConv block (the early stages of EfficientNetV2).
    FusedMBConv(FusedMBConvConfig),
}

impl BlockConfig {
    /// The MBConv config, if it is one.
    pub fn mbconv(&self) -> Option<&MBConvConfig> {
        match self {
            BlockConfig::MBConv(c) => Some(c),
            BlockConfig::FusedMBConv(_) => None,
        }
    }

    /// The Fused-MBConv config, if it is one.
    pub fn fused(&self) -> Option<&FusedMBConvConfig> {
        match self {
            BlockConfig::FusedMBConv(c) => Some(c),
            BlockConfig::MBConv(_) => None,
        }
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        match self {
            BlockConfig::MBConv(c) => c.in_channels,
            BlockConfig::FusedMBConv(c) => c.in_channels,
        }
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        match self {
            BlockConfig::MBConv(c) => c.out_channels,
            BlockConfig::FusedMBConv(c) => c.out_channels,
        }
    }

    /// Expansion ratio.
    pub fn expand_ratio(&self) -> usize {
        match self {
            BlockConfig::MBConv(c) => c.expand_ratio,
            BlockConfig::FusedMBConv(c) => c.expand_ratio,
        }
    }

    /// Stride.
    pub fn stride(&self) -> usize {
        match self {
            BlockConfig::MBConv(c) => c.stride,
            BlockConfig::FusedMBConv(c) => c.stride,
        }
    }

    /// Stochastic-depth drop probability of the residual branch.
    pub fn drop_path_prob(&self) -> f64 {
        match self {
            BlockConfig::MBConv(c) => c.drop_path_prob,
            BlockConfig::FusedMBConv(c) => c.drop_path_prob,
        }
    }

    /// Whether the block has a residual connection.
    pub fn has_residual(&self) -> bool {
        match self {
            BlockConfig::MBConv(c) => c.has_residual(),
            BlockConfig::FusedMBConv(c) => c.has_residual(),
        }
    }

    /// Trainable parameters of the block.
    pub fn num_params(&self) -> usize {
        match self {
            BlockConfig::MBConv(c) => c.num_params(),
            BlockConfig::FusedMBConv(c) => c.num_params(),
        }
    }

    /// Multiply-adds over a `height x width` input, and the output's height and width.
    pub fn macs(&self, height: usize, width: usize) -> (u64, usize, usize) {
        match self {
            BlockConfig::MBConv(c) => c.macs(height, width),
            BlockConfig::FusedMBConv(c) => c.macs(height, width),
        }
    }
}
