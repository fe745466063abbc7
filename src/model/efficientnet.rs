//! The whole network: stem, stages of MBConv or Fused-MBConv blocks, head, pooling,
//! dropout and classifier.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::config::{EfficientNetConfig, FeatureInfo};
use crate::error::Error;
use crate::inference::{InferenceModel, Precision};
use crate::model::block::Block;
use crate::model::conv_bn_act::ConvBnAct;

/// EfficientNet (Tan & Le, ICML 2019) and EfficientNetV2 (Tan & Le, ICML 2021).
///
/// Build it from a preset (`EfficientNet::b0(&device)`, `EfficientNet::v2_s(&device)`), from a config
/// (`EfficientNetConfig::b3().with_num_classes(10).init(&device)`) or from compound scaling
/// ([`EfficientNetConfig::from_scaling`]). The model works on any Burn device: the backend is
/// chosen by the device, not by a type parameter. It is the plain Burn module, for training
/// and for any backend, running Burn's ops; for inference,
/// [`for_inference`](Self::for_inference) turns it into an [`InferenceModel`] (on the CPU
/// about 4x faster than this module in evaluation mode: docs/performance.md).
#[derive(Module, Debug)]
pub struct EfficientNet {
    /// 3x3 stride-2 convolution, norm, activation.
    pub stem: ConvBnAct,
    /// The blocks, one `Vec` per stage, in order: for EfficientNetV2 the Fused-MBConv stages
    /// come first. Each stage is all of one kind.
    pub stages: Vec<Vec<Block>>,
    /// 1x1 convolution to the head channels, norm, activation.
    pub head: ConvBnAct,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// The classifier.
    pub classifier: Linear,
    /// The config the model was built from.
    #[module(skip)]
    config: EfficientNetConfig,
}

impl EfficientNet {
    /// A published variant with 1000 classes and fresh weights; `EfficientNet::b3(&device)`
    /// is `EfficientNet::variant(Variant::B3, &device)`.
    pub fn variant(variant: crate::Variant, device: &Device) -> Self {
        variant.config().init(device)
    }

    pub(crate) fn from_config(config: &EfficientNetConfig, device: &Device) -> Result<Self, Error> {
        let stages = config
            .checked_blocks()?
            .iter()
            .map(|stage| stage.iter().map(|block| block.init(device)).collect())
            .collect();
        Ok(Self {
            stem: config.stem().init(device),
            stages,
            head: config.head().init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
            classifier: classifier_for(config, torchvision_classifier_init(config), device),
            config: config.clone(),
        })
    }

    /// The model with a fresh classifier of `num_classes` outputs and everything else kept:
    /// a pretrained backbone ready to fine-tune on other classes (timm's
    /// `reset_classifier`), on the device the old one was on.
    ///
    /// The new classifier starts at zero (weights and bias), as BiT (Kolesnikov et al.,
    /// 2020) fine-tunes: every class starts equally likely, so the first loss is
    /// `ln(num_classes)`. [`EfficientNetConfig::init`]'s head (torchvision's uniform in
    /// `+-1/sqrt(classes)`, made for 1000 classes) gives a 3-class head logits of ~10 on
    /// pretrained features and a first loss several times `ln 3`.
    ///
    /// [`Pretrained::for_finetuning`](crate::Pretrained::for_finetuning) does this for
    /// registry weights; for a checkpoint file:
    ///
    /// ```no_run
    /// use efficientnet_burn::burn::tensor::Device;
    /// use efficientnet_burn::{EfficientNet, EfficientNetConfig, WeightSource};
    ///
    /// let model = EfficientNet::from_pytorch(
    ///     "efficientnet-lite0-57934424.pth",
    ///     EfficientNetConfig::lite0(),
    ///     WeightSource::EfficientNetPytorch,
    ///     &Device::default(),
    /// )?
    /// .with_new_classifier(3)?;
    /// # Ok::<(), efficientnet_burn::Error>(())
    /// ```
    ///
    /// An error if `num_classes` is 0 or over the crate's limit.
    pub fn with_new_classifier(self, num_classes: usize) -> Result<Self, Error> {
        let config = self.config.clone().with_num_classes(num_classes);
        config.validate()?;
        let device = self.classifier.weight.device();
        Ok(Self {
            classifier: classifier_for(&config, Initializer::Zeros, &device),
            config,
            ..self
        })
    }

