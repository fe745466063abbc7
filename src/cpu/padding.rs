//! Burn's padding configs resolved to pixels, for one input size.

use burn::nn::PaddingConfig2d;

/// Pixels of padding on each side of a convolution's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pads {
    pub(crate) top: usize,
    pub(crate) bottom: usize,
    pub(crate) left: usize,
    pub(crate) right: usize,
}

impl Pads {
    /// `padding` resolved for a `kernel x kernel` convolution at `stride` over a
    /// `height x width` input.
    pub(crate) fn resolve(
        padding: &PaddingConfig2d,
        height: usize,
        width: usize,
        kernel: usize,
        stride: usize,
    ) -> Self {
        match *padding {
            PaddingConfig2d::Valid => Pads::default(),
            PaddingConfig2d::Explicit(top, left, bottom, right) => Pads {
                top,
                bottom,
                left,
                right,
            },
            PaddingConfig2d::Same => {
                let (top, bottom) = same(height, kernel, stride);
                let (left, right) = same(width, kernel, stride);
                Pads {
                    top,
                    bottom,
                    left,
                    right,
                }
            }
        }
    }

    /// Output height and width of a `kernel x kernel` convolution at `stride` over a padded
    /// `height x width` input (at least 1 when the padded input holds a window).
    pub(crate) fn output_size(
        &self,
        height: usize,
        width: usize,
        kernel: usize,
        stride: usize,
    ) -> (usize, usize) {
        let size = |padded: usize| padded.saturating_sub(kernel) / stride + 1;
        (
            size(height + self.top + self.bottom),
            size(width + self.left + self.right),
        )
    }
}

/// TF/Burn "same" padding: `ceil(size / stride)` outputs, the odd pixel after.
fn same(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let total = ((size.div_ceil(stride).max(1) - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        // ceil(8 / 2) = 4 outputs of a 3-wide kernel read 9 pixels: 0 before, 1 after.
        let pads = Pads::resolve(&PaddingConfig2d::Same, 8, 7, 3, 2);
        assert_eq!((pads.top, pads.bottom), (0, 1));
        // ceil(7 / 2) = 4 outputs read 9 of 7 pixels: 1 before, 1 after.
        assert_eq!((pads.left, pads.right), (1, 1));
        assert_eq!(pads.output_size(8, 7, 3, 2), (4, 4));
        // k = 5 at stride 1: 2 and 2.
        let pads = Pads::resolve(&PaddingConfig2d::Same, 6, 6, 5, 1);
        assert_eq!(
            (pads.top, pads.bottom, pads.output_size(6, 6, 5, 1)),
            (2, 2, (6, 6))
        );
    }
}
