//! The convolution and the batch norm the model's blocks call, and where a backend gets a
//! faster form of them than Burn's generic one. Only training on flex (an autodiff flex
//! device, f32) takes another route; everything else, inference included, runs
//! `Conv2d::forward` and `BatchNorm::forward` as before (the inference engine,
//! [`cpu`](crate::cpu), has its own kernels):
//! - a depthwise convolution runs [`depthwise`]'s op, whose backward pass is one sweep per
//!   gradient instead of Burn's one convolution per channel for the weight's;
//! - a 1x1 convolution at stride 1 runs as a batched matrix product, whose backward
//!   passes are matrix products too (Burn's weight gradient runs it as a convolution with
//!   a kernel the size of the image);
//! - batch norm with batch statistics and the activation after it run as one op
//!   ([`batch_norm`]) with two sweeps forward and two backward, where Burn's composed
//!   batch norm transposes and walks the tensor some fifteen times.
//!
//! The blocks stay backend-free: they call [`conv2d`] and [`batch_norm_act`] with their
//! modules.

#[cfg(feature = "flex")]
mod batch_norm;
#[cfg(feature = "flex")]
mod depthwise;

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::model::activation::Activation;

/// `conv.forward(x)`, by the fastest route for `x`'s device.
///
/// # Shapes
///
/// - `x`: `[batch, in_channels, height, width]`
/// - output: `[batch, out_channels, height', width']`, as `Conv2d::forward`
pub(crate) fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if flex_training(&x)
        && let Some(route) = flex::Route::for_conv(conv, x.dims())
    {
        return route.run(conv, x);
    }
    conv.forward(x)
}

/// `activation(bn.forward(x))`, by the fastest route for `x`'s device. In training on flex,
/// one fused op with its own backward pass; the running statistics are updated as Burn's
/// `BatchNorm` updates them (momentum, biased variance).
///
/// # Shapes
///
/// - `x`: `[batch, channels, height, width]`
/// - output: the same
pub(crate) fn batch_norm_act(
    bn: &BatchNorm,
    activation: Option<Activation>,
    x: Tensor<4>,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if flex_training(&x) && bn.training.is_enabled() {
        let (out, mean, variance) = batch_norm::batch_norm_act_train(
            x,
            bn.gamma.val(),
            bn.beta.val(),
            bn.epsilon,
            activation,
        );
        let device = out.device();
        let update = |running: Tensor<1>, batch: Tensor<1>| {
            running
                .to_device(&device)
                .mul_scalar(1.0 - bn.momentum)
                .add(batch.mul_scalar(bn.momentum))
                .detach()
        };
        bn.running_mean
            .update(update(bn.running_mean.value_sync(), mean));
        bn.running_var
            .update(update(bn.running_var.value_sync(), variance));
        return out;
    }
    let x = bn.forward(x);
    match activation {
        Some(activation) => activation.forward(x),
        None => x,
    }
}

/// The instruction set flex's kernels here run with, asked once per process.
#[cfg(feature = "flex")]
fn flex_isa() -> crate::cpu::isa::Detected {
    static ISA: std::sync::OnceLock<crate::cpu::isa::Detected> = std::sync::OnceLock::new();
    *ISA.get_or_init(crate::cpu::isa::Detected::new)
}

/// The values of a contiguous tensor of the ops here: f32, as [`flex_training`] checks of
/// the input (the layer's parameters and gradients share its float type).
#[cfg(feature = "flex")]
fn f32_values(tensor: &burn::backend::flex::FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("training's flex ops run on contiguous f32 tensors (`flex_training`)")
}

/// Whether `x` is an f32 tensor on an autodiff flex device.
#[cfg(feature = "flex")]
fn flex_training(x: &Tensor<4>) -> bool {
    let device = x.device();
    device.is_autodiff()
        && device.inner() == burn::tensor::Device::flex()
        && x.dtype() == burn::tensor::DType::F32
}

#[cfg(feature = "flex")]
mod flex {
    use burn::nn::conv::Conv2d;
    use burn::tensor::Tensor;

    use super::depthwise;
    use crate::cpu::depthwise_nchw::PlaneGeometry;
    use crate::cpu::padding::Pads;