    /// The model with every batch norm folded into the convolution before it: the same
    /// outputs as `self.valid()` to float rounding (at most 1.2e-6 apart on the parity
    /// fixtures' logits, `tests/parity.rs`) with one pass less per layer. Per output channel
    /// the weight is scaled and the norm's shift becomes a bias
    /// ([`ConvBnAct::fold_batch_norm`]).
    ///
    /// The result is for inference only: its norms no longer track batch statistics, and it
    /// has different parameters (a bias per convolution instead of a norm), so
    /// [`load_pytorch`](Self::load_pytorch) cannot load into it: load, then fold.
    /// [`save_burnpack`](Self::save_burnpack) saves it, and
    /// [`load_burnpack`](Self::load_burnpack) reloads that file into a model folded the same
    /// way. For inference prefer [`for_inference`](Self::for_inference), which folds and
    /// prepares the network for the crate's inference engine.
    pub fn fold_batch_norms(self) -> Self {
        let model = self.valid();
        Self {
            stem: model.stem.fold_batch_norm(),
            stages: model
                .stages
                .into_iter()
                .map(|stage| stage.into_iter().map(Block::fold_batch_norm).collect())
                .collect(),
            head: model.head.fold_batch_norm(),
            ..model
        }
    }

    /// Renamed [`fold_batch_norms`](Self::fold_batch_norms) ("fused" now means only
    /// Fused-MBConv).
    #[deprecated(since = "0.1.0", note = "renamed `fold_batch_norms`")]
    pub fn fuse_batch_norm(self) -> Self {
        self.fold_batch_norms()
    }

    /// The model for inference: batch norms folded ([`fold_batch_norms`](Self::fold_batch_norms))
    /// and the network prepared for the crate's inference engine, where it runs; see
    /// [`InferenceModel`]. Drops autodiff (`valid()`).
    pub fn for_inference(self) -> InferenceModel {
        InferenceModel::new(self)
    }

    /// [`for_inference`](Self::for_inference) with the CPU engine's weights in `precision`:
    /// [`Precision::Bf16Weights`] keeps half the bytes, at about three significant digits
    /// of each weight.
    ///
    /// ```
    /// use efficientnet_burn::burn::tensor::{Device, Tensor};
    /// use efficientnet_burn::{EfficientNetConfig, Precision};
    ///
    /// let device = Device::default();
    /// let model = EfficientNetConfig::b0().with_width(0.25).init(&device);
    /// let model = model.for_inference_with(Precision::Bf16Weights);
    /// assert_eq!(model.precision(), Some(Precision::Bf16Weights));
    /// let logits = model.forward(Tensor::<4>::zeros([1, 3, 64, 64], &device));
    /// assert_eq!(logits.dims(), [1, 1000]);
    /// ```
    pub fn for_inference_with(self, precision: Precision) -> InferenceModel {
        InferenceModel::with_precision(self, precision)
    }

    /// Whether the batch norms are folded into the convolutions
    /// ([`fold_batch_norms`](Self::fold_batch_norms)).
    pub fn is_folded(&self) -> bool {
        self.stem.bn.is_none()
    }

    /// Renamed [`is_folded`](Self::is_folded).
    #[deprecated(since = "0.1.0", note = "renamed `is_folded`")]
    pub fn is_fused(&self) -> bool {
        self.is_folded()
    }

    /// The config the model was built from.
    pub fn config(&self) -> &EfficientNetConfig {
        &self.config
    }

