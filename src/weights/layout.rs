//! Checkpoint key layouts and the remap table from each to this crate's parameter names.
//!
//! The table is generated from the config's block plan, so it is exact for every variant
//! (and for custom configs the reference libraries can also build). Only module prefixes are
//! mapped; leaf names (`weight`, `bias`, `running_mean`, `running_var`) carry over, and
//! burn-store's `PyTorchToBurnAdapter` turns batch-norm `weight`/`bias` into `gamma`/`beta`
//! and transposes the classifier's `[out, in]` weight into Burn's `[in, out]`.
//!
//! | our module | torchvision | timm (`efficientnet_*`, `tf_*`) | efficientnet_pytorch |
//! |---|---|---|---|
//! | `stem.conv` / `stem.bn` | `features.0.0` / `.1` | `conv_stem` / `bn1` | `_conv_stem` / `_bn0` |
//! | **block `S.J` (stage S, block J; `N` = flat index)** | `features.{S+1}.{J}.block.*` | `blocks.S.J.*` | `_blocks.N.*` |
//! | `expand.conv` / `.bn` (expanding blocks) | `block.0.0` / `block.0.1` | `conv_pw` / `bn1` | `_expand_conv` / `_bn0` |
//! | `depthwise.conv` / `.bn` | `block.{i}.0` / `.1` (i = 1, or 0 without expand) | `conv_dw` / `bn2` (`bn1` without expand) | `_depthwise_conv` / `_bn1` |
//! | `se.reduce` / `se.expand` | `block.{i+1}.fc1` / `fc2` | `se.conv_reduce` / `se.conv_expand` | `_se_reduce` / `_se_expand` |
//! | `project.conv` / `.bn` | `block.{last}.0` / `.1` | `conv_pwl` / `bn3` (`conv_pw` / `bn2` without expand) | `_project_conv` / `_bn2` |
//! | `head.conv` / `head.bn` | `features.{stages+1}.0` / `.1` | `conv_head` / `bn2` | `_conv_head` / `_bn1` |
//! | `classifier` | `classifier.1` (index 0 is dropout) | `classifier` | `_fc` |
//!
//! Careful: in timm, `conv_pw` is the *projection* in the expansion-free (DS) block but the
//! *expansion* in inverted-residual blocks.
//!
//! EfficientNetV2's Fused-MBConv blocks (`F` = index among the fused stages, which come first;
//! the MBConv stages after them are `stages.{S - fused stages}` in this crate but keep their
//! overall stage index `S` in the checkpoints):
//!
//! | our module | torchvision | timm (`efficientnetv2_*`, `tf_efficientnetv2_*`) |
//! |---|---|---|
//! | **block `F.J`** | `features.{F+1}.{J}.block.*` | `blocks.F.J.*` |
//! | `conv.conv` / `.bn` (expand ratio 1) | `block.0.0` / `block.0.1` | `conv` / `bn1` (timm's `ConvBnAct` block) |
//! | `conv.conv` / `.bn` (expanding) | `block.0.0` / `block.0.1` | `conv_exp` / `bn1` (timm's `EdgeResidual`) |
//! | `project.conv` / `.bn` (expanding) | `block.1.0` / `block.1.1` | `conv_pwl` / `bn2` |
//!
//! efficientnet_pytorch has no V2 models, so no Fused-MBConv layout.

use core::fmt;

use crate::config::EfficientNetConfig;
use crate::error::Error;
use crate::model::block::BlockConfig;
use crate::model::fused_mbconv::FusedMBConvConfig;

/// How a checkpoint names its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyLayout {
    /// torchvision: stages nested as `features.S.J`.
    Torchvision,
    /// timm: stages nested as `blocks.S.J` (both `efficientnet_*` and `tf_efficientnet_*`).
    Timm,
    /// efficientnet_pytorch (lukemelas): blocks flattened as `_blocks.N`.
    EfficientNetPytorch,
}

impl KeyLayout {
    /// Every layout.
    pub const ALL: [KeyLayout; 3] = [
        KeyLayout::Torchvision,
        KeyLayout::Timm,
        KeyLayout::EfficientNetPytorch,
    ];

