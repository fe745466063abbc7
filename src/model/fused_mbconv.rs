//! The Fused-MBConv block of EfficientNetV2 (Tan & Le, ICML 2021, Figure 2).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::model::conv_bn_act::{ConvBnAct, ConvBnActConfig, LayerStyle};
use crate::model::stochastic_depth::{StochasticDepth, StochasticDepthConfig};
use crate::scaling::round_channels;

/// Configuration of a [`FusedMBConv`] block.
#[derive(Config, Debug)]
pub struct FusedMBConvConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Expansion ratio of the fused convolution; 1 makes the block a single convolution
    /// (no projection), as in EfficientNetV2's first stage.
    pub expand_ratio: usize,
    /// Kernel size of the fused convolution (odd).
    pub kernel_size: usize,
    /// Stride of the fused convolution (1 or 2).
    pub stride: usize,
    /// Padding, batch norm, and the activation after the fused convolution. Default:
    /// [`LayerStyle::new`] (symmetric, 1e-5, 0.1, SiLU).
    #[config(default = "LayerStyle::new()")]
    pub style: LayerStyle,
    /// Stochastic-depth drop probability of the residual branch. Default: 0.
    #[config(default = 0.0)]
    pub drop_path_prob: f64,
}

/// Fused-MBConv: `full kxk conv -> [project 1x1] -> [+ input]`.
///
/// One regular convolution replaces MBConv's 1x1 expansion and kxk depthwise convolution,
/// which trains faster on accelerators in the early, high-resolution stages; there is no
/// squeeze-excitation. With an expansion ratio of 1 the fused convolution maps straight to
/// the output channels and there is no projection (torchvision's `FusedMBConv` with
/// `expand_ratio == 1`, timm's `ConvBnAct` block with skip); otherwise it expands to
/// `in * expand_ratio` channels and a linear 1x1 projection follows (timm's `EdgeResidual`).
/// The residual (with per-sample stochastic depth) is used when the block keeps the
/// resolution and the channel count. Create it with [`FusedMBConvConfig::init`].
#[derive(Module, Debug)]
pub struct FusedMBConv {
    /// The fused kxk convolution carrying the block's stride, with norm and activation.
    pub conv: ConvBnAct,
    /// Linear projection to `out_channels`; absent when `expand_ratio == 1`.
    pub project: Option<ConvBnAct>,
    /// Drop of the residual branch.
    pub stochastic_depth: StochasticDepth,
    /// Whether the block adds its input to its output.
    pub residual: bool,
}

impl FusedMBConvConfig {
    /// Channels after the fused convolution: `make_divisible(in * expand_ratio, 8)`, or the
    /// output channels when `expand_ratio == 1`.
    pub fn expanded_channels(&self) -> usize {
        if self.expand_ratio == 1 {
            self.out_channels
        } else {
            round_channels(self.in_channels * self.expand_ratio, 1.0)
        }
    }

    /// Whether the block has a residual connection.
    pub fn has_residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }

    /// The fused convolution's config.
    pub fn conv(&self) -> ConvBnActConfig {
        self.style
            .conv_bn_act(self.in_channels, self.expanded_channels(), self.kernel_size)
            .with_stride(self.stride)
    }

    /// The projection's config (no activation); `None` when `expand_ratio == 1`.
    pub fn project(&self) -> Option<ConvBnActConfig> {
        (self.expand_ratio != 1).then(|| {
            self.style
                .conv_bn_act(self.expanded_channels(), self.out_channels, 1)
                .with_activation(None)
        })
    }

    /// Trainable parameters of the block.
    pub fn num_params(&self) -> usize {
        self.conv().num_params() + self.project().map_or(0, |c| c.num_params())
    }

    /// Multiply-adds over a `height x width` input, and the output's height and width.
    pub fn macs(&self, height: usize, width: usize) -> (u64, usize, usize) {
        let (conv, h, w) = self.conv().macs(height, width);
        let project = self.project().map_or(0, |c| c.macs(h, w).0);
        (conv + project, h, w)
    }

    /// Builds the block on `device`.
    pub fn init(&self, device: &Device) -> FusedMBConv {
        FusedMBConv {
            conv: self.conv().init(device),
            project: self.project().map(|c| c.init(device)),
            stochastic_depth: StochasticDepthConfig::new(self.drop_path_prob).init(),
            residual: self.has_residual(),
        }
    }
}

impl FusedMBConv {
    /// Folds every batch norm into its convolution, for inference
    /// (see [`ConvBnAct::fold_batch_norm`]).
    pub fn fold_batch_norm(self) -> Self {
        FusedMBConv {
            conv: self.conv.fold_batch_norm(),
            project: self.project.map(ConvBnAct::fold_batch_norm),
            ..self
        }
    }

    /// Runs the block.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, height / stride, width / stride]` (rounded as the
    ///   padding style rounds)
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = self.conv.forward(input.clone());
        if let Some(project) = &self.project {
            x = project.forward(x);
        }
        self.stochastic_depth.residual(x, input, self.residual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_ratio_one_is_a_single_convolution() {
        let device = Device::default();
        // V2-S stage 1: 24 -> 24, 3x3, stride 1: conv 24*24*9 + bn 2*24, with a residual.
        let block = FusedMBConvConfig::new(24, 24, 1, 3, 1).init(&device);
        assert!(block.project.is_none());
        assert!(block.residual);
        assert_eq!(block.num_params() - 2 * 24, 24 * 24 * 9 + 2 * 24);
        let out = block.forward(Tensor::zeros([2, 24, 9, 9], &device));
        assert_eq!(out.dims(), [2, 24, 9, 9]);
    }

    #[test]
    fn expanding_block_projects_and_strides() {
        let device = Device::default();
        // V2-S stage 2's first block: 24 -> 96 (3x3, stride 2) -> 48 (1x1), no residual.
        let config = FusedMBConvConfig::new(24, 48, 4, 3, 2);
        let block = config.init(&device);
        assert!(!block.residual);
        assert_eq!(block.conv.conv.weight.dims(), [96, 24, 3, 3]);
        assert_eq!(
            block.project.as_ref().unwrap().conv.weight.dims(),
            [48, 96, 1, 1]
        );
        // conv 96*24*9 + bn 2*96, project 48*96 + bn 2*48
        assert_eq!(config.num_params(), 20_736 + 192 + 4_608 + 96);
        let out = block.forward(Tensor::zeros([1, 24, 9, 9], &device));
        assert_eq!(out.dims(), [1, 48, 5, 5]);
        // 5x5 outputs: 96*24*9 per pixel for the conv, 48*96 for the projection.
        assert_eq!(config.macs(9, 9), (25 * (20_736 + 4_608), 5, 5));
    }

    #[test]
    fn folded_block_gives_the_same_output() {
        use burn::tensor::{Distribution, Tolerance};
        let device = Device::default();
        let block = FusedMBConvConfig::new(8, 8, 4, 3, 1).init(&device).valid();
        let input = Tensor::<4>::random([2, 8, 7, 7], Distribution::Default, &device);
        let expected = block.forward(input.clone());
        block
            .fold_batch_norm()
            .forward(input)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
    }
}
