//! The plan's activation buffers: NHWC maps on storage lent from a pool kept with the plan,
//! so that a forward after the first allocates no activation memory.

use std::sync::Mutex;

use crate::cpu::memory::{Aligned, LINE_FLOATS};

/// Storage for activations, reused from one layer and one forward to the next.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<f32>>>,
}

impl BufferPool {
    /// A buffer of `len` values starting on a cache line, on the smallest free storage long
    /// enough (or the longest, grown). Its old values are left in place: every user writes
    /// what it reads.
    pub(crate) fn lend(&self, len: usize) -> Aligned {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, storage)| storage.len() >= len + LINE_FLOATS)
            .min_by_key(|(_, storage)| storage.len())
            .map(|(index, _)| index)
            .or_else(|| (0..free.len()).max_by_key(|&index| free[index].len()));
        let storage = match best {
            Some(index) => free.swap_remove(index),
            None => Vec::new(),
        };
        drop(free);
        Aligned::on(storage, len)
    }

    /// Takes a buffer back.
    pub(crate) fn recycle(&self, buffer: Aligned) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.push(buffer.into_storage());
    }

    /// An NHWC map of this shape on a lent buffer (old values in place).
    pub(crate) fn map(&self, batch: usize, height: usize, width: usize, channels: usize) -> Nhwc {
        Nhwc {
            data: self.lend(batch * height * width * channels),
            batch,
            height,
            width,
            channels,
        }
    }
}

/// An activation map in NHWC order (pixel-major, channels contiguous): its buffer (exactly
/// its values) and shape.
#[derive(Debug)]
pub(crate) struct Nhwc {
    pub(crate) data: Aligned,
    pub(crate) batch: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) channels: usize,
}

impl Nhwc {
    /// Values of one sample.
    pub(crate) fn sample_len(&self) -> usize {
        self.height * self.width * self.channels
    }
}
