//! `InferenceModel` (`EfficientNet::for_inference`): when it is planned for the CPU engine,
//! when it runs Burn's ops, and what every loader returns. Its numbers against Burn's ops
//! and the reference libraries are in `tests/parity.rs`.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Tensor};
use common::max_abs_diff;
use efficientnet_burn::{
    Classifier, EfficientNet, EfficientNetConfig, InferenceModel, Precision, SavedModel,
    SavedNetwork,
};

fn slim() -> EfficientNetConfig {
    EfficientNetConfig::b0()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(7)
}

fn input(batch: usize, device: &Device) -> Tensor<4> {
    Tensor::random([batch, 3, 40, 36], Distribution::Normal(0.0, 1.0), device)
}

#[test]
fn for_inference_plans_on_flex_and_matches_the_unplanned_model() {
    let device = Device::flex();
    let model = slim().init(&device).valid();
    let planned = model.clone().for_inference();
    assert!(planned.is_planned() && planned.network().is_folded());
    // Preparing a folded network again is the same preparation.
    let again = InferenceModel::new(planned.network().clone());
    assert!(again.is_planned());
    for batch in [1, 3] {
        let x = input(batch, &device);
        let expected = model.forward(x.clone()).into_data();
        for (form, got) in [("planned", &planned), ("prepared twice", &again)] {
            let diff = max_abs_diff(&got.forward(x.clone()).into_data(), &expected);
            assert!(diff <= 1e-5, "{form}, batch {batch}: {diff}");
        }
    }
}

#[test]
fn bf16_weights_move_the_logits_by_their_rounding_only() {
    // Each weight rounded to bf16 moves by up to 2^-9 of itself, and the logits by a small
    // part of their own size. The exact products are checked in
    // the engine's unit tests (`cpu::matmul`); this holds the whole plan to it.
    let device = Device::flex();
    let model = slim().init(&device).valid();
    let full = model.clone().for_inference();
    let reduced = model.for_inference_with(Precision::Bf16Weights);
    assert_eq!(reduced.precision(), Some(Precision::Bf16Weights));
    assert_eq!(full.precision(), Some(Precision::F32));
    // A classifier planned again in bf16 runs what `for_inference_with` runs.
    let preprocess = full.config().default_preprocess();
    let classifier = Classifier::new(full.clone(), preprocess, Vec::new())
        .unwrap()
        .with_precision(Precision::Bf16Weights);
    assert_eq!(classifier.model.precision(), Some(Precision::Bf16Weights));
    let x = input(2, &device);
    assert_eq!(
        classifier.model.forward(x.clone()).into_data(),
        reduced.forward(x).into_data()
    );
    for batch in [1, 3] {
        let x = input(batch, &device);
        let expected = full.forward(x.clone()).into_data();
        let scale = expected.iter::<f32>().map(f32::abs).fold(0.0f32, f32::max);
        let diff = max_abs_diff(&reduced.forward(x).into_data(), &expected);
        assert!(
            diff > 0.0,
            "batch {batch}: the bf16 weights gave the f32 logits exactly"
        );
        // Seen: 0.3-1% of the largest logit (a fresh model's logits are ~1e-11, the sum of
        // long chains of roundings); weights read wrongly give differences of its size.
        assert!(
            diff <= 5e-2 * scale,
            "batch {batch}: {diff} against logits up to {scale}"
        );
    }
}

