//! A fixed-size text buffer implementing `core::fmt::Write`, for messages the monitor
//! composes after sealing (traces, fault reports), when it must not allocate.

use core::fmt;

/// Formats into `N` bytes on the stack; output past `N` is cut (and marked with `…`).
#[derive(Debug)]
pub struct FmtBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> Default for FmtBuf<N> {
    fn default() -> Self {
        FmtBuf {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }
}

impl<const N: usize> FmtBuf<N> {
    /// An empty buffer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The text so far (ends with `...\n` when it was cut).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// True when some output did not fit.
    #[must_use]
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl<const N: usize> fmt::Write for FmtBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        const MARK: &[u8] = b"...\n";
        if self.truncated {
            return Ok(());
        }
        let room = N.saturating_sub(self.len);
        if s.len() <= room {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
            return Ok(());
        }
        self.truncated = true;
        let keep = N.saturating_sub(MARK.len());
        self.len = self.len.min(keep);
        let take = keep - self.len;
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        let end = (self.len + MARK.len()).min(N);
        self.buf[self.len..end].copy_from_slice(&MARK[..end - self.len]);
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn formats_and_truncates() {
        let mut b = FmtBuf::<16>::new();
        write!(b, "abc {}", 42).unwrap();
        assert_eq!(b.as_bytes(), b"abc 42");
        write!(b, "{}", "x".repeat(40)).unwrap();
        assert!(b.truncated());
        assert_eq!(b.as_bytes().len(), 16);
        assert!(b.as_bytes().ends_with(b"...\n"));
    }
}
