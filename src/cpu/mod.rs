//! The CPU inference engine: what [`InferenceModel`](crate::InferenceModel) runs on Burn's
//! flex backend in f32. It sits beside the model, not inside it: the model's files know
//! nothing of it, and it reads a folded model once ([`plan::layers`]) into a [`Plan`] it
//! owns. Other backends and float types run the model on Burn's ops, and so does training,
//! except on flex, where two of this module's kernels (depthwise convolution, batch norm
//! with its activation) run through Burn backend extensions with their own backward
//! passes ([`ops`](crate::ops)).
//!
//! Laid out by concern, as ONNX Runtime's MLAS is:
//! - [`isa`]: which vector instructions may run, as tokens only detection can make, and
//!   the dispatch that compiles each kernel for them;
//! - [`math`]: the one `1 + e^-x`, and SiLU, sigmoid and ReLU6;
//! - [`memory`]: cache-line-aligned buffers;
//! - [`padding`]: padding resolved to pixels;
//! - [`matmul`]: the matrix product behind every convolution (packing, micro-kernel,
//!   parallel drivers);
//! - [`depthwise`]: depthwise convolution on NHWC maps;
//! - [`depthwise_nchw`], [`batch_norm_nchw`]: training's depthwise convolution and batch
//!   norm with its activation on Burn's NCHW tensors, forward and backward;
//! - [`plan`]: reading the model, running it, and the buffer pool.
//!
//! Results equal Burn's ops to float rounding (`1 + e^-x` is within 2 ulp of the correctly
//! rounded value; `tests/parity.rs` holds whole models within 1e-5 on logits).

pub(crate) mod batch_norm_nchw;
#[doc(hidden)]
pub mod bench;
pub(crate) mod depthwise;
pub(crate) mod depthwise_nchw;
pub(crate) mod isa;
pub(crate) mod math;
pub(crate) mod matmul;
pub(crate) mod memory;
pub(crate) mod padding;
pub(crate) mod plan;

use burn::tensor::{DType, Device, Tensor};

pub(crate) use plan::Plan;

/// Whether the engine runs `tensor`: f32, on the flex device, no autodiff.
pub(crate) fn applies<const D: usize>(tensor: &Tensor<D>) -> bool {
    let device = tensor.device();
    !device.is_autodiff() && device == Device::flex() && tensor.dtype() == DType::F32
}