#[test]
fn full_width_small_maps_match_the_unplanned_model() {
    // B0 at its full width on a 64x64 image: its last stages run on 4x4 and 2x2 maps, where
    // the projections' weights (up to 1152 x 320) are split into panel groups over the
    // threads and the squeeze-excitation gates are applied to the map before the product,
    // not as each group reads its rows. A slim model never reaches that path.
    let device = Device::flex();
    let model = EfficientNetConfig::b0()
        .with_num_classes(7)
        .init(&device)
        .valid();
    let planned = model.clone().for_inference();
    assert!(planned.is_planned());
    for batch in [1, 2] {
        let x = Tensor::random([batch, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let expected = model.forward(x.clone()).into_data();
        let diff = max_abs_diff(&planned.forward(x).into_data(), &expected);
        // Freshly initialised, this deep a model's logits are tiny (about 1e-13): the bound
        // is relative to their size.
        let scale = expected
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .fold(0.0f32, |max, value| max.max(value.abs()));
        assert!(scale > 0.0, "batch {batch}: all logits zero");
        assert!(
            diff <= 1e-4 * scale,
            "batch {batch}: {diff} against logits up to {scale}"
        );
    }
}

#[test]
fn other_weights_make_another_inference_model() {
    // An InferenceModel cannot change its weights (nothing to go stale): loading another
    // checkpoint or fine-tuning a head happens on the EfficientNet, which is then prepared
    // again, and runs its new weights.
    let device = Device::flex();
    let config = EfficientNetConfig::b0()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10);
    let first = config.init(&device);
    let planned = first.clone().for_inference();
    let checkpoint = EfficientNet::from_pytorch(
        common::fixture("timm_small.pth"),
        config.clone(),
        efficientnet_burn::WeightSource::Timm,
        &device,
    )
    .unwrap();
    let mut fine_tuned = first.valid();
    let bias = fine_tuned.classifier.bias.take().unwrap().val();
    fine_tuned.classifier.bias = Some(burn::module::Param::from_tensor(bias.add_scalar(1.0)));
    let x = input(2, &device);
    for (what, other) in [("checkpoint", checkpoint), ("fine-tuned head", fine_tuned)] {
        let expected = other.clone().valid().forward(x.clone()).into_data();
        let before = max_abs_diff(&planned.forward(x.clone()).into_data(), &expected);
        assert!(
            before > 1e-2,
            "{what}: the test needs different weights ({before})"
        );
        let prepared = other.for_inference();
        assert!(prepared.is_planned());
        let diff = max_abs_diff(&prepared.forward(x.clone()).into_data(), &expected);
        assert!(diff <= 1e-5, "{what}: {diff}");
    }
}

#[test]
fn a_model_built_for_autodiff_is_planned_on_the_inner_device() {
    // `for_inference` drops autodiff (as `fold_batch_norms` always has), so a model built on
    // an autodiff device comes back planned for plain flex tensors.
    let device = Device::flex().autodiff();
    let model = slim().init(&device).for_inference();
    assert!(model.is_planned() && model.network().is_folded());
    assert_eq!(model.forward(input(1, &Device::flex())).dims(), [1, 7]);
}

#[test]
fn planned_models_refuse_bad_input_as_before() {
    let device = Device::flex();
    let model = slim().init(&device).for_inference();
    let wrong = Tensor::<4>::zeros([1, 4, 32, 32], &device);
    let err = model.try_forward(wrong.clone()).unwrap_err().to_string();
    assert!(err.contains("got [1, 4, 32, 32]"), "{err}");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.forward(wrong)))
        .unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("got [1, 4, 32, 32]"), "{message}");
}

#[test]
fn non_finite_input_gives_non_finite_output_not_a_panic() {
    let device = Device::flex();
    let model = slim().init(&device).for_inference();
    let mut values = vec![0.5f32; 3 * 40 * 36];
    values[17] = f32::NAN;
    let x = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(values, [1, 3, 40, 36]),
        &device,
    );
    let logits = model.forward(x).into_data().try_to_vec::<f32>().unwrap();
    assert!(logits.iter().all(|v| v.is_nan()), "{logits:?}");
}

