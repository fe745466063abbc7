//! The model as burn-train sees it: a classifier with a loss.

use std::sync::OnceLock;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::Tensor;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::inference::InferenceModel;
use crate::model::efficientnet::EfficientNet;
use crate::train::data::ImageBatch;

/// An [`EfficientNet`] with its training loss: cross-entropy, with optional label
/// smoothing. burn-train's `Learner` drives it.
#[derive(Module, Debug)]
pub struct TrainingModel {
    /// The network.
    pub model: EfficientNet,
    /// Label smoothing (0.1 in the paper), or `None`.
    #[module(skip)]
    pub label_smoothing: Option<f32>,
    /// Devices a step's batch is split over. burn-train adds up the devices' gradients;
    /// each device's loss is divided by this before its backward pass, so that the sum is
    /// the gradient of the mean loss over the whole step's batch, as on one device.
    #[module(skip)]
    pub devices: usize,
    /// The network prepared for inference, made at the first validation step of this copy.
    #[module(skip)]
    inference: ValidationModel,
}

/// The network as validation runs it: an [`InferenceModel`] (on the CPU, the planned
/// engine instead of Burn's ops), made once per copy of the module. burn-train validates
/// each epoch on a fresh `valid()` copy, which gets a fresh, empty one: a clone never
/// carries a prepared model over (not even from the copy it was cloned from), so the
/// prepared model always holds the weights of the copy that made it, which validation
/// does not change.
#[derive(Debug, Default)]
struct ValidationModel(OnceLock<InferenceModel>);

impl Clone for ValidationModel {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl TrainingModel {
    /// `model` with its loss.
    pub fn new(model: EfficientNet, label_smoothing: Option<f32>) -> Self {
        Self {
            model,
            label_smoothing,
            devices: 1,
            inference: ValidationModel::default(),
        }
    }

    /// The same, with each step's batch split over `devices` (see
    /// [`devices`](Self::devices)).
    pub fn with_devices(self, devices: usize) -> Self {
        Self {
            devices: devices.max(1),
            ..self
        }
    }

    /// Logits and loss for a batch, the network run as it is (training: autodiff, dropout
    /// and batch statistics).
    pub fn forward_classification(&self, batch: ImageBatch) -> ClassificationOutput {
        let output = self.model.forward(batch.images);
        self.classification(output, batch.targets)
    }

    /// Logits and loss for a validation batch, through the network prepared for inference
    /// (the same values to float rounding as the network in evaluation mode).
    fn validation(&self, batch: ImageBatch) -> ClassificationOutput {
        let model = self
            .inference
            .0
            .get_or_init(|| self.model.clone().for_inference());
        let output = model.forward(batch.images);
        self.classification(output, batch.targets)
    }

    fn classification(
        &self,
        output: Tensor<2>,
        targets: Tensor<1, burn::tensor::Int>,
    ) -> ClassificationOutput {
        let loss = CrossEntropyLossConfig::new()
            .with_smoothing(self.label_smoothing)
            .init(&output.device())
            .forward(output.clone(), targets.clone());
        ClassificationOutput {
            loss,
            output,
            targets,
        }
    }
}

impl TrainStep for TrainingModel {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
        let item = self.forward_classification(batch);
        let grads = match self.devices {
            1 => item.loss.backward(),
            n => item.loss.clone().div_scalar(n as f64).backward(),
        };
        TrainOutput::new(self, grads, item)
    }
}

impl InferenceStep for TrainingModel {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> ClassificationOutput {
        self.validation(batch)
    }
}
