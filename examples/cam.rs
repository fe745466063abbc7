//! Class activation maps: where the model looks (Zhou et al. 2016; the paper's Figure 7).
//!
//! ```text
//! cargo run --release --example cam -- photo.jpg                  # torchvision B0, top-1 class
//! cargo run --release --example cam -- --class 281 --out maps/ photo.jpg
//! scripts/fetch_lite0_weights.sh && cargo run --release --example cam -- \
//!     --variant lite0 --source efficientnet-pytorch \
//!     --weights weights/efficientnet-lite0-57934424.pth tests/fixtures/images/chelsea.png
//! ```
//!
//! For each image, writes `OUT/<image>-<class label>-<percent>.png`: the model's input crop
//! and the map, upsampled to the crop and laid over it in a blue-to-red scale, side by side.
//! The label and probability are in the file name (text rendering would pull in a font
//! stack) and on stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::Device;
use clap::Parser;
use efficientnet_burn::{Classifier, Error, Preprocess};
use image::{ImageBuffer, Luma, Rgb, RgbImage};

mod choices;
mod common;

use choices::DeviceArg;

/// Write class activation maps over images.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    weights: common::WeightArgs,
    /// The class to map (index); default: each image's top-1 class.
    #[arg(long)]
    class: Option<usize>,
    /// Output directory.
    #[arg(long, default_value = "cam")]
    out: PathBuf,
    /// How opaque the map is over the image, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    alpha: f32,
    /// Backend (as compiled in).
    #[arg(long, value_enum, default_value = "flex")]
    device: DeviceArg,
    /// Images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Blue (0) through cyan, green and yellow to red (1): a jet-like scale.
fn colour(value: f32) -> [f32; 3] {
    let v = value.clamp(0.0, 1.0) * 4.0;
    let ramp = |x: f32| x.clamp(0.0, 1.0);
    [
        ramp(v - 1.5).min(ramp(4.5 - v)),
        ramp(v - 0.5).min(ramp(3.5 - v)),
        ramp(v + 0.5).min(ramp(2.5 - v)),
    ]
}

/// `crop | crop with the map over it`.
fn side_by_side(
    crop: &RgbImage,
    map: &[f32],
    (map_h, map_w): (usize, usize),
    alpha: f32,
) -> RgbImage {
    let small =
        ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(map_w as u32, map_h as u32, map.to_vec())
            .expect("map size matches its data");
    let (w, h) = crop.dimensions();
    let large = image::imageops::resize(&small, w, h, image::imageops::FilterType::Triangle);
    let mut out = RgbImage::new(2 * w, h);
    for (x, y, pixel) in crop.enumerate_pixels() {
        out.put_pixel(x, y, *pixel);
        let heat = colour(large.get_pixel(x, y).0[0]);
        let blend =
            |c: usize| ((1.0 - alpha) * pixel.0[c] as f32 + alpha * 255.0 * heat[c]).round() as u8;
        out.put_pixel(w + x, y, Rgb([blend(0), blend(1), blend(2)]));
    }
    out
}

fn run(args: Args) -> Result<(), Error> {
    let device: Device = args.device.0.device()?;
    let loaded = args.weights.load(&device)?;
    let names: Vec<String> = match loaded.classes.is_empty() {
        false => loaded.classes.clone(),
        true => (0..loaded.model.config().num_classes)
            .map(|i| format!("class{i}"))
            .collect(),
    };
    std::fs::create_dir_all(&args.out).map_err(Error::write(&args.out))?;
    // Each image gets its map or its own error; one bad file does not lose the others.
    let mut failed = 0;
    for path in &args.images {
        if let Err(error) = write_map(&args, &loaded, &names, &device, path) {
            eprintln!("error: {}: {error}", path.display());
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(Error::InvalidInput(format!(
            "{failed} of {} images failed",
            args.images.len()
        )));
    }
    Ok(())
}

/// The class activation map of one image, written beside its crop into `args.out`.
fn write_map(
    args: &Args,
    loaded: &Classifier,
    names: &[String],
    device: &Device,
    path: &Path,
) -> Result<(), Error> {
    let crop = loaded
        .preprocess
        .resize_and_crop(&Preprocess::open(path)?)?;
    let input = burn::tensor::Tensor::<3>::from_data(loaded.preprocess.normalize(&crop), device)
        .unsqueeze::<4>();
    let cam = loaded.model.class_activation_map(input, args.class)?;
    let [_, map_h, map_w] = cam.maps.dims();
    let map: Vec<f32> = cam.maps.into_data().iter::<f32>().collect();
    let (class, probability) = (cam.classes[0], cam.probabilities[0]);
    let label = names[class].replace(|c: char| !c.is_alphanumeric(), "_");
    let stem = Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image");
    let file = args
        .out
        .join(format!("{stem}-{label}-{:.0}pct.png", 100.0 * probability));
    side_by_side(&crop, &map, (map_h, map_w), args.alpha)
        .save(&file)
        .map_err(|e| Error::Image {
            path: file.display().to_string(),
            reason: e.to_string(),
        })?;
    println!(
        "{}: {} ({:.1}%), {map_h}x{map_w} map -> {}",
        path.display(),
        names[class],
        100.0 * probability,
        file.display()
    );
    Ok(())
}
