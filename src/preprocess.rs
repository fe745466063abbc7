//! Evaluation preprocessing, as torchvision's eval transforms do it: decode, resize the
//! shorter side, center crop, scale to `[0, 1]`, normalise, batch.
//!
//! The parameters come from the weights' metadata ([`Preprocess`]), never a fixed 224.

use std::borrow::Cow;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::error::Error;

/// The largest width or height [`Preprocess::decode`] accepts. A larger declared size is
/// refused before any pixel is decoded (decompression bombs).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// The most memory a decoder may allocate for one image, in bytes.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// The largest image file [`Preprocess::open`] reads by default: 256 MiB (no photograph comes
/// close; a compressed file this size could decode to far more). Set
/// `EFFICIENTNET_MAX_IMAGE_BYTES` to change it, or call [`Preprocess::open_with_limit`].
pub const DEFAULT_MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// How much larger than the resize target (per side) an image may be before
/// [`Preprocess::resize_and_crop`] first averages it down by whole blocks: the float
/// buffers of the antialiased resize then stay within a fixed multiple of the output
/// (see [`Preprocess::resize_and_crop`]).
pub const PRE_REDUCE_RATIO: usize = 4;

/// The file-size limit in force: `EFFICIENTNET_MAX_IMAGE_BYTES` if set to a number, else
/// [`DEFAULT_MAX_IMAGE_FILE_BYTES`].
pub fn max_image_file_bytes() -> u64 {
    std::env::var("EFFICIENTNET_MAX_IMAGE_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_IMAGE_FILE_BYTES)
}

/// ImageNet channel means (RGB), as torchvision normalises.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A decoded image the crate's transforms and classifiers take: an [`RgbImage`] as it is,
/// or any [`DynamicImage`] (grayscale, RGBA, 16-bit...) converted to 8-bit RGB, as
/// [`Preprocess::open`] converts files. References to either work too.
pub trait ImageInput {
    /// The image as 8-bit RGB, borrowed when it already is.
    fn to_rgb(&self) -> Cow<'_, RgbImage>;
}

impl ImageInput for RgbImage {
    fn to_rgb(&self) -> Cow<'_, RgbImage> {
        Cow::Borrowed(self)
    }
}

impl ImageInput for DynamicImage {
    fn to_rgb(&self) -> Cow<'_, RgbImage> {
        match self {
            DynamicImage::ImageRgb8(rgb) => Cow::Borrowed(rgb),
            other => Cow::Owned(other.to_rgb8()),
        }
    }
}

impl<T: ImageInput + ?Sized> ImageInput for &T {
    fn to_rgb(&self) -> Cow<'_, RgbImage> {
        (**self).to_rgb()
    }
}

/// How the shorter side is resized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Interpolation {
    /// Bilinear (triangle filter, antialiased when shrinking, like PIL).
    Bilinear,
    /// Bicubic (Catmull-Rom, `a = -0.5`, antialiased when shrinking, like PIL).
    Bicubic,
}

impl Interpolation {
    pub(crate) fn filter(self) -> FilterType {
        match self {
            Interpolation::Bilinear => FilterType::Triangle,
            Interpolation::Bicubic => FilterType::CatmullRom,
        }
    }
}

/// An evaluation transform: resize the shorter side to `resize`, center crop `crop x crop`,
/// normalise with `mean` / `std`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocess {
    /// Target length of the shorter side.
    pub resize: usize,
    /// Side of the square center crop.
    pub crop: usize,
    /// Resize interpolation.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: [f32; 3],
}

