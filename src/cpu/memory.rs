//! Buffers that start on a cache line: the one alignment rule of the kernels.
//!
//! A `Vec<f32>` starts only 16 bytes aligned, so a 64-byte vector load of one of its rows
//! may straddle two cache lines. Every buffer a kernel reads rows from (packed weights,
//! activations, scratch) is a [`Aligned`] view or an [`aligned`] slice: the values from the
//! storage's first 64-byte boundary on.

/// Bytes of a cache line.
const LINE_BYTES: usize = 64;

/// f32 values in a cache line: the slack a storage needs past its values.
pub(crate) const LINE_FLOATS: usize = LINE_BYTES / 4;

/// Where the first cache-line boundary of `storage` is (at most [`LINE_FLOATS`] in).
fn line_start(storage: &[f32]) -> usize {
    storage.as_ptr().align_offset(LINE_BYTES).min(LINE_FLOATS)
}

/// `len` values of `storage` (grown as needed) from its first cache-line boundary on.
pub(crate) fn aligned(storage: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if storage.len() < len + LINE_FLOATS {
        storage.resize(len + LINE_FLOATS, 0.0);
    }
    let start = line_start(storage);
    &mut storage[start..start + len]
}

/// An owned buffer of `len` values starting on a cache line, on a storage that can be
/// handed back for reuse ([`into_storage`](Self::into_storage)).
#[derive(Clone, Debug)]
pub(crate) struct Aligned {
    storage: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Self {
        Self::on(Vec::new(), len)
    }

    /// `len` values on `storage` (grown if too short; the values it holds are left in
    /// place, so a reused buffer starts with old values).
    pub(crate) fn on(mut storage: Vec<f32>, len: usize) -> Self {
        if storage.len() < len + LINE_FLOATS {
            storage.resize(len + LINE_FLOATS, 0.0);
        }
        let start = line_start(&storage);
        Self {
            storage,
            start,
            len,
        }
    }

    /// The storage, for reuse.
    pub(crate) fn into_storage(self) -> Vec<f32> {
        self.storage
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_a_cache_line() {
        for len in [0, 1, 17, 1000] {
            let buffer = Aligned::zeroed(len);
            assert_eq!(buffer.len(), len);
            assert_eq!(buffer.as_ptr() as usize % LINE_BYTES, 0, "{len}");
            let reused = Aligned::on(buffer.into_storage(), len + 5);
            assert_eq!(reused.as_ptr() as usize % LINE_BYTES, 0, "{len}");
            let mut scratch = Vec::new();
            assert_eq!(aligned(&mut scratch, len).as_ptr() as usize % LINE_BYTES, 0);
        }
    }
}
