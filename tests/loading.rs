//! Loading beyond parity: strictness, clear errors, backbone-only loading, native round trip.

mod common;

use burn::tensor::{Device, Tensor};
use common::{fixture, max_abs_diff, read_reference, tensor};
use efficientnet_burn::{
    EfficientNet, EfficientNetConfig, Error, KeyLayout, LoadOptions, SavedModel, WeightSource,
};

fn timm_small() -> EfficientNetConfig {
    EfficientNetConfig::new()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10)
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("efficientnet-burn-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load(
    path: impl AsRef<std::path::Path>,
    config: EfficientNetConfig,
) -> Result<EfficientNet, Error> {
    EfficientNet::from_pytorch(path, config, WeightSource::Timm, &Device::default())
}

#[test]
fn weights_of_another_width_name_the_key_and_both_shapes() {
    // timm_small (width 0.25, stem 8 channels) into a width-0.5 model (stem 16 channels).
    let err = load(fixture("timm_small.pth"), timm_small().with_width(0.5)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "shape mismatch for `conv_stem.weight` (model parameter `stem.conv.weight`): \
         checkpoint [8, 3, 3, 3], model [16, 3, 3, 3]; are these weights of another variant \
         or width?"
    );
}

#[test]
fn weights_of_another_depth_list_missing_and_unexpected_keys() {
    // Depth 0.34 gives repeats [1, 1, 1, 2, 2, 2, 1]; depth 1.0 gives B0's [1, 2, 2, 3, 3, 4, 1].
    let err = load(fixture("timm_small.pth"), timm_small().with_depth(1.0)).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("checkpoint (timm layout) does not fit the model: "),
        "{message}"
    );
    assert!(
        message.contains("missing [blocks.1.1.conv_pw.weight, "),
        "{message}"
    );
    assert!(message.contains(" 0 unexpected []"), "{message}");
    // And the other way round: a shallower model than the file.
    let err = load(fixture("torchvision_small.pth"), timm_small()).unwrap_err();
    assert!(
        err.to_string()
            .contains("checkpoint has the torchvision key layout"),
        "{err}"
    );
    let err = EfficientNet::from_pytorch(
        fixture("torchvision_small.pth"),
        timm_small().with_width(0.1).with_depth(0.34),
        WeightSource::Torchvision,
        &Device::default(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains(" 0 missing []"), "{message}");
    assert!(
        message.contains("unexpected [features.1.1.block.0.0.weight"),
        "{message}"
    );
}

#[test]
fn another_layout_than_the_source_says_is_an_error() {
    let err = EfficientNet::from_pytorch(
        fixture("timm_small.pth"),
        timm_small(),
        WeightSource::Torchvision,
        &Device::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint has the timm key layout, but torchvision was expected"
    );
}

#[test]
fn layout_is_detected_when_not_given() {
    let device = Device::default();
    let model = WeightSource::EfficientNetPytorch
        .configure(timm_small().with_width(0.5))
        .init(&device)
        .load_pytorch(fixture("effnet_pytorch_small.pth"), &LoadOptions::new())
        .unwrap();
    let reference = read_reference("effnet_pytorch_small.io.safetensors");
    let logits = model
        .forward(tensor(&reference["input"], &device))
        .into_data();
    assert!(max_abs_diff(&logits, &reference["logits"]) < 1e-4);
}

#[test]
fn backbone_only_loading_keeps_a_new_head() {
    let device = Device::default();
    let reference = read_reference("timm_small.io.safetensors");
    // Strict loading refuses a 10-class checkpoint into a 7-class model...
    let err = load(fixture("timm_small.pth"), timm_small().with_num_classes(7)).unwrap_err();
    assert!(err.to_string().contains("classifier.weight"), "{err}");
    // ...backbone-only loading accepts it, and the features are the reference's.
    let model = WeightSource::Timm
        .configure(timm_small().with_num_classes(7))
        .init(&device)
        .load_pytorch(
            fixture("timm_small.pth"),
            &LoadOptions::new()
                .with_layout(KeyLayout::Timm)
                .with_skip_classifier(true),
        )
        .unwrap();
    let input = tensor::<4>(&reference["input"], &device);
    let pre = model
        .pre_logits(model.forward_features(input.clone()))
        .into_data();
    assert!(max_abs_diff(&pre, &reference["pre_logits"]) < 1e-4);
    assert_eq!(model.forward(input).dims(), [2, 7]);
}

#[test]
fn missing_file_is_an_io_error() {
    let err = load("/nonexistent/weights.pth", timm_small()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/weights.pth: "),
        "{err}"
    );
}