impl Preprocess {
    /// ImageNet normalisation with the given resize, crop and interpolation.
    pub fn imagenet(resize: usize, crop: usize, interpolation: Interpolation) -> Self {
        Self {
            resize,
            crop,
            interpolation,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Checks the transform can run: resize and crop between 1 and [`MAX_IMAGE_SIDE`],
    /// finite means, finite positive standard deviations (a saved model's
    /// `preprocess.json` is checked so before use).
    pub fn validate(&self) -> Result<(), Error> {
        let side = 1..=MAX_IMAGE_SIDE as usize;
        if !side.contains(&self.resize) || !side.contains(&self.crop) {
            return Err(Error::InvalidTransform(format!(
                "resize ({}) and crop ({}) must be between 1 and {MAX_IMAGE_SIDE}",
                self.resize, self.crop
            )));
        }
        if !self.mean.iter().all(|m| m.is_finite())
            || !self.std.iter().all(|s| s.is_finite() && *s > 0.0)
        {
            return Err(Error::InvalidTransform(format!(
                "mean {:?} must be finite and std {:?} finite and positive",
                self.mean, self.std
            )));
        }
        Ok(())
    }

    /// Reads and decodes an image file (JPEG, PNG, WebP, BMP, GIF first frame), converted to
    /// 8-bit RGB (grayscale, alpha and 16-bit images are converted; alpha is dropped). A file
    /// over the limit (256 MiB, or `EFFICIENTNET_MAX_IMAGE_BYTES`) is refused before it is read.
    pub fn open(path: impl AsRef<Path>) -> Result<RgbImage, Error> {
        Self::open_with_limit(path, max_image_file_bytes())
    }

    /// [`open`](Self::open) with another file-size limit, in bytes.
    pub fn open_with_limit(path: impl AsRef<Path>, max_bytes: u64) -> Result<RgbImage, Error> {
        use std::io::Read;
        let path = path.as_ref();
        let image_error = |reason: String| Error::Image {
            path: path.display().to_string(),
            reason,
        };
        let too_large = |size: u64| {
            image_error(format!(
                "the file is {size} bytes, over the {max_bytes}-byte limit \
                 (EFFICIENTNET_MAX_IMAGE_BYTES)"
            ))
        };
        let file = std::fs::File::open(path).map_err(Error::io(path))?;
        let size = file.metadata().map_err(Error::io(path))?.len();
        if size > max_bytes {
            return Err(too_large(size));
        }
        // The limit holds even for a file that grows while it is read.
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(Error::io(path))?;
        if bytes.len() as u64 > max_bytes {
            return Err(too_large(bytes.len() as u64));
        }
        Self::decode(&bytes).map_err(image_error)
    }

    /// Decodes image bytes to 8-bit RGB; the error says why it could not. Images wider or
    /// taller than [`MAX_IMAGE_SIDE`], or needing more than 1 GiB to decode, are refused.
    pub fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| e.to_string())?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        let image = reader.decode().map_err(|e| match e {
            image::ImageError::Limits(_) => format!(
                "the image is too large to decode (at most {MAX_IMAGE_SIDE} pixels a side and \
                 {MAX_DECODE_BYTES} bytes): {e}"
            ),
            other => other.to_string(),
        })?;
        if image.width() == 0 || image.height() == 0 {
            return Err("the image is empty (0 pixels)".to_string());
        }
        Ok(match image {
            DynamicImage::ImageRgb8(rgb) => rgb,
            other => other.to_rgb8(),
        })
    }

