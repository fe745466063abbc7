//! The published variants: EfficientNet-B0..B8, L2, EfficientNet-Lite0..4 and
//! EfficientNetV2-S, M, L, XL and B0..B3.

use core::fmt;
use core::str::FromStr;

use burn::tensor::Device;

use crate::config::{
    EfficientNetConfig, StageConfig, V2_BASE_STAGES, V2_L_STAGES, V2_M_STAGES, V2_S_STAGES,
    V2_XL_STAGES,
};
use crate::error::Error;
use crate::model::activation::Activation;
use crate::model::efficientnet::EfficientNet;

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

/// A V2 family entry: stage table, stem, rounding limit and training size; the evaluation
/// size and the last stage's dropout are the row's own resolution and dropout.
const fn v2(
    stages: &'static [StageConfig],
    stem_channels: usize,
    channel_round_limit: f64,
    train: usize,
) -> V2Family {
    V2Family {
        stages,
        stem_channels,
        channel_round_limit,
        train,
    }
}

/// [`Family::V2`] before the row's resolution and dropout complete it.
#[derive(Clone, Copy)]
struct V2Family {
    stages: &'static [StageConfig],
    stem_channels: usize,
    channel_round_limit: f64,
    train: usize,
}

/// What the table's family column holds.
#[derive(Clone, Copy)]
enum Row {
    V1,
    Lite,
    V2(V2Family),
}