    /// Class logits.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`, normalised as the weights expect
    /// - output: `[batch, num_classes]`
    ///
    /// # Panics
    ///
    /// If [`check_input`](Self::check_input) refuses the input's shape, with its message,
    /// e.g. `invalid input: EfficientNet expects input of shape [batch, 3, height, width]
    /// with every size at least 1, got [1, 4, 224, 224]`. [`try_forward`](Self::try_forward)
    /// returns that as an error instead.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        self.forward_head(self.forward_features(input))
    }

    /// [`forward`](Self::forward) for input from outside the program: a wrong shape is an
    /// [`Error::InputShape`] instead of a panic.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`
    /// - output: `[batch, num_classes]`
    pub fn try_forward(&self, input: Tensor<4>) -> Result<Tensor<2>, Error> {
        self.check_input(input.dims())?;
        Ok(self.forward(input))
    }

    /// Whether the model takes input of shape `dims`: `in_channels` channels and a batch,
    /// height and width of at least 1. Any such size runs: every layer pads, so even a 1x1
    /// image gives a 1x1 head map (inputs smaller than 32 pixels a side, the network's
    /// total stride, see less than one pixel per head cell).
    pub fn check_input(&self, dims: [usize; 4]) -> Result<(), Error> {
        let [batch, channels, height, width] = dims;
        if channels != self.config.in_channels || batch == 0 || height == 0 || width == 0 {
            return Err(Error::InputShape {
                expected_channels: self.config.in_channels,
                got: dims,
            });
        }
        Ok(())
    }

    /// The head's feature map, before pooling.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`
    /// - output: `[batch, head_channels, height / 32, width / 32]` (rounded as the padding
    ///   style rounds)
    ///
    /// # Panics
    ///
    /// If [`check_input`](Self::check_input) refuses the input's shape.
    pub fn forward_features(&self, input: Tensor<4>) -> Tensor<4> {
        let x = self.run_stages(input, usize::MAX, |_, _| {});
        self.head.forward(x)
    }

    /// Pooled features, before dropout and the classifier (timm's `pre_logits`).
    ///
    /// # Shapes
    ///
    /// - `features`: `[batch, head_channels, height', width']`, from
    ///   [`forward_features`](Self::forward_features)
    /// - output: `[batch, head_channels]`
    pub fn pre_logits(&self, features: Tensor<4>) -> Tensor<2> {
        features.mean_dim(3).mean_dim(2).flatten(1, 3)
    }

    /// Global average pooling, dropout and the classifier.
    ///
    /// # Shapes
    ///
    /// - `features`: `[batch, head_channels, height', width']`, from
    ///   [`forward_features`](Self::forward_features)
    /// - output: `[batch, num_classes]`
    pub fn forward_head(&self, features: Tensor<4>) -> Tensor<2> {
        let pooled = self.pre_logits(features);
        self.classifier.forward(self.dropout.forward(pooled))
    }

    /// Multi-scale feature maps for detection and segmentation backbones: the output of the
    /// last stage at each resolution, i.e. at reductions 2, 4, 8, 16 and 32 for the
    /// published variants (channels 16, 24, 40, 112, 320 for B0; 24, 48, 64, 160, 256 for
    /// V2-S), as timm's `features_only`.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`
    /// - output: for each endpoint stage `s`, `[batch, channels_s, height / r_s, width / r_s]`
    ///
    /// # Panics
    ///
    /// If [`check_input`](Self::check_input) refuses the input's shape.
    pub fn endpoints(&self, input: Tensor<4>) -> Vec<Tensor<4>> {
        self.stage_outputs(input, &self.config.endpoint_stages())
    }

    /// The channels, reduction and stage of each map [`endpoints`](Self::endpoints) returns,
    /// known without running the model (timm's `feature_info`): what a detection or
    /// segmentation neck is built from.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        self.config.feature_info()
    }

    /// Some of the [`endpoints`](Self::endpoints), by their index in
    /// [`feature_info`](Self::feature_info) (timm's `out_indices`), in the order asked. The
    /// network runs only as far as the deepest one needs.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`
    /// - output: for each index `i`, `[batch, channels_i, height / r_i, width / r_i]`
    pub fn endpoints_at(
        &self,
        input: Tensor<4>,
        indices: &[usize],
    ) -> Result<Vec<Tensor<4>>, Error> {
        self.check_input(input.dims())?;
        let stages = self.config.endpoint_stages_at(indices)?;
        Ok(self.stage_outputs(input, &stages))
    }

    /// The outputs of `stages` (in the order asked, repeats allowed), running only as far
    /// as the deepest one.
    fn stage_outputs(&self, input: Tensor<4>, stages: &[usize]) -> Vec<Tensor<4>> {
        let Some(&last) = stages.iter().max() else {
            return Vec::new();
        };
        let mut maps = vec![None; stages.len()];
        self.run_stages(input, last, |stage, x| {
            for (slot, _) in maps.iter_mut().zip(stages).filter(|(_, s)| **s == stage) {
                *slot = Some(x.clone());
            }
        });
        maps.into_iter().flatten().collect()
    }

    /// Stem and stages up to and including stage `until`, calling
    /// `observe(stage_index, output)` after each stage.
    fn run_stages(
        &self,
        input: Tensor<4>,
        until: usize,
        mut observe: impl FnMut(usize, &Tensor<4>),
    ) -> Tensor<4> {
        if let Err(err) = self.check_input(input.dims()) {
            panic!("{err}");
        }
        let mut x = self.stem.forward(input);
        for (index, stage) in self.stages.iter().enumerate().take(until.saturating_add(1)) {
            x = stage.iter().fold(x, |x, block| block.forward(x));
            observe(index, &x);
        }
        x
    }

    /// The parameters and running statistics holding NaN or infinity, by Burn path (e.g.
    /// `stages.1.0.depthwise.bn.running_var`). Loading does not refuse such weights (a
    /// checkpoint is data, and a user may want to inspect it), but they make every output
    /// NaN. [`check_finite`](Self::check_finite) makes that an error; the `classify`
    /// example calls it before running.
    pub fn non_finite_parameters(&self) -> Vec<String> {
        let mut finder = NonFiniteFinder::default();
        self.visit(&mut finder);
        finder.found
    }

    /// [`Error::NonFiniteWeights`] if any weight is NaN or infinite.
    pub fn check_finite(&self) -> Result<(), Error> {
        refuse_non_finite(self.non_finite_parameters())
    }

    /// Trainable parameters (batch-norm running statistics excluded), which is the figure
    /// the paper and torchvision publish. Burn's `num_params()` counts the statistics too.
    pub fn num_trainable_params(&self) -> usize {
        let mut counter = TrainableCounter::default();
        self.visit(&mut counter);
        counter.count
    }

    /// Multiply-adds of one forward pass over a `height x width` image (convolutions and
    /// classifier), computed analytically from the config.
    pub fn macs(&self, height: usize, width: usize) -> u64 {
        self.config.macs(height, width)
    }
}

