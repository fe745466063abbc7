//! Every published variant against the published numbers (`../shared/reference/
//! efficientnet-facts.md`, read from the paper, TF, timm and torchvision): trainable
//! parameters, multiply-adds, per-stage channels and repeats, and output shapes.
//!
//! EfficientNetV2's figures come from the reference libraries themselves:
//! `.venv/bin/python scripts/count_macs.py` prints torchvision's `efficientnet_v2_s/m/l` and
//! timm's `tf_efficientnetv2_xl/b0..b3` parameter counts and multiply-adds (conv and linear
//! layers counted by forward hooks at the evaluation resolution; for S, M and L they equal
//! torchvision's published `num_params` and `_ops`).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use efficientnet_burn::model::{Block, BlockConfig, Padding};
use efficientnet_burn::{CompoundScaling, EfficientNet, EfficientNetConfig, Variant};

/// (variant, trainable params with a 1000-class head, GMACs at the variant's resolution).
const PUBLISHED: [(Variant, usize, f64); 23] = [
    (Variant::B0, 5_288_548, 0.386),
    (Variant::B1, 7_794_184, 0.687),
    (Variant::B2, 9_109_994, 0.994),
    (Variant::B3, 12_233_232, 1.827),
    (Variant::B4, 19_341_616, 4.394),
    (Variant::B5, 30_389_784, 10.266),
    (Variant::B6, 43_040_704, 19.068),
    (Variant::B7, 66_347_960, 37.746),
    (Variant::B8, 87_413_142, 62.597),
    (Variant::L2, 480_309_308, 475.704),
    (Variant::Lite0, 4_652_008, f64::NAN),
    (Variant::Lite1, 5_416_680, f64::NAN),
    (Variant::Lite2, 6_092_072, f64::NAN),
    (Variant::Lite3, 8_197_096, f64::NAN),
    (Variant::Lite4, 13_006_568, f64::NAN),
    (Variant::V2S, 21_458_488, 8.366),
    (Variant::V2M, 54_139_356, 24.582),
    (Variant::V2L, 118_515_272, 56.080),
    (Variant::V2XL, 208_119_808, 93.353),
    (Variant::V2B0, 7_139_704, 0.718),
    (Variant::V2B1, 8_141_052, 1.197),
    (Variant::V2B2, 10_096_086, 1.698),
    (Variant::V2B3, 14_358_406, 3.011),
];

#[test]
fn built_models_have_the_published_parameter_counts() {
    let device = Device::default();
    for (variant, params, _) in PUBLISHED {
        // Burn initialises parameters lazily, so even L2 (480M) is counted without
        // allocating its weights.
        let model = variant.config().init(&device);
        assert_eq!(model.num_trainable_params(), params, "{variant}");
        assert_eq!(
            variant.config().num_params(),
            params,
            "{variant} (from config)"
        );
    }
}

#[test]
fn macs_match_the_published_gmacs_to_a_tenth_of_a_percent() {
    for (variant, _, gmacs) in PUBLISHED.into_iter().filter(|p| !p.2.is_nan()) {
        let config = variant.config();
        let res = config.resolution;
        let measured = config.macs(res, res) as f64 / 1e9;
        assert!(
            (measured - gmacs).abs() / gmacs < 1e-3,
            "{variant}: {measured} GMACs vs published {gmacs}"
        );
    }
    // torchvision evaluates B2 at 288: 1.088 GMACs.
    let b2 = EfficientNetConfig::b2().macs(288, 288) as f64 / 1e9;
    assert!((b2 - 1.088).abs() / 1.088 < 1e-3, "B2 @ 288: {b2}");
    // The model reports the same analytic figure as its config.
    let model = EfficientNet::b0(&Device::default());
    assert_eq!(
        model.macs(224, 224),
        EfficientNetConfig::b0().macs(224, 224)
    );
}

