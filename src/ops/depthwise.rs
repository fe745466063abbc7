//! Depthwise convolution as a Burn backend extension on flex, with its own backward pass
//! (the kernels are [`cpu::depthwise_nchw`](crate::cpu::depthwise_nchw)).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor};

use super::{f32_values, flex_isa as isa};
use crate::cpu::depthwise_nchw::{self, PlaneGeometry};

/// A depthwise convolution over `[batch, channels, height, width]` tensors.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait DepthwiseBackend: Backend {
    /// `x` `[batch, channels, height, width]` with `weight` `[channels, 1, k, k]`.
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: PlaneGeometry,
    ) -> FloatTensor<Self>;
}

fn flex_forward(x: &FlexTensor, weight: &FlexTensor, g: &PlaneGeometry) -> FlexTensor {
    let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
    let (batch, channels) = (x.shape()[0], x.shape()[1]);
    let mut out = FlexTensor::empty(
        Shape::new([batch, channels, g.out_height, g.out_width]),
        DType::F32,
    );
    depthwise_nchw::forward(
        isa(),
        g,
        channels,
        f32_values(&x),
        f32_values(&weight),
        out.storage_mut(),
    );
    out
}

impl DepthwiseBackend for Flex {
    fn depthwise_conv2d(x: FlexTensor, weight: FlexTensor, g: PlaneGeometry) -> FlexTensor {
        flex_forward(&x, &weight, &g)
    }
}

#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    type State = (
        burn::backend::autodiff::NodeId,
        burn::backend::autodiff::NodeId,
        PlaneGeometry,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x_state, weight_state, g) = ops.state;
        let x = checkpointer
            .retrieve_node_output::<FlexTensor>(x_state)
            .to_contiguous();
        let weight = checkpointer
            .retrieve_node_output::<FlexTensor>(weight_state)
            .to_contiguous();
        let channels = x.shape()[1];
        if let Some(node) = node_x {
            let mut x_grad = FlexTensor::empty(x.shape(), DType::F32);
            depthwise_nchw::input_grad(
                isa(),
                &g,
                channels,
                f32_values(&grad),
                f32_values(&weight),
                x_grad.storage_mut(),
            );
            grads.register::<Flex>(node.id, x_grad);
        }
        if let Some(node) = node_weight {
            let mut weight_grad = FlexTensor::empty(weight.shape(), DType::F32);
            depthwise_nchw::weight_grad(
                isa(),
                &g,
                channels,
                f32_values(&x),
                f32_values(&grad),
                weight_grad.storage_mut(),
            );
            grads.register::<Flex>(node.id, weight_grad);
        }
    }
}

impl<C: CheckpointStrategy> DepthwiseBackend for Autodiff<Flex, C> {
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        g: PlaneGeometry,
    ) -> FloatTensor<Self> {
        match DepthwiseBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let out = flex_forward(x.primitive(), weight.primitive(), &g);
                prep.finish((x_state, weight_state, g), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(flex_forward(x.primitive(), weight.primitive(), &g))
            }
        }
    }
}

/// The depthwise convolution of `x` by `weight` (`[channels, 1, k, k]`) on flex.
pub(crate) fn depthwise_conv2d(x: Tensor<4>, weight: Tensor<4>, g: PlaneGeometry) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as DepthwiseBackend>::depthwise_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        g,
    ))
}