    /// The stem convolution's weight key, which tells the layouts apart.
    fn marker(self) -> &'static str {
        match self {
            KeyLayout::Torchvision => "features.0.0.weight",
            KeyLayout::Timm => "conv_stem.weight",
            KeyLayout::EfficientNetPytorch => "_conv_stem.weight",
        }
    }

    /// Detects the layout from a checkpoint's keys, and the prefix every key carries (such as
    /// `module.` from `DataParallel`, or `state_dict.`), if any.
    pub fn detect<'a>(
        keys: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(KeyLayout, String), Error> {
        let mut found = Vec::new();
        for layout in KeyLayout::ALL {
            for key in keys.clone() {
                if let Some(prefix) = key.strip_suffix(layout.marker()) {
                    // `_conv_stem.weight` also ends with `conv_stem.weight`: a prefix must end
                    // at a path boundary.
                    if prefix.is_empty() || prefix.ends_with('.') {
                        found.push((layout, prefix.to_string()));
                    }
                }
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => {
                let sample: Vec<&str> = keys.into_iter().take(5).collect();
                Err(Error::UnknownLayout(format!(
                    "no stem weight (`features.0.0.weight`, `conv_stem.weight` or \
                     `_conv_stem.weight`) among its keys; first keys: {sample:?}"
                )))
            }
            _ => Err(Error::UnknownLayout(format!(
                "it matches several layouts: {:?}",
                found
                    .iter()
                    .map(|(l, p)| format!("{l} at `{p}`"))
                    .collect::<Vec<_>>()
            ))),
        }
    }
}

impl fmt::Display for KeyLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyLayout::Torchvision => "torchvision",
            KeyLayout::Timm => "timm",
            KeyLayout::EfficientNetPytorch => "efficientnet_pytorch",
        })
    }
}

/// What kind of layer a prefix names, which fixes its leaf tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// A convolution without bias: `weight`.
    Conv,
    /// A convolution with bias (squeeze-excitation): `weight`, `bias`.
    ConvBias,
    /// Batch norm: `weight`, `bias`, `running_mean`, `running_var` (and an ignored
    /// `num_batches_tracked`).
    BatchNorm,
    /// The classifier: `weight`, `bias`.
    Linear,
}

impl LayerKind {
    /// The leaf names a checkpoint stores for this layer (PyTorch names).
    pub fn leaves(self) -> &'static [&'static str] {
        match self {
            LayerKind::Conv => &["weight"],
            LayerKind::ConvBias | LayerKind::Linear => &["weight", "bias"],
            LayerKind::BatchNorm => &["weight", "bias", "running_mean", "running_var"],
        }
    }

    /// Burn's name for one of [`leaves`](Self::leaves): batch-norm `weight` / `bias` are
    /// Burn's `gamma` / `beta`; every other leaf keeps its name.
    pub fn burn_leaf(self, leaf: &'static str) -> &'static str {
        match (self, leaf) {
            (LayerKind::BatchNorm, "weight") => "gamma",
            (LayerKind::BatchNorm, "bias") => "beta",
            _ => leaf,
        }
    }

    /// Whether Burn stores the leaf transposed: a Linear weight is `[in, out]` in Burn and
    /// `[out, in]` in PyTorch.
    pub fn is_transposed(self, leaf: &str) -> bool {
        self == LayerKind::Linear && leaf == "weight"
    }
}

/// One row of the remap table: checkpoint prefix, our prefix, layer kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Prefix in the checkpoint, e.g. `features.2.0.block.1.0`.
    pub source: String,
    /// Prefix in [`EfficientNet`](crate::EfficientNet), e.g. `stages.1.0.depthwise.conv`.
    pub target: String,
    /// The layer kind.
    pub kind: LayerKind,
}