/// Checks stem, per-stage output channels and repeats, and head of one variant.
fn assert_layout<const N: usize>(
    variant: Variant,
    stem: usize,
    stages: [(usize, usize); N],
    head: usize,
) {
    let device = Device::default();
    let config = variant.config();
    assert_eq!(config.scaled_stem_channels(), stem, "{variant} stem");
    assert_eq!(config.scaled_head_channels(), head, "{variant} head");
    let model = config.init(&device);
    assert_eq!(
        model.stem.conv.weight.dims()[0],
        stem,
        "{variant} built stem"
    );
    assert_eq!(
        model.head.conv.weight.dims()[0],
        head,
        "{variant} built head"
    );
    let built: Vec<(usize, usize)> = model
        .stages
        .iter()
        .map(|stage| {
            let last = match &stage[0] {
                Block::MBConv(block) => &block.project,
                Block::FusedMBConv(block) => block.project.as_ref().unwrap_or(&block.conv),
            };
            (last.conv.weight.dims()[0], stage.len())
        })
        .collect();
    assert_eq!(built, stages, "{variant} stages (out channels, repeats)");
}

macro_rules! layout_tests {
    ($($name:ident: $variant:ident, $stem:expr, $stages:expr, $head:expr;)*) => {
        $(
            #[test]
            fn $name() {
                assert_layout(Variant::$variant, $stem, $stages, $head);
            }
        )*
    };
}

layout_tests! {
    layout_b0: B0, 32, [(16, 1), (24, 2), (40, 2), (80, 3), (112, 3), (192, 4), (320, 1)], 1280;
    layout_b1: B1, 32, [(16, 2), (24, 3), (40, 3), (80, 4), (112, 4), (192, 5), (320, 2)], 1280;
    layout_b2: B2, 32, [(16, 2), (24, 3), (48, 3), (88, 4), (120, 4), (208, 5), (352, 2)], 1408;
    layout_b3: B3, 40, [(24, 2), (32, 3), (48, 3), (96, 5), (136, 5), (232, 6), (384, 2)], 1536;
    layout_b4: B4, 48, [(24, 2), (32, 4), (56, 4), (112, 6), (160, 6), (272, 8), (448, 2)], 1792;
    layout_b5: B5, 48, [(24, 3), (40, 5), (64, 5), (128, 7), (176, 7), (304, 9), (512, 3)], 2048;
    layout_b6: B6, 56, [(32, 3), (40, 6), (72, 6), (144, 8), (200, 8), (344, 11), (576, 3)], 2304;
    layout_b7: B7, 64, [(32, 4), (48, 7), (80, 7), (160, 10), (224, 10), (384, 13), (640, 4)], 2560;
    layout_b8: B8, 72, [(32, 4), (56, 8), (88, 8), (176, 11), (248, 11), (424, 15), (704, 4)], 2816;
    layout_l2: L2, 136, [(72, 6), (104, 11), (176, 11), (344, 16), (480, 16), (824, 22), (1376, 6)], 5504;
    // Lite: stem 32 and head 1280 fixed, first and last repeats unscaled, channels as B.
    layout_lite0: Lite0, 32, [(16, 1), (24, 2), (40, 2), (80, 3), (112, 3), (192, 4), (320, 1)], 1280;
    layout_lite1: Lite1, 32, [(16, 1), (24, 3), (40, 3), (80, 4), (112, 4), (192, 5), (320, 1)], 1280;
    layout_lite2: Lite2, 32, [(16, 1), (24, 3), (48, 3), (88, 4), (120, 4), (208, 5), (352, 1)], 1280;
    layout_lite3: Lite3, 32, [(24, 1), (32, 3), (48, 3), (96, 5), (136, 5), (232, 6), (384, 1)], 1280;
    layout_lite4: Lite4, 32, [(24, 1), (32, 4), (56, 4), (112, 6), (160, 6), (272, 8), (448, 1)], 1280;
    // V2: channels and repeats as timm's built models have them (scripts/count_macs.py's
    // models; torchvision's S/M/L agree). B0..B3 round channels with limit 0: B3's first
    // stage stays 16 (19.2 rounded down), where V1's rule would give 24.
    layout_v2_s: V2S, 24, [(24, 2), (48, 4), (64, 4), (128, 6), (160, 9), (256, 15)], 1280;
    layout_v2_m: V2M, 24, [(24, 3), (48, 5), (80, 5), (160, 7), (176, 14), (304, 18), (512, 5)], 1280;
    layout_v2_l: V2L, 32, [(32, 4), (64, 7), (96, 7), (192, 10), (224, 19), (384, 25), (640, 7)], 1280;
    layout_v2_xl: V2XL, 32, [(32, 4), (64, 8), (96, 8), (192, 16), (256, 24), (512, 32), (640, 8)], 1280;
    layout_v2_b0: V2B0, 32, [(16, 1), (32, 2), (48, 2), (96, 3), (112, 5), (192, 8)], 1280;
    layout_v2_b1: V2B1, 32, [(16, 2), (32, 3), (48, 3), (96, 4), (112, 6), (192, 9)], 1280;
    layout_v2_b2: V2B2, 32, [(16, 2), (32, 3), (56, 3), (104, 4), (120, 6), (208, 10)], 1408;
    layout_v2_b3: V2B3, 40, [(16, 2), (40, 3), (56, 3), (112, 5), (136, 7), (232, 12)], 1536;
}

