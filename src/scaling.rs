//! Compound scaling (paper Eq. 3) and the two rounding rules every variant goes through.
//!
//! Tan & Le scale a baseline network along depth, width and resolution together:
//! `d = alpha^phi`, `w = beta^phi`, `r = gamma^phi`, subject to
//! `alpha * beta^2 * gamma^2 ~= 2` so that FLOPs grow by about `2^phi`.
//! The published B1..B7 were hand-rounded by the authors and do **not** follow the formula
//! exactly; they live in [`crate::Variant`]. [`CompoundScaling`] serves custom models,
//! fractional and negative `phi` included.

use burn::config::Config;

use crate::error::Error;

/// The divisor every channel count is rounded to.
pub const CHANNEL_DIVISOR: usize = 8;

/// Scales `channels` by `width` and rounds to a multiple of [`CHANNEL_DIVISOR`], never
/// going below the divisor nor more than 10% below the scaled value.
///
/// This is TF's `round_filters`, torchvision's and timm's `make_divisible`:
/// `v' = max(8, int(v + 4) // 8 * 8)`, plus 8 if `v' < 0.9 v`, where `v = channels * width`.
pub fn round_channels(channels: usize, width: f64) -> usize {
    round_channels_with_limit(channels, width, DEFAULT_ROUND_LIMIT)
}

/// How far below the scaled value [`round_channels`] may round before it adds a divisor.
pub const DEFAULT_ROUND_LIMIT: f64 = 0.9;

/// [`round_channels`] with another round-down limit: plus 8 if `v' < round_limit * v`.
///
/// EfficientNetV2-B0..B3 (the TF reference's `efficientnetv2-b*`, timm's
/// `tf_efficientnetv2_b*`) scale their stages with `round_limit = 0`, so a stage may round
/// down by up to 4 channels: `16 * 1.2 = 19.2` is 16 there and 24 with the default limit.
pub fn round_channels_with_limit(channels: usize, width: f64, round_limit: f64) -> usize {
    let value = channels as f64 * width;
    let divisor = CHANNEL_DIVISOR as f64;
    let mut rounded = ((value + divisor / 2.0) / divisor).floor() * divisor;
    rounded = rounded.max(divisor);
    if rounded < round_limit * value {
        rounded += divisor;
    }
    rounded as usize
}

/// Scales a stage's block count by `depth`, rounding up: `ceil(repeats * depth)`.
///
/// A non-positive or tiny `depth` can round a stage to zero blocks; configs reject that.
pub fn round_repeats(repeats: usize, depth: f64) -> usize {
    (repeats as f64 * depth).ceil() as usize
}

/// The compound scaling rule of the paper (Eq. 3).
///
/// `phi` is the compound coefficient; `alpha`, `beta` and `gamma` distribute it over depth,
/// width and resolution. The defaults are the values the paper's grid search found on B0.
/// Feed it to [`EfficientNetConfig::from_scaling`](crate::EfficientNetConfig::from_scaling).
///
/// ```
/// use efficientnet_burn::CompoundScaling;
///
/// let s = CompoundScaling::new(2.0);
/// assert!((s.depth_coefficient() - 1.44).abs() < 1e-12); // 1.2^2
/// assert!((s.width_coefficient() - 1.21).abs() < 1e-12); // 1.1^2
/// assert_eq!(s.resolution(224), 296); // round(224 * 1.15^2) = round(296.24)
/// ```
#[derive(Config, Debug, PartialEq, Copy)]
pub struct CompoundScaling {
    /// Depth base `alpha >= 1`. Default: 1.2.
    #[config(default = 1.2)]
    pub alpha: f64,
    /// Width base `beta >= 1`. Default: 1.1.
    #[config(default = 1.1)]
    pub beta: f64,
    /// Resolution base `gamma >= 1`. Default: 1.15.
    #[config(default = 1.15)]
    pub gamma: f64,
    /// Compound coefficient; negative values scale the baseline down.
    pub phi: f64,
}

impl CompoundScaling {
    /// Depth coefficient `alpha^phi`.
    pub fn depth_coefficient(&self) -> f64 {
        self.alpha.powf(self.phi)
    }

    /// Width coefficient `beta^phi`.
    pub fn width_coefficient(&self) -> f64 {
        self.beta.powf(self.phi)
    }

    /// Resolution coefficient `gamma^phi`.
    pub fn resolution_coefficient(&self) -> f64 {
        self.gamma.powf(self.phi)
    }

    /// The input resolution for a baseline trained at `base`: `round(base * gamma^phi)`.
    pub fn resolution(&self, base: usize) -> usize {
        (base as f64 * self.resolution_coefficient()).round() as usize
    }

