//! The real [`Host`]: console output, clocks and waiting, made with exactly the
//! syscalls the seccomp policy allows (`write` on fds 1 and 2, `clock_gettime` with
//! `CLOCK_MONOTONIC`/`CLOCK_REALTIME`, `ppoll` with no fds and no signal mask).
//!
//! Nothing here allocates, takes a lock or makes any other syscall: it runs after
//! sealing, inside hypercalls and signal handlers. Both backends use it.

use crate::dispatch::{Host, Stream};
use septem_abi::HcError;
use std::os::fd::RawFd;

/// Standard output's fd.
pub const STDOUT_FD: RawFd = 1;
/// Standard error's fd.
pub const STDERR_FD: RawFd = 2;

/// The process's console and clocks.
#[derive(Clone, Copy, Debug)]
pub struct SysHost {
    stdout: RawFd,
    stderr: RawFd,
}

impl Default for SysHost {
    fn default() -> Self {
        SysHost {
            stdout: STDOUT_FD,
            stderr: STDERR_FD,
        }
    }
}

impl SysHost {
    /// A host writing the console to fds 1 and 2.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

/// Why a raw write stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteError {
    /// Bytes written before the error.
    pub written: usize,
    /// The `errno`.
    pub errno: i32,
}

fn errno() -> i32 {
    // SAFETY: `__errno_location` returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// Writes all of `data` to `fd` with `write(2)`, retrying partial writes and `EINTR`;
/// on `EAGAIN` (a non-blocking console) it sleeps 1 ms with `ppoll` and retries.
/// Async-signal-safe; no allocation.
pub fn write_all(fd: RawFd, data: &[u8]) -> Result<usize, WriteError> {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: `rest` is a valid, initialized buffer of `rest.len()` bytes.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            done += n as usize;
            continue;
        }
        let e = if n == 0 { libc::EIO } else { errno() };
        match e {
            libc::EINTR => {}
            libc::EAGAIN => sleep_ns(1_000_000),
            errno => {
                return Err(WriteError {
                    written: done,
                    errno,
                })
            }
        }
    }
    Ok(done)
}

/// Ends the process with `exit_group(status)` at once (no atexit, no unwinding, no
/// buffers to flush: the monitor never buffers output in user space).
pub fn exit_group(status: u8) -> ! {
    // SAFETY: exit_group never returns and takes no pointers.
    unsafe { libc::syscall(libc::SYS_exit_group, libc::c_long::from(status)) };
    // exit_group cannot fail; should it return anyway, do not run on.
    loop {
        core::hint::spin_loop();
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant the
    // policy allows.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The host's monotonic clock in nanoseconds.
#[must_use]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The host's wall clock in nanoseconds since the Unix epoch.
#[must_use]
pub fn wall_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Sleeps about `ns` nanoseconds with `ppoll(NULL, 0, timeout, NULL)` (may return early
/// on a signal).
pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    let no_fds: *mut libc::pollfd = core::ptr::null_mut();
    let no_mask: *const libc::sigset_t = core::ptr::null();
    // SAFETY: no fds, a valid timeout, no signal mask: the raw syscall, so exactly the
    // arguments the policy checks reach the kernel.
    unsafe {
        libc::syscall(
            libc::SYS_ppoll,
            no_fds,
            0 as libc::c_ulong,
            &ts,
            no_mask,
            8usize,
        )
    };
}

impl Host for SysHost {
    fn console_write(&mut self, stream: Stream, data: &[u8]) -> Result<usize, HcError> {
        let fd = match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        match write_all(fd, data) {
            Ok(n) => Ok(n),
            // Part of it went out: report that much (the guest sees `written`).
            Err(WriteError { written, .. }) if written > 0 => Ok(written),
            // EPIPE (SIGPIPE is ignored before sealing), EBADF, EIO, ENOSPC…
            Err(_) => Err(HcError::Io),
        }
    }

    fn monotonic_ns(&mut self) -> u64 {
        monotonic_ns()
    }

    fn wall_ns(&mut self) -> u64 {
        wall_ns()
    }

    fn wait_until(&mut self, deadline_ns: u64, _wait_set: u64) -> u64 {
        // No devices exist yet, so nothing can become ready: sleep to the deadline.
        loop {
            let now = monotonic_ns();
            if now >= deadline_ns {
                return 0;
            }
            sleep_ns(deadline_ns - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_and_wait_reaches_the_deadline() {
        let mut h = SysHost::new();
        let a = h.monotonic_ns();
        assert!(a > 0);
        assert!(h.wall_ns() > 1_600_000_000_000_000_000);
        let deadline = a + 2_000_000;
        assert_eq!(h.wait_until(deadline, 0), 0);
        assert!(h.monotonic_ns() >= deadline);
        // A deadline in the past returns at once.
        assert_eq!(h.wait_until(0, 0), 0);
    }

    #[test]
    fn writes_to_a_closed_pipe_fail_cleanly() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: closing the read end we own.
        unsafe { libc::close(fds[0]) };
        // SAFETY: ignoring SIGPIPE for this test process (the monitor does the same).
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let mut h = SysHost {
            stdout: fds[1],
            stderr: fds[1],
        };
        assert_eq!(h.console_write(Stream::Stdout, b"x"), Err(HcError::Io));
        let err = write_all(fds[1], b"x").unwrap_err();
        assert_eq!((err.written, err.errno), (0, libc::EPIPE));
        // SAFETY: closing the write end we own.
        unsafe { libc::close(fds[1]) };
        assert_eq!(h.console_write(Stream::Stderr, b"x"), Err(HcError::Io));
    }

    #[test]
    fn writes_everything_through_a_pipe() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut h = SysHost {
            stdout: fds[1],
            stderr: fds[1],
        };
        assert_eq!(h.console_write(Stream::Stdout, b"hello"), Ok(5));
        let mut buf = [0u8; 8];
        // SAFETY: reading into a valid buffer from our pipe.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(&buf[..n as usize], b"hello");
        // SAFETY: closing fds we own.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
