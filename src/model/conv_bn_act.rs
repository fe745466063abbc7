//! Convolution, batch norm and an optional activation: the unit every EfficientNet layer uses.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::model::activation::Activation;

/// How convolutions pad their input. Which one is right depends on where the weights came from.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum Padding {
    /// `(k - 1) / 2` on every side: PyTorch-native weights (torchvision, timm `efficientnet_*`).
    Symmetric,
    /// TensorFlow "SAME": `ceil(size / stride)` outputs, with the odd extra pixel at the
    /// bottom/right. Weights ported from TF (timm `tf_*`, efficientnet_pytorch) need it.
    TfSame,
}

impl Padding {
    /// Burn's padding for a square `kernel_size`.
    pub fn to_burn(self, kernel_size: usize) -> PaddingConfig2d {
        match self {
            Padding::Symmetric => {
                let p = (kernel_size - 1) / 2;
                PaddingConfig2d::Explicit(p, p, p, p)
            }
            Padding::TfSame => PaddingConfig2d::Same,
        }
    }

    /// The output size of a convolution over `size` pixels.
    pub fn output_size(self, size: usize, kernel_size: usize, stride: usize) -> usize {
        match self {
            Padding::Symmetric => (size + 2 * ((kernel_size - 1) / 2) - kernel_size) / stride + 1,
            Padding::TfSame => size.div_ceil(stride),
        }
    }
}

/// Configuration of a [`ConvBnAct`].
#[derive(Config, Debug)]
pub struct ConvBnActConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size (odd).
    pub kernel_size: usize,
    /// Stride. Default: 1.
    #[config(default = 1)]
    pub stride: usize,
    /// Channel groups; `in_channels` for a depthwise convolution. Default: 1.
    #[config(default = 1)]
    pub groups: usize,
    /// Padding style. Default: [`Padding::Symmetric`].
    #[config(default = "Padding::Symmetric")]
    pub padding: Padding,
    /// Batch-norm epsilon. Default: 1e-5.
    #[config(default = 1e-5)]
    pub bn_epsilon: f64,
    /// Batch-norm momentum, PyTorch sense (`running = (1 - m) running + m batch`). Default: 0.1.
    #[config(default = 0.1)]
    pub bn_momentum: f64,
    /// Activation after the norm; `None` for a linear projection. Default: SiLU.
    #[config(default = "Some(Activation::SiLU)")]
    pub activation: Option<Activation>,
}

/// A bias-free convolution, batch norm and optional activation.
///
/// Create it with [`ConvBnActConfig::init`]. Its weights are initialised as torchvision and TF
/// do: normal with `std = sqrt(2 / fan_out)`, `fan_out = out_channels * k * k`.
#[derive(Module, Debug)]
pub struct ConvBnAct {
    /// The convolution (no bias: the norm supplies it).
    pub conv: Conv2d,
    /// The batch norm.
    pub bn: BatchNorm,
    /// The activation, if any.
    #[module(skip)]
    pub activation: Option<Activation>,
}

impl ConvBnActConfig {
    /// Trainable parameters: the convolution's weight and the norm's scale and shift.
    pub fn num_params(&self) -> usize {
        let k = self.kernel_size;
        self.out_channels * (self.in_channels / self.groups) * k * k + 2 * self.out_channels
    }

    /// Multiply-adds over a `height x width` input, and the output's height and width.
    pub fn macs(&self, height: usize, width: usize) -> (u64, usize, usize) {
        let (k, s) = (self.kernel_size, self.stride);
        let out_h = self.padding.output_size(height, k, s);
        let out_w = self.padding.output_size(width, k, s);
        let per_pixel = self.out_channels * (self.in_channels / self.groups) * k * k;
        ((out_h * out_w * per_pixel) as u64, out_h, out_w)
    }

    /// Builds the module on `device`.
    pub fn init(&self, device: &Device) -> ConvBnAct {
        let k = self.kernel_size;
        let fan_out = (self.out_channels * k * k) as f64;
        let conv = Conv2dConfig::new([self.in_channels, self.out_channels], [k, k])
            .with_stride([self.stride, self.stride])
            .with_groups(self.groups)
            .with_padding(self.padding.to_burn(k))
            .with_bias(false)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: (2.0 / fan_out).sqrt(),
            })
            .init(device);
        let bn = BatchNormConfig::new(self.out_channels)
            .with_epsilon(self.bn_epsilon)
            .with_momentum(self.bn_momentum)
            .init(device);
        ConvBnAct {
            conv,
            bn,
            activation: self.activation,
        }
    }
}

impl ConvBnAct {
    /// Convolution, norm, activation.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, height', width']`, where `height'` and `width'` follow
    ///   from the stride and [`Padding::output_size`]
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = self.bn.forward(self.conv.forward(input));
        match &self.activation {
            Some(activation) => activation.forward(x),
            None => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_pads_asymmetrically_for_stride_two() {
        // TF SAME: ceil(65 / 2) = 33; symmetric: (65 + 2 - 3) / 2 + 1 = 33 as well,
        // but on an even size they agree too; they differ for k = 5 on 66: (66+4-5)/2+1 = 33.
        assert_eq!(Padding::TfSame.output_size(65, 3, 2), 33);
        assert_eq!(Padding::Symmetric.output_size(65, 3, 2), 33);
        assert_eq!(Padding::TfSame.output_size(7, 5, 2), 4);
        assert_eq!(Padding::Symmetric.output_size(7, 5, 2), 4);
        assert_eq!(Padding::Symmetric.output_size(224, 3, 1), 224);
    }

    #[test]
    fn forward_shape_follows_padding_and_stride() {
        let device = Device::default();
        for padding in [Padding::Symmetric, Padding::TfSame] {
            let layer = ConvBnActConfig::new(3, 8, 3)
                .with_stride(2)
                .with_padding(padding)
                .init(&device);
            let out = layer.forward(Tensor::zeros([2, 3, 65, 67], &device));
            // ceil(65 / 2) = 33, ceil(67 / 2) = 34
            assert_eq!(out.dims(), [2, 8, 33, 34]);
        }
    }

    #[test]
    fn weight_init_has_fan_out_std() {
        let device = Device::default();
        // variance = 2 / (64 * 3 * 3) = 0.00347
        let layer = ConvBnActConfig::new(32, 64, 3).init(&device);
        let w = layer.conv.weight.val();
        let variance = w.var(0).flatten::<1>(0, 3).mean().into_scalar::<f32>();
        // Variance over 64 rows of each of 288 positions, averaged: close to 2 / 576.
        let expected = 2.0 / 576.0;
        assert!(
            (variance - expected).abs() < 0.25 * expected,
            "{variance} vs {expected}"
        );
    }
}
