//! [`EfficientNetConfig`]: the baseline stage table, the scaling multipliers and every
//! setting that depends on where the weights came from.

use burn::config::Config;

use crate::error::Error;
use crate::model::activation::Activation;
use crate::model::block::BlockConfig;
use crate::model::conv_bn_act::{ConvBnActConfig, LayerStyle, Padding};
use crate::model::fused_mbconv::FusedMBConvConfig;
use crate::model::mbconv::MBConvConfig;
use crate::preprocess::{Interpolation, Preprocess};
use crate::scaling::{
    CompoundScaling, DEFAULT_ROUND_LIMIT, round_channels_with_limit, round_repeats,
};

/// The kind of block a stage is made of.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum BlockKind {
    /// [`MBConv`](crate::model::MBConv): expansion 1x1, depthwise kxk, squeeze-excitation,
    /// projection 1x1 (EfficientNet, and the later stages of EfficientNetV2).
    MBConv,
    /// [`FusedMBConv`](crate::model::FusedMBConv): one full kxk convolution in place of the
    /// expansion and the depthwise convolution, no squeeze-excitation (the early stages of
    /// EfficientNetV2).
    FusedMBConv,
}

/// One stage of the baseline network: `repeats` blocks of one shape.
///
/// Only the first block of a stage has the stage's stride and changes the channel count.
#[derive(Config, Debug, PartialEq, Copy)]
pub struct StageConfig {
    /// Expansion ratio of the blocks (1 = MBConv1, 6 = MBConv6).
    pub expand_ratio: usize,
    /// Kernel size of the depthwise (MBConv) or full (Fused-MBConv) convolution.
    pub kernel_size: usize,
    /// Stride of the stage's first block.
    pub stride: usize,
    /// Input channels of the stage, before width scaling.
    pub in_channels: usize,
    /// Output channels of the stage, before width scaling.
    pub out_channels: usize,
    /// Number of blocks, before depth scaling.
    pub repeats: usize,
    /// The kind of block. Default: [`BlockKind::MBConv`].
    #[config(default = "BlockKind::MBConv")]
    pub block: BlockKind,
}

const fn stage(
    expand_ratio: usize,
    kernel_size: usize,
    stride: usize,
    in_channels: usize,
    out_channels: usize,
    repeats: usize,
) -> StageConfig {
    StageConfig {
        expand_ratio,
        kernel_size,
        stride,
        in_channels,
        out_channels,
        repeats,
        block: BlockKind::MBConv,
    }
}

/// A Fused-MBConv stage (EfficientNetV2).
const fn fused(
    expand_ratio: usize,
    kernel_size: usize,
    stride: usize,
    in_channels: usize,
    out_channels: usize,
    repeats: usize,
) -> StageConfig {
    StageConfig {
        block: BlockKind::FusedMBConv,
        ..stage(
            expand_ratio,
            kernel_size,
            stride,
            in_channels,
            out_channels,
            repeats,
        )
    }
}

/// The EfficientNet-B0 baseline, one row per MBConv stage: Table 1 of the paper.
///
/// The stem (3x3 conv, stride 2, 32 channels) and the head (1x1 conv to 1280 channels,
/// pooling, dropout, classifier) are [`EfficientNetConfig`] fields.
pub const B0_STAGES: [StageConfig; 7] = [
    //    expand kernel stride  in  out repeats
    stage(1, 3, 1, 32, 16, 1),
    stage(6, 3, 2, 16, 24, 2),
    stage(6, 5, 2, 24, 40, 2),
    stage(6, 3, 2, 40, 80, 3),
    stage(6, 5, 1, 80, 112, 3),
    stage(6, 5, 2, 112, 192, 4),
    stage(6, 3, 1, 192, 320, 1),
];

/// EfficientNetV2-S (Tan & Le, ICML 2021, Table 4; torchvision `efficientnet_v2_s`, timm
/// `efficientnetv2_s`): three Fused-MBConv stages, then MBConv stages with SE. Stem 24
/// channels, head 1280.
pub const V2_S_STAGES: [StageConfig; 6] = [
    //    expand kernel stride  in  out repeats
    fused(1, 3, 1, 24, 24, 2),
    fused(4, 3, 2, 24, 48, 4),
    fused(4, 3, 2, 48, 64, 4),
    stage(4, 3, 2, 64, 128, 6),
    stage(6, 3, 1, 128, 160, 9),
    stage(6, 3, 2, 160, 256, 15),
];