    /// Resizes the shorter side to `resize` (the longer side keeps the aspect ratio, truncated
    /// as torchvision does) and center-crops `crop x crop` (offsets rounded half to even, like
    /// Python's `round`). A resized image over 1 GiB (an extreme aspect ratio) is refused.
    ///
    /// Memory: an image more than 4 times the resized size on both sides
    /// is first averaged down by whole `k x k` blocks to between 2 and 4 times that size (as
    /// PIL's `reducing_gap` does; torchvision does not, so such images differ from its
    /// output by the rounding of that step). The resize's float buffers then take at most
    /// about 12 bytes x 16 x the resized image's pixels, whatever the input's size, beside
    /// the decoded image itself.
    pub fn resize_and_crop(&self, image: &RgbImage) -> Result<RgbImage, Error> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if self.resize == 0 || self.crop == 0 {
            return Err(Error::InvalidTransform(format!(
                "resize ({}) and crop ({}) must be at least 1",
                self.resize, self.crop
            )));
        }
        let (new_w, new_h) = if w <= h {
            (self.resize, self.resize * h / w)
        } else {
            (self.resize * w / h, self.resize)
        };
        // A sliver (1 x 5000, say) resized so its short side is `resize` would be enormous.
        if new_w as u64 * new_h as u64 * 3 > MAX_DECODE_BYTES {
            return Err(Error::InvalidTransform(format!(
                "resizing the {w}x{h} image so its shorter side is {} gives {new_w}x{new_h}, \
                 over the {MAX_DECODE_BYTES}-byte limit; crop it to a saner aspect ratio first",
                self.resize
            )));
        }
        if self.crop > new_w || self.crop > new_h {
            return Err(Error::InvalidTransform(format!(
                "crop {} is larger than the resized image {new_w}x{new_h}",
                self.crop
            )));
        }
        // Horizontal pass, then vertical, with the intermediate image rounded and clamped to
        // 8 bits in between: PIL's order and precision. One combined `resize` keeps the
        // intermediate in f32 (and goes vertical first), which differs from PIL by up to 5/255
        // where bicubic overshoots at sharp edges. The extra pass of each call is the identity
        // (a same-size resample with these kernels reproduces the input exactly).
        let filter = self.interpolation.filter();
        let block = (w / new_w).min(h / new_h) / (PRE_REDUCE_RATIO / 2);
        let reduced;
        let image = if block >= 2 {
            reduced = reduce(image, block as u32);
            &reduced
        } else {
            image
        };
        let (new_w, new_h) = (new_w as u32, new_h as u32);
        let horizontal = image::imageops::resize(image, new_w, image.height(), filter);
        let resized = image::imageops::resize(&horizontal, new_w, new_h, filter);
        let crop = self.crop as u32;
        let left = ((new_w - crop) as f64 / 2.0).round_ties_even() as u32;
        let top = ((new_h - crop) as f64 / 2.0).round_ties_even() as u32;
        Ok(image::imageops::crop_imm(&resized, left, top, crop, crop).to_image())
    }

    /// Scales a cropped image to `[0, 1]` and normalises it, channel-first.
    ///
    /// # Shapes
    ///
    /// - output: `[3, height, width]`
    pub fn normalize(&self, image: &RgbImage) -> TensorData {
        let (w, h) = (image.width() as usize, image.height() as usize);
        TensorData::new(self.normalized(image), [3, h, w])
    }

    /// [`normalize`](Self::normalize)'s values, channel-first.
    pub(crate) fn normalized(&self, image: &RgbImage) -> Vec<f32> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let mut values = vec![0.0f32; 3 * h * w];
        for (x, y, pixel) in image.enumerate_pixels() {
            for c in 0..3 {
                let v = pixel.0[c] as f32 / 255.0;
                values[c * h * w + y as usize * w + x as usize] = (v - self.mean[c]) / self.std[c];
            }
        }
        values
    }

    /// The whole transform on decoded images, batched on `device`.
    ///
    /// # Shapes
    ///
    /// - output: `[images.len(), 3, crop, crop]`
    pub fn batch<I: ImageInput>(&self, images: &[I], device: &Device) -> Result<Tensor<4>, Error> {
        let items = images
            .iter()
            .map(|image| self.prepare(&image.to_rgb()))
            .collect::<Result<Vec<_>, _>>()?;
        self.stack(items, device)
    }

    /// One decoded image resized, cropped and normalised ([`resize_and_crop`](
    /// Self::resize_and_crop) then [`normalize`](Self::normalize)), as `3 x crop x crop`
    /// values channel-first, for [`stack`](Self::stack).
    pub(crate) fn prepare(&self, image: &RgbImage) -> Result<Vec<f32>, Error> {
        Ok(self.normalized(&self.resize_and_crop(image)?))
    }

    /// Images from [`prepare`](Self::prepare) as one batch on `device`, copied once.
    pub(crate) fn stack(&self, items: Vec<Vec<f32>>, device: &Device) -> Result<Tensor<4>, Error> {
        if items.is_empty() {
            return Err(Error::NoImages("no images to batch".to_string()));
        }
        let (n, side) = (items.len(), self.crop);
        let values = items.concat();
        debug_assert_eq!(values.len(), n * 3 * side * side);
        Ok(Tensor::from_data(
            TensorData::new(values, [n, 3, side, side]),
            device,
        ))
    }
}