    /// A faster route for a convolution on flex.
    pub(super) enum Route {
        /// A depthwise convolution, by [`depthwise`]'s op.
        Depthwise(PlaneGeometry),
        /// A 1x1 convolution at stride 1 without padding, as a batched matrix product.
        Pointwise,
    }

    impl Route {
        /// The route for `conv` over an input of `dims`, if there is one.
        pub(super) fn for_conv(
            conv: &Conv2d,
            [_, channels, height, width]: [usize; 4],
        ) -> Option<Self> {
            let [out_channels, per_group, kh, kw] = conv.weight.dims();
            if conv.dilation != [1, 1] || kh != kw || conv.stride[0] != conv.stride[1] {
                return None;
            }
            let (kernel, stride) = (kh, conv.stride[0]);
            let pads = Pads::resolve(&conv.padding, height, width, kernel, stride);
            // An input smaller than the kernel even padded: Burn's to refuse.
            if height + pads.top + pads.bottom < kernel || width + pads.left + pads.right < kernel {
                return None;
            }
            if conv.groups == channels && out_channels == channels && per_group == 1 {
                Some(Route::Depthwise(PlaneGeometry::new(
                    (height, width),
                    kernel,
                    stride,
                    pads,
                )))
            } else if kernel == 1 && stride == 1 && conv.groups == 1 && pads == Pads::default() {
                Some(Route::Pointwise)
            } else {
                None
            }
        }

        /// `conv` on `x` by this route.
        pub(super) fn run(self, conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
            let [batch, channels, height, width] = x.dims();
            let [out_channels, ..] = conv.weight.dims();
            let out = match self {
                Route::Depthwise(geometry) => {
                    depthwise::depthwise_conv2d(x, conv.weight.val(), geometry)
                }
                Route::Pointwise => conv
                    .weight
                    .val()
                    .reshape([1, out_channels, channels])
                    .matmul(x.reshape([batch, channels, height * width]))
                    .reshape([batch, out_channels, height, width]),
            };
            match &conv.bias {
                Some(bias) => out + bias.val().reshape([1, out_channels, 1, 1]),
                None => out,
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    fn assert_close(a: Tensor<4>, b: Tensor<4>, what: &str) {
        let a = a.into_data().try_to_vec::<f32>().expect("f32");
        let b = b.into_data().try_to_vec::<f32>().expect("f32");
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 2e-5 * scale, "{what}: {x} vs {y}");
        }
    }

