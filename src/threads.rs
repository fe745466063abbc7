//! Mapping a slice on a few scoped threads, keeping the order (decoding a batch of images).

/// `f` of every item, in order, computed on up to `threads` threads (contiguous parts of
/// `items`, one per thread). A panic in `f` is resumed on the calling thread.
pub(crate) fn map_in_order<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(part) => part,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn order_is_kept_whatever_the_thread_count() {
        let items: Vec<u32> = (0..23).collect();
        let expected: Vec<u32> = items.iter().map(|x| x * x).collect();
        for threads in [0, 1, 2, 5, 23, 64] {
            assert_eq!(super::map_in_order(&items, threads, |x| x * x), expected);
        }
        assert!(super::map_in_order(&[] as &[u32], 4, |x| *x).is_empty());
    }
}