#[test]
fn v2_has_fused_stages_without_squeeze_excitation() {
    let config = EfficientNetConfig::v2_s();
    assert!(config.is_v2() && !EfficientNetConfig::b0().is_v2());
    assert_eq!(config.fused_stage_count(), 3);
    let model = config.init(&Device::default());
    // One list of six stages: three of Fused-MBConv blocks, then three of MBConv blocks.
    let kinds: Vec<bool> = model
        .stages
        .iter()
        .map(|stage| stage.iter().all(|block| block.fused_mbconv().is_some()))
        .collect();
    assert_eq!(kinds, [true, true, true, false, false, false]);
    // Stage 1 (expand 1): one 3x3 convolution and a residual; stages 2-3: 3x3 expansion
    // (x4) and a 1x1 projection, the residual on every block but the first.
    let first = model.stages[0][0].fused_mbconv().unwrap();
    assert!(first.project.is_none() && first.residual);
    assert_eq!(first.conv.conv.weight.dims(), [24, 24, 3, 3]);
    let expanding: Vec<_> = model.stages[1]
        .iter()
        .flat_map(Block::fused_mbconv)
        .collect();
    assert_eq!(expanding[0].conv.conv.weight.dims(), [96, 24, 3, 3]);
    assert!(!expanding[0].residual && expanding[1].residual);
    // MBConv stages keep squeeze-excitation from the block input: 64 * 0.25 = 16.
    let se = model.stages[3][0].mbconv().unwrap().se.as_ref().unwrap();
    assert_eq!(se.reduce.weight.dims(), [16, 256, 1, 1]);
}

#[test]
fn v2_progressive_learning_metadata() {
    // TF reference (train_size, eval_size): S (300, 384), M and L (384, 480), XL (384, 512);
    // training starts at 128 (paper Table 6).
    let s = Variant::V2S.progressive_learning().unwrap();
    assert_eq!(
        (s.min_resolution, s.max_resolution, s.eval_resolution),
        (128, 300, 384)
    );
    let xl = Variant::V2XL.progressive_learning().unwrap();
    assert_eq!((xl.max_resolution, xl.eval_resolution), (384, 512));
    assert!(Variant::B0.progressive_learning().is_none());
    for variant in Variant::ALL.into_iter().filter(|v| v.is_v2()) {
        let p = variant.progressive_learning().unwrap();
        assert!(p.min_resolution < p.max_resolution && p.max_resolution <= p.eval_resolution);
        assert_eq!(variant.config().resolution, p.eval_resolution, "{variant}");
        assert!(
            p.eval_resolution <= efficientnet_burn::model::V2_MAX_RESOLUTION
                || variant == Variant::V2XL
        );
    }
}

#[test]
fn fused_stages_must_come_first() {
    let mut stages = efficientnet_burn::model::V2_S_STAGES.to_vec();
    stages.swap(2, 3);
    stages[2].in_channels = 48;
    stages[3].in_channels = 128;
    let err = EfficientNetConfig::v2_s()
        .with_stages(stages)
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid EfficientNet config: stage 4 is Fused-MBConv after an MBConv stage; \
         Fused-MBConv stages must come first"
    );
}

