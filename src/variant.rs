//! The published variants: EfficientNet-B0..B8, L2, EfficientNet-Lite0..4 and
//! EfficientNetV2-S, M, L, XL and B0..B3.

use core::fmt;
use core::str::FromStr;

use crate::config::{
    EfficientNetConfig, StageConfig, V2_BASE_STAGES, V2_L_STAGES, V2_M_STAGES, V2_S_STAGES,
    V2_XL_STAGES,
};
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
    /// EfficientNetV2-S (Tan & Le, ICML 2021).
    V2S,
    /// EfficientNetV2-M.
    V2M,
    /// EfficientNetV2-L.
    V2L,
    /// EfficientNetV2-XL (ImageNet-21k pre-training in the reference).
    V2XL,
    /// EfficientNetV2-B0, the baseline of the small V2 models.
    V2B0,
    /// EfficientNetV2-B1.
    V2B1,
    /// EfficientNetV2-B2.
    V2B2,
    /// EfficientNetV2-B3.
    V2B3,
}

/// The largest image EfficientNetV2's scaling allows for inference (paper, Section 4.3:
/// "we restrict the maximum inference image size to 480"); XL, made for ImageNet-21k, is
/// evaluated at 512 in the TF reference and timm.
pub const V2_MAX_RESOLUTION: usize = 480;

/// EfficientNetV2's progressive learning (paper, Section 5 and Table 6): training starts on
/// small images with weak regularisation, and both grow stage by stage up to the final
/// training size; evaluation runs at a larger size still. Metadata for training recipes;
/// the model runs at any size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProgressiveLearning {
    /// Image size of the first training stage (128 in the paper and the TF reference).
    pub min_resolution: usize,
    /// Image size of the last training stage (the TF reference's `train_size`).
    pub max_resolution: usize,
    /// Evaluation image size (the TF reference's `eval_size`, torchvision's and timm's
    /// test input size).
    pub eval_resolution: usize,
    /// Dropout of the first training stage (0.1 in the paper).
    pub min_dropout: f64,
    /// Dropout of the last training stage (the preset's dropout).
    pub max_dropout: f64,
}

/// What an EfficientNetV2 preset has of its own: its stage table, stem width, channel
/// rounding and progressive-learning schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct V2Spec {
    /// The unscaled stage table (e.g. [`V2_S_STAGES`]).
    pub stages: &'static [StageConfig],
    /// Stem channels before width scaling.
    pub stem_channels: usize,
    /// [`EfficientNetConfig::channel_round_limit`]: 0 for B0..B3, 0.9 otherwise.
    pub channel_round_limit: f64,
    /// The training-size schedule.
    pub progressive: ProgressiveLearning,
}

/// The architecture family of a preset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Family {
    /// EfficientNet (B0..B8, L2): the B0 table scaled, SE and SiLU everywhere.
    V1,
    /// EfficientNet-Lite: no SE, ReLU6, fixed stem and head and edge repeats.
    Lite,
    /// EfficientNetV2: Fused-MBConv early stages and a table of its own.
    V2(V2Spec),
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
    /// Resolution the variant is evaluated at (for V1 and Lite also the training
    /// resolution; V2 trains progressively smaller, see [`ProgressiveLearning`]).
    pub resolution: usize,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// The architecture family.
    pub family: Family,
}

const fn preset(
    variant: Variant,
    name: &'static str,
    width: f64,
    depth: f64,
    resolution: usize,
    dropout: f64,
    family: Family,
) -> Preset {
    Preset {
        variant,
        name,
        width,
        depth,
        resolution,
        dropout,
        family,
    }
}

/// A V2 family entry: stage table, stem, rounding limit, and (train, eval) sizes.
const fn v2(
    stages: &'static [StageConfig],
    stem_channels: usize,
    channel_round_limit: f64,
    train: usize,
    eval: usize,
    dropout: f64,
) -> Family {
    Family::V2(V2Spec {
        stages,
        stem_channels,
        channel_round_limit,
        progressive: ProgressiveLearning {
            min_resolution: 128,
            max_resolution: train,
            eval_resolution: eval,
            min_dropout: 0.1,
            max_dropout: dropout,
        },
    })
}

use Family::{Lite, V1};

