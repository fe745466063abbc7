//! Bad input never panics: a corpus of broken weight files and images, generated here (no
//! committed binaries), each of which must come back as the crate's error naming the
//! problem. Every call runs under `catch_unwind`, so a panic fails the test instead of
//! passing as "an error". Also: one model shared by eight threads gives bit-identical
//! outputs.
//!
//! ```text
//! cargo test --test robustness -- --nocapture   # prints every error message
//! ```

mod common;

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use common::fixture;
use efficientnet_burn::{EfficientNet, EfficientNetConfig, Error, Preprocess, WeightSource};

/// The timm fixture's config (tests/fixtures/timm_small.pth).
fn timm_small() -> EfficientNetConfig {
    WeightSource::Timm.configure(
        EfficientNetConfig::new()
            .with_width(0.25)
            .with_depth(0.34)
            .with_num_classes(10),
    )
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("efficientnet-robustness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = temp_dir().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs `f`, failing the test if it panics or succeeds; returns the error.
fn expect_error<T>(what: &str, f: impl FnOnce() -> Result<T, Error>) -> Error {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Err(err)) => {
            println!("{what}: {err}");
            err
        }
        Ok(Ok(_)) => panic!("{what}: accepted"),
        Err(_) => panic!("{what}: panicked"),
    }
}

