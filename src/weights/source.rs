//! Where weights come from, and the config fields that follows from it.

use core::fmt;
use core::str::FromStr;

use crate::config::{EfficientNetConfig, HeadRule};
use crate::error::Error;
use crate::model::conv_bn_act::Padding;
use crate::weights::layout::KeyLayout;

/// The library a checkpoint comes from. It fixes the key layout *and* the config fields
/// that must match how the weights were trained:
///
/// | source | layout | padding | BN eps | BN momentum | head rule |
/// |---|---|---|---|---|---|
/// | `Torchvision` B0-B4 | torchvision | symmetric | 1e-5 | 0.1 | 4 x last stage |
/// | `Torchvision` B5-B7 (width >= 1.6) | torchvision | symmetric | 1e-3 | 0.01 | 4 x last stage |
/// | `Torchvision` V2-S/M/L | torchvision | symmetric | 1e-3 | 0.1 | 1280 |
/// | `Timm` (`efficientnet_*`) | timm | symmetric | 1e-5 | 0.1 | `round(1280 w)` |
/// | `TimmTf` (`tf_efficientnet_*`, `tf_efficientnet_lite*`, `tf_efficientnetv2_*`) | timm | TF "SAME" | 1e-3 | 0.1 | `round(1280 w)` |
/// | `EfficientNetPytorch` (lukemelas, `efficientnet-b*`) | efficientnet_pytorch | TF "SAME" | 1e-3 | 0.01 | `round(1280 w)` |
///
/// Loading torchvision weights with TF padding or the wrong epsilon runs without complaint
/// and gives wrong numbers; that is why this is not left to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightSource {
    /// torchvision `efficientnet_b0` .. `efficientnet_b7` and `efficientnet_v2_s/m/l`.
    Torchvision,
    /// timm `efficientnet_*` and `efficientnetv2_*`, trained in PyTorch.
    Timm,
    /// timm `tf_efficientnet_*`, `tf_efficientnet_lite*` and `tf_efficientnetv2_*`, ported
    /// from TensorFlow.
    TimmTf,
    /// efficientnet_pytorch (lukemelas) `efficientnet-b0` .. `b8`, ported from TensorFlow,
    /// and Lite checkpoints saved in its layout.
    EfficientNetPytorch,
}

impl WeightSource {
    /// Every source.
    pub const ALL: [WeightSource; 4] = [
        WeightSource::Torchvision,
        WeightSource::Timm,
        WeightSource::TimmTf,
        WeightSource::EfficientNetPytorch,
    ];

    /// The key layout of the source's checkpoints.
    pub fn layout(self) -> KeyLayout {
        match self {
            WeightSource::Torchvision => KeyLayout::Torchvision,
            WeightSource::Timm | WeightSource::TimmTf => KeyLayout::Timm,
            WeightSource::EfficientNetPytorch => KeyLayout::EfficientNetPytorch,
        }
    }

    /// `config` with the padding, batch-norm and head settings the source's weights need.
    pub fn configure(self, config: EfficientNetConfig) -> EfficientNetConfig {
        let (padding, eps, momentum, head) = match self {
            // torchvision builds every V2 with `BatchNorm2d(eps=1e-3)` and a 1280-channel
            // head (`last_channel`), not four times the last stage.
            WeightSource::Torchvision if config.is_v2() => {
                (Padding::Symmetric, 1e-3, 0.1, HeadRule::RoundFilters)
            }
            // torchvision builds B5-B7 with `BatchNorm2d(eps=1e-3, momentum=0.01)` (their
            // weights were ported from TF); B0-B4 use PyTorch's defaults.
            WeightSource::Torchvision if config.width >= 1.6 => {
                (Padding::Symmetric, 1e-3, 0.01, HeadRule::FourTimesLast)
            }
            WeightSource::Torchvision => (Padding::Symmetric, 1e-5, 0.1, HeadRule::FourTimesLast),
            WeightSource::Timm => (Padding::Symmetric, 1e-5, 0.1, HeadRule::RoundFilters),
            WeightSource::TimmTf => (Padding::TfSame, 1e-3, 0.1, HeadRule::RoundFilters),
            WeightSource::EfficientNetPytorch => {
                (Padding::TfSame, 1e-3, 0.01, HeadRule::RoundFilters)
            }
        };
        config
            .with_padding(padding)
            .with_bn_epsilon(eps)
            .with_bn_momentum(momentum)
            .with_head_rule(head)
    }

    /// Lower-case name, as accepted by `WeightSource::from_str`.
    pub fn name(self) -> &'static str {
        match self {
            WeightSource::Torchvision => "torchvision",
            WeightSource::Timm => "timm",
            WeightSource::TimmTf => "timm-tf",
            WeightSource::EfficientNetPytorch => "efficientnet-pytorch",
        }
    }
}

serde_by_name!(WeightSource);

impl fmt::Display for WeightSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        WeightSource::ALL
            .into_iter()
            .find(|source| source.name() == s.to_ascii_lowercase().replace('_', "-"))
            .ok_or_else(|| Error::UnknownWeightSource(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_epsilon_depends_on_the_variant() {
        let b4 = WeightSource::Torchvision.configure(EfficientNetConfig::b4());
        let b5 = WeightSource::Torchvision.configure(EfficientNetConfig::b5());
        assert_eq!((b4.bn_epsilon, b4.bn_momentum), (1e-5, 0.1));
        assert_eq!((b5.bn_epsilon, b5.bn_momentum), (1e-3, 0.01));
        assert_eq!(b5.padding, Padding::Symmetric);
    }

    #[test]
    fn torchvision_v2_has_tf_epsilon_and_a_1280_head() {
        let v2 = WeightSource::Torchvision.configure(EfficientNetConfig::v2_s());
        assert_eq!((v2.bn_epsilon, v2.bn_momentum), (1e-3, 0.1));
        assert_eq!(v2.scaled_head_channels(), 1280);
    }

    #[test]
    fn tf_ports_use_same_padding_and_tf_epsilon() {
        for source in [WeightSource::TimmTf, WeightSource::EfficientNetPytorch] {
            let config = source.configure(EfficientNetConfig::b0());
            assert_eq!((config.padding, config.bn_epsilon), (Padding::TfSame, 1e-3));
        }
    }

    #[test]
    fn names_round_trip() {
        for source in WeightSource::ALL {
            assert_eq!(source.name().parse::<WeightSource>().unwrap(), source);
        }
        assert_eq!(
            "keras".parse::<WeightSource>().unwrap_err().to_string(),
            "unknown weight source \"keras\" (expected torchvision, timm, timm-tf or efficientnet-pytorch)"
        );
    }
}
