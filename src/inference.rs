//! [`InferenceModel`]: an [`EfficientNet`] prepared for inference, and nothing else.

use std::path::Path;
#[cfg(feature = "flex")]
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::config::{EfficientNetConfig, FeatureInfo};
use crate::error::Error;
use crate::model::efficientnet::EfficientNet;

/// A network prepared for inference, as an ONNX Runtime session is: batch norms folded into
/// the convolutions and, on the flex CPU backend in f32, the whole network planned once for
/// the crate's CPU kernels (weights packed, activations kept channels-last between layers,
/// bias, activation, residual and squeeze-excitation fused into the convolutions, buffers
/// reused from one forward to the next). Other backends and float types run the folded
/// network on Burn's ops.
///
/// It has no way to change its weights, so what it runs is always what it was made from:
/// to run other weights, make another ([`EfficientNet::for_inference`]). Clones share the
/// plan. Made by [`EfficientNet::for_inference`] and by every loader that returns a model
/// for inference ([`EfficientNet::pretrained`], [`Classifier`](crate::Classifier),
/// a folded [`SavedModel`](crate::SavedModel)).
///
/// ```
/// use efficientnet_burn::burn::tensor::{Device, Tensor};
/// use efficientnet_burn::EfficientNetConfig;
///
/// let device = Device::default();
/// let model = EfficientNetConfig::b0().with_width(0.25).init(&device).for_inference();
/// let logits = model.forward(Tensor::<4>::zeros([2, 3, 64, 64], &device));
/// assert_eq!(logits.dims(), [2, 1000]);
/// ```
///
/// With f32 weights (the default; see [`Precision`]), outputs equal the unfolded model's in
/// evaluation mode to float rounding:
/// `tests/parity.rs` holds the planned path within 1e-5 of Burn's ops on logits, and both
/// to the reference libraries' outputs.
#[derive(Clone, Debug)]
pub struct InferenceModel {
    /// The folded network, in evaluation mode.
    network: EfficientNet,
    /// The CPU plan of `network`, if the engine runs it.
    #[cfg(feature = "flex")]
    plan: Option<Arc<crate::cpu::Plan>>,
    /// What the plan's weights were packed in.
    precision: Precision,
    /// The folded network's parameters holding NaN or infinity, found before the plan took
    /// its weights ([`EfficientNet::non_finite_parameters`]), where `network`'s are lazy:
    /// reading them again would unpack every weight. `None` where `network` holds them.
    non_finite: Option<Vec<String>>,
}

/// What the CPU engine keeps a planned model's weights in
/// ([`EfficientNet::for_inference_with`]). Activations, sums and everything else stay f32.
/// Other backends and float types ignore it: they run the folded network in the device's
/// float type (for bf16 there, `device.configure(FloatDType::BF16)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Precision {
    /// f32 weights: the outputs of Burn's ops to float rounding (within 1e-5 on logits).
    #[default]
    F32,
    /// The convolutions' and the classifier's weights rounded to bf16 (to nearest, ties to
    /// even), in half the memory; each product widens them back to f32 as it loads them,
    /// and sums in f32. The depthwise and squeeze-excitation weights and the biases stay
    /// f32. A weight keeps 8 significant bits (a relative error up to 2^-9), so logits move
    /// by about 1e-2 of their spread: on the real Lite0 checkpoint and the fixture photos,
    /// the top-5 classes are those of f32 (`tests/real_weights.rs`). On CPUs whose products
    /// wait on their weights (small maps, the classifier at batch 1) it is faster; on
    /// others level (`docs/performance.md`). Not yet AVX512_BF16's bf16 dot products: the
    /// arithmetic is f32 on every CPU.
    Bf16Weights,
}

impl Precision {
    /// Every precision, the default first.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16Weights];

    /// Its name on the examples' command lines (`--precision`): `f32`, `bf16-weights`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16Weights => "bf16-weights",
        }
    }
}

impl InferenceModel {
    /// Folds `model`'s batch norms (in evaluation mode, dropping autodiff) and, where the
    /// CPU engine runs it, plans it, with f32 weights.
    pub fn new(model: EfficientNet) -> Self {
        Self::with_precision(model, Precision::F32)
    }

    /// [`new`](Self::new) with the CPU engine's weights in `precision`.
    pub fn with_precision(model: EfficientNet, precision: Precision) -> Self {
        let network = model.fold_batch_norms();
        #[cfg(feature = "flex")]
        {
            let plan = crate::cpu::Plan::new(&network, precision).map(Arc::new);
            // Only f32 plans hold the weights as they are: a network given back bf16 weights
            // would lose their low bits for good (a classifier planned again in f32, say).
            let (network, non_finite) = match &plan {
                Some(plan) if precision == Precision::F32 => {
                    let non_finite = network.non_finite_parameters();
                    (crate::cpu::Plan::hollow(plan, network), Some(non_finite))
                }
                _ => (network, None),
            };
            Self {
                plan,
                network,
                precision,
                non_finite,
            }
        }
        #[cfg(not(feature = "flex"))]
        Self {
            network,
            precision,
            non_finite: None,
        }
    }