/// The published (width, depth, resolution, dropout) of every variant, from the TF reference
/// (`efficientnet_builder.py`, `lite/efficientnet_lite_builder.py`,
/// `efficientnetv2/effnetv2_configs.py`) and timm. The V1 multipliers were hand-rounded by the
/// authors and differ from [`CompoundScaling`](crate::CompoundScaling). V2 rows carry their
/// own stage table, stem and (train, eval) sizes.
pub const PRESETS: [Preset; 23] = [
    //                    name      width depth  res  dropout family
    preset(Variant::B0, "b0", 1.0, 1.0, 224, 0.2, V1),
    preset(Variant::B1, "b1", 1.0, 1.1, 240, 0.2, V1),
    preset(Variant::B2, "b2", 1.1, 1.2, 260, 0.3, V1),
    preset(Variant::B3, "b3", 1.2, 1.4, 300, 0.3, V1),
    preset(Variant::B4, "b4", 1.4, 1.8, 380, 0.4, V1),
    preset(Variant::B5, "b5", 1.6, 2.2, 456, 0.4, V1),
    preset(Variant::B6, "b6", 1.8, 2.6, 528, 0.5, V1),
    preset(Variant::B7, "b7", 2.0, 3.1, 600, 0.5, V1),
    preset(Variant::B8, "b8", 2.2, 3.6, 672, 0.5, V1),
    preset(Variant::L2, "l2", 4.3, 5.3, 800, 0.5, V1),
    preset(Variant::Lite0, "lite0", 1.0, 1.0, 224, 0.2, Lite),
    preset(Variant::Lite1, "lite1", 1.0, 1.1, 240, 0.2, Lite),
    preset(Variant::Lite2, "lite2", 1.1, 1.2, 260, 0.3, Lite),
    preset(Variant::Lite3, "lite3", 1.2, 1.4, 280, 0.3, Lite),
    preset(Variant::Lite4, "lite4", 1.4, 1.8, 300, 0.3, Lite),
    //                                                    stages     stem limit train eval dropout
    preset(
        Variant::V2S,
        "v2-s",
        1.0,
        1.0,
        384,
        0.2,
        v2(&V2_S_STAGES, 24, 0.9, 300, 384, 0.2),
    ),
    preset(
        Variant::V2M,
        "v2-m",
        1.0,
        1.0,
        480,
        0.3,
        v2(&V2_M_STAGES, 24, 0.9, 384, 480, 0.3),
    ),
    preset(
        Variant::V2L,
        "v2-l",
        1.0,
        1.0,
        480,
        0.4,
        v2(&V2_L_STAGES, 32, 0.9, 384, 480, 0.4),
    ),
    preset(
        Variant::V2XL,
        "v2-xl",
        1.0,
        1.0,
        512,
        0.4,
        v2(&V2_XL_STAGES, 32, 0.9, 384, 512, 0.4),
    ),
    preset(
        Variant::V2B0,
        "v2-b0",
        1.0,
        1.0,
        224,
        0.2,
        v2(&V2_BASE_STAGES, 32, 0.0, 192, 224, 0.2),
    ),
    preset(
        Variant::V2B1,
        "v2-b1",
        1.0,
        1.1,
        240,
        0.2,
        v2(&V2_BASE_STAGES, 32, 0.0, 192, 240, 0.2),
    ),
    preset(
        Variant::V2B2,
        "v2-b2",
        1.1,
        1.2,
        260,
        0.3,
        v2(&V2_BASE_STAGES, 32, 0.0, 208, 260, 0.3),
    ),
    preset(
        Variant::V2B3,
        "v2-b3",
        1.2,
        1.4,
        300,
        0.3,
        v2(&V2_BASE_STAGES, 32, 0.0, 240, 300, 0.3),
    ),
];

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; PRESETS.len()] = {
        let mut all = [Variant::B0; PRESETS.len()];
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

    /// Lower-case name: `b0` ... `b8`, `l2`, `lite0` ... `lite4`, `v2-s`, `v2-m`, `v2-l`,
    /// `v2-xl`, `v2-b0` ... `v2-b3`.
    pub fn name(self) -> &'static str {
        self.preset().name
    }

    /// Whether it is an EfficientNet-Lite model.
    pub fn is_lite(self) -> bool {
        self.preset().family == Family::Lite
    }

    /// Whether it is an EfficientNetV2 model.
    pub fn is_v2(self) -> bool {
        matches!(self.preset().family, Family::V2(_))
    }

    /// EfficientNetV2's progressive-learning sizes; `None` for V1 and Lite.
    pub fn progressive_learning(self) -> Option<ProgressiveLearning> {
        match self.preset().family {
            Family::V2(spec) => Some(spec.progressive),
            Family::V1 | Family::Lite => None,
        }
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
        match p.family {
            Family::V1 => config,
            Family::Lite => config
                .with_se_ratio(0.0)
                .with_activation(Activation::ReLU6)
                .with_fixed_stem_head(true)
                .with_fixed_edge_repeats(true),
            Family::V2(spec) => config
                .with_stages(spec.stages.to_vec())
                .with_stem_channels(spec.stem_channels)
                .with_channel_round_limit(spec.channel_round_limit),
        }
    }
}

serde_by_name!(Variant);

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = Error;

    /// Parses `b3`, `B3`, `efficientnet-b3`, `efficientnet_b3`, `lite2`, `v2-s`,
    /// `efficientnet_v2_s` (torchvision) or `efficientnetv2_s` (timm).
    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.to_ascii_lowercase().replace('_', "-");
        let name = lower
            .strip_prefix("efficientnet")
            .map(|rest| rest.trim_start_matches('-'))
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
    v2_s => V2S, v2_m => V2M, v2_l => V2L, v2_xl => V2XL,
    v2_b0 => V2B0, v2_b1 => V2B1, v2_b2 => V2B2, v2_b3 => V2B3,
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
        for name in [
            "efficientnet_v2_s",
            "efficientnetv2_s",
            "EfficientNetV2-S",
            "v2_s",
        ] {
            assert_eq!(name.parse::<Variant>().unwrap(), Variant::V2S, "{name}");
        }
        assert_eq!(
            "efficientnetv2_b3".parse::<Variant>().unwrap(),
            Variant::V2B3
        );
        assert_eq!(
            "b9".parse::<Variant>().unwrap_err().to_string(),
            "unknown EfficientNet variant \"b9\" (expected b0..b8, l2, lite0..lite4, \
             v2-s, v2-m, v2-l, v2-xl or v2-b0..v2-b3)"
        );
    }
}
