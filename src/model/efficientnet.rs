//! The whole network: stem, Fused-MBConv and MBConv stages, head, pooling, dropout and
//! classifier.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::config::{EfficientNetConfig, FeatureInfo};
use crate::error::Error;
use crate::model::block::BlockConfig;
use crate::model::conv_bn_act::ConvBnAct;
use crate::model::fused_mbconv::FusedMBConv;
use crate::model::mbconv::MBConv;
use crate::variant::Variant;

/// EfficientNet (Tan & Le, ICML 2019) and EfficientNetV2 (Tan & Le, ICML 2021).
///
/// Build it from a preset (`EfficientNet::b0(&device)`, `EfficientNet::v2_s(&device)`), from a config
/// (`EfficientNetConfig::b3().with_num_classes(10).init(&device)`) or from compound scaling
/// ([`EfficientNetConfig::from_scaling`]). The model works on any Burn device: the backend is
/// chosen by the device, not by a type parameter.
#[derive(Module, Debug)]
pub struct EfficientNet {
    /// 3x3 stride-2 convolution, norm, activation.
    pub stem: ConvBnAct,
    /// Fused-MBConv blocks, one `Vec` per stage: EfficientNetV2's early stages, which run
    /// before [`stages`](Self::stages). Empty for EfficientNet (V1).
    pub fused_stages: Vec<Vec<FusedMBConv>>,
    /// MBConv blocks, one `Vec` per stage (for V2, the stages after the fused ones).
    pub stages: Vec<Vec<MBConv>>,
    /// 1x1 convolution to the head channels, norm, activation.
    pub head: ConvBnAct,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// The classifier.
    pub classifier: Linear,
    /// The config the model was built from.
    #[module(skip)]
    config: EfficientNetConfig,
    /// The CPU plan [`for_inference`](Self::for_inference) attaches.
    #[module(skip)]
    plan: InferencePlan,
}

/// The flex CPU backend's planned inference path for a folded model (`model::cpu::plan`),
/// shared by clones of the model; empty for any other model.
#[derive(Clone, Debug, Default)]
struct InferencePlan(#[cfg(feature = "flex")] Option<std::sync::Arc<crate::model::cpu::Plan>>);

macro_rules! preset_models {
    ($($fn_name:ident => $variant:ident),* $(,)?) => {
        $(
            #[doc = concat!(
                "The published `", stringify!($fn_name), "` ([`Variant::", stringify!($variant),
                "`]) with 1000 classes and fresh weights (initialised as torchvision does)."
            )]
            pub fn $fn_name(device: &Device) -> Self {
                Variant::$variant.config().init(device)
            }
        )*
    };
}

impl EfficientNet {
    preset_models!(
        b0 => B0, b1 => B1, b2 => B2, b3 => B3, b4 => B4, b5 => B5, b6 => B6, b7 => B7,
        b8 => B8, l2 => L2,
        lite0 => Lite0, lite1 => Lite1, lite2 => Lite2, lite3 => Lite3, lite4 => Lite4,
        v2_s => V2S, v2_m => V2M, v2_l => V2L, v2_xl => V2XL,
        v2_b0 => V2B0, v2_b1 => V2B1, v2_b2 => V2B2, v2_b3 => V2B3,
    );

    /// A published variant with 1000 classes and fresh weights; `EfficientNet::b3(&device)`
    /// is `EfficientNet::variant(Variant::B3, &device)`.
    pub fn variant(variant: Variant, device: &Device) -> Self {
        variant.config().init(device)
    }