#[test]
fn loaders_for_inference_return_planned_models() {
    let device = Device::flex();
    let model = slim().init(&device);
    let pretrained = Classifier::new(
        model.clone(),
        slim().default_preprocess(),
        (0..7).map(|i| format!("class {i}")).collect(),
    )
    .unwrap();
    assert!(pretrained.model.is_planned());

    // A SavedModel saved for inference comes back planned; saved as trained, it comes back
    // as trained (to resume training).
    let dir = std::env::temp_dir().join(format!("efficientnet-planned-{}", std::process::id()));
    for (name, model, planned) in [
        (
            "folded",
            SavedNetwork::Inference(model.clone().for_inference()),
            true,
        ),
        ("trained", SavedNetwork::Trainable(model), false),
    ] {
        let path = dir.join(name);
        let classes = (0..7).map(|i| format!("c{i}")).collect();
        SavedModel {
            model,
            classes,
            preprocess: slim().default_preprocess(),
        }
        .save(&path)
        .unwrap();
        let loaded = SavedModel::load(&path, &device).unwrap();
        match loaded.model {
            SavedNetwork::Inference(model) => assert!(planned && model.is_planned(), "{name}"),
            SavedNetwork::Trainable(model) => assert!(!planned && !model.is_folded(), "{name}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn planned_endpoints_match_the_unplanned_ones() {
    // Through the plan: every endpoint, and some in another order with a repeat (which stop
    // the network early), for a V1 and a V2 model.
    let device = Device::flex();
    for config in [
        slim(),
        EfficientNetConfig::v2_b0().with_width(0.3).with_depth(0.5),
    ] {
        let model = config.init(&device).valid();
        let planned = model.clone().for_inference();
        let x = input(2, &device);
        let expected = model.endpoints(x.clone());
        let got = planned.endpoints(x.clone());
        assert_eq!(got.len(), expected.len());
        for (got, expected) in got.into_iter().zip(&expected) {
            assert_eq!(got.dims(), expected.dims());
            let diff = max_abs_diff(&got.into_data(), &expected.clone().into_data());
            assert!(diff <= 1e-5, "endpoint: {diff}");
        }
        let got = planned.endpoints_at(x.clone(), &[3, 0, 2, 2]).unwrap();
        for (got, index) in got.into_iter().zip([3, 0, 2, 2]) {
            let diff = max_abs_diff(&got.into_data(), &expected[index].clone().into_data());
            assert!(diff <= 1e-5, "endpoint {index}: {diff}");
        }
        assert!(planned.endpoints_at(x, &[9]).is_err());
    }
}

/// Every float parameter's values, in the module's order.
#[derive(Default)]
struct Values(Vec<Vec<f32>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .push(param.val().into_data().try_to_vec::<f32>().unwrap());
    }
}

fn values(model: &EfficientNet) -> Vec<Vec<f32>> {
    let mut values = Values::default();
    model.visit(&mut values);
    values.0
}

#[test]
fn a_planned_network_keeps_its_packed_weights_once_and_gives_them_back_folded() {
    let device = Device::flex();
    // B0 (MBConv, a stem read from NCHW) and V2 (Fused-MBConv with and without projection).
    for config in [
        slim(),
        EfficientNetConfig::v2_b0().with_width(0.3).with_depth(0.5),
    ] {
        let model = config.init(&device).valid();
        let folded = model.clone().fold_batch_norms();
        let want = values(&folded);
        for precision in Precision::ALL {
            let planned = model.clone().for_inference_with(precision);
            let network = planned.network();
            // In f32 the packed weights are in the plan only, until something reads the
            // network's; a bf16 plan holds only their rounding, so the network keeps them.
            let lazy = precision == Precision::F32;
            assert_eq!(!network.stem.conv.weight.is_initialized(), lazy);
            assert_eq!(!network.head.conv.weight.is_initialized(), lazy);
            assert_eq!(!network.classifier.weight.is_initialized(), lazy);
            assert!(planned.check_finite().is_ok());
            // Either way, the network's weights are the folded ones, to the bit.
            let got = values(network);
            assert_eq!(got.len(), want.len());
            for (index, (got, want)) in got.iter().zip(&want).enumerate() {
                assert_eq!(got.len(), want.len(), "parameter {index}");
                for (&got, &want) in got.iter().zip(want) {
                    let exact = got.to_bits() == want.to_bits();
                    assert!(exact, "{precision:?} parameter {index}: {got} vs {want}");
                }
            }
            // Saved from the plan, the weights load back as the folded ones.
            if precision == Precision::F32 {
                let path = std::env::temp_dir().join(format!(
                    "efficientnet-burn-planned-{}-{}.bpk",
                    std::process::id(),
                    config.stages.len()
                ));
                planned.save_burnpack(&path).unwrap();
                let again = config
                    .init(&device)
                    .fold_batch_norms()
                    .load_burnpack(&path)
                    .unwrap();
                // (Burn maps the file: it goes after the values are read.)
                assert_eq!(values(&again), want);
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
}