#[test]
fn lite_blocks_have_no_squeeze_excitation() {
    let model = EfficientNetConfig::lite0().init(&Device::default());
    assert!(
        model
            .stages
            .iter()
            .flatten()
            .all(|block| block.mbconv().unwrap().se.is_none())
    );
    let model = EfficientNetConfig::b0().init(&Device::default());
    assert!(
        model
            .stages
            .iter()
            .flatten()
            .all(|block| block.mbconv().unwrap().se.is_some())
    );
}

/// Output, features and endpoint shapes of a model on a `size x size` input.
fn assert_shapes(config: EfficientNetConfig, height: usize, width: usize) {
    let device = Device::default();
    let model = config.clone().with_num_classes(7).init(&device);
    let input = Tensor::<4>::ones([2, 3, height, width], &device);
    let head = config.scaled_head_channels();
    let (h32, w32) = (height.div_ceil(32), width.div_ceil(32));

    assert_eq!(model.forward(input.clone()).dims(), [2, 7]);
    let features = model.forward_features(input.clone());
    assert_eq!(features.dims(), [2, head, h32, w32]);
    assert_eq!(model.pre_logits(features).dims(), [2, head]);

    let endpoints = model.endpoints(input);
    let blocks = config.blocks().unwrap();
    let shapes: Vec<[usize; 4]> = endpoints.iter().map(|e| e.dims()).collect();
    let expected: Vec<[usize; 4]> = config
        .endpoint_stages()
        .into_iter()
        .zip([2, 4, 8, 16, 32])
        .map(|(stage, r)| {
            let channels = blocks[stage][0].out_channels();
            [2, channels, height.div_ceil(r), width.div_ceil(r)]
        })
        .collect();
    assert_eq!(shapes, expected);
}

#[test]
fn output_shapes_b_family() {
    assert_shapes(EfficientNetConfig::b0(), 64, 64);
    // B3's endpoints: 24, 32, 48, 136, 384 channels.
    let blocks = EfficientNetConfig::b3().blocks().unwrap();
    let channels: Vec<usize> = EfficientNetConfig::b3()
        .endpoint_stages()
        .iter()
        .map(|&s| blocks[s][0].out_channels())
        .collect();
    assert_eq!(channels, [24, 32, 48, 136, 384]);
}

#[test]
fn output_shapes_lite_family() {
    assert_shapes(EfficientNetConfig::lite0(), 64, 64);
}

#[test]
fn output_shapes_v2_family() {
    // Slimmed to keep the test quick; the stage structure is V2-S's and V2-B3's.
    assert_shapes(EfficientNetConfig::v2_s().with_width(0.25), 64, 64);
    assert_shapes(
        EfficientNetConfig::v2_b3()
            .with_width(0.5)
            .with_padding(Padding::TfSame),
        65,
        67,
    );
    // V2-S's endpoints: 24, 48, 64, 160, 256 channels.
    let config = EfficientNetConfig::v2_s();
    let blocks = config.blocks().unwrap();
    let channels: Vec<usize> = config
        .endpoint_stages()
        .iter()
        .map(|&s| blocks[s][0].out_channels())
        .collect();
    assert_eq!(channels, [24, 48, 64, 160, 256]);
    assert!(matches!(blocks[0][0], BlockConfig::FusedMBConv(_)));
}

#[test]
fn output_shapes_tf_same_odd_size() {
    // TF "SAME" gives ceil(size / stride) at every stride-2 layer: 65x67 -> 3x3 at /32.
    assert_shapes(
        EfficientNetConfig::b0().with_padding(Padding::TfSame),
        65,
        67,
    );
}

#[test]
fn output_shapes_scaled_down_custom_model() {
    let config = EfficientNetConfig::from_scaling(CompoundScaling::new(-2.0)).unwrap();
    assert_shapes(config, 48, 40);
}

#[test]
#[should_panic = "invalid input: EfficientNet expects input of shape [batch, 3, height, width] with every size at least 1, got [1, 4, 32, 32]"]
fn wrong_channel_count_panics_with_a_clear_message() {
    let device = Device::default();
    let model = EfficientNetConfig::b0().init(&device);
    model.forward(Tensor::zeros([1, 4, 32, 32], &device));
}

