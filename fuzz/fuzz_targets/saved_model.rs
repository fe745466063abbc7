//! Arbitrary bytes as a saved model's `config.json` (first byte even) or `preprocess.json`
//! (odd): parsing and checking must return `Ok` or an error, never panic, abort or try to
//! allocate an absurd model. A config that passes `validate` is within the crate's limits,
//! so counting its parameters and MACs must finish. Run: see TESTING.md.
#![no_main]

use efficientnet_burn::{EfficientNetConfig, Preprocess};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if selector % 2 == 0 {
        let Ok(config) = EfficientNetConfig::from_json(text) else {
            return;
        };
        if config.validate().is_ok() {
            let _ = config.num_params();
            let _ = config.macs(config.resolution.min(64), config.resolution.min(64));
        }
    } else if let Ok(preprocess) = serde_json::from_str::<Preprocess>(text) {
        let _ = preprocess.validate();
    }
});
