//! The mobile inverted bottleneck (MBConv) block with squeeze-excitation.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::model::conv_bn_act::{ConvBnAct, ConvBnActConfig, LayerStyle};
use crate::model::squeeze_excitation::{
    SqueezeExcitation, SqueezeExcitationConfig, squeeze_channels,
};
use crate::model::stochastic_depth::{StochasticDepth, StochasticDepthConfig};
use crate::scaling::round_channels;

/// Configuration of an [`MBConv`] block.
#[derive(Config, Debug)]
pub struct MBConvConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Expansion ratio of the first 1x1 convolution; 1 skips it (MBConv1).
    pub expand_ratio: usize,
    /// Depthwise kernel size (odd).
    pub kernel_size: usize,
    /// Depthwise stride (1 or 2).
    pub stride: usize,
    /// Squeeze-excitation ratio relative to `in_channels`; 0 disables SE (Lite). Default: 0.25.
    #[config(default = 0.25)]
    pub se_ratio: f64,
    /// Padding, batch norm, and the activation after the expansion, the depthwise
    /// convolution and inside SE. Default: [`LayerStyle::new`] (symmetric, 1e-5, 0.1, SiLU).
    #[config(default = "LayerStyle::new()")]
    pub style: LayerStyle,
    /// Stochastic-depth drop probability of the residual branch. Default: 0.
    #[config(default = 0.0)]
    pub drop_path_prob: f64,
}

/// MBConv: `[expand 1x1] -> depthwise kxk -> [squeeze-excitation] -> project 1x1 -> [+ input]`.
///
/// The residual (with per-sample stochastic depth) is used when the block keeps the
/// resolution and the channel count. Create it with [`MBConvConfig::init`].
#[derive(Module, Debug)]
pub struct MBConv {
    /// Expansion to `in * expand_ratio` channels; absent when `expand_ratio == 1`.
    pub expand: Option<ConvBnAct>,
    /// Depthwise convolution carrying the block's stride.
    pub depthwise: ConvBnAct,
    /// Squeeze-excitation; absent in Lite models.
    pub se: Option<SqueezeExcitation>,
    /// Linear projection to `out_channels` (no activation).
    pub project: ConvBnAct,
    /// Drop of the residual branch.
    pub stochastic_depth: StochasticDepth,
    /// Whether the block adds its input to its output.
    pub residual: bool,
}

impl MBConvConfig {
    /// Channels after the expansion: `make_divisible(in * expand_ratio, 8)`.
    pub fn expanded_channels(&self) -> usize {
        if self.expand_ratio == 1 {
            self.in_channels
        } else {
            round_channels(self.in_channels * self.expand_ratio, 1.0)
        }
    }

    /// Whether the block has a residual connection.
    pub fn has_residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }

    /// The expansion's config; `None` when `expand_ratio == 1`.
    pub fn expand(&self) -> Option<ConvBnActConfig> {
        (self.expand_ratio != 1).then(|| {
            self.style
                .conv_bn_act(self.in_channels, self.expanded_channels(), 1)
        })
    }

    /// The depthwise convolution's config.
    pub fn depthwise(&self) -> ConvBnActConfig {
        let expanded = self.expanded_channels();
        self.style
            .conv_bn_act(expanded, expanded, self.kernel_size)
            .with_stride(self.stride)
            .with_groups(expanded)
    }

    /// The squeeze-excitation's config; `None` when `se_ratio == 0`.
    pub fn se(&self) -> Option<SqueezeExcitationConfig> {
        (self.se_ratio > 0.0).then(|| {
            SqueezeExcitationConfig::new(
                self.expanded_channels(),
                squeeze_channels(self.in_channels, self.se_ratio),
            )
            .with_activation(self.style.activation)
        })
    }

    /// The projection's config (no activation).
    pub fn project(&self) -> ConvBnActConfig {
        self.style
            .conv_bn_act(self.expanded_channels(), self.out_channels, 1)
            .with_activation(None)
    }

    /// Trainable parameters of the block.
    pub fn num_params(&self) -> usize {
        self.expand().map_or(0, |c| c.num_params())
            + self.depthwise().num_params()
            + self.se().map_or(0, |c| c.num_params())
            + self.project().num_params()
    }

    /// Multiply-adds over a `height x width` input, and the output's height and width.
    pub fn macs(&self, height: usize, width: usize) -> (u64, usize, usize) {
        let expand = self.expand().map_or(0, |c| c.macs(height, width).0);
        let (depthwise, h, w) = self.depthwise().macs(height, width);
        let se = self.se().map_or(0, |c| c.macs());
        let (project, _, _) = self.project().macs(h, w);
        (expand + depthwise + se + project, h, w)
    }

    /// Builds the block on `device`.
    pub fn init(&self, device: &Device) -> MBConv {
        MBConv {
            expand: self.expand().map(|c| c.init(device)),
            depthwise: self.depthwise().init(device),
            se: self.se().map(|c| c.init(device)),
            project: self.project().init(device),
            stochastic_depth: StochasticDepthConfig::new(self.drop_path_prob).init(),
            residual: self.has_residual(),
        }
    }
}

impl MBConv {
    /// Folds every batch norm into its convolution, for inference
    /// (see [`ConvBnAct::fold_batch_norm`]).
    pub fn fold_batch_norm(self) -> Self {
        MBConv {
            expand: self.expand.map(ConvBnAct::fold_batch_norm),
            depthwise: self.depthwise.fold_batch_norm(),
            project: self.project.fold_batch_norm(),
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
        let mut x = match &self.expand {
            Some(expand) => expand.forward(input.clone()),
            None => input.clone(),
        };
        x = self.depthwise.forward(x);
        if let Some(se) = &self.se {
            x = se.forward(x);
        }
        x = self.project.forward(x);
        self.stochastic_depth.residual(x, input, self.residual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_ratio_one_has_no_expansion() {
        let device = Device::default();
        let block = MBConvConfig::new(32, 16, 1, 3, 1).init(&device);
        assert!(block.expand.is_none());
        assert!(!block.residual);
        // dw 32*9 + bn 64, se 32*8+8 + 8*32+32, project 32*16 + bn 32
        assert_eq!(
            block.num_params() - 2 * (32 + 16), // minus BN running stats
            288 + 64 + 264 + 288 + 512 + 32
        );
    }

    #[test]
    fn residual_block_keeps_shape() {
        let device = Device::default();
        let block = MBConvConfig::new(24, 24, 6, 3, 1).init(&device);
        assert!(block.residual);
        assert_eq!(
            block.se.as_ref().unwrap().reduce.weight.dims(),
            [6, 144, 1, 1]
        );
        let out = block.forward(Tensor::zeros([1, 24, 9, 9], &device));
        assert_eq!(out.dims(), [1, 24, 9, 9]);
    }

    #[test]
    fn lite_block_has_no_se() {
        let device = Device::default();
        let block = MBConvConfig::new(16, 24, 6, 3, 2)
            .with_se_ratio(0.0)
            .with_style(LayerStyle::new().with_activation(crate::model::Activation::ReLU6))
            .init(&device);
        assert!(block.se.is_none());
        let out = block.forward(Tensor::zeros([2, 16, 9, 9], &device));
        assert_eq!(out.dims(), [2, 24, 5, 5]);
    }
}