/// EfficientNetV2-M as the TF reference (`efficientnetv2/effnetv2_configs.py`), torchvision
/// and timm define it. Stem 24 channels, head 1280.
pub const V2_M_STAGES: [StageConfig; 7] = [
    fused(1, 3, 1, 24, 24, 3),
    fused(4, 3, 2, 24, 48, 5),
    fused(4, 3, 2, 48, 80, 5),
    stage(4, 3, 2, 80, 160, 7),
    stage(6, 3, 1, 160, 176, 14),
    stage(6, 3, 2, 176, 304, 18),
    stage(6, 3, 1, 304, 512, 5),
];

/// EfficientNetV2-L as the TF reference, torchvision and timm define it. Stem 32 channels,
/// head 1280.
pub const V2_L_STAGES: [StageConfig; 7] = [
    fused(1, 3, 1, 32, 32, 4),
    fused(4, 3, 2, 32, 64, 7),
    fused(4, 3, 2, 64, 96, 7),
    stage(4, 3, 2, 96, 192, 10),
    stage(6, 3, 1, 192, 224, 19),
    stage(6, 3, 2, 224, 384, 25),
    stage(6, 3, 1, 384, 640, 7),
];

/// EfficientNetV2-XL (ImageNet-21k only in the TF reference; timm `tf_efficientnetv2_xl`).
/// Stem 32 channels, head 1280.
pub const V2_XL_STAGES: [StageConfig; 7] = [
    fused(1, 3, 1, 32, 32, 4),
    fused(4, 3, 2, 32, 64, 8),
    fused(4, 3, 2, 64, 96, 8),
    stage(4, 3, 2, 96, 192, 16),
    stage(6, 3, 1, 192, 256, 24),
    stage(6, 3, 2, 256, 512, 32),
    stage(6, 3, 1, 512, 640, 8),
];

/// The EfficientNetV2-B0 baseline that V2-B1..B3 scale by width and depth (TF reference
/// `v2_base_block`, timm `tf_efficientnetv2_b*`). Stem 32 channels, head 1280.
pub const V2_BASE_STAGES: [StageConfig; 6] = [
    fused(1, 3, 1, 32, 16, 1),
    fused(4, 3, 2, 16, 32, 2),
    fused(4, 3, 2, 32, 48, 2),
    stage(4, 3, 2, 48, 96, 3),
    stage(6, 3, 1, 96, 112, 5),
    stage(6, 3, 2, 112, 192, 8),
];

/// One multi-scale feature map of [`EfficientNet::endpoints`](crate::EfficientNet::endpoints)
/// (timm's `feature_info`), from [`EfficientNetConfig::feature_info`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureInfo {
    /// The stage (0-based, over all stages, Fused-MBConv ones included) whose output it is.
    pub stage: usize,
    /// Channels of the map.
    pub channels: usize,
    /// How much smaller than the input it is: 2, 4, 8, 16 or 32 for the published variants.
    pub reduction: usize,
}

/// How the head's channel count follows the width multiplier.
///
/// The two rules agree on every published preset and differ on custom widths
/// (w = 1.13: 1440 vs 1448).
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum HeadRule {
    /// TF and timm: `round_channels(head_channels, width)`.
    RoundFilters,
    /// torchvision: four times the last stage's output channels.
    FourTimesLast,
}