    /// What the CPU engine keeps the weights in, if it runs this model
    /// ([`is_planned`](Self::is_planned)); `None` where Burn's ops run it.
    pub fn precision(&self) -> Option<Precision> {
        self.is_planned().then_some(self.precision)
    }

    /// The plan, if it runs `input`.
    #[cfg(feature = "flex")]
    pub(crate) fn plan_for(&self, input: &Tensor<4>) -> Option<&crate::cpu::Plan> {
        self.plan.as_deref().filter(|plan| plan.applies(input))
    }

    /// Whether the CPU engine runs this model (flex backend, f32); otherwise Burn's ops do.
    pub fn is_planned(&self) -> bool {
        #[cfg(feature = "flex")]
        return self.plan.is_some();
        #[cfg(not(feature = "flex"))]
        false
    }

    /// The folded network, read-only: its config, parameters and devices.
    ///
    /// Where the CPU engine runs the model ([`is_planned`](Self::is_planned)) with f32
    /// weights, the weights it packed (the convolutions run as products, and the
    /// classifier) are not kept twice: in the network they are lazy parameters, unpacked
    /// from the plan, equal to the folded weights to the bit, when first read (then kept).
    /// Running the network itself or saving it reads them. With
    /// [`Precision::Bf16Weights`] the network keeps its f32 weights: the plan holds only
    /// their rounding.
    pub fn network(&self) -> &EfficientNet {
        &self.network
    }

    /// The folded network's parameters holding NaN or infinity, by Burn path
    /// ([`EfficientNet::non_finite_parameters`]), without unpacking the planned weights.
    pub fn non_finite_parameters(&self) -> Vec<String> {
        match &self.non_finite {
            Some(found) => found.clone(),
            None => self.network.non_finite_parameters(),
        }
    }

    /// [`Error::NonFiniteWeights`] if any weight is NaN or infinite
    /// ([`EfficientNet::check_finite`]).
    pub fn check_finite(&self) -> Result<(), Error> {
        crate::model::efficientnet::refuse_non_finite(self.non_finite_parameters())
    }

    /// The config the network was built from.
    pub fn config(&self) -> &EfficientNetConfig {
        self.network.config()
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.network
            .devices()
            .into_iter()
            .next()
            .unwrap_or_default()
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
    /// If [`check_input`](Self::check_input) refuses the input's shape;
    /// [`try_forward`](Self::try_forward) returns that as an error instead.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        #[cfg(feature = "flex")]
        if let Some(plan) = self.plan_for(&input) {
            return plan.logits(input);
        }
        self.network.forward(input)
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

    /// Whether the model takes input of shape `dims` ([`EfficientNet::check_input`]).
    pub fn check_input(&self, dims: [usize; 4]) -> Result<(), Error> {
        self.network.check_input(dims)
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
        if let Some(plan) = self.plan_for(&input) {
            return plan.features(input);
        }
        self.network.forward_features(input)
    }

    /// Pooled features, before the classifier (timm's `pre_logits`).
    ///
    /// # Shapes
    ///
    /// - `features`: `[batch, head_channels, height', width']`
    /// - output: `[batch, head_channels]`
    pub fn pre_logits(&self, features: Tensor<4>) -> Tensor<2> {
        self.network.pre_logits(features)
    }

    /// Pooled features, dropout (inactive) and the classifier
    /// ([`EfficientNet::forward_head`]).
    ///
    /// # Shapes
    ///
    /// - `features`: `[batch, head_channels, height', width']`
    /// - output: `[batch, num_classes]`
    pub fn forward_head(&self, features: Tensor<4>) -> Tensor<2> {
        self.network.forward_head(features)
    }

    /// Multi-scale feature maps for detection and segmentation backbones
    /// ([`EfficientNet::endpoints`]).
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
        #[cfg(feature = "flex")]
        if let Some(plan) = self.plan_for(&input) {
            return plan.endpoints(input, &self.config().endpoint_stages());
        }
        self.network.endpoints(input)
    }

    /// Some of the [`endpoints`](Self::endpoints), by their index in
    /// [`feature_info`](Self::feature_info), in the order asked
    /// ([`EfficientNet::endpoints_at`]). The network runs only as far as the deepest one
    /// needs.
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
        #[cfg(feature = "flex")]
        if let Some(plan) = self.plan_for(&input) {
            self.check_input(input.dims())?;
            let stages = self.config().endpoint_stages_at(indices)?;
            return Ok(plan.endpoints(input, &stages));
        }
        self.network.endpoints_at(input, indices)
    }

    /// The channels, reduction and stage of each map [`endpoints`](Self::endpoints) returns.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        self.network.feature_info()
    }

    /// Saves the folded weights in Burn's burnpack format
    /// ([`EfficientNet::save_burnpack`]); [`SavedModel::load`](crate::SavedModel::load)
    /// reads them back into an `InferenceModel`.
    pub fn save_burnpack(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.network.save_burnpack(path)
    }
}

impl From<EfficientNet> for InferenceModel {
    /// [`EfficientNet::for_inference`].
    fn from(model: EfficientNet) -> Self {
        Self::new(model)
    }
}
