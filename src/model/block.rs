//! One block of the scaled network, MBConv or Fused-MBConv: the [`Block`] module and its
//! [`BlockConfig`].

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::model::fused_mbconv::{FusedMBConv, FusedMBConvConfig};
use crate::model::mbconv::{MBConv, MBConvConfig};

/// One block of an [`EfficientNet`](crate::EfficientNet) stage: the network keeps one list
/// of stages, each a `Vec<Block>` of one kind (timm's `blocks`, torchvision's `features`).
// A few dozen per network, built once: the size difference between the variants costs
// nothing, and a box would stand between every parameter path and Burn's derive.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block {
    /// An MBConv block (every stage of EfficientNet, the later stages of EfficientNetV2).
    MBConv(MBConv),
    /// A Fused-MBConv block (the early stages of EfficientNetV2).
    FusedMBConv(FusedMBConv),
}

impl Block {
    /// Runs the block.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, height / stride, width / stride]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        match self {
            Block::MBConv(block) => block.forward(input),
            Block::FusedMBConv(block) => block.forward(input),
        }
    }

    /// The MBConv block, if it is one.
    pub fn mbconv(&self) -> Option<&MBConv> {
        match self {
            Block::MBConv(block) => Some(block),
            Block::FusedMBConv(_) => None,
        }
    }

    /// The Fused-MBConv block, if it is one.
    pub fn fused_mbconv(&self) -> Option<&FusedMBConv> {
        match self {
            Block::FusedMBConv(block) => Some(block),
            Block::MBConv(_) => None,
        }
    }

    /// Folds every batch norm into its convolution, for inference (see
    /// [`ConvBnAct::fold_batch_norm`](crate::model::conv_bn_act::ConvBnAct::fold_batch_norm)).
    pub fn fold_batch_norm(self) -> Self {
        match self {
            Block::MBConv(block) => Block::MBConv(block.fold_batch_norm()),
            Block::FusedMBConv(block) => Block::FusedMBConv(block.fold_batch_norm()),
        }
    }
}

/// The config of one block of a scaled network, as
/// [`EfficientNetConfig::blocks`](crate::EfficientNetConfig::blocks) lays it out.
#[derive(Clone, Debug)]
pub enum BlockConfig {
    /// An MBConv block (every stage of EfficientNet, the later stages of EfficientNetV2).
    MBConv(MBConvConfig),
    /// A Fused-MBConv block (the early stages of EfficientNetV2).
    FusedMBConv(FusedMBConvConfig),
}

impl BlockConfig {
    /// Builds the block on `device`.
    pub fn init(&self, device: &Device) -> Block {
        match self {
            BlockConfig::MBConv(c) => Block::MBConv(c.init(device)),
            BlockConfig::FusedMBConv(c) => Block::FusedMBConv(c.init(device)),
        }
    }

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