    /// How much FLOPs grow by the rule: `(alpha * beta^2 * gamma^2)^phi`.
    pub fn flops_factor(&self) -> f64 {
        (self.alpha * self.beta.powi(2) * self.gamma.powi(2)).powf(self.phi)
    }

    /// Checks `alpha`, `beta`, `gamma` are finite and `>= 1` and `phi` is finite.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, value) in [
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("gamma", self.gamma),
        ] {
            if !value.is_finite() || value < 1.0 {
                return Err(Error::InvalidConfig(format!(
                    "compound scaling {name} must be finite and >= 1, got {value}"
                )));
            }
        }
        if !self.phi.is_finite() {
            return Err(Error::InvalidConfig(format!(
                "compound scaling phi must be finite, got {}",
                self.phi
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_channels_matches_make_divisible() {
        // B2 (w = 1.1): 40 * 1.1 = 44 -> int(48) // 8 * 8 = 48; 80 * 1.1 = 88 -> 88.
        assert_eq!(round_channels(40, 1.1), 48);
        assert_eq!(round_channels(80, 1.1), 88);
        // B3 (w = 1.2): 16 * 1.2 = 19.2 -> int(23.2) // 8 * 8 = 16 < 0.9 * 19.2 = 17.28 -> 24.
        assert_eq!(round_channels(16, 1.2), 24);
        // B4 (w = 1.4): 40 * 1.4 = 56 -> 56; 112 * 1.4 = 156.8 -> 160.
        assert_eq!(round_channels(40, 1.4), 56);
        assert_eq!(round_channels(112, 1.4), 160);
        // Never below the divisor: 16 * 0.1 = 1.6 -> 8.
        assert_eq!(round_channels(16, 0.1), 8);
        // Identity on multiples of 8.
        assert_eq!(round_channels(320, 1.0), 320);
    }

    #[test]
    fn v2_base_rounds_without_the_ten_percent_limit() {
        // tf_efficientnetv2_b3 (w = 1.2): stage 1 keeps 16 (19.2 rounds down, no +8),
        // stage 2 32 * 1.2 = 38.4 -> 40, stage 6 192 * 1.2 = 230.4 -> 232 (timm's channels).
        assert_eq!(round_channels_with_limit(16, 1.2, 0.0), 16);
        assert_eq!(round_channels_with_limit(32, 1.2, 0.0), 40);
        assert_eq!(round_channels_with_limit(192, 1.2, 0.0), 232);
        // The default limit is the plain rule.
        assert_eq!(
            round_channels_with_limit(16, 1.2, DEFAULT_ROUND_LIMIT),
            round_channels(16, 1.2)
        );
    }

    #[test]
    fn round_repeats_is_ceil() {
        // B1 (d = 1.1): 1 -> ceil(1.1) = 2, 3 -> ceil(3.3) = 4, 4 -> ceil(4.4) = 5.
        assert_eq!(round_repeats(1, 1.1), 2);
        assert_eq!(round_repeats(3, 1.1), 4);
        assert_eq!(round_repeats(4, 1.1), 5);
        // B7 (d = 3.1): 4 -> ceil(12.4) = 13.
        assert_eq!(round_repeats(4, 3.1), 13);
        assert_eq!(round_repeats(2, 1.0), 2);
        assert_eq!(round_repeats(3, 0.0), 0);
    }

    #[test]
    fn coefficients_follow_eq_3() {
        let s = CompoundScaling::new(1.0);
        assert_eq!(s.depth_coefficient(), 1.2);
        assert_eq!(s.width_coefficient(), 1.1);
        assert_eq!(s.resolution(224), 258); // 224 * 1.15 = 257.6
        // 1.2 * 1.1^2 * 1.15^2 = 1.920 ~ 2
        assert!((s.flops_factor() - 1.92027).abs() < 1e-5);
    }

    #[test]
    fn negative_phi_scales_down() {
        let s = CompoundScaling::new(-1.0);
        assert!(s.validate().is_ok());
        assert!(s.depth_coefficient() < 1.0 && s.width_coefficient() < 1.0);
        assert_eq!(s.resolution(224), 195); // 224 / 1.15 = 194.78
    }

    #[test]
    fn invalid_bases_are_rejected_with_exact_messages() {
        let err = CompoundScaling::new(1.0)
            .with_beta(0.9)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid EfficientNet config: compound scaling beta must be finite and >= 1, got 0.9"
        );
        let err = CompoundScaling::new(1.0)
            .with_alpha(f64::NAN)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid EfficientNet config: compound scaling alpha must be finite and >= 1, got NaN"
        );
        let err = CompoundScaling::new(f64::INFINITY).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid EfficientNet config: compound scaling phi must be finite, got inf"
        );
    }
}
