//! The panic handler: "panicked at {location}:\n{message}" through the `Abort`
//! hypercall with status [`septem_abi::PANIC_EXIT_STATUS`] (101).
//!
//! It formats into a static buffer, never the heap (the heap may be what failed). A
//! panic while panicking aborts with a fixed message.

use core::fmt;

/// Longest panic message sent (the monitor prints at most this much).
pub const PANIC_MESSAGE_MAX: usize = septem_abi::ABORT_MESSAGE_MAX as usize;

/// A [`fmt::Write`] into a byte slice that silently truncates.
#[derive(Debug)]
pub struct Truncating<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Truncating<'a> {
    /// Writes into `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Truncating { buf, len: 0 }
    }

    /// The bytes written so far.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Formats a panic report as the handler sends it.
pub fn format_report(
    out: &mut Truncating<'_>,
    location: Option<&core::panic::Location<'_>>,
    message: impl fmt::Display,
) {
    use fmt::Write;
    let _ = match location {
        Some(l) => write!(out, "panicked at {l}:\n{message}"),
        None => write!(out, "panicked:\n{message}"),
    };
}

#[cfg(not(test))]
mod handler {
    use super::*;
    use crate::{console, hypercall};
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};
    use septem_abi::PANIC_EXIT_STATUS;

    struct MessageBuffer(UnsafeCell<[u8; PANIC_MESSAGE_MAX]>);

    // SAFETY: only the first panic (the winner of `PANICKING`) ever touches the buffer.
    unsafe impl Sync for MessageBuffer {}

    static PANICKING: AtomicBool = AtomicBool::new(false);
    static MESSAGE: MessageBuffer = MessageBuffer(UnsafeCell::new([0; PANIC_MESSAGE_MAX]));

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        if PANICKING.swap(true, Ordering::AcqRel) {
            hypercall::abort_raw(b"panicked while panicking", PANIC_EXIT_STATUS);
        }
        // SAFETY: we won `PANICKING`, so this is the only reference ever made.
        let buf = unsafe { &mut *MESSAGE.0.get() };
        let mut out = Truncating::new(buf);
        format_report(&mut out, info.location(), info.message());
        console::flush();
        hypercall::abort_raw(out.bytes(), PANIC_EXIT_STATUS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fmt::Write;

    #[test]
    fn report_format() {
        let mut buf = [0u8; 128];
        let mut out = Truncating::new(&mut buf);
        let loc = core::panic::Location::caller();
        format_report(&mut out, Some(loc), format_args!("boom {}", 7));
        let s = core::str::from_utf8(out.bytes()).unwrap();
        assert!(
            s.starts_with("panicked at guest-libos/src/panic.rs:"),
            "{s}"
        );
        assert!(s.ends_with(":\nboom 7"), "{s}");
    }

    #[test]
    fn truncates_at_char_boundary() {
        let mut buf = [0u8; 5];
        let mut out = Truncating::new(&mut buf);
        out.write_str("abcé").unwrap(); // 'é' is 2 bytes: fits exactly
        out.write_str("x").unwrap();
        assert_eq!(out.bytes(), "abcé".as_bytes());
        let mut buf = [0u8; 4];
        let mut out = Truncating::new(&mut buf);
        out.write_str("abcé").unwrap();
        assert_eq!(out.bytes(), b"abc");
    }
}
