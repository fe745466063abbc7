//! Batch norm with batch statistics, fused with its activation, as a Burn backend
//! extension on flex with its own backward pass (the kernels are
//! [`cpu::batch_norm_nchw`](crate::cpu::batch_norm_nchw)).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};

use super::{f32_values, flex_isa};
use crate::cpu::batch_norm_nchw::{self, Statistics};
use crate::model::activation::Activation;

/// `act(batch_norm(x))` with the batch's statistics.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait BatchNormActBackend: Backend {
    /// `x` `[batch, channels, ...]`, `gamma` and `beta` `[channels]`; returns the output, the
    /// batch mean and the biased batch variance (`[channels]`, not differentiable).
    fn batch_norm_act_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        activation: Option<Activation>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

fn values(tensor: &FlexTensor) -> Vec<f32> {
    f32_values(&tensor.to_contiguous()).to_vec()
}

fn vector(values: Vec<f32>) -> FlexTensor {
    let len = values.len();
    FlexTensor::from_data(TensorData::new(values, [len]))
}

/// `(channels, values per plane)` of `x`.
fn layout(x: &FlexTensor) -> (usize, usize) {
    let shape = x.shape();
    let channels = shape[1];
    (
        channels,
        shape.num_elements() / (shape[0] * channels).max(1),
    )
}

fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
    activation: Option<Activation>,
) -> (FlexTensor, Statistics) {
    let x = x.to_contiguous();
    let input = f32_values(&x);
    let (channels, plane) = layout(&x);
    let stats = batch_norm_nchw::statistics(flex_isa(), input, channels, plane);
    let (scale, shift) = batch_norm_nchw::affine(&stats, &values(gamma), &values(beta), epsilon);
    let mut out = FlexTensor::empty(x.shape(), DType::F32);
    batch_norm_nchw::normalize(
        flex_isa(),
        input,
        (&scale, &shift),
        activation,
        plane,
        out.storage_mut(),
    );
    (out, stats)
}

impl BatchNormActBackend for Flex {
    fn batch_norm_act_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        activation: Option<Activation>,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (out, stats) = forward(&x, &gamma, &beta, epsilon, activation);
        (out, vector(stats.mean), vector(stats.variance))
    }
}

#[derive(Debug)]
struct BatchNormActBackward;

impl Backward<Flex, 3> for BatchNormActBackward {
    type State = (
        NodeId,
        FlexTensor,
        FlexTensor,
        Statistics,
        f64,
        Option<Activation>,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let (x_state, gamma, beta, stats, epsilon, activation) = ops.state;
        let mut grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let x = checkpointer
            .retrieve_node_output::<FlexTensor>(x_state)
            .to_contiguous();
        let (_, plane) = layout(&x);
        let input = f32_values(&x);
        let (gamma_grad, beta_grad) = batch_norm_nchw::backward(
            flex_isa(),
            input,
            &stats,
            &values(&gamma),
            &values(&beta),
            epsilon,
            activation,
            plane,
            grad.storage_mut(),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, grad);
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, vector(gamma_grad));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, vector(beta_grad));
        }
    }
}

impl<C: CheckpointStrategy> BatchNormActBackend for Autodiff<Flex, C> {
    fn batch_norm_act_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        activation: Option<Activation>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (out, stats) = forward(
            x.primitive(),
            gamma.primitive(),
            beta.primitive(),
            epsilon,
            activation,
        );
        let (mean, variance) = (
            FloatTensor::<Self>::new(vector(stats.mean.clone())),
            FloatTensor::<Self>::new(vector(stats.variance.clone())),
        );
        let out = match BatchNormActBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let state = (
                    x_state,
                    gamma.primitive().clone(),
                    beta.primitive().clone(),
                    stats,
                    epsilon,
                    activation,
                );
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (out, mean, variance)
    }
}

/// `activation(batch_norm(x))` with the batch's statistics, on flex; also returns the batch
/// mean and biased variance (`[channels]`).
pub(crate) fn batch_norm_act_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    activation: Option<Activation>,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let (out, mean, variance) = <Dispatch as BatchNormActBackend>::batch_norm_act_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        activation,
    );
    (
        Tensor::from_dispatch(out),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(variance),
    )
}