/// A visitor's path segment for a module entered: none for an enum's variant (a block's
/// `MBConv` / `FusedMBConv`), so paths read `stages.1.0.depthwise.conv`, as the checkpoint
/// key tables name them.
fn enter(path: &mut Vec<String>, name: &str, container_type: &str) {
    if !container_type.starts_with("Enum:") {
        path.push(name.to_string());
    }
}

/// Leaves what [`enter`] entered.
fn exit(path: &mut Vec<String>, container_type: &str) {
    if !container_type.starts_with("Enum:") {
        path.pop();
    }
}

/// [`Error::NonFiniteWeights`] naming `parameters`, if there are any
/// ([`EfficientNet::check_finite`], [`InferenceModel::check_finite`]).
pub(crate) fn refuse_non_finite(parameters: Vec<String>) -> Result<(), Error> {
    if parameters.is_empty() {
        Ok(())
    } else {
        Err(Error::NonFiniteWeights { parameters })
    }
}

/// Counts float parameters, skipping `running_mean` / `running_var` buffers.
#[derive(Default)]
struct TrainableCounter {
    path: Vec<String>,
    count: usize,
}

impl ModuleVisitor for TrainableCounter {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        enter(&mut self.path, name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        exit(&mut self.path, container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let is_running_stat = matches!(
            self.path.last().map(String::as_str),
            Some("running_mean" | "running_var")
        );
        if !is_running_stat {
            self.count += param.lazy_shape().num_elements();
        }
    }
}

/// Collects the paths of float tensors with a NaN or infinite element.
#[derive(Default)]
struct NonFiniteFinder {
    path: Vec<String>,
    found: Vec<String>,
}

impl ModuleVisitor for NonFiniteFinder {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        enter(&mut self.path, name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        exit(&mut self.path, container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let finite = param.val().is_finite().all().into_scalar::<bool>();
        if !finite {
            self.found.push(self.path.join("."));
        }
    }
}

/// torchvision's classifier weights: uniform in `+-1/sqrt(classes)`.
fn torchvision_classifier_init(config: &EfficientNetConfig) -> Initializer {
    let range = 1.0 / (config.num_classes as f64).sqrt();
    Initializer::Uniform {
        min: -range,
        max: range,
    }
}

/// A classifier for `config`: weights drawn by `weights`, bias zero.
fn classifier_for(config: &EfficientNetConfig, weights: Initializer, device: &Device) -> Linear {
    let mut classifier = LinearConfig::new(config.scaled_head_channels(), config.num_classes)
        .with_initializer(weights)
        .init(device);
    classifier.bias = Some(Initializer::Zeros.init_with([config.num_classes], None, None, device));
    classifier
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trainable_count_excludes_running_statistics() {
        let device = Device::default();
        let model = EfficientNet::b0(&device);
        // Burn counts running_mean and running_var: 2 x 21,008 BN channels more.
        assert_eq!(model.num_trainable_params(), 5_288_548);
        assert_eq!(model.num_params(), 5_288_548 + 2 * 21_008);
    }

    #[test]
    fn a_new_classifier_keeps_the_backbone() {
        let device = Device::default();
        let model = crate::EfficientNetConfig::b0()
            .with_width(0.25)
            .init(&device);
        let stem = model.stem.conv.weight.val();
        let head = model.head.conv.weight.val();
        let model = model.with_new_classifier(7).unwrap();
        assert_eq!(model.config().num_classes, 7);
        assert_eq!(
            model.classifier.weight.dims(),
            [model.config().scaled_head_channels(), 7]
        );
        stem.into_data()
            .assert_eq(&model.stem.conv.weight.val().into_data(), true);
        head.into_data()
            .assert_eq(&model.head.conv.weight.val().into_data(), true);
        // A zero head: every class equally likely at first.
        let image = burn::tensor::Tensor::<4>::ones([1, 3, 32, 32], &device);
        let logits = model.clone().valid().forward(image);
        assert_eq!(logits.dims(), [1, 7]);
        logits
            .into_data()
            .assert_eq(&burn::tensor::TensorData::zeros::<f32, _>([1, 7]), true);
        let err = model.with_new_classifier(0).unwrap_err();
        assert!(
            err.to_string().contains("num_classes must be at least 1"),
            "{err}"
        );
    }
}