/// `image` averaged over `k x k` blocks (the last row and column of blocks average the pixels
/// they have), one output row at a time.
fn reduce(image: &RgbImage, k: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let (out_w, out_h) = (w.div_ceil(k), h.div_ceil(k));
    let raw = image.as_raw();
    let mut out = RgbImage::new(out_w, out_h);
    let mut sums = vec![0u64; out_w as usize * 3];
    for oy in 0..out_h {
        sums.fill(0);
        let (y0, y1) = (oy * k, ((oy + 1) * k).min(h));
        for y in y0..y1 {
            let row = &raw[(y * w * 3) as usize..((y + 1) * w * 3) as usize];
            for (x, pixel) in row.chunks_exact(3).enumerate() {
                let o = (x / k as usize) * 3;
                for c in 0..3 {
                    sums[o + c] += pixel[c] as u64;
                }
            }
        }
        for ox in 0..out_w {
            let n = (((ox + 1) * k).min(w) - ox * k) as u64 * (y1 - y0) as u64;
            let o = ox as usize * 3;
            let mean = |c: usize| ((sums[o + c] + n / 2) / n) as u8;
            out.put_pixel(ox, oy, image::Rgb([mean(0), mean(1), mean(2)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorter_side_and_crop_follow_torchvision() {
        let p = Preprocess::imagenet(256, 224, Interpolation::Bicubic);
        // 451x300 -> shorter side 300 -> 256, longer int(256 * 451 / 300) = 384.
        let out = p.resize_and_crop(&RgbImage::new(451, 300)).unwrap();
        assert_eq!(out.dimensions(), (224, 224));
    }

    #[test]
    fn normalization_is_channel_first() {
        let p = Preprocess::imagenet(1, 1, Interpolation::Bilinear);
        let image = RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 128]));
        let data = p.normalize(&image);
        assert_eq!(data.shape().to_vec(), vec![3, 1, 2]);
        let v = data.try_to_vec::<f32>().unwrap();
        assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((v[2] - (0.0 - 0.456) / 0.224).abs() < 1e-6);
        assert!((v[4] - (128.0 / 255.0 - 0.406) / 0.225).abs() < 1e-6);
    }

    #[test]
    fn crop_larger_than_the_image_is_an_error() {
        let p = Preprocess::imagenet(100, 120, Interpolation::Bilinear);
        let err = p.resize_and_crop(&RgbImage::new(200, 100)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: crop 120 is larger than the resized image 200x100"
        );
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_decoding() {
        // A 54-byte BMP header declaring 20000 x 20000 pixels (over MAX_IMAGE_SIDE) at 24 bits, and no pixels.
        let mut bmp = Vec::new();
        bmp.extend_from_slice(b"BM");
        bmp.extend_from_slice(&54u32.to_le_bytes()); // file size (a lie; never reached)
        bmp.extend_from_slice(&[0; 4]);
        bmp.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
        bmp.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
        bmp.extend_from_slice(&20_000i32.to_le_bytes());
        bmp.extend_from_slice(&20_000i32.to_le_bytes());
        bmp.extend_from_slice(&1u16.to_le_bytes()); // planes
        bmp.extend_from_slice(&24u16.to_le_bytes()); // bits per pixel
        bmp.extend_from_slice(&[0; 24]);
        let err = Preprocess::decode(&bmp).unwrap_err();
        println!("{err}");
        assert!(err.starts_with("the image is too large to decode"), "{err}");
    }

    #[test]
    fn block_reduction_averages_and_keeps_the_edges() {
        // 5x3 with k = 2: blocks of 2x2, 1x2 (last column), 2x1 (last row) and 1x1.
        let image = RgbImage::from_fn(5, 3, |x, y| image::Rgb([(10 * x + y) as u8, 0, 255]));
        let out = reduce(&image, 2);
        assert_eq!(out.dimensions(), (3, 2));
        // Block (0, 0): values 0, 10, 1, 11 -> mean 5.5 -> 6 (rounded half up).
        assert_eq!(out.get_pixel(0, 0).0, [6, 0, 255]);
        // Block (2, 1): the single pixel (4, 2) = 42.
        assert_eq!(out.get_pixel(2, 1).0, [42, 0, 255]);
    }

    #[test]
    fn huge_images_are_reduced_first_and_barely_change() {
        // A smooth 1600x1200 gradient to a 64 crop: ratio 18, so blocks of 9 are averaged
        // first; the answer stays within 2/255 of the direct resize.
        let image = RgbImage::from_fn(1600, 1200, |x, y| {
            image::Rgb([(x / 7) as u8, (y / 5) as u8, ((x + y) / 11) as u8])
        });
        let p = Preprocess::imagenet(73, 64, Interpolation::Bicubic);
        let fast = p.resize_and_crop(&image).unwrap();
        let (w, h) = (73 * 1600 / 1200, 73);
        let direct = image::imageops::resize(
            &image::imageops::resize(&image, w, 1200, FilterType::CatmullRom),
            w,
            h,
            FilterType::CatmullRom,
        );
        let direct = image::imageops::crop_imm(&direct, (w - 64) / 2, (h - 64) / 2, 64, 64);
        let worst = fast
            .pixels()
            .zip(direct.to_image().pixels())
            .flat_map(|(a, b)| (0..3).map(move |c| a.0[c].abs_diff(b.0[c])))
            .max()
            .unwrap();
        assert!(worst <= 2, "{worst}");
    }

    #[test]
    fn files_over_the_limit_are_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("efficientnet-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.png");
        let mut png = Vec::new();
        RgbImage::new(64, 64)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(&path, &png).unwrap();
        assert!(Preprocess::open_with_limit(&path, png.len() as u64).is_ok());
        let err = Preprocess::open_with_limit(&path, 100).unwrap_err();
        assert!(matches!(err, Error::Image { .. }), "{err:?}");
        assert!(
            err.to_string().ends_with(&format!(
                "the file is {} bytes, over the 100-byte limit (EFFICIENTNET_MAX_IMAGE_BYTES)",
                png.len()
            )),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn undecodable_bytes_are_an_error() {
        let err = Preprocess::decode(b"not an image").unwrap_err();
        assert!(!err.is_empty());
    }
}
