//! A model built and run in F16: Burn's float type is a property of the device
//! (`Device::configure`), so this file is its own test binary (its own process) with the CPU
//! device set to F16 before anything runs on it. `tests/bf16_model.rs` does the same in BF16.

mod common;

#[test]
fn an_f16_model_runs_and_the_helpers_read_its_outputs() {
    common::model_runs_in(burn::tensor::FloatDType::F16);
}