    /// The routed convolution gives Burn's `Conv2d` outputs and gradients (input, weight,
    /// bias) on an autodiff flex device, for the depthwise and 1x1 shapes it reroutes and
    /// one it leaves to Burn.
    #[test]
    fn routed_convolutions_match_burns_outputs_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let cases = [
            // (in, out, kernel, stride, groups, padding, bias, height, width)
            (6, 6, 3, 1, 6, PaddingConfig2d::Same, false, 9, 7),
            (6, 6, 3, 2, 6, PaddingConfig2d::Same, false, 8, 9),
            (4, 4, 5, 2, 4, PaddingConfig2d::Same, true, 11, 10),
            (
                5,
                5,
                5,
                1,
                5,
                PaddingConfig2d::Explicit(2, 1, 2, 3),
                false,
                6,
                6,
            ),
            (3, 3, 3, 1, 3, PaddingConfig2d::Valid, false, 7, 5),
            (8, 12, 1, 1, 1, PaddingConfig2d::Same, false, 5, 6),
            (12, 8, 1, 1, 1, PaddingConfig2d::Valid, true, 4, 4),
            // Not rerouted: a regular 3x3 and a grouped one.
            (4, 6, 3, 2, 1, PaddingConfig2d::Same, false, 7, 7),
            (4, 8, 3, 1, 2, PaddingConfig2d::Same, false, 5, 5),
        ];
        for (cin, cout, k, s, groups, padding, bias, h, w) in cases {
            let what = format!("{cin}->{cout} k{k} s{s} g{groups} {padding:?} bias {bias} {h}x{w}");
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .with_groups(groups)
                .with_padding(padding)
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<4>::random([2, cin, h, w], Distribution::Default, &device);
            let upstream = Tensor::<4>::random(
                conv.forward(x.clone()).dims(),
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let run = |routed: bool| {
                let x = x.clone().require_grad();
                let y = if routed {
                    conv2d(&conv, x.clone())
                } else {
                    conv.forward(x.clone())
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let x_grad = x.grad(&grads).expect("input gradient");
                let w_grad = conv.weight.grad(&grads).expect("weight gradient");
                let b_grad = conv
                    .bias
                    .as_ref()
                    .map(|b| b.grad(&grads).expect("bias gradient"));
                (y.inner(), x_grad, w_grad, b_grad)
            };
            let (y, x_grad, w_grad, b_grad) = run(true);
            let (y0, x_grad0, w_grad0, b_grad0) = run(false);
            assert_close(y, y0, &format!("{what}: output"));
            assert_close(x_grad, x_grad0, &format!("{what}: input gradient"));
            assert_close(w_grad, w_grad0, &format!("{what}: weight gradient"));
            if let (Some(b), Some(b0)) = (b_grad, b_grad0) {
                assert_close(
                    b.reshape([1, 1, 1, cout]),
                    b0.reshape([1, 1, 1, cout]),
                    &what,
                );
            }
        }
    }
    /// The fused batch norm and activation give Burn's outputs, gradients (input, gamma,
    /// beta) and running statistics, for each activation, on a batch whose channels sit far
    /// from zero.
    #[test]
    fn fused_batch_norm_matches_burns_outputs_gradients_and_running_statistics() {
        let device = Device::flex().autodiff();
        device.seed(5);
        for activation in [None, Some(Activation::SiLU), Some(Activation::ReLU6)] {
            let what = format!("{activation:?}");
            let config = burn::nn::BatchNormConfig::new(6)
                .with_epsilon(1e-3)
                .with_momentum(0.1);
            let (fused, burns) = (config.init(&device), config.init(&device));
            let gamma = Tensor::<1>::random([6], Distribution::Uniform(0.5, 1.5), &device);
            let beta = Tensor::<1>::random([6], Distribution::Uniform(-1.0, 1.0), &device);
            let x = Tensor::<4>::random([3, 6, 5, 7], Distribution::Normal(3.0, 2.0), &device);
            let upstream = Tensor::<4>::random([3, 6, 5, 7], Distribution::Default, &device);
            let run = |bn: &burn::nn::BatchNorm, routed: bool| {
                let bn = bn.clone();
                let bn = burn::nn::BatchNorm {
                    gamma: burn::module::Param::from_tensor(gamma.clone()),
                    beta: burn::module::Param::from_tensor(beta.clone()),
                    ..bn
                };
                let x = x.clone().require_grad();
                let y = if routed {
                    batch_norm_act(&bn, activation, x.clone())
                } else {
                    let y = bn.forward(x.clone());
                    match activation {
                        Some(a) => a.forward(y),
                        None => y,
                    }
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let x_grad = x.grad(&grads).expect("input gradient");
                let g_grad = bn
                    .gamma
                    .grad(&grads)
                    .expect("gamma gradient")
                    .reshape([1, 1, 1, 6]);
                let b_grad = bn
                    .beta
                    .grad(&grads)
                    .expect("beta gradient")
                    .reshape([1, 1, 1, 6]);
                let running = Tensor::cat(
                    vec![bn.running_mean.value_sync(), bn.running_var.value_sync()],
                    0,
                )
                .reshape([1, 1, 2, 6]);
                (y.inner(), x_grad, g_grad, b_grad, running.inner())
            };
            let (y, x_grad, g_grad, b_grad, running) = run(&fused, true);
            let (y0, x_grad0, g_grad0, b_grad0, running0) = run(&burns, false);
            assert_close(y, y0, &format!("{what}: output"));
            assert_close(x_grad, x_grad0, &format!("{what}: input gradient"));
            assert_close(g_grad, g_grad0, &format!("{what}: gamma gradient"));
            assert_close(b_grad, b_grad0, &format!("{what}: beta gradient"));
            assert_close(running, running0, &format!("{what}: running statistics"));
        }
    }
}