fn load(path: &Path) -> Result<EfficientNet, Error> {
    EfficientNet::from_pytorch(path, timm_small(), WeightSource::Timm, &Device::default())
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A zip archive holding `entries` (stored, uncompressed), as torch.save writes.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A safetensors file with these f32 tensors.
fn safetensors(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let bytes: &[u8] = bytemuck_f32(values);
            (
                name.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn bytemuck_f32(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and every bit pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

/// A safetensors header (length prefix + JSON) followed by `data`.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn broken_weight_files_are_errors() {
    let real = std::fs::read(fixture("timm_small.pth")).unwrap();
    let real_safetensors = std::fs::read(fixture("timm_small.safetensors")).unwrap();
    // A legacy (non-zip) pickle holding the int 5, and one holding an empty dict; a zip
    // whose data.pkl is that int (torch.save of something that is not a state dict).
    let pickle_int: &[u8] = b"\x80\x02K\x05.";
    let pickle_dict: &[u8] = b"\x80\x02}q\x00.";
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty.pth".into(), Vec::new()),
        ("text.pth".into(), b"this is not a checkpoint\n".to_vec()),
        ("pickle-int.pth".into(), pickle_int.to_vec()),
        ("pickle-empty-dict.pth".into(), pickle_dict.to_vec()),
        (
            "zip-wrong-entries.pth".into(),
            zip(&[("readme.txt", b"hello"), ("weights/blob", &[0; 64])]),
        ),
        (
            "zip-pickle-not-a-state-dict.pth".into(),
            zip(&[
                ("archive/data.pkl", pickle_int),
                ("archive/version", b"3\n"),
            ]),
        ),
        (
            "zip-garbage-pickle.pth".into(),
            zip(&[
                ("archive/data.pkl", &noise(300, 7)),
                ("archive/version", b"3\n"),
            ]),
        ),
        (
            "safetensors-header-not-json.safetensors".into(),
            raw_safetensors("{not json", &[]),
        ),
        (
            "safetensors-header-longer-than-file.safetensors".into(),
            [&u64::MAX.to_le_bytes()[..], b"{}"].concat(),
        ),
        (
            "safetensors-offsets-out-of-range.safetensors".into(),
            raw_safetensors(
                r#"{"conv_stem.weight":{"dtype":"F32","shape":[8,3,3,3],"data_offsets":[0,864]}}"#,
                &[0; 16],
            ),
        ),
        (
            "safetensors-shape-disagrees-with-bytes.safetensors".into(),
            raw_safetensors(
                r#"{"conv_stem.weight":{"dtype":"F32","shape":[8,3,3,3],"data_offsets":[0,16]}}"#,
                &[0; 16],
            ),
        ),
        (
            "safetensors-unknown-dtype.safetensors".into(),
            raw_safetensors(
                r#"{"conv_stem.weight":{"dtype":"Q7","shape":[2],"data_offsets":[0,2]}}"#,
                &[0; 2],
            ),
        ),
        (
            // A valid file of another model (ResNet-style keys).
            "another-model.safetensors".into(),
            safetensors(&[
                ("conv1.weight", vec![4, 3, 7, 7], vec![0.5; 4 * 3 * 49]),
                ("fc.weight", vec![10, 4], vec![0.1; 40]),
            ]),
        ),
    ];
    for seed in 1..=4 {
        cases.push((
            format!("noise-{seed}.pth"),
            noise(997 * seed as usize, seed),
        ));
    }
    // Truncated at 24 offsets through each format, header to last byte.
    for (name, bytes) in [("pth", &real), ("safetensors", &real_safetensors)] {
        for i in 0..24 {
            let cut = bytes.len() * i / 24 + i;
            cases.push((format!("truncated-{cut}.{name}"), bytes[..cut].to_vec()));
        }
    }
    for (name, bytes) in &cases {
        let path = write(name, bytes);
        let err = expect_error(name, || load(&path));
        assert!(
            matches!(
                err,
                Error::Checkpoint { .. } | Error::UnknownLayout(_) | Error::KeyMismatch { .. }
            ),
            "{name}: {err:?}"
        );
        assert!(
            err.to_string().contains(name) || matches!(err, Error::UnknownLayout(_)),
            "{name}: the message names the file: {err}"
        );
    }
    // TESTING.md gives this count: keep the two equal.
    assert_eq!(cases.len(), 65);
}

#[test]
fn weights_of_another_variant_name_the_key_and_both_shapes() {
    let err = expect_error("timm_small into a width-0.5 model", || {
        EfficientNet::from_pytorch(
            fixture("timm_small.pth"),
            timm_small().with_width(0.5),
            WeightSource::Timm,
            &Device::default(),
        )
    });
    let message = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    assert!(message.contains("conv_stem.weight"), "{message}");
    assert!(
        message.contains("[8, 3, 3, 3]") && message.contains("[16, 3, 3, 3]"),
        "{message}"
    );
}

#[test]
fn non_finite_weights_load_but_are_reported_and_refused_by_check_finite() {
    let device = Device::default();
    let real = std::fs::read(fixture("timm_small.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&real).unwrap();
    // Every tensor as it was (num_batches_tracked is an i64 scalar), with one NaN in a
    // running variance and one infinity in the classifier.
    let mut tensors = Vec::new();
    for name in file.names() {
        let view = file.tensor(name).unwrap();
        let mut bytes = view.data().to_vec();
        let poison = match name {
            "bn1.running_var" => Some((0, f32::NAN)),
            "classifier.weight" => Some((3, f32::INFINITY)),
            _ => None,
        };
        if let Some((index, value)) = poison {
            bytes[4 * index..4 * index + 4].copy_from_slice(&value.to_le_bytes());
        }
        tensors.push((name.to_string(), view.dtype(), view.shape().to_vec(), bytes));
    }
    let views = tensors.iter().map(|(name, dtype, shape, bytes)| {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap();
        (name.clone(), view)
    });
    let bytes = safetensors::serialize(views, None).unwrap();
    let path = write("non-finite.safetensors", &bytes);
    let model = EfficientNet::from_pytorch(&path, timm_small(), WeightSource::Timm, &device)
        .expect("non-finite values are data: loading accepts them");
    let mut found = model.non_finite_parameters();
    found.sort();
    assert_eq!(found, ["classifier.weight", "stem.bn.running_var"]);
    let err = expect_error("check_finite", || model.check_finite());
    assert_eq!(
        err.to_string(),
        "weights hold NaN or infinity in 2 tensor(s), first `stem.bn.running_var`"
    );
    // The fixture itself is finite.
    let clean = load(&fixture("timm_small.pth")).unwrap();
    assert!(clean.non_finite_parameters().is_empty());
    clean.check_finite().unwrap();
}

fn encode(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A PNG signature and IHDR chunk (8-bit RGB) for `width x height`, with a correct CRC.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&width.to_be_bytes());
    chunk.extend_from_slice(&height.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    // CRC-32 (IEEE, reflected), over type and data.
    let mut crc = !0u32;
    for &byte in &chunk {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(&chunk);
    bytes.extend_from_slice(&(!crc).to_be_bytes());
    bytes
}

#[test]
fn broken_images_are_errors() {
    let photo = image::open(fixture("images/chelsea.png")).unwrap();
    let png = encode(&photo, image::ImageFormat::Png);
    let jpeg = encode(&photo.to_rgb8().into(), image::ImageFormat::Jpeg);
    // A PNG signature and a valid IHDR chunk declaring 100000 x 100000 pixels, then nothing.
    let png_bomb = png_header(100_000, 100_000);
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty.jpg".into(), Vec::new()),
        ("text.jpg".into(), b"<html>not an image</html>".to_vec()),
        ("noise.png".into(), noise(4096, 3)),
        ("png-bomb.png".into(), png_bomb),
        ("zero-width.png".into(), {
            // A valid IHDR chunk with width 0 (forbidden by the PNG spec), then the photo's
            // own data chunks.
            [&png_header(0, 300)[..], &png[33..]].concat()
        }),
    ];
    for (name, bytes) in [("png", &png), ("jpg", &jpeg)] {
        for i in 0..16 {
            // Headers, early data and the last few bytes; JPEG decoders fill a missing
            // tail with grey, so only cuts that lose the header are sure errors there.
            let cut = if name == "jpg" {
                i * 40
            } else {
                bytes.len() * i / 16 + i
            };
            cases.push((format!("truncated-{cut}.{name}"), bytes[..cut].to_vec()));
        }
    }
    assert_eq!(cases.len(), 37, "TESTING.md gives this count");
    for (name, bytes) in &cases {
        let path = write(name, bytes);
        let err = expect_error(name, || Preprocess::open(&path));
        assert!(matches!(err, Error::Image { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(name.as_str()), "{err}");
        // The header is valid: refused for its size, not for a checksum.
        if name == "png-bomb.png" {
            assert!(err.to_string().contains("too large"), "{err}");
        }
    }
}

#[test]
fn thin_and_tiny_images_work_or_are_refused_by_size() {
    let device = Device::default();
    let preprocess = Preprocess::imagenet(256, 224, efficientnet_burn::Interpolation::Bilinear);
    // 1 x N and N x 1 slivers that fit the limit become valid batches.
    for (w, h) in [(1, 300), (300, 1), (1, 1)] {
        let image = image::RgbImage::from_pixel(w, h, image::Rgb([200, 10, 10]));
        let path = write(
            &format!("sliver-{w}x{h}.png"),
            &encode(&image.into(), image::ImageFormat::Png),
        );
        let image = Preprocess::open(&path).unwrap();
        let batch = catch_unwind(|| preprocess.batch(&[image], &device))
            .unwrap_or_else(|_| panic!("{w}x{h}: panicked"))
            .unwrap();
        assert_eq!(batch.dims(), [1, 3, 224, 224]);
    }
    // 1 x 16000 would resize to 256 x 4096000: refused before allocating it.
    let sliver = image::RgbImage::new(1, 16_000);
    let err = expect_error("1x16000", || preprocess.resize_and_crop(&sliver));
    assert!(err.to_string().contains("over the"), "{err}");
}

#[test]
fn one_model_shared_by_eight_threads_gives_identical_outputs() {
    let device = Device::default();
    let model = EfficientNetConfig::b0()
        .with_width(0.25)
        .with_num_classes(10)
        .init(&device)
        .valid();
    let fused = model.clone().fold_batch_norms();
    let inputs: Vec<Tensor<4>> = (0..8)
        .map(|_| Tensor::random([2, 3, 64, 64], Distribution::Default, &device))
        .collect();
    for model in [&model, &fused] {
        let expected: Vec<Vec<f32>> = inputs
            .iter()
            .map(|input| {
                model
                    .forward(input.clone())
                    .into_data()
                    .try_to_vec()
                    .unwrap()
            })
            .collect();
        let got: Vec<Vec<Vec<f32>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|thread| {
                    let inputs = &inputs;
                    scope.spawn(move || {
                        // Each thread runs every input, starting at a different one.
                        (0..inputs.len())
                            .map(|i| {
                                let input = inputs[(i + thread) % inputs.len()].clone();
                                model
                                    .forward(input)
                                    .into_data()
                                    .try_to_vec::<f32>()
                                    .unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (thread, outputs) in got.iter().enumerate() {
            for (i, output) in outputs.iter().enumerate() {
                let expected = &expected[(i + thread) % inputs.len()];
                assert!(
                    output
                        .iter()
                        .zip(expected)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "thread {thread}, input {i}: not bit-identical"
                );
            }
        }
    }
}
