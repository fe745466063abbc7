//! Squeeze-and-excitation (Hu et al. 2018) as EfficientNet uses it.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use crate::model::activation::Activation;

/// Configuration of a [`SqueezeExcitation`].
#[derive(Config, Debug)]
pub struct SqueezeExcitationConfig {
    /// Channels of the tensor being gated (the block's expanded channels).
    pub channels: usize,
    /// Channels of the squeeze. EfficientNet takes them from the *block's input* channels,
    /// not the expanded ones: `max(1, block_in * 0.25)`; see [`squeeze_channels`].
    pub squeeze_channels: usize,
    /// Activation between the two 1x1 convolutions. Default: SiLU.
    #[config(default = "Activation::SiLU")]
    pub activation: Activation,
}

/// The squeeze width EfficientNet uses: `max(1, floor(block_in_channels * ratio))`.
pub fn squeeze_channels(block_in_channels: usize, ratio: f64) -> usize {
    ((block_in_channels as f64 * ratio) as usize).max(1)
}

/// Global average pool, 1x1 conv down, activation, 1x1 conv up, sigmoid, channel-wise gate.
///
/// Create it with [`SqueezeExcitationConfig::init`].
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    /// 1x1 convolution `channels -> squeeze_channels`, with bias.
    pub reduce: Conv2d,
    /// 1x1 convolution `squeeze_channels -> channels`, with bias.
    pub expand: Conv2d,
    /// Activation after `reduce`.
    #[module(skip)]
    pub activation: Activation,
}

impl SqueezeExcitationConfig {
    /// Trainable parameters: two 1x1 convolutions with biases.
    pub fn num_params(&self) -> usize {
        2 * self.channels * self.squeeze_channels + self.channels + self.squeeze_channels
    }

    /// Multiply-adds of the two 1x1 convolutions on the pooled vector.
    pub fn macs(&self) -> u64 {
        (2 * self.channels * self.squeeze_channels) as u64
    }

    /// Builds the module on `device` (weights normal with `std = sqrt(2 / fan_out)`, biases 0,
    /// as torchvision initialises them).
    pub fn init(&self, device: &Device) -> SqueezeExcitation {
        SqueezeExcitation {
            reduce: pointwise_with_bias(self.channels, self.squeeze_channels, device),
            expand: pointwise_with_bias(self.squeeze_channels, self.channels, device),
            activation: self.activation,
        }
    }
}

fn pointwise_with_bias(in_channels: usize, out_channels: usize, device: &Device) -> Conv2d {
    let mut conv = Conv2dConfig::new([in_channels, out_channels], [1, 1])
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: (2.0 / out_channels as f64).sqrt(),
        })
        .init(device);
    conv.bias = Some(Initializer::Zeros.init_with([out_channels], None, None, device));
    conv
}

impl SqueezeExcitation {
    /// Gates each channel of `input` by a weight computed from its global average.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, channels, height, width]`
    /// - output: `[batch, channels, height, width]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let pooled = input.clone().mean_dim(3).mean_dim(2);
        input * self.gate(pooled)
    }

    /// `[batch, channels, 1, 1]` channel means -> per-channel factors in (0, 1).
    fn gate(&self, pooled: Tensor<4>) -> Tensor<4> {
        let scale = self.reduce.forward(pooled);
        let scale = self.expand.forward(self.activation.forward(scale));
        burn::tensor::activation::sigmoid(scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeeze_width_comes_from_block_input() {
        // B0 stage 2 first block: input 16, expanded 96 -> squeeze 16 * 0.25 = 4 (not 24).
        assert_eq!(squeeze_channels(16, 0.25), 4);
        assert_eq!(squeeze_channels(3, 0.25), 1);
    }

    #[test]
    fn gate_scales_each_channel_by_a_factor_in_zero_one() {
        let device = Device::default();
        let se = SqueezeExcitationConfig::new(8, 2).init(&device);
        let input = Tensor::<4>::ones([2, 8, 5, 5], &device);
        let out = se.forward(input).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(out.len(), 2 * 8 * 5 * 5);
        assert!(out.iter().all(|v| *v > 0.0 && *v < 1.0));
        // A constant input gives a constant gate over each channel's plane.
        assert!(out[..25].iter().all(|v| (*v - out[0]).abs() < 1e-7));
    }
}
