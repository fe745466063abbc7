//! The two activations EfficientNet uses: swish (SiLU) and, in the Lite family, ReLU6.

use burn::config::Config;
use burn::tensor::Tensor;

/// A pointwise activation.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum Activation {
    /// Swish / SiLU, `x * sigmoid(x)`: the B and L families.
    SiLU,
    /// `min(max(x, 0), 6)`: the Lite family (friendlier to quantisation).
    ReLU6,
}

impl Activation {
    /// Applies the activation element-wise.
    ///
    /// # Shapes
    ///
    /// - `input`: any shape
    /// - output: the input's shape
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::SiLU => silu(input),
            Activation::ReLU6 => input.clamp(0.0, 6.0),
        }
    }
}

/// SiLU as `x / (1 + exp(-x))`: `x * sigmoid(x)` in one pass less. For x -> -inf, exp(-x)
/// -> inf and the quotient -> -0, the correct limit.
fn silu<const D: usize>(input: Tensor<D>) -> Tensor<D> {
    input.clone().div(input.neg().exp().add_scalar(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData, Tolerance};

    #[test]
    fn silu_matches_the_definition() {
        let device = Device::default();
        let x = Tensor::<1>::from_floats([-100.0, -2.0, 0.0, 0.5, 3.0, 100.0], &device);
        let expected = x.clone() * burn::tensor::activation::sigmoid(x.clone());
        Activation::SiLU
            .forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn relu6_clamps() {
        let device = Device::default();
        let x = Tensor::<1>::from_floats([-1.0, 0.5, 7.0], &device);
        Activation::ReLU6
            .forward(x)
            .into_data()
            .assert_eq(&TensorData::from([0.0f32, 0.5, 6.0]), false);
    }
}
