//! Class activation maps (Zhou et al., CVPR 2016): where in the image the evidence for a
//! class lies, as the paper's Figure 7 shows for scaled models.
//!
//! EfficientNet ends in global average pooling and one linear layer, so the logit of class
//! `c` is the spatial mean of `sum_k w[c, k] * f_k(x, y)` (plus the bias), `f` being the head's
//! feature map: that sum, before the mean, is the map.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use crate::error::Error;
use crate::inference::InferenceModel;
use crate::model::efficientnet::EfficientNet;

/// Class activation maps for a batch.
#[derive(Clone, Debug)]
pub struct ClassActivationMap {
    /// `[batch, height', width']`, the head's feature-map size (input / 32), each map scaled
    /// to `[0, 1]` (min to 0, max to 1; a constant map is all 0).
    pub maps: Tensor<3>,
    /// The class each map is for.
    pub classes: Vec<usize>,
    /// That class's softmax probability.
    pub probabilities: Vec<f32>,
}

impl EfficientNet {
    /// The class activation map of `class` (or of each image's top-1 class) for every image.
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`, normalised as the weights expect
    /// - [`ClassActivationMap::maps`]: `[batch, height', width']` as
    ///   [`forward_features`](Self::forward_features)
    pub fn class_activation_map(
        &self,
        input: Tensor<4>,
        class: Option<usize>,
    ) -> Result<ClassActivationMap, Error> {
        self.check_input(input.dims())?;
        check_class(self, class)?;
        Ok(class_activation_map(
            self,
            self.forward_features(input),
            class,
        ))
    }
}

impl InferenceModel {
    /// The class activation map of `class` (or of each image's top-1 class) for every image,
    /// as [`EfficientNet::class_activation_map`], the features computed by this model (on
    /// the CPU, planned).
    ///
    /// # Shapes
    ///
    /// - `input`: `[batch, in_channels, height, width]`, normalised as the weights expect
    /// - [`ClassActivationMap::maps`]: `[batch, height', width']` as
    ///   [`forward_features`](Self::forward_features)
    pub fn class_activation_map(
        &self,
        input: Tensor<4>,
        class: Option<usize>,
    ) -> Result<ClassActivationMap, Error> {
        self.check_input(input.dims())?;
        check_class(self.network(), class)?;
        let features = self.forward_features(input);
        Ok(class_activation_map(self.network(), features, class))
    }
}

/// [`Error::ClassIndex`] if `class` is not one of `network`'s.
fn check_class(network: &EfficientNet, class: Option<usize>) -> Result<(), Error> {
    let classes = network.config().num_classes;
    match class.filter(|&c| c >= classes) {
        Some(class) => Err(Error::ClassIndex { class, classes }),
        None => Ok(()),
    }
}

/// The maps from `network`'s head `features` (`[batch, channels, height', width']`).
fn class_activation_map(
    network: &EfficientNet,
    features: Tensor<4>,
    class: Option<usize>,
) -> ClassActivationMap {
    let num_classes = network.config().num_classes;
    let [batch, channels, height, width] = features.dims();
    let probabilities = softmax(network.forward_head(features.clone()), 1);
    let classes: Vec<usize> = match class {
        Some(class) => vec![class; batch],
        None => probabilities
            .clone()
            .argmax(1)
            .into_data()
            .iter::<i64>()
            .map(|c| c as usize)
            .collect(),
    };
    // Any float type the model ran in: read as f32.
    let probabilities: Vec<f32> = probabilities.into_data().iter::<f32>().collect();
    let probabilities = classes
        .iter()
        .enumerate()
        .map(|(i, &c)| probabilities[i * num_classes + c])
        .collect();

    // Burn's Linear weight is [in, out]: column c is class c's row in PyTorch terms.
    let weight = network.classifier.weight.val();
    let device = weight.device();
    let index = Tensor::<1, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(
            classes.iter().map(|&c| c as i64).collect::<Vec<_>>(),
            [batch],
        ),
        &device,
    );
    // [channels, batch] -> [batch, 1, channels]
    let rows = weight.select(1, index).transpose().unsqueeze_dim::<3>(1);
    // [batch, 1, channels] x [batch, channels, h*w] -> [batch, 1, h*w]
    let flat = features.reshape([batch, channels, height * width]);
    let maps = rows.matmul(flat).reshape([batch, height * width]);
    let low = maps.clone().min_dim(1);
    let range = maps.clone().max_dim(1) - low.clone();
    // A constant map has range 0: divide by 1 there instead (all zeros).
    let range = range.clone().mask_fill(range.lower_equal_elem(0.0), 1.0);
    let maps = ((maps - low) / range).reshape([batch, height, width]);
    ClassActivationMap {
        maps,
        classes,
        probabilities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EfficientNetConfig;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn maps_have_the_feature_size_are_finite_and_normalised() {
        for config in [EfficientNetConfig::b0(), EfficientNetConfig::v2_b0()] {
            check_maps(config);
        }
    }

    fn check_maps(config: EfficientNetConfig) {
        let device = Device::default();
        let model = config.with_width(0.25).with_num_classes(7).init(&device);
        let input = Tensor::<4>::random([3, 3, 96, 64], Distribution::Default, &device);
        let cam = model.class_activation_map(input.clone(), None).unwrap();
        // 96 x 64 / 32 = 3 x 2, the head map.
        assert_eq!(cam.maps.dims(), [3, 3, 2]);
        assert_eq!(model.forward_features(input.clone()).dims()[2..], [3, 2]);
        let values: Vec<f32> = cam.maps.into_data().iter::<f32>().collect();
        assert!(
            values
                .iter()
                .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
        );
        for map in values.chunks(6) {
            let max = map.iter().cloned().fold(f32::MIN, f32::max);
            let min = map.iter().cloned().fold(f32::MAX, f32::min);
            assert!((max - 1.0).abs() < 1e-6 && min.abs() < 1e-6, "{map:?}");
        }
        // Top-1 by default, with its probability.
        // (A fresh model's logits are nearly tied; compare the same softmax's argmax.)
        let logits = softmax(model.forward(input.clone()), 1);
        let top: Vec<usize> = logits
            .argmax(1)
            .into_data()
            .iter::<i64>()
            .map(|c| c as usize)
            .collect();
        assert_eq!(cam.classes, top);
        assert!(cam.probabilities.iter().all(|p| (0.0..=1.0).contains(p)));

        let chosen = model.class_activation_map(input.clone(), Some(4)).unwrap();
        assert_eq!(chosen.classes, [4, 4, 4]);
        let err = model.class_activation_map(input, Some(7)).unwrap_err();
        assert!(err.to_string().contains("class 7 does not exist"), "{err}");
    }

    #[test]
    fn the_map_averages_to_the_logit_before_scaling() {
        // Unscaled, the map's mean plus the bias is the logit: check through a 1x1 head map
        // where min-max scaling is degenerate, by recomputing the map by hand on 2x2.
        let device = Device::default();
        let model = EfficientNetConfig::b0()
            .with_width(0.25)
            .with_num_classes(5)
            .init(&device);
        let input = Tensor::<4>::random([1, 3, 64, 64], Distribution::Default, &device);
        let features = model.forward_features(input.clone());
        let logits = model.forward(input.clone()).into_data();
        let class = 2;
        let w = model
            .classifier
            .weight
            .val()
            .slice([0..features.dims()[1], class..class + 1]);
        let raw = (features * w.reshape([1, -1, 1, 1])).sum_dim(1);
        let bias = model
            .classifier
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .iter::<f32>()
            .nth(class)
            .unwrap();
        let mean = raw.clone().mean().into_scalar::<f32>() + bias;
        let logit = logits.iter::<f32>().nth(class).unwrap();
        assert!((mean - logit).abs() < 1e-4, "{mean} vs {logit}");
        // And the scaled map is that raw map, min-max normalised.
        let raw: Vec<f32> = raw.into_data().iter::<f32>().collect();
        let (lo, hi) = raw
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let cam = model.class_activation_map(input, Some(class)).unwrap();
        let scaled: Vec<f32> = cam.maps.into_data().iter::<f32>().collect();
        for (s, r) in scaled.iter().zip(&raw) {
            assert!((s - (r - lo) / (hi - lo)).abs() < 1e-4);
        }
    }
}