/// The remap table of `layout` for a model built from `config`, grouped stem, stages, head.
pub fn key_table(config: &EfficientNetConfig, layout: KeyLayout) -> Result<Vec<Mapping>, Error> {
    let blocks = config.blocks()?;
    let mut table = Vec::new();
    let mut push = |source: String, target: &str, kind| {
        table.push(Mapping {
            source,
            target: target.to_string(),
            kind,
        })
    };
    use LayerKind::*;

    // Stem.
    let (stem_conv, stem_bn) = match layout {
        KeyLayout::Torchvision => ("features.0.0", "features.0.1"),
        KeyLayout::Timm => ("conv_stem", "bn1"),
        KeyLayout::EfficientNetPytorch => ("_conv_stem", "_bn0"),
    };
    push(stem_conv.into(), "stem.conv", Conv);
    push(stem_bn.into(), "stem.bn", BatchNorm);

    // Stages: one list, the Fused-MBConv stages (if any) first, as the model keeps them.
    let mut flat = 0;
    for (s, stage) in blocks.iter().enumerate() {
        for (j, block) in stage.iter().enumerate() {
            let block = match block {
                BlockConfig::MBConv(block) => block,
                BlockConfig::FusedMBConv(block) => {
                    for (sub, source, kind) in fused_layers(block, layout, s, j)? {
                        push(source, &format!("stages.{s}.{j}.{sub}"), kind);
                    }
                    continue;
                }
            };
            let ours = format!("stages.{s}.{j}");
            let expand = block.expand_ratio != 1;
            let se = block.se_ratio > 0.0;
            // (our sub-module, checkpoint prefix, kind) for each layer the block has.
            let mut layers: Vec<(&str, String, LayerKind)> = Vec::new();
            match layout {
                KeyLayout::Torchvision => {
                    let p = format!("features.{}.{j}.block", s + 1);
                    let mut i = 0;
                    if expand {
                        layers.push(("expand.conv", format!("{p}.0.0"), Conv));
                        layers.push(("expand.bn", format!("{p}.0.1"), BatchNorm));
                        i += 1;
                    }
                    layers.push(("depthwise.conv", format!("{p}.{i}.0"), Conv));
                    layers.push(("depthwise.bn", format!("{p}.{i}.1"), BatchNorm));
                    i += 1;
                    if se {
                        layers.push(("se.reduce", format!("{p}.{i}.fc1"), ConvBias));
                        layers.push(("se.expand", format!("{p}.{i}.fc2"), ConvBias));
                        i += 1;
                    }
                    layers.push(("project.conv", format!("{p}.{i}.0"), Conv));
                    layers.push(("project.bn", format!("{p}.{i}.1"), BatchNorm));
                }
                KeyLayout::Timm => {
                    let p = format!("blocks.{s}.{j}");
                    if expand {
                        layers.push(("expand.conv", format!("{p}.conv_pw"), Conv));
                        layers.push(("expand.bn", format!("{p}.bn1"), BatchNorm));
                    }
                    let (dw_bn, pw, pw_bn) = match expand {
                        true => ("bn2", "conv_pwl", "bn3"),
                        false => ("bn1", "conv_pw", "bn2"),
                    };
                    layers.push(("depthwise.conv", format!("{p}.conv_dw"), Conv));
                    layers.push(("depthwise.bn", format!("{p}.{dw_bn}"), BatchNorm));
                    if se {
                        layers.push(("se.reduce", format!("{p}.se.conv_reduce"), ConvBias));
                        layers.push(("se.expand", format!("{p}.se.conv_expand"), ConvBias));
                    }
                    layers.push(("project.conv", format!("{p}.{pw}"), Conv));
                    layers.push(("project.bn", format!("{p}.{pw_bn}"), BatchNorm));
                }
                KeyLayout::EfficientNetPytorch => {
                    let p = format!("_blocks.{flat}");
                    if expand {
                        layers.push(("expand.conv", format!("{p}._expand_conv"), Conv));
                        layers.push(("expand.bn", format!("{p}._bn0"), BatchNorm));
                    }
                    layers.push(("depthwise.conv", format!("{p}._depthwise_conv"), Conv));
                    layers.push(("depthwise.bn", format!("{p}._bn1"), BatchNorm));
                    if se {
                        layers.push(("se.reduce", format!("{p}._se_reduce"), ConvBias));
                        layers.push(("se.expand", format!("{p}._se_expand"), ConvBias));
                    }
                    layers.push(("project.conv", format!("{p}._project_conv"), Conv));
                    layers.push(("project.bn", format!("{p}._bn2"), BatchNorm));
                }
            }
            for (sub, source, kind) in layers {
                push(source, &format!("{ours}.{sub}"), kind);
            }
            flat += 1;
        }
    }

    // Head and classifier.
    let n = blocks.len();
    let (head_conv, head_bn, classifier) = match layout {
        KeyLayout::Torchvision => (
            format!("features.{}.0", n + 1),
            format!("features.{}.1", n + 1),
            "classifier.1".to_string(),
        ),
        KeyLayout::Timm => ("conv_head".into(), "bn2".into(), "classifier".into()),
        KeyLayout::EfficientNetPytorch => ("_conv_head".into(), "_bn1".into(), "_fc".into()),
    };
    push(head_conv, "head.conv", Conv);
    push(head_bn, "head.bn", BatchNorm);
    push(classifier, "classifier", Linear);
    Ok(table)
}

