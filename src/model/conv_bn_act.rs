//! Convolution, batch norm and an optional activation: the unit every EfficientNet layer uses.

use burn::config::Config;
use burn::module::{Module, Param};
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

/// How a network builds its convolution units: padding, batch norm and activation. The one
/// place these settings live for a block ([`MBConvConfig`](crate::model::MBConvConfig),
/// [`FusedMBConvConfig`](crate::model::FusedMBConvConfig)); an
/// [`EfficientNetConfig`](crate::EfficientNetConfig) hands its own out through
/// [`style`](crate::EfficientNetConfig::style).
#[derive(Config, Debug, PartialEq, Copy)]
pub struct LayerStyle {
    /// Padding style. Default: [`Padding::Symmetric`].
    #[config(default = "Padding::Symmetric")]
    pub padding: Padding,
    /// Batch-norm epsilon. Default: 1e-5.
    #[config(default = 1e-5)]
    pub bn_epsilon: f64,
    /// Batch-norm momentum, PyTorch sense (`running = (1 - m) running + m batch`). Default: 0.1.
    #[config(default = 0.1)]
    pub bn_momentum: f64,
    /// Activation after the norm of every unit that has one. Default: SiLU.
    #[config(default = "Activation::SiLU")]
    pub activation: Activation,
}

impl LayerStyle {
    /// A `k x k` convolution unit in this style, with its activation (change the stride,
    /// groups or activation with the config's builders).
    pub fn conv_bn_act(
        &self,
        in_channels: usize,
        out_channels: usize,
        k: usize,
    ) -> ConvBnActConfig {
        ConvBnActConfig::new(in_channels, out_channels, k)
            .with_padding(self.padding)
            .with_bn_epsilon(self.bn_epsilon)
            .with_bn_momentum(self.bn_momentum)
            .with_activation(Some(self.activation))
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
    /// The convolution (no bias while the norm supplies it; with one once the norm is folded
    /// in by [`ConvBnAct::fold_batch_norm`]).
    pub conv: Conv2d,
    /// The batch norm; `None` once folded into the convolution.
    pub bn: Option<BatchNorm>,
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
            bn: Some(bn),
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
        let x = crate::ops::conv2d(&self.conv, input);
        match (&self.bn, &self.activation) {
            (Some(bn), activation) => crate::ops::batch_norm_act(bn, *activation, x),
            (None, Some(activation)) => activation.forward(x),
            (None, None) => x,
        }
    }
}

impl ConvBnAct {
    /// Folds the batch norm's running statistics and affine parameters into the
    /// convolution, for inference: `conv'(x) = bn(conv(x))` in evaluation mode, one pass
    /// instead of two. Per output channel `c`, with `s = gamma / sqrt(running_var + eps)`,
    /// the weight becomes `s * w` and the bias `beta - s * running_mean` (plus `s * b` if the
    /// convolution had a bias). Does nothing if the norm is already folded.
    ///
    /// The result computes the norm with frozen statistics, so it is for inference only;
    /// training it would no longer normalise batches.
    pub fn fold_batch_norm(mut self) -> Self {
        let Some(bn) = self.bn.take() else {
            return self;
        };
        let channels = bn.gamma.dims()[0];
        let scale = bn.gamma.val() / bn.running_var.value().add_scalar(bn.epsilon).sqrt();
        let mut shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
        if let Some(bias) = self.conv.bias.take() {
            shift = shift + bias.val() * scale.clone();
        }
        let weight = self.conv.weight.val() * scale.reshape([channels, 1, 1, 1]);
        self.conv.weight = Param::from_tensor(weight);
        self.conv.bias = Some(Param::from_tensor(shift));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_paddings_give_ceil_size_over_stride_for_odd_kernels() {
        // TF SAME keeps ceil(size / stride) by construction: ceil(65 / 2) = 33. Symmetric
        // padding of (k - 1) / 2 gives (size + k - 1 - k) / stride + 1, the same number for
        // odd k: (65 + 2 - 3) / 2 + 1 = 33, (7 + 4 - 5) / 2 + 1 = 4. Where they differ is the
        // placement of the padding (TF puts the odd pixel after, as Burn's `Same` does),
        // not the output size.
        assert_eq!(Padding::TfSame.output_size(65, 3, 2), 33);
        assert_eq!(Padding::Symmetric.output_size(65, 3, 2), 33);
        assert_eq!(Padding::TfSame.output_size(66, 5, 2), 33);
        assert_eq!(Padding::Symmetric.output_size(66, 5, 2), 33);
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
    fn folded_norm_gives_the_same_output() {
        use burn::tensor::{Distribution, Tolerance};
        let device = Device::default();
        for (groups, activation) in [(1, Some(Activation::SiLU)), (8, None)] {
            let mut layer = ConvBnActConfig::new(8, 8, 3)
                .with_groups(groups)
                .with_stride(2)
                .with_bn_epsilon(1e-3)
                .with_activation(activation)
                .init(&device);
            // Statistics and affine parameters away from the identity, as trained ones are.
            let bn = layer.bn.as_mut().unwrap();
            let random =
                |low, high| Tensor::<1>::random([8], Distribution::Uniform(low, high), &device);
            bn.gamma = Param::from_tensor(random(0.5, 2.0));
            bn.beta = Param::from_tensor(random(-1.0, 1.0));
            bn.running_mean = burn::module::RunningState::new(random(-1.0, 1.0));
            bn.running_var = burn::module::RunningState::new(random(0.1, 3.0));
            let layer = layer.valid();
            let input = Tensor::<4>::random([2, 8, 9, 9], Distribution::Default, &device);
            let expected = layer.forward(input.clone());
            let folded = layer.fold_batch_norm();
            assert!(folded.bn.is_none() && folded.conv.bias.is_some());
            folded
                .forward(input)
                .into_data()
                .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
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