    pub(crate) fn from_config(config: &EfficientNetConfig, device: &Device) -> Result<Self, Error> {
        let blocks = config.checked_blocks()?;
        let mut fused_stages = Vec::new();
        let mut stages = Vec::new();
        // A stage is all of one kind, and validation puts the Fused-MBConv stages first.
        for stage in &blocks {
            let fused: Vec<FusedMBConv> = stage
                .iter()
                .filter_map(BlockConfig::fused)
                .map(|c| c.init(device))
                .collect();
            if fused.is_empty() {
                let mbconv = stage.iter().filter_map(BlockConfig::mbconv);
                stages.push(mbconv.map(|c| c.init(device)).collect());
            } else {
                fused_stages.push(fused);
            }
        }
        let head_channels = config.scaled_head_channels();
        // torchvision: uniform in +-1/sqrt(out_features), bias zero.
        let range = 1.0 / (config.num_classes as f64).sqrt();
        let mut classifier = LinearConfig::new(head_channels, config.num_classes)
            .with_initializer(Initializer::Uniform {
                min: -range,
                max: range,
            })
            .init(device);
        classifier.bias =
            Some(Initializer::Zeros.init_with([config.num_classes], None, None, device));
        Ok(Self {
            stem: config.stem().init(device),
            fused_stages,
            stages,
            head: config.head().init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
            classifier,
            config: config.clone(),
            plan: InferencePlan::default(),
        })
    }

    /// The model for inference with every batch norm folded into the convolution before it:
    /// the same outputs as `self.valid()` to float rounding (at most 1.2e-6 apart on the
    /// parity fixtures' logits, `tests/parity.rs`) with one pass less per layer. On the flex
    /// CPU backend folded depthwise and large 1x1 layers also run as fused kernels, layer by
    /// layer. For inference prefer [`for_inference`](Self::for_inference), which folds and
    /// then plans the whole network: 2.5x this on a B0 (README, Performance).
    ///
    /// The result is for inference only: its norms no longer track batch statistics. It
    /// has different parameters (a bias per convolution instead of a norm), so
    /// [`load_pytorch`](Self::load_pytorch) cannot load into it: load, then fuse.
    /// [`save_burnpack`](Self::save_burnpack) saves it, and
    /// [`load_burnpack`](Self::load_burnpack) reloads that file into a model fused the same way.
    pub fn fuse_batch_norm(self) -> Self {
        let model = self.valid();
        Self {
            stem: model.stem.fuse_batch_norm(),
            fused_stages: model
                .fused_stages
                .into_iter()
                .map(|stage| {
                    stage
                        .into_iter()
                        .map(FusedMBConv::fuse_batch_norm)
                        .collect()
                })
                .collect(),
            stages: model
                .stages
                .into_iter()
                .map(|stage| stage.into_iter().map(MBConv::fuse_batch_norm).collect())
                .collect(),
            head: model.head.fuse_batch_norm(),
            ..model
        }
    }

    /// The model as inference wants it: batch norms folded into the convolutions
    /// ([`fuse_batch_norm`](Self::fuse_batch_norm)) and, on the flex CPU backend in f32, the
    /// whole network planned once for its CPU kernels: weights packed, activations kept
    /// channels-last between layers, bias, activation, residual and squeeze-excitation
    /// fused into the convolutions, buffers reused from one forward to the next. Its
    /// [`forward`](Self::forward), [`forward_features`](Self::forward_features),
    /// [`endpoints`](Self::endpoints) and [`endpoints_at`](Self::endpoints_at) run that plan
    /// and give the same values as Burn's ops to float rounding (`tests/parity.rs` holds
    /// them within 1e-5 on logits, and to the reference libraries' outputs); other backends
    /// and dtypes run the folded model on Burn's ops.
    ///
    /// The plan holds a copy of the weights, so plan again after changing them. Loading
    /// another checkpoint or a fine-tuned head into a planned model (`load_record`, say) is
    /// noticed (each forward compares the stem weight, the head's bias and the
    /// classifier's bias with the plan's) and runs on Burn's ops until `for_inference` is
    /// called again; a change to the blocks alone is not. Clones share one plan. The model
    /// is evaluation-only: like [`fuse_batch_norm`](Self::fuse_batch_norm), this drops
    /// autodiff (`valid()`).
    ///
    /// Every loader in this crate that returns a model for inference
    /// ([`PretrainedModel`](crate::PretrainedModel), [`SavedModel`](crate::SavedModel) with
    /// folded weights) returns it planned.
    pub fn for_inference(self) -> Self {
        let model = self.fuse_batch_norm();
        #[cfg(feature = "flex")]
        let model = {
            let plan = crate::model::cpu::Plan::new(&model).map(std::sync::Arc::new);
            Self {
                plan: InferencePlan(plan),
                ..model
            }
        };
        model
    }

