//! A minimal try-lock. A guest has one thread, so a lock is never contended; the flag
//! only catches re-entrance (a `Display` impl that prints while being printed, an
//! allocation from inside the allocator, a panic while the console is borrowed), which
//! must not create two `&mut` to the same data.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// Data behind a non-blocking lock.
pub(crate) struct Locked<T> {
    busy: AtomicBool,
    inner: UnsafeCell<T>,
}

// SAFETY: access to `inner` only happens inside `try_with`, after winning the `busy`
// flag with an acquire compare-exchange and before releasing it, so there is never more
// than one reference to it at a time, from any thread. The guarded types (a byte buffer,
// the talc allocator state) hold no thread-affine data.
unsafe impl<T> Sync for Locked<T> {}

impl<T> Locked<T> {
    pub(crate) const fn new(value: T) -> Self {
        Locked {
            busy: AtomicBool::new(false),
            inner: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with exclusive access, or returns `None` if the lock is held (which in
    /// a single-threaded guest means re-entrance).
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _release = Release(&self.busy);
        // SAFETY: we hold the flag (see the `Sync` impl), so this is the only reference.
        let inner = unsafe { &mut *self.inner.get() };
        Some(f(inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reentrance_is_refused() {
        let l = Locked::new(5);
        let r = l.try_with(|v| {
            *v += 1;
            l.try_with(|_| ()).is_none()
        });
        assert_eq!(r, Some(true));
        assert_eq!(l.try_with(|v| *v), Some(6));
    }
}