const fn preset(
    variant: Variant,
    name: &'static str,
    (width, depth, resolution, dropout): (f64, f64, usize, f64),
    row: Row,
) -> Preset {
    let family = match row {
        Row::V1 => Family::V1,
        Row::Lite => Family::Lite,
        Row::V2(v2) => Family::V2(V2Spec {
            stages: v2.stages,
            stem_channels: v2.stem_channels,
            channel_round_limit: v2.channel_round_limit,
            progressive: ProgressiveLearning {
                min_resolution: 128,
                max_resolution: v2.train,
                eval_resolution: resolution,
                min_dropout: 0.1,
                max_dropout: dropout,
            },
        }),
    };
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

/// The table of published variants: one row each, from which the [`Variant`] enum,
/// [`PRESETS`], the `EfficientNetConfig::b0()`-style constructors and the
/// `EfficientNet::b0(&device)`-style ones are all generated. Adding a variant is one row.
macro_rules! variants {
    ($(
        $(#[$doc:meta])*
        $variant:ident $name:literal $constructor:ident: $numbers:expr, $row:expr;
    )*) => {
        /// A published EfficientNet variant.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Variant {
            $($(#[$doc])* $variant,)*
        }

        /// The published (width, depth, resolution, dropout) of every variant, from the TF
        /// reference (`efficientnet_builder.py`, `lite/efficientnet_lite_builder.py`,
        /// `efficientnetv2/effnetv2_configs.py`) and timm. The V1 multipliers were
        /// hand-rounded by the authors and differ from
        /// [`CompoundScaling`](crate::CompoundScaling). V2 rows carry their own stage table,
        /// stem and training size.
        pub const PRESETS: [Preset; [$(Variant::$variant),*].len()] = [
            $(preset(Variant::$variant, $name, $numbers, $row),)*
        ];

        impl EfficientNetConfig {
            $(
                #[doc = concat!("The published `", $name, "` config; see [`Variant::config`].")]
                pub fn $constructor() -> Self {
                    Variant::$variant.config()
                }
            )*
        }

        impl EfficientNet {
            $(
                #[doc = concat!(
                    "The published `", $name, "` ([`Variant::", stringify!($variant),
                    "`]) with 1000 classes and fresh weights (initialised as torchvision does)."
                )]
                pub fn $constructor(device: &Device) -> Self {
                    Variant::$variant.config().init(device)
                }
            )*
        }
    };
}

use Row::{Lite, V1};

variants! {
    //                          (width, depth, res, dropout)  family: stages, stem, limit, train
    /// EfficientNet-B0, the searched baseline.
    B0 "b0" b0: (1.0, 1.0, 224, 0.2), V1;
    /// EfficientNet-B1.
    B1 "b1" b1: (1.0, 1.1, 240, 0.2), V1;
    /// EfficientNet-B2.
    B2 "b2" b2: (1.1, 1.2, 260, 0.3), V1;
    /// EfficientNet-B3.
    B3 "b3" b3: (1.2, 1.4, 300, 0.3), V1;
    /// EfficientNet-B4.
    B4 "b4" b4: (1.4, 1.8, 380, 0.4), V1;
    /// EfficientNet-B5.
    B5 "b5" b5: (1.6, 2.2, 456, 0.4), V1;
    /// EfficientNet-B6.
    B6 "b6" b6: (1.8, 2.6, 528, 0.5), V1;
    /// EfficientNet-B7.
    B7 "b7" b7: (2.0, 3.1, 600, 0.5), V1;
    /// EfficientNet-B8 (AdvProp).
    B8 "b8" b8: (2.2, 3.6, 672, 0.5), V1;
    /// EfficientNet-L2 (Noisy Student).
    L2 "l2" l2: (4.3, 5.3, 800, 0.5), V1;
    /// EfficientNet-Lite0: no SE, ReLU6, fixed stem and head.
    Lite0 "lite0" lite0: (1.0, 1.0, 224, 0.2), Lite;
    /// EfficientNet-Lite1.
    Lite1 "lite1" lite1: (1.0, 1.1, 240, 0.2), Lite;
    /// EfficientNet-Lite2.
    Lite2 "lite2" lite2: (1.1, 1.2, 260, 0.3), Lite;
    /// EfficientNet-Lite3.
    Lite3 "lite3" lite3: (1.2, 1.4, 280, 0.3), Lite;
    /// EfficientNet-Lite4.
    Lite4 "lite4" lite4: (1.4, 1.8, 300, 0.3), Lite;
    /// EfficientNetV2-S (Tan & Le, ICML 2021).
    V2S "v2-s" v2_s: (1.0, 1.0, 384, 0.2), Row::V2(v2(&V2_S_STAGES, 24, 0.9, 300));
    /// EfficientNetV2-M.
    V2M "v2-m" v2_m: (1.0, 1.0, 480, 0.3), Row::V2(v2(&V2_M_STAGES, 24, 0.9, 384));
    /// EfficientNetV2-L.
    V2L "v2-l" v2_l: (1.0, 1.0, 480, 0.4), Row::V2(v2(&V2_L_STAGES, 32, 0.9, 384));
    /// EfficientNetV2-XL (ImageNet-21k pre-training in the reference).
    V2XL "v2-xl" v2_xl: (1.0, 1.0, 512, 0.4), Row::V2(v2(&V2_XL_STAGES, 32, 0.9, 384));
    /// EfficientNetV2-B0, the baseline of the small V2 models.
    V2B0 "v2-b0" v2_b0: (1.0, 1.0, 224, 0.2), Row::V2(v2(&V2_BASE_STAGES, 32, 0.0, 192));
    /// EfficientNetV2-B1.
    V2B1 "v2-b1" v2_b1: (1.0, 1.1, 240, 0.2), Row::V2(v2(&V2_BASE_STAGES, 32, 0.0, 192));
    /// EfficientNetV2-B2.
    V2B2 "v2-b2" v2_b2: (1.1, 1.2, 260, 0.3), Row::V2(v2(&V2_BASE_STAGES, 32, 0.0, 208));
    /// EfficientNetV2-B3.
    V2B3 "v2-b3" v2_b3: (1.2, 1.4, 300, 0.3), Row::V2(v2(&V2_BASE_STAGES, 32, 0.0, 240));
}

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

    /// The names of every variant in a short form, runs of numbered names folded:
    /// `b0..b8, l2, lite0..lite4, v2-s, ... or v2-b0..v2-b3` (what an unknown name's error
    /// lists).
    pub fn names_summary() -> String {
        // Runs of names that differ only in a trailing number counting up by one.
        let split = |name: &'static str| {
            let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let (stem, number) = name.split_at(name.len() - digits);
            (stem, number.parse::<u32>().ok())
        };
        let mut runs: Vec<(&str, &str, usize)> = Vec::new();
        for preset in &PRESETS {
            let (stem, number) = split(preset.name);
            match runs.last_mut() {
                Some((_, last, len))
                    if number.is_some()
                        && split(last) == (stem, number.map(|n| n.wrapping_sub(1))) =>
                {
                    *last = preset.name;
                    *len += 1;
                }
                _ => runs.push((preset.name, preset.name, 1)),
            }
        }
        let mut names: Vec<String> = runs
            .into_iter()
            .map(|(first, last, len)| match len {
                1 => first.to_string(),
                _ => format!("{first}..{last}"),
            })
            .collect();
        let last = names.pop().unwrap_or_default();
        match names.is_empty() {
            true => last,
            false => format!("{} or {last}", names.join(", ")),
        }
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
