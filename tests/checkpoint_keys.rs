//! The remap table covers every full-size checkpoint each source publishes, one to one, with
//! the right shapes, so a real checkpoint loads without its weights being needed here.
//!
//! `tests/fixtures/keys/<source>__<model>.txt` lists `key<TAB>[shape]` as the reference
//! library's own `state_dict()` has it (built on the meta device by
//! `scripts/make_fixtures.py`).

mod common;

use std::collections::BTreeMap;

use burn::tensor::Device;
use efficientnet_burn::{Variant, WeightSource};

/// Reference key list -> (key -> shape).
fn read_keys(file: &str) -> BTreeMap<String, Vec<usize>> {
    let path = common::fixture(&format!("keys/{file}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.lines()
        .map(|line| {
            let (key, shape) = line.split_once('\t').expect("key<TAB>shape");
            let dims = shape
                .trim_matches(['[', ']'])
                .split(',')
                .filter(|d| !d.trim().is_empty())
                .map(|d| d.trim().parse().expect("dimension"))
                .collect();
            (key.to_string(), dims)
        })
        .collect()
}

fn assert_covers(file: &str, variant: Variant, source: WeightSource) {
    let config = source.configure(variant.config());
    let reference = read_keys(file);
    // 480M parameters for L2, counted and shaped without allocating them (Burn initialises
    // lazily).
    let ours = config
        .init(&Device::default())
        .checkpoint_keys(source.layout())
        .unwrap();
    let only_theirs: Vec<_> = reference
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .collect();
    let only_ours: Vec<_> = ours
        .keys()
        .filter(|k| !reference.contains_key(*k))
        .collect();
    assert!(
        only_theirs.is_empty() && only_ours.is_empty(),
        "{file}: not one-to-one; only in checkpoint {only_theirs:?}, only in table {only_ours:?}"
    );
    for (key, shape) in &reference {
        assert_eq!(&ours[key], shape, "{file}: shape of {key}");
    }
}

#[test]
fn torchvision_b0_to_b7() {
    for (b, variant) in Variant::ALL[..8].iter().enumerate() {
        let file = format!("torchvision__efficientnet_b{b}.txt");
        assert_covers(&file, *variant, WeightSource::Torchvision);
    }
}

#[test]
fn timm_b0_to_b8() {
    for (b, variant) in Variant::ALL[..9].iter().enumerate() {
        assert_covers(
            &format!("timm__efficientnet_b{b}.txt"),
            *variant,
            WeightSource::Timm,
        );
        assert_covers(
            &format!("timm__tf_efficientnet_b{b}.txt"),
            *variant,
            WeightSource::TimmTf,
        );
    }
}

#[test]
fn timm_l2() {
    // 480M parameters, counted and shaped without allocating them (Burn initialises lazily).
    assert_covers(
        "timm__tf_efficientnet_l2.txt",
        Variant::L2,
        WeightSource::TimmTf,
    );
}

#[test]
fn timm_lite0_to_lite4() {
    let lite = Variant::ALL.into_iter().filter(|v| v.is_lite());
    for (i, variant) in lite.enumerate() {
        let file = format!("timm__tf_efficientnet_lite{i}.txt");
        assert_covers(&file, variant, WeightSource::TimmTf);
    }
}

#[test]
fn efficientnet_pytorch_b0_to_b8() {
    for (b, variant) in Variant::ALL[..9].iter().enumerate() {
        let file = format!("effnet_pytorch__efficientnet-b{b}.txt");
        assert_covers(&file, *variant, WeightSource::EfficientNetPytorch);
    }
}

#[test]
fn torchvision_v2_s_m_l() {
    for (size, variant) in
        ["s", "m", "l"]
            .into_iter()
            .zip([Variant::V2S, Variant::V2M, Variant::V2L])
    {
        let file = format!("torchvision__efficientnet_v2_{size}.txt");
        assert_covers(&file, variant, WeightSource::Torchvision);
    }
}

#[test]
fn timm_v2_every_size() {
    let sizes = [
        ("s", Variant::V2S),
        ("m", Variant::V2M),
        ("l", Variant::V2L),
        ("xl", Variant::V2XL),
    ];
    for (size, variant) in sizes {
        let file = format!("timm__efficientnetv2_{size}.txt");
        assert_covers(&file, variant, WeightSource::Timm);
        let file = format!("timm__tf_efficientnetv2_{size}.txt");
        assert_covers(&file, variant, WeightSource::TimmTf);
    }
    let base = [Variant::V2B0, Variant::V2B1, Variant::V2B2, Variant::V2B3];
    for (b, variant) in base.into_iter().enumerate() {
        let file = format!("timm__tf_efficientnetv2_b{b}.txt");
        assert_covers(&file, variant, WeightSource::TimmTf);
    }
}
