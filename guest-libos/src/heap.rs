//! The heap: talc over `[heap_start, heap_end)` from `BootInfo`, as the
//! `#[global_allocator]` of every guest.

use crate::sync::Locked;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use talc::{ErrOnOom, Span, Talc};

/// Heap usage counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes the allocator manages (0 before initialization).
    pub size: usize,
    /// Bytes currently allocated (as requested, without allocator overhead).
    pub in_use: usize,
    /// Highest `in_use` seen.
    pub peak: usize,
    /// Successful allocations so far (including reallocations that moved).
    pub allocations: u64,
    /// Failed allocations so far.
    pub failures: u64,
}

struct State {
    talc: Talc<ErrOnOom>,
    stats: HeapStats,
}

impl State {
    fn note_alloc(&mut self, size: usize) {
        self.stats.in_use += size;
        self.stats.peak = self.stats.peak.max(self.stats.in_use);
        self.stats.allocations += 1;
    }
}

/// A talc heap behind a re-entrance-checked lock.
pub struct Heap {
    state: Locked<State>,
}

impl core::fmt::Debug for Heap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Heap")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Heap {
    /// An empty heap: every allocation fails until [`Heap::init`].
    #[must_use]
    pub const fn new() -> Heap {
        Heap {
            state: Locked::new(State {
                talc: Talc::new(ErrOnOom),
                stats: HeapStats {
                    size: 0,
                    in_use: 0,
                    peak: 0,
                    allocations: 0,
                    failures: 0,
                },
            }),
        }
    }

    /// Gives the allocator `[start, end)`. Returns the bytes it manages (0 if the
    /// region is unusable: null, empty or too small).
    ///
    /// # Safety
    /// The region must be readable and writable, used by nothing else, and stay so for
    /// as long as the heap is used.
    pub unsafe fn init(&self, start: *mut u8, end: *mut u8) -> usize {
        if start.is_null() || end <= start {
            return 0;
        }
        self.state
            .try_with(|s| {
                // SAFETY: forwarded from the caller's contract; the span is non-null.
                match unsafe { s.talc.claim(Span::new(start, end)) } {
                    Ok(span) => {
                        s.stats.size += span.size();
                        span.size()
                    }
                    Err(()) => 0,
                }
            })
            .unwrap_or(0)
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> HeapStats {
        self.state.try_with(|s| s.stats).unwrap_or_default()
    }
}

impl Default for Heap {
    fn default() -> Self {
        Heap::new()
    }
}

// SAFETY: talc hands out disjoint, suitably aligned blocks of the claimed region; the
// lock gives each call exclusive access to its state, and a re-entrant call (which
// cannot happen: talc does not allocate) would fail cleanly with null.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.state
            .try_with(|s| {
                // SAFETY: GlobalAlloc callers never pass a zero-sized layout.
                match unsafe { s.talc.malloc(layout) } {
                    Ok(p) => {
                        s.note_alloc(layout.size());
                        p.as_ptr()
                    }
                    Err(()) => {
                        s.stats.failures += 1;
                        ptr::null_mut()
                    }
                }
            })
            .unwrap_or(ptr::null_mut())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = self.state.try_with(|s| {
            if let Some(p) = NonNull::new(ptr) {
                // SAFETY: the caller passes a block this heap allocated with `layout`.
                unsafe { s.talc.free(p, layout) };
                s.stats.in_use -= layout.size();
            }
        });
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(old) = NonNull::new(ptr) else {
            return ptr::null_mut();
        };
        self.state
            .try_with(|s| {
                if new_size <= layout.size() {
                    // SAFETY: `old` was allocated with `layout` here; new_size is
                    // non-zero (GlobalAlloc contract) and not larger.
                    unsafe { s.talc.shrink(old, layout, new_size) };
                    s.stats.in_use -= layout.size() - new_size;
                    return ptr;
                }
                // SAFETY: `old` was allocated with `layout` here and new_size is larger.
                match unsafe { s.talc.grow(old, layout, new_size) } {
                    Ok(p) => {
                        s.stats.in_use -= layout.size();
                        s.note_alloc(new_size);
                        p.as_ptr()
                    }
                    Err(()) => {
                        s.stats.failures += 1;
                        ptr::null_mut()
                    }
                }
            })
            .unwrap_or(ptr::null_mut())
    }
}

/// The guest's heap.
#[cfg_attr(not(test), global_allocator)]
pub(crate) static HEAP: Heap = Heap::new();

/// The guest heap's counters.
#[must_use]
pub fn heap_stats() -> HeapStats {
    HEAP.stats()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn heap_over(words: &mut [u64]) -> Heap {
        let heap = Heap::new();
        let range = words.as_mut_ptr_range();
        // SAFETY: the test owns `words` for longer than it uses the heap.
        let size = unsafe { heap.init(range.start.cast(), range.end.cast()) };
        assert!(size > 0);
        heap
    }

    #[test]
    fn alloc_free_realloc_and_stats() {
        let mut mem = vec![0u64; 64 * 1024];
        let heap = heap_over(&mut mem);
        let mut blocks = Vec::new();
        for i in 1..200usize {
            let layout = Layout::from_size_align(i * 7, 1 << (i % 7)).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { heap.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(p as usize % layout.align(), 0);
            // SAFETY: `p` is a fresh block of `layout.size()` bytes.
            unsafe { p.write_bytes(i as u8, layout.size()) };
            blocks.push((p, layout));
        }
        let s = heap.stats();
        assert_eq!(s.allocations, 199);
        assert_eq!(s.in_use, (1..200).map(|i| i * 7).sum::<usize>());
        for (i, (p, layout)) in blocks.iter_mut().enumerate() {
            let fill = (i + 1) as u8;
            // SAFETY: the block is live with `layout`; new size is non-zero.
            let q = unsafe { heap.realloc(*p, *layout, layout.size() * 2 + 1) };
            assert!(!q.is_null());
            // SAFETY: the first `layout.size()` bytes were preserved.
            let old = unsafe { std::slice::from_raw_parts(q, layout.size()) };
            assert!(old.iter().all(|&b| b == fill));
            *p = q;
            *layout = Layout::from_size_align(layout.size() * 2 + 1, layout.align()).unwrap();
        }
        for (p, layout) in blocks {
            // SAFETY: each block is live with its current layout.
            unsafe { heap.dealloc(p, layout) };
        }
        let s = heap.stats();
        assert_eq!(s.in_use, 0);
        assert!(s.peak > 0);
    }

    #[test]
    fn exhaustion_fails_cleanly() {
        let mut mem = vec![0u64; 1024];
        let heap = heap_over(&mut mem);
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        // SAFETY: non-zero size.
        assert!(unsafe { heap.alloc(layout) }.is_null());
        assert_eq!(heap.stats().failures, 1);
        let uninit = Heap::new();
        // SAFETY: non-zero size.
        assert!(unsafe { uninit.alloc(Layout::new::<u64>()) }.is_null());
    }
}
