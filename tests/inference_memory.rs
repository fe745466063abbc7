//! The planned path's buffer pool, measured through the process's resident memory: a test
//! binary of its own, so that no other test allocates while it reads.

use burn::tensor::{Device, Distribution, Tensor};
use efficientnet_burn::EfficientNetConfig;

#[test]
#[cfg(target_os = "linux")]
fn planned_forward_does_not_grow_memory_over_repeated_calls() {
    // Buffers are pooled with the plan: a thousand forwards at one size leave the pool at
    // the size the first one made. Counted through the process's resident memory, which
    // must not climb by more than a forward's worth of activations (~1 MB here).
    let device = Device::flex();
    let model = EfficientNetConfig::b0()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(7)
        .init(&device)
        .for_inference();
    let x = Tensor::<4>::random([2, 3, 40, 36], Distribution::Normal(0.0, 1.0), &device);
    let rss = || {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    for _ in 0..20 {
        model.forward(x.clone());
    }
    let before = rss().expect("Linux reports VmRSS");
    for _ in 0..1000 {
        model.forward(x.clone());
    }
    let after = rss().unwrap();
    assert!(
        after <= before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 1000 forwards"
    );
}