    /// Whether [`for_inference`](Self::for_inference) planned this model for the CPU kernels.
    pub fn is_planned(&self) -> bool {
        #[cfg(feature = "flex")]
        return self.plan.0.is_some();
        #[cfg(not(feature = "flex"))]
        false
    }

    /// Whether the batch norms are folded into the convolutions ([`Self::fuse_batch_norm`]).
    pub fn is_fused(&self) -> bool {
        self.stem.bn.is_none()
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
        #[cfg(feature = "flex")]
        let input = match self.plan.0.as_deref() {
            Some(plan) => match plan.logits(self, input) {
                Ok(output) => return output,
                Err(input) => input,
            },
            None => input,
        };
        self.forward_head(self.forward_features(input))
    }

    /// [`forward`](Self::forward) for input from outside the program: a wrong shape is an
    /// [`Error::InvalidInput`] instead of a panic.
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
            return Err(Error::InvalidInput(format!(
                "EfficientNet expects input of shape [batch, {}, height, width] with every \
                 size at least 1, got {dims:?}",
                self.config.in_channels
            )));
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
        #[cfg(feature = "flex")]
        let input = match self.plan.0.as_deref() {
            Some(plan) => match plan.features(self, input) {
                Ok(output) => return output,
                Err(input) => input,
            },
            None => input,
        };
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
        let wanted = self.config.endpoint_stages();
        #[cfg(feature = "flex")]
        let input = match self.plan.0.as_deref() {
            Some(plan) => match plan.endpoints(self, input, &wanted) {
                Ok(maps) => return maps,
                Err(input) => input,
            },
            None => input,
        };
        let mut endpoints = Vec::with_capacity(wanted.len());
        self.run_stages(input, usize::MAX, |stage, x| {
            if wanted.contains(&stage) {
                endpoints.push(x.clone());
            }
        });
        endpoints
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
        let info = self.feature_info();
        let stages = indices
            .iter()
            .map(|&i| {
                info.get(i).map(|f| f.stage).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "endpoint index {i} out of range: this model has {} endpoints",
                        info.len()
                    ))
                })
            })
            .collect::<Result<Vec<usize>, Error>>()?;
        let Some(&last) = stages.iter().max() else {
            return Ok(Vec::new());
        };
        #[cfg(feature = "flex")]
        let input = match self.plan.0.as_deref() {
            Some(plan) => match plan.endpoints(self, input, &stages) {
                Ok(maps) => return Ok(maps),
                Err(input) => input,
            },
            None => input,
        };
        let mut maps = vec![None; stages.len()];
        self.run_stages(input, last, |stage, x| {
            for (slot, _) in maps.iter_mut().zip(&stages).filter(|(_, s)| **s == stage) {
                *slot = Some(x.clone());
            }
        });
        Ok(maps.into_iter().flatten().collect())
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
        let stages = self.fused_stages.len() + self.stages.len();
        for index in 0..stages.min(until.saturating_add(1)) {
            // The Fused-MBConv stages come first, then the MBConv ones.
            x = match index.checked_sub(self.fused_stages.len()) {
                None => self.fused_stages[index]
                    .iter()
                    .fold(x, |x, block| block.forward(x)),
                Some(i) => self.stages[i].iter().fold(x, |x, block| block.forward(x)),
            };
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
        let parameters = self.non_finite_parameters();
        if parameters.is_empty() {
            Ok(())
        } else {
            Err(Error::NonFiniteWeights { parameters })
        }
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

/// Counts float parameters, skipping `running_mean` / `running_var` buffers.
#[derive(Default)]
struct TrainableCounter {
    path: Vec<String>,
    count: usize,
}

impl ModuleVisitor for TrainableCounter {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
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
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let finite = param.val().is_finite().all().into_scalar::<bool>();
        if !finite {
            self.found.push(self.path.join("."));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_and_stochastic_depth_act_in_training_only() {
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

    #[test]
    fn trainable_count_excludes_running_statistics() {
        let device = Device::default();
        let model = EfficientNet::b0(&device);
        // Burn counts running_mean and running_var: 2 x 21,008 BN channels more.
        assert_eq!(model.num_trainable_params(), 5_288_548);
        assert_eq!(model.num_params(), 5_288_548 + 2 * 21_008);
    }
}
