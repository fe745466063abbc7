//! The published variants: EfficientNet-B0..B8, L2 and EfficientNet-Lite0..4.

use core::fmt;
use core::str::FromStr;

use crate::config::EfficientNetConfig;
use crate::error::Error;
use crate::model::activation::Activation;

/// A published EfficientNet variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// EfficientNet-B0, the searched baseline.
    B0,
    /// EfficientNet-B1.
    B1,
    /// EfficientNet-B2.
    B2,
    /// EfficientNet-B3.
    B3,
    /// EfficientNet-B4.
    B4,
    /// EfficientNet-B5.
    B5,
    /// EfficientNet-B6.
    B6,
    /// EfficientNet-B7.
    B7,
    /// EfficientNet-B8 (AdvProp).
    B8,
    /// EfficientNet-L2 (Noisy Student).
    L2,
    /// EfficientNet-Lite0: no SE, ReLU6, fixed stem and head.
    Lite0,
    /// EfficientNet-Lite1.
    Lite1,
    /// EfficientNet-Lite2.
    Lite2,
    /// EfficientNet-Lite3.
    Lite3,
    /// EfficientNet-Lite4.
    Lite4,
}

/// A row of the published table: the multipliers the authors chose for a variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    /// The variant.
    pub variant: Variant,
    /// Lower-case name, as accepted by `Variant::from_str`.
    pub name: &'static str,
    /// Width multiplier.
    pub width: f64,
    /// Depth multiplier.
    pub depth: f64,
    /// Training resolution.
    pub resolution: usize,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Whether it is a Lite model (no SE, ReLU6, fixed stem/head and edge repeats).
    pub lite: bool,
}

const fn preset(
    variant: Variant,
    name: &'static str,
    width: f64,
    depth: f64,
    resolution: usize,
    dropout: f64,
    lite: bool,
) -> Preset {
    Preset {
        variant,
        name,
        width,
        depth,
        resolution,
        dropout,
        lite,
    }
}

/// The published (width, depth, resolution, dropout) of every variant, from the TF reference
/// (`efficientnet_builder.py`, `lite/efficientnet_lite_builder.py`) and timm. These were
/// hand-rounded by the authors and differ from [`CompoundScaling`](crate::CompoundScaling).
pub const PRESETS: [Preset; 15] = [
    //                    name      width depth  res  dropout lite
    preset(Variant::B0, "b0", 1.0, 1.0, 224, 0.2, false),
    preset(Variant::B1, "b1", 1.0, 1.1, 240, 0.2, false),
    preset(Variant::B2, "b2", 1.1, 1.2, 260, 0.3, false),
    preset(Variant::B3, "b3", 1.2, 1.4, 300, 0.3, false),
    preset(Variant::B4, "b4", 1.4, 1.8, 380, 0.4, false),
    preset(Variant::B5, "b5", 1.6, 2.2, 456, 0.4, false),
    preset(Variant::B6, "b6", 1.8, 2.6, 528, 0.5, false),
    preset(Variant::B7, "b7", 2.0, 3.1, 600, 0.5, false),
    preset(Variant::B8, "b8", 2.2, 3.6, 672, 0.5, false),
    preset(Variant::L2, "l2", 4.3, 5.3, 800, 0.5, false),
    preset(Variant::Lite0, "lite0", 1.0, 1.0, 224, 0.2, true),
    preset(Variant::Lite1, "lite1", 1.0, 1.1, 240, 0.2, true),
    preset(Variant::Lite2, "lite2", 1.1, 1.2, 260, 0.3, true),
    preset(Variant::Lite3, "lite3", 1.2, 1.4, 280, 0.3, true),
    preset(Variant::Lite4, "lite4", 1.4, 1.8, 300, 0.3, true),
];

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 15] = {
        let mut all = [Variant::B0; 15];
        let mut i = 0;
        while i < PRESETS.len() {
            all[i] = PRESETS[i].variant;
            i += 1;
        }
        all
    };

    /// The variant's row of [`PRESETS`].
    pub fn preset(self) -> &'static Preset {
        PRESETS
            .iter()
            .find(|p| p.variant == self)
            .unwrap_or_else(|| unreachable!("PRESETS has a row for every variant"))
    }

    /// Lower-case name: `b0` ... `b8`, `l2`, `lite0` ... `lite4`.
    pub fn name(self) -> &'static str {
        self.preset().name
    }

    /// The variant's config with a 1000-class head and PyTorch-native settings (symmetric
    /// padding, BN epsilon 1e-5, momentum 0.1); weight sources change those fields.
    pub fn config(self) -> EfficientNetConfig {
        let p = self.preset();
        let config = EfficientNetConfig::new()
            .with_width(p.width)
            .with_depth(p.depth)
            .with_resolution(p.resolution)
            .with_dropout(p.dropout);
        if p.lite {
            config
                .with_se_ratio(0.0)
                .with_activation(Activation::ReLU6)
                .with_fixed_stem_head(true)
                .with_fixed_edge_repeats(true)
        } else {
            config
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = Error;

    /// Parses `b3`, `B3`, `efficientnet-b3`, `efficientnet_b3` or `lite2`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.to_ascii_lowercase();
        let name = lower
            .strip_prefix("efficientnet")
            .map(|rest| rest.trim_start_matches(['-', '_']))
            .unwrap_or(&lower);
        PRESETS
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.variant)
            .ok_or_else(|| Error::UnknownVariant(s.to_string()))
    }
}

macro_rules! preset_constructors {
    ($($fn_name:ident => $variant:ident),* $(,)?) => {
        impl EfficientNetConfig {
            $(
                #[doc = concat!("The published `", stringify!($fn_name), "` config; see [`Variant::config`].")]
                pub fn $fn_name() -> Self {
                    Variant::$variant.config()
                }
            )*
        }
    };
}

preset_constructors!(
    b0 => B0, b1 => B1, b2 => B2, b3 => B3, b4 => B4, b5 => B5, b6 => B6, b7 => B7, b8 => B8,
    l2 => L2, lite0 => Lite0, lite1 => Lite1, lite2 => Lite2, lite3 => Lite3, lite4 => Lite4,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for variant in Variant::ALL {
            assert_eq!(variant.name().parse::<Variant>().unwrap(), variant);
        }
        assert_eq!("EfficientNet-B3".parse::<Variant>().unwrap(), Variant::B3);
        assert_eq!(
            "efficientnet_lite2".parse::<Variant>().unwrap(),
            Variant::Lite2
        );
        assert_eq!(
            "b9".parse::<Variant>().unwrap_err().to_string(),
            "unknown EfficientNet variant \"b9\" (expected b0..b8, l2 or lite0..lite4)"
        );
    }
}