/// The timm fixture's config (as the source configures it) and the model loaded from it.
fn timm_fixture(device: &Device) -> (EfficientNetConfig, EfficientNet) {
    let config = WeightSource::Timm.configure(timm_small());
    let model = EfficientNet::from_pytorch(
        fixture("timm_small.pth"),
        config.clone(),
        WeightSource::Timm,
        device,
    )
    .unwrap();
    (config, model)
}

#[test]
fn burnpack_round_trip_is_exact() {
    let device = Device::default();
    let (config, model) = timm_fixture(&device);
    let path = temp_file("round-trip.bpk", b"");
    model.save_burnpack(&path).unwrap();
    let reloaded = config.init(&device).load_burnpack(&path).unwrap();
    let input = Tensor::<4>::ones([1, 3, 32, 32], &device);
    model
        .forward(input.clone())
        .into_data()
        .assert_eq(&reloaded.forward(input).into_data(), true);
    // A burnpack of another width does not fit.
    let err = timm_small()
        .with_width(0.5)
        .init(&device)
        .load_burnpack(&path)
        .unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
}

#[test]
fn folded_models_round_trip_through_burnpack_and_refuse_unfolded_files() {
    let device = Device::default();
    let (config, model) = timm_fixture(&device);
    let unfused_path = temp_file("unfused.bpk", b"");
    model.save_burnpack(&unfused_path).unwrap();
    let folded = model.fold_batch_norms();
    let path = temp_file("folded.bpk", b"");
    folded.save_burnpack(&path).unwrap();

    let reloaded = config
        .init(&device)
        .fold_batch_norms()
        .load_burnpack(&path)
        .unwrap();
    let input = Tensor::<4>::ones([1, 3, 32, 32], &device);
    folded
        .forward(input.clone())
        .into_data()
        .assert_eq(&reloaded.forward(input).into_data(), true);
    // Folded weights do not fit an unfolded model, nor the other way round.
    for (model, path) in [
        (config.init(&device), &path),
        (config.init(&device).fold_batch_norms(), &unfused_path),
    ] {
        let err = model.load_burnpack(path).unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    }
}

#[test]
fn wrapped_training_checkpoints_load() {
    // {"state_dict": {"module.features.0.0.weight": ...}, "epoch": 7}, as training scripts
    // with DataParallel save it.
    let device = Device::default();
    let config = EfficientNetConfig::new()
        .with_width(0.1)
        .with_depth(1.1)
        .with_num_classes(10);
    let model = EfficientNet::from_pytorch(
        fixture("torchvision_small_wrapped.pth"),
        config,
        WeightSource::Torchvision,
        &device,
    )
    .unwrap();
    let reference = read_reference("torchvision_small.io.safetensors");
    let logits = model
        .forward(tensor(&reference["input"], &device))
        .into_data();
    assert!(max_abs_diff(&logits, &reference["logits"]) < 1e-4);
}

#[test]
fn saved_models_from_before_the_one_stage_list_still_load() {
    // Saved by the crate at 5484fbc (scripts/make_legacy_burnpack.sh): a V2-B0 whose
    // Fused-MBConv stages were `fused_stages.*` and MBConv stages `stages.*` from 0, as
    // trained and folded, each with the logits it gave.
    let device = Device::flex();
    let values: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let input = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(values, [2, 3, 32, 32]),
        &device,
    );
    for (form, for_inference) in [("trainable", false), ("folded", true)] {
        let dir = fixture(&format!("legacy/{form}"));
        let text = std::fs::read_to_string(dir.join("logits.json")).unwrap();
        let expected: Vec<f32> = serde_json::from_str(&text).unwrap();
        let saved = SavedModel::load(&dir, &device).unwrap_or_else(|e| panic!("{form}: {e}"));
        assert_eq!(saved.model.trainable().is_none(), for_inference, "{form}");
        // The file's names are the old ones: the loader read them into today's.
        let index = std::fs::read(dir.join("model.bpk")).unwrap();
        let names = String::from_utf8_lossy(&index);
        assert!(
            names.contains("fused_stages.0.0.conv"),
            "{form}: not a legacy file"
        );
        let logits: Vec<f32> = saved
            .model
            .into_inference()
            .forward(input.clone())
            .into_data()
            .try_to_vec()
            .unwrap();
        let diff = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "{form}: logits differ by {diff}");
    }
    // A renamed stage that does not exist in the model is still a mismatch, not a silent
    // partial load: a V1 model (no Fused-MBConv stages) refuses the V2 file.
    let err = EfficientNetConfig::b0()
        .with_width(0.25)
        .with_num_classes(3)
        .init(&device)
        .load_burnpack(fixture("legacy/trainable/model.bpk"))
        .unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
}
