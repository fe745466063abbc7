//! Stochastic depth ("drop connect" in the TF code): drops a residual branch per sample.

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::tensor::{Distribution, Tensor};

/// Configuration of a [`StochasticDepth`].
#[derive(Config, Debug)]
pub struct StochasticDepthConfig {
    /// Probability of dropping the branch for a sample, in `[0, 1)`.
    pub prob: f64,
}

/// Drops a residual branch for whole samples during training (Huang et al. 2016).
///
/// In training each sample's branch is zeroed with probability `prob` and kept ones are
/// scaled by `1 / (1 - prob)`, so the expectation is unchanged; in evaluation it is the
/// identity. Training means what it means for Burn's `Dropout`: the input lives on an
/// autodiff device *and* the module has not been switched off with `valid()` / `freeze()`.
#[derive(Module, Debug)]
pub struct StochasticDepth {
    /// Drop probability.
    pub prob: f64,
    /// Whether training behaviour is allowed (cleared by `valid()` and `freeze()`).
    pub training: Param<Flag>,
}

impl StochasticDepthConfig {
    /// Builds the module.
    ///
    /// # Panics
    ///
    /// If `prob` is not finite or outside `[0, 1)`.
    pub fn init(&self) -> StochasticDepth {
        assert!(
            self.prob.is_finite() && (0.0..1.0).contains(&self.prob),
            "stochastic depth probability must be in [0, 1), got {}",
            self.prob
        );
        StochasticDepth {
            prob: self.prob,
            training: Param::from_bool(true),
        }
    }
}

impl StochasticDepth {
    /// Applies per-sample drop to a residual branch.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, channels, height, width]`
    /// - output: `[batch, channels, height, width]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        if self.prob == 0.0 || !self.training.is_enabled() || !input.device().is_autodiff() {
            return input;
        }
        let keep = 1.0 - self.prob;
        let [batch, _, _, _] = input.dims();
        let mask = Tensor::<4>::random(
            [batch, 1, 1, 1],
            Distribution::Bernoulli(keep),
            &input.device(),
        );
        input * mask.div_scalar(keep)
    }

    /// How a block ends: `input + forward(branch)` when it has a residual, else `branch`.
    ///
    /// # Shapes
    ///
    /// - `branch`, `input` and output: `[batch, channels, height, width]`
    pub fn residual(&self, branch: Tensor<4>, input: Tensor<4>, residual: bool) -> Tensor<4> {
        if residual {
            self.forward(branch) + input
        } else {
            branch
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn identity_in_eval_and_off_autodiff() {
        let device = Device::default();
        let sd = StochasticDepthConfig::new(0.5).init();
        let x = Tensor::<4>::ones([16, 2, 3, 3], &device);
        // Not an autodiff device: identity.
        sd.forward(x.clone())
            .into_data()
            .assert_eq(&x.to_data(), true);
        // Autodiff device but valid(): identity.
        let x = x.to_device(&device.autodiff());
        sd.valid()
            .forward(x.clone())
            .into_data()
            .assert_eq(&x.to_data(), true);
    }

    #[test]
    fn training_drops_whole_samples_and_rescales() {
        let device = Device::default().autodiff();
        let sd = StochasticDepthConfig::new(0.5).init();
        let batch = 256;
        let out = sd.forward(Tensor::<4>::ones([batch, 2, 3, 3], &device));
        let values = out.into_data().try_to_vec::<f32>().unwrap();
        let mut dropped = 0;
        for sample in values.chunks(2 * 3 * 3) {
            // Each sample is all 0 (dropped) or all 1 / (1 - 0.5) = 2 (kept and rescaled).
            assert!(
                sample.iter().all(|v| *v == sample[0]),
                "sample partly dropped"
            );
            assert!(sample[0] == 0.0 || sample[0] == 2.0, "got {}", sample[0]);
            dropped += usize::from(sample[0] == 0.0);
        }
        // Binomial(256, 0.5): mean 128, sd 8; [80, 176] is 6 sd either side.
        assert!(
            (80..=176).contains(&dropped),
            "dropped {dropped} of {batch}"
        );
    }

    #[test]
    #[should_panic = "stochastic depth probability must be in [0, 1), got 1"]
    fn probability_one_is_rejected() {
        StochasticDepthConfig::new(1.0).init();
    }
}
