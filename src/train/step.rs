//! The model as burn-train sees it: a classifier with a loss.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::model::efficientnet::EfficientNet;
use crate::train::data::ImageBatch;

/// An [`EfficientNet`] with its training loss: cross-entropy, with optional label
/// smoothing. burn-train's `Learner` drives it.
#[derive(Module, Debug)]
pub struct Classifier {
    /// The network.
    pub model: EfficientNet,
    /// Label smoothing (0.1 in the paper), or `None`.
    #[module(skip)]
    pub label_smoothing: Option<f32>,
}

impl Classifier {
    /// Logits and loss for a batch.
    pub fn forward_classification(&self, batch: ImageBatch) -> ClassificationOutput {
        let output = self.model.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .with_smoothing(self.label_smoothing)
            .init(&output.device())
            .forward(output.clone(), batch.targets.clone());
        ClassificationOutput {
            loss,
            output,
            targets: batch.targets,
        }
    }
}

impl TrainStep for Classifier {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
        let item = self.forward_classification(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Classifier {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> ClassificationOutput {
        self.forward_classification(batch)
    }
}
