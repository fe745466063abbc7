//! Plain progress lines for runs whose output is not a terminal (CI logs, files, pipes):
//! burn-train's own fallback prints a `ProgressSnapshot { .. }` structure for every batch.
//!
//! Per split of each epoch: a line at each quarter of its images with the running metrics,
//! and one when it ends, e.g.
//!
//! ```text
//! epoch 1/2 train: 64/120 images, Accuracy 52.344 %, LearningRate 1.768e-4, Loss 1.041
//! epoch 1/2 train done in 41.2 s: Accuracy 60.833 %, LearningRate 1.768e-4, Loss 0.961
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

/// burn-train's renderer when stdout is not a terminal.
pub(crate) struct LineRenderer {
    names: HashMap<MetricId, String>,
    /// Each metric's latest running value in this split, formatted, by name.
    latest: BTreeMap<String, String>,
    /// The epoch in progress: the first, then one more at each training split.
    epoch: usize,
    epochs: usize,
    trained_splits: usize,
    split: String,
    total: usize,
    quarters: usize,
    started: Instant,
}

impl LineRenderer {
    pub(crate) fn new() -> Self {
        Self {
            names: HashMap::new(),
            latest: BTreeMap::new(),
            epoch: 0,
            epochs: 0,
            trained_splits: 0,
            split: String::new(),
            total: 0,
            quarters: 0,
            started: Instant::now(),
        }
    }

    fn record(&mut self, state: MetricState) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        let Some(name) = self.names.get(&entry.metric_id) else {
            return;
        };
        // burn-train formats numeric entries as "epoch <running> <unit> - batch <current>".
        let text = entry.serialized_entry.formatted;
        let running = text.split(" - batch").next().unwrap_or(&text);
        let running = running.strip_prefix("epoch ").unwrap_or(running);
        self.latest.insert(name.clone(), running.trim().to_string());
    }

    fn metrics(&self) -> String {
        let parts: Vec<String> = self
            .latest
            .iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        parts.join(", ")
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }
}

impl TrainingProgressLogger for LineRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch.max(1);
        self.trained_splits = 0;
    }

    fn update_epoch(&mut self, _epoch: usize) {}

    fn start_split(&mut self, split: &str, total_items: usize) {
        self.split = split.to_lowercase();
        if self.split == "train" {
            if self.trained_splits > 0 {
                self.epoch += 1;
            }
            self.trained_splits += 1;
        }
        self.total = total_items;
        self.quarters = 0;
        self.latest.clear();
        self.started = Instant::now();
    }

    fn update_split(&mut self, items_processed: usize) {
        let quarters = (items_processed * 4).checked_div(self.total).unwrap_or(0);
        if quarters > self.quarters && quarters < 4 {
            self.quarters = quarters;
            println!(
                "epoch {}/{} {}: {items_processed}/{} images, {}",
                self.epoch,
                self.epochs,
                self.split,
                self.total,
                self.metrics()
            );
        }
    }

    fn end_split(&mut self) {
        println!(
            "epoch {}/{} {} done in {:.1} s: {}",
            self.epoch,
            self.epochs,
            self.split,
            self.started.elapsed().as_secs_f64(),
            self.metrics()
        );
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, event: String) {
        println!("{event}");
    }
}

impl EvaluationProgressLogger for LineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, _name: &str, _total_items: usize) {}

    fn update_test_progress(&mut self, _items_processed: usize) {}

    fn end_test(&mut self) {}

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, event: String) {
        println!("{event}");
    }
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}