#[test]
#[should_panic = "invalid input: EfficientNet expects input of shape [batch, 3, height, width] with every size at least 1, got [1, 3, 0, 32]"]
fn empty_image_panics_with_a_clear_message() {
    let device = Device::default();
    let model = EfficientNetConfig::b0().init(&device);
    model.endpoints(Tensor::zeros([1, 3, 0, 32], &device));
}

#[test]
fn try_forward_returns_shape_errors_and_runs_tiny_images() {
    let device = Device::default();
    let model = EfficientNetConfig::b0().with_width(0.25).init(&device);
    for dims in [[1, 1, 32, 32], [0, 3, 32, 32], [2, 3, 32, 0]] {
        let err = model.try_forward(Tensor::zeros(dims, &device)).unwrap_err();
        assert!(err.to_string().ends_with(&format!("got {dims:?}")), "{err}");
    }
    // A 1x1 image is small but valid: every layer pads, the head map is 1x1.
    let logits = model
        .try_forward(Tensor::ones([2, 3, 1, 1], &device))
        .unwrap();
    assert_eq!(logits.dims(), [2, 1000]);
    assert!(logits.into_data().iter::<f32>().all(f32::is_finite));
}

#[test]
fn the_formula_is_not_the_presets() {
    // Eq. 3 with phi = 1 gives (w, d, r) = (1.1, 1.2, 258); the released B1 is (1.0, 1.1, 240).
    // Nobody may "simplify" the presets into the formula.
    let formula = EfficientNetConfig::from_scaling(CompoundScaling::new(1.0)).unwrap();
    let b1 = EfficientNetConfig::b1();
    assert_eq!(
        (formula.width, formula.depth, formula.resolution),
        (1.1, 1.2, 258)
    );
    assert_eq!((b1.width, b1.depth, b1.resolution), (1.0, 1.1, 240));
    assert_ne!(formula.num_params(), b1.num_params());
    // And for phi = 2..7 against B2..B7 the widths never coincide.
    let presets = [
        Variant::B2,
        Variant::B3,
        Variant::B4,
        Variant::B5,
        Variant::B6,
        Variant::B7,
    ];
    for (phi, variant) in (2..=7).zip(presets) {
        let formula = CompoundScaling::new(phi as f64);
        let preset = variant.config();
        assert!(
            (formula.width_coefficient() - preset.width).abs() > 1e-3
                || (formula.depth_coefficient() - preset.depth).abs() > 1e-3,
            "phi = {phi} coincides with {variant}"
        );
    }
}

#[test]
fn macs_grow_about_two_to_the_phi() {
    // The rule says FLOPs grow by (alpha beta^2 gamma^2)^phi = 1.92^phi. The built models grow
    // faster at small phi because ceil() on B0's short stages inflates depth: at phi = 1,
    // d = 1.2 but the blocks go from 16 to 23 (x1.44). Measured: x2.57, x4.69, x8.43
    // against the rule's x1.92, x3.69, x7.08. Pin that the excess stays under 40% and shrinks.
    let base = EfficientNetConfig::from_scaling(CompoundScaling::new(0.0)).unwrap();
    let base_macs = base.macs(224, 224) as f64;
    let mut excess = Vec::new();
    for phi in 1..=3 {
        let scaling = CompoundScaling::new(phi as f64);
        let config = EfficientNetConfig::from_scaling(scaling).unwrap();
        let r = config.resolution;
        let ratio = config.macs(r, r) as f64 / base_macs;
        let rule = scaling.flops_factor();
        println!("phi = {phi}: MACs x{ratio:.2}, rule x{rule:.2}");
        assert!(
            ratio >= rule && ratio < 1.4 * rule,
            "phi = {phi}: MACs x{ratio:.3}, rule x{rule:.3}"
        );
        excess.push(ratio / rule);
    }
    assert!(excess.windows(2).all(|w| w[1] < w[0]), "{excess:?}");
}

