//! The console: buffered standard output, nearly unbuffered standard error.
//!
//! A hypercall is expensive under KVM (~26 µs), so standard output collects bytes in a
//! static buffer and sends them when the buffer is full, on [`flush`], at the end of
//! every `println!` (so interactive output appears line by line), and before exit or
//! abort. `print!` without a newline stays buffered until one of those.
//! Standard error flushes standard output first (to keep the two in order), then
//! formats each `eprint!` call into a small stack buffer and sends it at the end of the
//! call. Printing never allocates.

use crate::hypercall::{self, CONSOLE_STDERR, CONSOLE_STDOUT};
use crate::sync::Locked;
use core::fmt;

/// Size of the standard output buffer.
pub const STDOUT_BUFFER: usize = 8192;
const STDERR_CHUNK: usize = 512;

/// A fixed-size byte buffer in front of a sink.
#[derive(Debug)]
pub(crate) struct Buffer<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Buffer<N> {
    pub(crate) const fn new() -> Self {
        Buffer {
            buf: [0; N],
            len: 0,
        }
    }

    /// Appends `data`, sending the buffered bytes to `sink` first when they would not
    /// fit. Writes at least as large as the buffer go straight to the sink.
    pub(crate) fn write(&mut self, data: &[u8], sink: &mut impl FnMut(&[u8])) {
        if self.len + data.len() > N {
            self.flush(sink);
        }
        if data.len() >= N {
            sink(data);
            return;
        }
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    /// Sends the buffered bytes, if any.
    pub(crate) fn flush(&mut self, sink: &mut impl FnMut(&[u8])) {
        if self.len > 0 {
            sink(&self.buf[..self.len]);
            self.len = 0;
        }
    }

    #[cfg(test)]
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

static STDOUT: Locked<Buffer<STDOUT_BUFFER>> = Locked::new(Buffer::new());

fn send(stream: u32, data: &[u8]) {
    // Nothing sensible to do when the host console fails: the bytes are lost.
    let _ = hypercall::console_write(stream, data);
}

fn stdout_sink(data: &[u8]) {
    send(CONSOLE_STDOUT, data);
}

/// Writes bytes to standard output (buffered).
pub fn write_stdout(data: &[u8]) {
    if STDOUT
        .try_with(|b| b.write(data, &mut stdout_sink))
        .is_none()
    {
        // Re-entered (printing from inside a `Display` impl being printed): bypass the
        // buffer rather than alias it. Order may suffer; bytes are not lost.
        stdout_sink(data);
    }
}

/// Sends buffered standard output to the host.
pub fn flush() {
    // When the buffer is borrowed further up the stack (a panic in the middle of a
    // print), its owner will flush it, or the bytes are lost with the guest.
    let _ = STDOUT.try_with(|b| b.flush(&mut stdout_sink));
}

/// Writes bytes to standard error, at once (after flushing standard output).
pub fn write_stderr(data: &[u8]) {
    flush();
    send(CONSOLE_STDERR, data);
}

/// A handle to standard output that implements [`fmt::Write`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Stdout;

/// Standard output's handle.
#[must_use]
pub fn stdout() -> Stdout {
    Stdout
}

impl Stdout {
    /// Writes bytes (buffered).
    pub fn write_bytes(&mut self, data: &[u8]) {
        write_stdout(data);
    }

    /// Sends buffered output to the host.
    pub fn flush(&mut self) {
        flush();
    }
}

impl fmt::Write for Stdout {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_stdout(s.as_bytes());
        Ok(())
    }
}

/// A handle to standard error that implements [`fmt::Write`] (each write is sent at once).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

/// Standard error's handle.
#[must_use]
pub fn stderr() -> Stderr {
    Stderr
}

impl fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_stderr(s.as_bytes());
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let _ = fmt::write(&mut Stdout, args);
}

#[doc(hidden)]
pub fn _println(args: fmt::Arguments<'_>) {
    let _ = fmt::write(&mut Stdout, args);
    write_stdout(b"\n");
    flush();
}

struct StderrChunks {
    buf: Buffer<STDERR_CHUNK>,
}

fn stderr_sink(data: &[u8]) {
    send(CONSOLE_STDERR, data);
}

impl fmt::Write for StderrChunks {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buf.write(s.as_bytes(), &mut stderr_sink);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _eprint(args: fmt::Arguments<'_>, newline: bool) {
    flush();
    let mut w = StderrChunks { buf: Buffer::new() };
    let _ = fmt::write(&mut w, args);
    if newline {
        w.buf.write(b"\n", &mut stderr_sink);
    }
    w.buf.flush(&mut stderr_sink);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use std::vec::Vec;

    #[test]
    fn buffer_batches_until_full() {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut b = Buffer::<8>::new();
        let mut sink = |d: &[u8]| out.push(d.to_vec());
        b.write(b"abc", &mut sink);
        b.write(b"defgh", &mut sink);
        assert_eq!(b.buffered(), b"abcdefgh");
        b.write(b"i", &mut sink);
        assert_eq!(b.buffered(), b"i");
        b.write(b"0123456789", &mut sink); // larger than the buffer: goes through
        b.flush(&mut sink);
        b.flush(&mut sink); // nothing left: no empty write
        assert_eq!(
            out,
            [b"abcdefgh".to_vec(), b"i".to_vec(), b"0123456789".to_vec()]
        );
    }

    #[test]
    fn println_flushes_and_stderr_keeps_order() {
        let _g = testing::lock();
        testing::take_console();
        crate::print!("a{}", 1);
        assert!(testing::take_console().is_empty(), "print! stays buffered");
        crate::println!("b");
        assert_eq!(
            testing::take_console(),
            [(CONSOLE_STDOUT, b"a1b\n".to_vec())]
        );
        crate::print!("x");
        crate::eprintln!("err {}", 2);
        assert_eq!(
            testing::take_console(),
            [
                (CONSOLE_STDOUT, b"x".to_vec()),
                (CONSOLE_STDERR, b"err 2\n".to_vec())
            ]
        );
    }

    #[test]
    fn reentrant_print_does_not_alias() {
        struct Nested;
        impl fmt::Display for Nested {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                crate::print!("inner");
                f.write_str("outer")
            }
        }
        let _g = testing::lock();
        testing::take_console();
        crate::println!("{}", Nested);
        let all: Vec<u8> = testing::take_console()
            .into_iter()
            .flat_map(|(_, d)| d)
            .collect();
        assert_eq!(all, b"innerouter\n");
    }
}