/// Configuration of an [`EfficientNet`](crate::EfficientNet).
///
/// The published variants come from [`Variant`](crate::Variant) (`EfficientNetConfig::b3()`),
/// custom ones from [`EfficientNetConfig::from_scaling`]. Every field can be changed with its
/// `with_*` builder. [`validate`](Self::validate) says what is wrong with a config;
/// [`init`](Self::init) panics with that message and [`try_init`](Self::try_init) returns it.
#[derive(Config, Debug, PartialEq)]
pub struct EfficientNetConfig {
    /// Classes of the classifier. Default: 1000 (ImageNet-1k).
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width multiplier applied to every channel count. Default: 1.0.
    #[config(default = 1.0)]
    pub width: f64,
    /// Depth multiplier applied to every stage's repeats. Default: 1.0.
    #[config(default = 1.0)]
    pub depth: f64,
    /// Input resolution the variant is trained at (metadata; any size runs). Default: 224.
    #[config(default = 224)]
    pub resolution: usize,
    /// Dropout before the classifier. Default: 0.2.
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Stochastic-depth drop probability of the last block; block `i` of `n` drops with
    /// `stochastic_depth_prob * i / n`. Default: 0.2.
    #[config(default = 0.2)]
    pub stochastic_depth_prob: f64,
    /// The unscaled stage table. Default: [`B0_STAGES`].
    #[config(default = "B0_STAGES.to_vec()")]
    pub stages: Vec<StageConfig>,
    /// Stem output channels before width scaling. Default: 32.
    #[config(default = 32)]
    pub stem_channels: usize,
    /// Head channels before width scaling. Default: 1280.
    #[config(default = 1280)]
    pub head_channels: usize,
    /// Channels of the input image. Default: 3.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Squeeze-excitation ratio relative to each block's input channels; 0 disables SE.
    /// Default: 0.25.
    #[config(default = 0.25)]
    pub se_ratio: f64,
    /// Activation everywhere. Default: SiLU (swish).
    #[config(default = "Activation::SiLU")]
    pub activation: Activation,
    /// Keep the stem and head at `stem_channels` / `head_channels` whatever the width (Lite).
    /// Default: false.
    #[config(default = false)]
    pub fixed_stem_head: bool,
    /// Keep the first and last stages' repeats unscaled (Lite). Default: false.
    #[config(default = false)]
    pub fixed_edge_repeats: bool,
    /// How the head width scales. Default: [`HeadRule::RoundFilters`].
    #[config(default = "HeadRule::RoundFilters")]
    pub head_rule: HeadRule,
    /// Padding style: symmetric for PyTorch-trained weights, TF "SAME" for TF-ported ones.
    /// Default: [`Padding::Symmetric`].
    #[config(default = "Padding::Symmetric")]
    pub padding: Padding,
    /// Batch-norm epsilon: 1e-5 for PyTorch-trained weights, 1e-3 for TF-ported ones.
    /// Default: 1e-5.
    #[config(default = 1e-5)]
    pub bn_epsilon: f64,
    /// Batch-norm momentum in PyTorch's sense (TF's 0.99 is 0.01 here). Default: 0.1.
    #[config(default = 0.1)]
    pub bn_momentum: f64,
    /// How far below `channels * width` the width scaling may round stage, stem and head
    /// channels before adding 8 ([`round_channels_with_limit`]): 0.9 everywhere but
    /// EfficientNetV2-B0..B3, which use 0. Default: 0.9 ([`DEFAULT_ROUND_LIMIT`]).
    #[config(default = "DEFAULT_ROUND_LIMIT")]
    pub channel_round_limit: f64,
}

fn invalid(message: String) -> Error {
    Error::InvalidConfig(message)
}

/// Upper bounds a config must respect, far beyond every published model (L2: width 4.3,
/// depth 5.3, 800 px, 480M parameters) but low enough that a corrupt or hostile
/// `config.json` is refused instead of exhausting memory.
pub(crate) mod limits {
    /// Width and depth multipliers.
    pub const MULTIPLIER: f64 = 16.0;
    /// Classes of the classifier.
    pub const CLASSES: usize = 1_000_000;
    /// Input channels.
    pub const IN_CHANNELS: usize = 1024;
    /// Any channel count before scaling (stem, head, stages).
    pub const CHANNELS: usize = 16_384;
    /// Resolution metadata.
    pub const RESOLUTION: usize = 16_384;
    /// Stages.
    pub const STAGES: usize = 32;
    /// Blocks of one stage before scaling.
    pub const REPEATS: usize = 1_000;
    /// Kernel size.
    pub const KERNEL: usize = 31;
    /// Expansion ratio.
    pub const EXPAND: usize = 64;
    /// Trainable parameters of the scaled network: 4e9 (16 GB in f32).
    pub const PARAMS: usize = 4_000_000_000;
}

impl EfficientNetConfig {
    /// A custom model scaled from the B0 baseline by the paper's rule (Eq. 3):
    /// width `beta^phi`, depth `alpha^phi`, resolution `round(224 gamma^phi)`.
    ///
    /// This is **not** how the published B1..B7 were made (their multipliers were rounded by
    /// hand); use the presets for those.
    pub fn from_scaling(scaling: CompoundScaling) -> Result<Self, Error> {
        scaling.validate()?;
        let config = Self::new()
            .with_width(scaling.width_coefficient())
            .with_depth(scaling.depth_coefficient())
            .with_resolution(scaling.resolution(224));
        config.validate()?;
        Ok(config)
    }

