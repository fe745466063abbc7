//! The inference plan: a folded [`EfficientNet`] read once into packed weights
//! ([`layers`]), then run as a whole on its own buffers ([`run`], [`pool`]) instead of
//! layer by layer through Burn's tensors.
//!
//! What makes it fast (ONNX Runtime's MLAS does most of the same things):
//! - Activations stay in NHWC (pixel-major, channels contiguous) from the stem to the head:
//!   a 1x1 convolution is then one matrix product with the pixels as rows, and a depthwise
//!   convolution is a multiply-add across channels, vectorised without gathering.
//! - Every convolution is a [`matmul`](crate::cpu::matmul) product, with the weights
//!   packed at planning time (in f32, or in bf16 pairs with
//!   [`Precision::Bf16Weights`](crate::Precision::Bf16Weights)) and the bias, activation
//!   and residual applied to each tile right after its sums; a kxk convolution (the stem,
//!   Fused-MBConv) unfolds a few hundred pixels' windows at a time into a scratch that
//!   stays in cache, the stem straight from the NCHW input.
//! - An expansion whose output is large runs together with the depthwise convolution after
//!   it, band by band, so that map never leaves the cache.
//! - The depthwise pass also sums each channel for the squeeze-excitation, whose gate then
//!   scales the projection's input channels as its rows are packed (no pass of its own).
//! - Activation buffers come from a pool kept with the plan and start on cache lines; each
//!   task's small scratch (packed rows, unfolded windows) is its own.
//! - One entry into rayon's pool per forward, and every layer splits its rows (or, for the
//!   classifier, its columns) over the threads, a batch of one included.
//! - The instruction set is detected once, when the plan is made, and every kernel is run
//!   through it ([`Detected::run`]).
//!
//! A plan is immutable: it owns copies of the weights, and
//! [`InferenceModel`](crate::InferenceModel), which owns the plan, offers no way to change
//! them. The weights it packs are then the only copy: the `InferenceModel`'s network reads
//! them back from the plan, lazily ([`Plan::hollow`]).

pub(crate) mod layers;
pub(crate) mod pool;
mod run;

use std::fmt;
use std::sync::Arc;

use burn::tensor::Tensor;

use super::applies;
use super::isa::Detected;
use super::matmul::Packed;
use crate::inference::Precision;
use crate::model::efficientnet::EfficientNet;
use layers::{
    Block, Conv, Layout, Packing, classifier_values, lazy_weight, model_convs, read_classifier,
};
use pool::BufferPool;

/// A folded model's weights, packed for the CPU kernels, and the buffers its forwards reuse.
pub(crate) struct Plan {
    isa: Detected,
    stem: Conv,
    blocks: Vec<Block>,
    /// How many of `blocks` the stages up to each one hold.
    stage_ends: Vec<usize>,
    head: Conv,
    classifier: Packed,
    classifier_bias: Vec<f32>,
    pool: BufferPool,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("isa", &self.isa)
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Reads a folded model on the flex device in f32, its weights packed in `precision`;
    /// `None` for anything else (the model then runs on Burn's ops).
    pub(crate) fn new(model: &EfficientNet, precision: Precision) -> Option<Self> {
        let isa = Detected::new();
        let packing = Packing::new(precision, isa.lanes());
        let stem = Conv::read(&model.stem, Layout::Nchw, packing)?;
        let stage_ends: Vec<usize> = model
            .stages
            .iter()
            .scan(0, |end, stage| {
                *end += stage.len();
                Some(*end)
            })
            .collect();
        let blocks = model
            .stages
            .iter()
            .flatten()
            .map(|block| Block::read(block, packing))
            .collect::<Option<Vec<Block>>>()?;
        let (classifier, classifier_bias) = read_classifier(model, packing)?;
        Some(Self {
            isa,
            stem,
            blocks,
            stage_ends,
            head: Conv::read(&model.head, Layout::Nhwc, packing)?,
            classifier,
            classifier_bias,
            pool: BufferPool::default(),
        })
    }

    /// `network`, the folded model `plan` was read from, with every weight the plan packed
    /// (the convolutions run as products and the classifier) replaced by a lazy parameter
    /// that unpacks it from the plan when first read: until the network itself runs or is
    /// saved, those weights are in memory once, packed.
    pub(crate) fn hollow(plan: &Arc<Plan>, mut network: EfficientNet) -> EfficientNet {
        let at = Arc::clone(plan);
        lazy_weight(&mut network.stem.conv.weight, move || {
            at.stem.weight_values()
        });
        let at = Arc::clone(plan);
        lazy_weight(&mut network.head.conv.weight, move || {
            at.head.weight_values()
        });
        let at = Arc::clone(plan);
        lazy_weight(&mut network.classifier.weight, move || {
            classifier_values(&at.classifier)
        });
        for (index, block) in network.stages.iter_mut().flatten().enumerate() {
            for (part, layer) in model_convs(block).into_iter().enumerate() {
                let at = Arc::clone(plan);
                lazy_weight(&mut layer.conv.weight, move || {
                    at.blocks[index].convs()[part].weight_values()
                });
            }
        }
        network
    }

    /// Whether the plan runs `input`: an f32 flex tensor of the model's channels, no size
    /// zero (anything else runs on Burn's ops, which check and report it).
    pub(crate) fn applies(&self, input: &Tensor<4>) -> bool {
        let [batch, channels, height, width] = input.dims();
        applies(input) && channels == self.stem.in_channels() && batch * height * width > 0
    }
}
