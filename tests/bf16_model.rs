//! A model built and run in BF16, in a process of its own (see `tests/half_model.rs`).

mod common;

#[test]
fn a_bf16_model_runs_and_the_helpers_read_its_outputs() {
    common::model_runs_in(burn::tensor::FloatDType::BF16);
}