    /// Parses a config saved as JSON ([`Config::save`], a saved
    /// model's `config.json`), including one saved before the V2 fields existed: a stage
    /// without `block` is MBConv, a missing `channel_round_limit` is 0.9. (Burn's `Config`
    /// deserialiser does not apply field defaults itself.)
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_str(text)?;
        if let Some(object) = value.as_object_mut() {
            object
                .entry("channel_round_limit")
                .or_insert(DEFAULT_ROUND_LIMIT.into());
            let stages = object.get_mut("stages").and_then(|s| s.as_array_mut());
            for stage in stages.into_iter().flatten() {
                if let Some(stage) = stage.as_object_mut() {
                    stage.entry("block").or_insert("MBConv".into());
                }
            }
        }
        serde_json::from_value(value)
    }

    /// Checks the config describes a buildable network within the crate's limits (width and
    /// depth multipliers at most 16, channels and resolution at most 16,384, at most 32
    /// stages and 4e9 parameters, ...); the error says exactly what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        self.checked_blocks().map(|_| ())
    }

    /// [`blocks`](Self::blocks), once the whole network is known to be within
    /// [`limits::PARAMS`]: what building a model starts from.
    pub(crate) fn checked_blocks(&self) -> Result<Vec<Vec<BlockConfig>>, Error> {
        let blocks = self.blocks()?;
        let params = self.params_of(&blocks);
        if params > limits::PARAMS {
            return Err(invalid(format!(
                "the network would have {params} parameters, over the limit of {}",
                limits::PARAMS
            )));
        }
        Ok(blocks)
    }

    fn validate_fields(&self) -> Result<(), Error> {
        for (name, value) in [
            ("num_classes", self.num_classes),
            ("in_channels", self.in_channels),
            ("stem_channels", self.stem_channels),
            ("head_channels", self.head_channels),
            ("resolution", self.resolution),
        ] {
            if value == 0 {
                return Err(invalid(format!("{name} must be at least 1, got 0")));
            }
        }
        for (name, value, limit) in [
            ("num_classes", self.num_classes, limits::CLASSES),
            ("in_channels", self.in_channels, limits::IN_CHANNELS),
            ("stem_channels", self.stem_channels, limits::CHANNELS),
            ("head_channels", self.head_channels, limits::CHANNELS),
            ("resolution", self.resolution, limits::RESOLUTION),
            ("the number of stages", self.stages.len(), limits::STAGES),
        ] {
            if value > limit {
                return Err(invalid(format!(
                    "{name} must be at most {limit}, got {value}"
                )));
            }
        }
        if !self.width.is_finite() || self.width <= 0.0 || self.width > limits::MULTIPLIER {
            return Err(invalid(format!(
                "width multiplier must be positive and at most {}, got {}",
                limits::MULTIPLIER,
                self.width
            )));
        }
        // A depth that is zero, negative or underflowed shows as a stage of 0 blocks.
        if !self.depth.is_finite() || self.depth > limits::MULTIPLIER {
            return Err(invalid(format!(
                "depth multiplier must be finite and at most {}, got {}",
                limits::MULTIPLIER,
                self.depth
            )));
        }
        for (name, value) in [
            ("dropout", self.dropout),
            ("stochastic_depth_prob", self.stochastic_depth_prob),
        ] {
            if !value.is_finite() || !(0.0..1.0).contains(&value) {
                return Err(invalid(format!("{name} must be in [0, 1), got {value}")));
            }
        }
        if !self.se_ratio.is_finite() || !(0.0..=1.0).contains(&self.se_ratio) {
            return Err(invalid(format!(
                "se_ratio must be in [0, 1], got {}",
                self.se_ratio
            )));
        }
        if !self.bn_epsilon.is_finite() || self.bn_epsilon <= 0.0 {
            return Err(invalid(format!(
                "bn_epsilon must be finite and positive, got {}",
                self.bn_epsilon
            )));
        }
        if !self.bn_momentum.is_finite() || !(0.0..=1.0).contains(&self.bn_momentum) {
            return Err(invalid(format!(
                "bn_momentum must be in [0, 1], got {}",
                self.bn_momentum
            )));
        }
        if !self.channel_round_limit.is_finite() || !(0.0..=1.0).contains(&self.channel_round_limit)
        {
            return Err(invalid(format!(
                "channel_round_limit must be in [0, 1], got {}",
                self.channel_round_limit
            )));
        }
        if self.stages.is_empty() {
            return Err(invalid("at least one stage is needed".to_string()));
        }
        if let Some(index) = self.stages.windows(2).position(|pair| {
            pair[0].block == BlockKind::MBConv && pair[1].block == BlockKind::FusedMBConv
        }) {
            return Err(invalid(format!(
                "stage {} is Fused-MBConv after an MBConv stage; Fused-MBConv stages must \
                 come first",
                index + 2
            )));
        }
        let mut previous_out = self.stem_channels;
        for (index, stage) in self.stages.iter().enumerate() {
            let n = index + 1;
            if stage.in_channels == 0 || stage.out_channels == 0 {
                return Err(invalid(format!(
                    "stage {n} has zero channels ({} -> {})",
                    stage.in_channels, stage.out_channels
                )));
            }
            if stage.in_channels != previous_out {
                return Err(invalid(format!(
                    "stage {n} takes {} channels but receives {previous_out}",
                    stage.in_channels
                )));
            }
            if stage.kernel_size % 2 == 0 {
                return Err(invalid(format!(
                    "stage {n} has kernel size {}; kernel sizes must be odd",
                    stage.kernel_size
                )));
            }
            if stage.stride != 1 && stage.stride != 2 {
                return Err(invalid(format!(
                    "stage {n} has stride {}; strides must be 1 or 2",
                    stage.stride
                )));
            }
            if stage.expand_ratio == 0 {
                return Err(invalid(format!("stage {n} has expand ratio 0")));
            }
            for (what, value, limit) in [
                ("channels", stage.out_channels, limits::CHANNELS),
                ("repeats", stage.repeats, limits::REPEATS),
                ("kernel size", stage.kernel_size, limits::KERNEL),
                ("expand ratio", stage.expand_ratio, limits::EXPAND),
            ] {
                if value > limit {
                    return Err(invalid(format!(
                        "stage {n} {what} must be at most {limit}, got {value}"
                    )));
                }
            }
            if stage.repeats == 0 {
                return Err(invalid(format!("stage {n} has 0 repeats")));
            }
            previous_out = stage.out_channels;
        }
        Ok(())
    }

    /// The eval transform to use when the weights bring none (no registry entry): bicubic,
    /// center crop at [`resolution`](Self::resolution). Lite models (fixed stem and head,
    /// ReLU6, no SE) normalise with mean = std = 0.5, as their TF originals and timm's
    /// `tf_efficientnet_lite*` configs do; every other model with the ImageNet mean and std.
    /// Full-width V2-S/M/L/XL evaluate the whole resized image (crop ratio 1, as torchvision
    /// and timm), everything else at timm's default crop ratio 0.875.
    pub fn default_preprocess(&self) -> Preprocess {
        let res = self.resolution;
        let uncropped = self.is_v2() && self.width == 1.0 && res > 300;
        let resize = if uncropped { res } else { res * 8 / 7 };
        let mut preprocess = Preprocess::imagenet(resize, res, Interpolation::Bicubic);
        let lite = self.fixed_stem_head && self.se_ratio == 0.0;
        if lite {
            preprocess.mean = [0.5; 3];
            preprocess.std = [0.5; 3];
        }
        preprocess
    }

    /// Whether the network has Fused-MBConv stages (EfficientNetV2).
    pub fn is_v2(&self) -> bool {
        self.stages
            .iter()
            .any(|stage| stage.block == BlockKind::FusedMBConv)
    }

    /// Number of leading Fused-MBConv stages (0 for EfficientNet, 3 for EfficientNetV2).
    pub fn fused_stage_count(&self) -> usize {
        self.stages
            .iter()
            .take_while(|stage| stage.block == BlockKind::FusedMBConv)
            .count()
    }

    /// `channels` scaled by the width multiplier with this config's rounding.
    fn scale_channels(&self, channels: usize) -> usize {
        round_channels_with_limit(channels, self.width, self.channel_round_limit)
    }

    /// Stem output channels after width scaling.
    pub fn scaled_stem_channels(&self) -> usize {
        if self.fixed_stem_head {
            self.stem_channels
        } else {
            self.scale_channels(self.stem_channels)
        }
    }

    /// Output channels of stage `index` (0-based) after width scaling.
    pub fn scaled_stage_channels(&self, index: usize) -> usize {
        self.scale_channels(self.stages[index].out_channels)
    }

    /// Head channels after width scaling (the [`HeadRule`], unless fixed).
    pub fn scaled_head_channels(&self) -> usize {
        if self.fixed_stem_head {
            return self.head_channels;
        }
        match self.head_rule {
            HeadRule::RoundFilters => self.scale_channels(self.head_channels),
            HeadRule::FourTimesLast => 4 * self.scaled_stage_channels(self.stages.len() - 1),
        }
    }

    /// Blocks of each stage after depth scaling.
    ///
    /// # Panics
    ///
    /// If the config is invalid (see [`validate`](Self::validate)).
    pub fn stage_repeats(&self) -> Vec<usize> {
        self.unwrap_valid(self.blocks())
            .iter()
            .map(Vec::len)
            .collect()
    }

    fn scaled_repeats(&self, index: usize) -> usize {
        let repeats = self.stages[index].repeats;
        let edge = index == 0 || index + 1 == self.stages.len();
        if self.fixed_edge_repeats && edge {
            repeats
        } else {
            round_repeats(repeats, self.depth)
        }
    }

    /// The padding, batch-norm and activation settings every layer is built with.
    pub fn style(&self) -> LayerStyle {
        LayerStyle {
            padding: self.padding,
            bn_epsilon: self.bn_epsilon,
            bn_momentum: self.bn_momentum,
            activation: self.activation,
        }
    }

    /// The stem: 3x3 convolution, stride 2.
    pub fn stem(&self) -> ConvBnActConfig {
        self.style()
            .conv_bn_act(self.in_channels, self.scaled_stem_channels(), 3)
            .with_stride(2)
    }

    /// The head: 1x1 convolution from the last stage to the head channels.
    pub fn head(&self) -> ConvBnActConfig {
        let last = self.scaled_stage_channels(self.stages.len() - 1);
        self.style()
            .conv_bn_act(last, self.scaled_head_channels(), 1)
    }

    /// The scaled network: one list of block configs per stage, with stochastic depth
    /// rising linearly over the blocks. Fails with the reason when the config is invalid.
    pub fn blocks(&self) -> Result<Vec<Vec<BlockConfig>>, Error> {
        self.validate_fields()?;
        let repeats: Vec<usize> = (0..self.stages.len())
            .map(|i| self.scaled_repeats(i))
            .collect();
        if let Some(index) = repeats.iter().position(|&r| r == 0) {
            return Err(invalid(format!(
                "stage {} rounds to 0 blocks ({} repeats x depth {})",
                index + 1,
                self.stages[index].repeats,
                self.depth
            )));
        }
        let total: usize = repeats.iter().sum();
        let mut block_index = 0;
        let mut in_channels = self.scaled_stem_channels();
        let mut plan = Vec::with_capacity(self.stages.len());
        for (index, stage) in self.stages.iter().enumerate() {
            let out_channels = self.scaled_stage_channels(index);
            let mut blocks = Vec::with_capacity(repeats[index]);
            for j in 0..repeats[index] {
                let (block_in, stride) = match j {
                    0 => (in_channels, stage.stride),
                    _ => (out_channels, 1),
                };
                let drop_path_prob = self.stochastic_depth_prob * block_index as f64 / total as f64;
                blocks.push(match stage.block {
                    BlockKind::MBConv => BlockConfig::MBConv(
                        MBConvConfig::new(
                            block_in,
                            out_channels,
                            stage.expand_ratio,
                            stage.kernel_size,
                            stride,
                        )
                        .with_se_ratio(self.se_ratio)
                        .with_style(self.style())
                        .with_drop_path_prob(drop_path_prob),
                    ),
                    BlockKind::FusedMBConv => BlockConfig::FusedMBConv(
                        FusedMBConvConfig::new(
                            block_in,
                            out_channels,
                            stage.expand_ratio,
                            stage.kernel_size,
                            stride,
                        )
                        .with_style(self.style())
                        .with_drop_path_prob(drop_path_prob),
                    ),
                });
                block_index += 1;
            }
            plan.push(blocks);
            in_channels = out_channels;
        }
        Ok(plan)
    }

    /// What [`EfficientNet::endpoints`](crate::EfficientNet::endpoints) returns, map by map:
    /// the stage, its output channels and its reduction (stem stride times the stage
    /// strides so far).
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        self.endpoint_stages()
            .into_iter()
            .map(|stage| FeatureInfo {
                stage,
                channels: self.scaled_stage_channels(stage),
                reduction: 2 * self.stages[..=stage]
                    .iter()
                    .map(|s| s.stride)
                    .product::<usize>(),
            })
            .collect()
    }

    /// The stages of the endpoints at `indices` (into [`feature_info`](Self::feature_info)),
    /// in the order asked.
    pub(crate) fn endpoint_stages_at(&self, indices: &[usize]) -> Result<Vec<usize>, Error> {
        let stages = self.endpoint_stages();
        indices
            .iter()
            .map(|&index| {
                stages.get(index).copied().ok_or(Error::EndpointIndex {
                    index,
                    endpoints: stages.len(),
                })
            })
            .collect()
    }

    /// Indices of the stages whose outputs are the multi-scale endpoints: the last stage at
    /// each resolution (before every stride-2 stage, and the final one).
    pub fn endpoint_stages(&self) -> Vec<usize> {
        let n = self.stages.len();
        (0..n)
            .filter(|&i| i + 1 == n || self.stages[i + 1].stride == 2)
            .collect()
    }

    /// Trainable parameters with this config, counted without building the model
    /// (batch-norm running statistics are not parameters and are not counted).
    ///
    /// # Panics
    ///
    /// If the config is invalid (see [`validate`](Self::validate)).
    pub fn num_params(&self) -> usize {
        let blocks = self.unwrap_valid(self.blocks());
        self.params_of(&blocks)
    }

    /// Trainable parameters of the network `blocks` (this config's plan) builds: stem,
    /// blocks, head, and the classifier's weight and bias.
    fn params_of(&self, blocks: &[Vec<BlockConfig>]) -> usize {
        self.stem().num_params()
            + blocks
                .iter()
                .flatten()
                .map(BlockConfig::num_params)
                .sum::<usize>()
            + self.head().num_params()
            + (self.scaled_head_channels() + 1) * self.num_classes
    }

    /// Multiply-adds of one forward pass over a `height x width` image: every convolution
    /// and the classifier (norms, activations, pooling and additions are not counted).
    ///
    /// # Panics
    ///
    /// If the config is invalid (see [`validate`](Self::validate)).
    pub fn macs(&self, height: usize, width: usize) -> u64 {
        let blocks = self.unwrap_valid(self.blocks());
        let (mut total, mut h, mut w) = self.stem().macs(height, width);
        for block in blocks.iter().flatten() {
            let (macs, out_h, out_w) = block.macs(h, w);
            total += macs;
            (h, w) = (out_h, out_w);
        }
        let (head_macs, _, _) = self.head().macs(h, w);
        total + head_macs + (self.scaled_head_channels() * self.num_classes) as u64
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    ///
    /// With the [`validate`](Self::validate) message if the config is invalid.
    pub fn init(&self, device: &burn::tensor::Device) -> crate::EfficientNet {
        self.unwrap_valid(self.try_init(device))
    }

    /// Builds the model on `device`, or says why the config is invalid.
    pub fn try_init(&self, device: &burn::tensor::Device) -> Result<crate::EfficientNet, Error> {
        crate::EfficientNet::from_config(self, device)
    }

    fn unwrap_valid<T>(&self, result: Result<T, Error>) -> T {
        result.unwrap_or_else(|error| panic!("{error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(config: EfficientNetConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn default_is_b0() {
        let config = EfficientNetConfig::new();
        assert_eq!(config.stage_repeats(), [1, 2, 2, 3, 3, 4, 1]);
        assert_eq!(config.scaled_stem_channels(), 32);
        assert_eq!(config.scaled_head_channels(), 1280);
        // Reductions 2, 4, 8, 16, 32 end stages 1, 2, 3, 5, 7.
        assert_eq!(config.endpoint_stages(), [0, 1, 2, 4, 6]);
    }

    #[test]
    fn default_transforms_follow_the_family() {
        // B3: 300 / 0.875 = 342; ImageNet normalisation.
        let b3 = EfficientNetConfig::b3().default_preprocess();
        assert_eq!(
            (b3.resize, b3.crop, b3.mean),
            (342, 300, [0.485, 0.456, 0.406])
        );
        // Lite: mean = std = 0.5.
        let lite = EfficientNetConfig::lite0().default_preprocess();
        assert_eq!((lite.resize, lite.crop, lite.std), (256, 224, [0.5; 3]));
        // V2-S is evaluated uncropped at 384; V2-B0 cropped like V1.
        let s = EfficientNetConfig::v2_s().default_preprocess();
        assert_eq!((s.resize, s.crop), (384, 384));
        assert_eq!(EfficientNetConfig::v2_b0().default_preprocess().resize, 256);
    }

    #[test]
    fn head_rules_differ_on_custom_widths() {
        // w = 1.13: round(1280 * 1.13 = 1446.4) = 1448; 4 * round(320 * 1.13 = 361.6) = 4 * 360.
        let config = EfficientNetConfig::new().with_width(1.13);
        assert_eq!(config.scaled_head_channels(), 1448);
        let config = config.with_head_rule(HeadRule::FourTimesLast);
        assert_eq!(config.scaled_head_channels(), 1440);
    }

    #[test]
    fn stochastic_depth_rises_linearly() {
        let blocks = EfficientNetConfig::new().blocks().unwrap();
        let probs: Vec<f64> = blocks
            .iter()
            .flatten()
            .map(BlockConfig::drop_path_prob)
            .collect();
        assert_eq!(probs.len(), 16);
        assert_eq!(probs[0], 0.0);
        // Block 15 of 16: 0.2 * 15 / 16 = 0.1875.
        assert!((probs[15] - 0.1875).abs() < 1e-12);
    }

    #[test]
    fn invalid_configs_are_rejected_with_exact_messages() {
        let mut stages = B0_STAGES.to_vec();
        stages[2].kernel_size = 4;
        assert_eq!(
            message(EfficientNetConfig::new().with_stages(stages)),
            "invalid EfficientNet config: stage 3 has kernel size 4; kernel sizes must be odd"
        );

        let mut stages = B0_STAGES.to_vec();
        stages[1].stride = 3;
        assert_eq!(
            message(EfficientNetConfig::new().with_stages(stages)),
            "invalid EfficientNet config: stage 2 has stride 3; strides must be 1 or 2"
        );

        let mut stages = B0_STAGES.to_vec();
        stages[6].out_channels = 0;
        assert_eq!(
            message(EfficientNetConfig::new().with_stages(stages)),
            "invalid EfficientNet config: stage 7 has zero channels (192 -> 0)"
        );

        let mut stages = B0_STAGES.to_vec();
        stages[3].in_channels = 48;
        assert_eq!(
            message(EfficientNetConfig::new().with_stages(stages)),
            "invalid EfficientNet config: stage 4 takes 48 channels but receives 40"
        );

        assert_eq!(
            message(EfficientNetConfig::new().with_num_classes(0)),
            "invalid EfficientNet config: num_classes must be at least 1, got 0"
        );
        assert_eq!(
            message(EfficientNetConfig::new().with_stem_channels(0)),
            "invalid EfficientNet config: stem_channels must be at least 1, got 0"
        );
        assert_eq!(
            message(EfficientNetConfig::new().with_width(f64::NAN)),
            "invalid EfficientNet config: width multiplier must be positive and at most 16, got NaN"
        );
        assert_eq!(
            message(EfficientNetConfig::new().with_dropout(1.0)),
            "invalid EfficientNet config: dropout must be in [0, 1), got 1"
        );
    }

    #[test]
    fn absurd_sizes_are_rejected_before_anything_is_allocated() {
        assert_eq!(
            message(EfficientNetConfig::new().with_depth(1e6)),
            "invalid EfficientNet config: depth multiplier must be finite and at most 16, got 1000000"
        );
        assert_eq!(
            message(EfficientNetConfig::new().with_resolution(1 << 30)),
            "invalid EfficientNet config: resolution must be at most 16384, got 1073741824"
        );
        let mut stages = B0_STAGES.to_vec();
        stages[6].repeats = 1_000_000;
        assert_eq!(
            message(EfficientNetConfig::new().with_stages(stages)),
            "invalid EfficientNet config: stage 7 repeats must be at most 1000, got 1000000"
        );
        // Each field within its bound, the whole too large: width 16 on L2's depth.
        let err = message(EfficientNetConfig::new().with_width(16.0).with_depth(16.0));
        assert!(
            err.contains("parameters, over the limit of 4000000000"),
            "{err}"
        );
        // The published extremes stay valid.
        assert!(EfficientNetConfig::l2().validate().is_ok());
        assert!(EfficientNetConfig::v2_xl().validate().is_ok());
    }

    #[test]
    fn a_scaling_that_rounds_a_stage_to_zero_is_rejected() {
        // (1e10)^-40 = 1e-400 underflows to 0: every stage would have ceil(r * 0) = 0 blocks.
        let scaling = CompoundScaling::new(-40.0).with_alpha(1e10);
        let err = EfficientNetConfig::from_scaling(scaling).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid EfficientNet config: stage 1 rounds to 0 blocks (1 repeats x depth 0)"
        );
        // 224 * 1.15^-50 = 0.206 rounds the input resolution to 0.
        let err = EfficientNetConfig::from_scaling(CompoundScaling::new(-50.0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid EfficientNet config: resolution must be at least 1, got 0"
        );
        // Scaling down is allowed: phi = -1 gives w = 1/1.1, d = 1/1.2, r = 195.
        let small = EfficientNetConfig::from_scaling(CompoundScaling::new(-1.0)).unwrap();
        assert_eq!(small.resolution, 195);
        assert_eq!(small.stage_repeats(), [1, 2, 2, 3, 3, 4, 1]);
        // A tiny but positive depth rounds up to one block per stage: ceil(4 * 1e-9) = 1.
        let config = EfficientNetConfig::new().with_depth(1e-9);
        assert_eq!(config.stage_repeats(), [1; 7]);
    }

    #[test]
    #[should_panic = "invalid EfficientNet config: stage 1 has expand ratio 0"]
    fn init_panics_with_the_validation_message() {
        let mut stages = B0_STAGES.to_vec();
        stages[0].expand_ratio = 0;
        EfficientNetConfig::new()
            .with_stages(stages)
            .init(&burn::tensor::Device::default());
    }

    #[test]
    fn configs_saved_before_v2_still_load() {
        // A saved model's config.json from before the V2 fields existed: no `block` in the
        // stages, no `channel_round_limit`. They default to MBConv and 0.9.
        let mut json: serde_json::Value =
            serde_json::from_str(&EfficientNetConfig::b0().to_string()).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("channel_round_limit");
        for stage in object["stages"].as_array_mut().unwrap() {
            stage.as_object_mut().unwrap().remove("block");
        }
        let old = json.to_string();
        assert!(serde_json::from_str::<EfficientNetConfig>(&old).is_err());
        assert_eq!(
            EfficientNetConfig::from_json(&old).unwrap(),
            EfficientNetConfig::b0()
        );
        // And a V2 config round-trips with its fused stages and rounding limit.
        let v2 = EfficientNetConfig::v2_b3();
        assert!(v2.to_string().contains("\"FusedMBConv\""));
        assert_eq!(EfficientNetConfig::from_json(&v2.to_string()).unwrap(), v2);
    }
}