/// (our sub-module, checkpoint prefix, kind) for each layer of Fused-MBConv block `j` of
/// stage `s`.
fn fused_layers(
    block: &FusedMBConvConfig,
    layout: KeyLayout,
    s: usize,
    j: usize,
) -> Result<Vec<(&'static str, String, LayerKind)>, Error> {
    use LayerKind::*;
    let expand = block.expand_ratio != 1;
    let mut layers = Vec::new();
    match layout {
        KeyLayout::Torchvision => {
            let p = format!("features.{}.{j}.block", s + 1);
            layers.push(("conv.conv", format!("{p}.0.0"), Conv));
            layers.push(("conv.bn", format!("{p}.0.1"), BatchNorm));
            if expand {
                layers.push(("project.conv", format!("{p}.1.0"), Conv));
                layers.push(("project.bn", format!("{p}.1.1"), BatchNorm));
            }
        }
        KeyLayout::Timm => {
            let p = format!("blocks.{s}.{j}");
            if expand {
                layers.push(("conv.conv", format!("{p}.conv_exp"), Conv));
                layers.push(("conv.bn", format!("{p}.bn1"), BatchNorm));
                layers.push(("project.conv", format!("{p}.conv_pwl"), Conv));
                layers.push(("project.bn", format!("{p}.bn2"), BatchNorm));
            } else {
                layers.push(("conv.conv", format!("{p}.conv"), Conv));
                layers.push(("conv.bn", format!("{p}.bn1"), BatchNorm));
            }
        }
        KeyLayout::EfficientNetPytorch => {
            return Err(Error::UnknownLayout(
                "efficientnet_pytorch has no EfficientNetV2 (Fused-MBConv) checkpoints; use \
                 torchvision or timm weights for V2 models"
                    .to_string(),
            ));
        }
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_b0_keys_follow_the_facts() {
        let table = key_table(&EfficientNetConfig::b0(), KeyLayout::Torchvision).unwrap();
        let find = |target: &str| {
            table
                .iter()
                .find(|m| m.target == target)
                .map(|m| m.source.as_str())
        };
        assert_eq!(find("stem.conv"), Some("features.0.0"));
        // Expansion-free block: dw at block.0, SE at block.1, project at block.2.
        assert_eq!(
            find("stages.0.0.depthwise.conv"),
            Some("features.1.0.block.0.0")
        );
        assert_eq!(
            find("stages.0.0.se.reduce"),
            Some("features.1.0.block.1.fc1")
        );
        assert_eq!(
            find("stages.0.0.project.bn"),
            Some("features.1.0.block.2.1")
        );
        // Expanding block: expand at block.0, dw block.1, SE block.2, project block.3.
        assert_eq!(
            find("stages.1.0.expand.conv"),
            Some("features.2.0.block.0.0")
        );
        assert_eq!(
            find("stages.1.0.se.expand"),
            Some("features.2.0.block.2.fc2")
        );
        assert_eq!(
            find("stages.1.0.project.conv"),
            Some("features.2.0.block.3.0")
        );
        assert_eq!(find("head.bn"), Some("features.8.1"));
        assert_eq!(find("classifier"), Some("classifier.1"));
    }

    #[test]
    fn v2_fused_blocks_follow_each_layout() {
        let config = EfficientNetConfig::v2_s();
        let table = key_table(&config, KeyLayout::Torchvision).unwrap();
        let find = |table: &[Mapping], target: &str| {
            table
                .iter()
                .find(|m| m.target == target)
                .map(|m| m.source.clone())
        };
        // Stage 1: expand ratio 1, one convolution; stage 2: fused conv + projection.
        let tv = |t| find(&table, t);
        assert_eq!(
            tv("stages.0.1.conv.conv").as_deref(),
            Some("features.1.1.block.0.0")
        );
        assert_eq!(tv("stages.0.1.project.conv"), None);
        assert_eq!(
            tv("stages.1.0.project.bn").as_deref(),
            Some("features.2.0.block.1.1")
        );
        // The first MBConv stage is our `stages.3` and torchvision's `features.4`.
        assert_eq!(
            tv("stages.3.0.expand.conv").as_deref(),
            Some("features.4.0.block.0.0")
        );
        assert_eq!(tv("head.conv").as_deref(), Some("features.7.0"));

        let table = key_table(&config, KeyLayout::Timm).unwrap();
        let timm = |t| find(&table, t);
        assert_eq!(
            timm("stages.0.0.conv.conv").as_deref(),
            Some("blocks.0.0.conv")
        );
        assert_eq!(
            timm("stages.2.3.conv.conv").as_deref(),
            Some("blocks.2.3.conv_exp")
        );
        assert_eq!(
            timm("stages.2.3.project.bn").as_deref(),
            Some("blocks.2.3.bn2")
        );
        assert_eq!(
            timm("stages.5.14.project.conv").as_deref(),
            Some("blocks.5.14.conv_pwl")
        );

        let err = key_table(&config, KeyLayout::EfficientNetPytorch).unwrap_err();
        assert!(err.to_string().contains("no EfficientNetV2"), "{err}");
    }

    #[test]
    fn efficientnet_pytorch_blocks_are_flat() {
        let table = key_table(&EfficientNetConfig::b0(), KeyLayout::EfficientNetPytorch).unwrap();
        // B0: stage 2 (index 1) starts at flat block 1, stage 7 is the 16th block.
        assert!(
            table
                .iter()
                .any(|m| m.source == "_blocks.1._expand_conv"
                    && m.target == "stages.1.0.expand.conv")
        );
        assert!(
            table
                .iter()
                .any(|m| m.source == "_blocks.15._bn2" && m.target == "stages.6.0.project.bn")
        );
    }

    #[test]
    fn detection_finds_the_layout_and_a_wrapper_prefix() {
        let keys = ["module.conv_stem.weight", "module.bn1.weight"];
        let (layout, prefix) = KeyLayout::detect(keys.iter().copied()).unwrap();
        assert_eq!((layout, prefix.as_str()), (KeyLayout::Timm, "module."));
        let keys = ["_conv_stem.weight", "_bn0.weight"];
        let (layout, prefix) = KeyLayout::detect(keys.iter().copied()).unwrap();
        assert_eq!(
            (layout, prefix.as_str()),
            (KeyLayout::EfficientNetPytorch, "")
        );
        let err =
            KeyLayout::detect(["fc.weight", "layer1.0.conv1.weight"].iter().copied()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown checkpoint layout: no stem weight (`features.0.0.weight`, `conv_stem.weight` \
             or `_conv_stem.weight`) among its keys; first keys: [\"fc.weight\", \"layer1.0.conv1.weight\"]"
        );
        let err = KeyLayout::detect(["conv_stem.weight", "features.0.0.weight"].iter().copied())
            .unwrap_err();
        assert!(err.to_string().contains("matches several layouts"), "{err}");
    }
}