#[test]
fn stochastic_depth_and_dropout_act_only_in_training() {
    let device = Device::default().autodiff();
    let input = Tensor::<4>::random(
        [8, 3, 32, 32],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    // Without stochastic depth or dropout, two training-mode passes agree (batch statistics
    // are deterministic): any difference below comes from the random drops.
    let quiet = EfficientNetConfig::b0()
        .with_num_classes(5)
        .with_dropout(0.0)
        .with_stochastic_depth_prob(0.0)
        .init(&device);
    let a = quiet.forward(input.clone()).into_data();
    quiet.forward(input.clone()).into_data().assert_eq(&a, true);

    let model = EfficientNetConfig::b0()
        .with_num_classes(5)
        .with_dropout(0.0)
        .with_stochastic_depth_prob(0.5)
        .init(&device);
    let first = model.forward(input.clone()).into_data();
    let second = model.forward(input.clone()).into_data();
    assert_ne!(
        first, second,
        "stochastic depth should change training passes"
    );

    // valid(): stochastic depth and dropout off, running statistics used.
    let eval = model.valid();
    let first = eval.forward(input.clone()).into_data();
    eval.forward(input).into_data().assert_eq(&first, true);
}

#[test]
fn feature_info_describes_the_endpoints_without_running_them() {
    use efficientnet_burn::FeatureInfo;
    let info = |stage, channels, reduction| FeatureInfo {
        stage,
        channels,
        reduction,
    };
    // timm's feature_info for efficientnet_b0 and efficientnetv2_s: same channels, reductions.
    assert_eq!(
        EfficientNetConfig::b0().feature_info(),
        [
            info(0, 16, 2),
            info(1, 24, 4),
            info(2, 40, 8),
            info(4, 112, 16),
            info(6, 320, 32)
        ]
    );
    let v2 = EfficientNetConfig::v2_s().feature_info();
    let channels: Vec<(usize, usize)> = v2.iter().map(|f| (f.channels, f.reduction)).collect();
    assert_eq!(channels, [(24, 2), (48, 4), (64, 8), (160, 16), (256, 32)]);

    // The maps agree with the description, and endpoints_at picks some of them.
    let device = Device::default();
    for config in [
        EfficientNetConfig::b0().with_width(0.25),
        EfficientNetConfig::v2_b0().with_width(0.25),
    ] {
        let model = config.init(&device);
        let input =
            Tensor::<4>::random([1, 3, 64, 96], burn::tensor::Distribution::Default, &device);
        let all = model.endpoints(input.clone());
        for (map, f) in all.iter().zip(model.feature_info()) {
            assert_eq!(
                map.dims(),
                [1, f.channels, 64 / f.reduction, 96 / f.reduction]
            );
        }
        let picked = model.endpoints_at(input.clone(), &[4, 1]).unwrap();
        assert_eq!(picked.len(), 2);
        picked[0]
            .clone()
            .into_data()
            .assert_eq(&all[4].clone().into_data(), true);
        picked[1]
            .clone()
            .into_data()
            .assert_eq(&all[1].clone().into_data(), true);
        let err = model.endpoints_at(input, &[5]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: endpoint index 5 out of range: this model has 5 endpoints"
        );
    }
}

#[test]
fn dropout_and_stochastic_depth_act_in_training_only() {
    // Flex named, not `Device::default()`: with the default device the two training
    // forwards below came out equal in 2 of 30 runs beside the other unit tests (not
    // understood yet); with flex, 0 of 30.
    let config = EfficientNetConfig::b0()
        .with_width(0.1)
        .with_depth(0.5)
        .with_num_classes(4)
        .with_dropout(0.5)
        .with_stochastic_depth_prob(0.5);
    let device = Device::flex().autodiff();
    let model = config.init(&device).train();
    let input = Tensor::<4>::ones([4, 3, 32, 32], &device);
    let differs = |a: Tensor<2>, b: Tensor<2>| {
        a.inner()
            .into_data()
            .iter::<f32>()
            .zip(b.inner().into_data().iter::<f32>())
            .any(|(x, y)| x != y)
    };
    // Training: each forward draws new masks.
    assert!(differs(
        model.forward(input.clone()),
        model.forward(input.clone())
    ));
    // Evaluation: deterministic, on the plain device and on the autodiff one.
    let eval = model.valid();
    let plain = input.clone().inner();
    assert!(!differs(eval.forward(plain.clone()), eval.forward(plain)));
    let eval = eval.fork(&device);
    assert!(!differs(eval.forward(input.clone()), eval.forward(input)));
}
