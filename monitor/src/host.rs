//! The real [`Host`]: console output, clocks, waiting, tap and block I/O, made with
//! exactly the syscalls the seccomp policy allows (`write` on fds 1 and 2 and the taps,
//! `read` on the taps, `pread64`/`pwrite64` of at most `BLOCK_IO_MAX` bytes on the block
//! files, `clock_gettime` with `CLOCK_MONOTONIC`/`CLOCK_REALTIME`, `ppoll` on at most
//! the taps and the shutdown signalfd, no signal mask; `read` on that signalfd).
//!
//! Nothing here allocates, takes a lock or makes any other syscall: it runs after
//! sealing, inside hypercalls and signal handlers. Both backends use it.

use crate::dispatch::{Host, Stream};
use crate::seccomp::policy::BLOCK_IO_MAX;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use septem_abi::manifest::MAX_DEVICES;
use septem_abi::{HcError, YIELD_SHUTDOWN};
use std::os::fd::RawFd;

/// Standard output's fd.
pub const STDOUT_FD: RawFd = 1;
/// Standard error's fd.
pub const STDERR_FD: RawFd = 2;

/// The tap fd of each device slot (`-1`: not a net device).
pub type TapTable = [RawFd; MAX_DEVICES];

/// No taps at all.
pub const NO_TAPS: TapTable = [-1; MAX_DEVICES];

/// The block file fd of each device slot (`-1`: not a block device).
pub type BlockTable = [RawFd; MAX_DEVICES];

/// No block devices at all.
pub const NO_BLOCKS: BlockTable = [-1; MAX_DEVICES];

/// The process's console, clocks and taps.
#[derive(Clone, Copy, Debug)]
pub struct SysHost {
    stdout: RawFd,
    stderr: RawFd,
    taps: TapTable,
    frame_max: [u32; MAX_DEVICES],
    blocks: BlockTable,
    /// The shutdown signalfd ([`shutdown_signal_fd`]), or -1.
    signal: RawFd,
}

/// Latched when the shutdown signalfd has delivered SIGTERM: process-wide (one guest per
/// process) because [`SysHost`] is copied for each hypercall.
static SHUTDOWN_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Turns SIGTERM into a readable fd: blocks it in the (single-threaded) monitor and
/// returns a non-blocking signalfd for it, so a sealed monitor notices a shutdown
/// request with the `ppoll`/`read` it already has, without a handler (which would need
/// `rt_sigreturn`). Call before sealing; the fd stays open for the process's life.
pub fn shutdown_signal_fd() -> std::io::Result<RawFd> {
    // SAFETY: a zeroed sigset_t is valid storage; sigemptyset/sigaddset initialize it.
    let mut set: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: `set` is valid storage for a signal set; the old mask is not wanted.
    let fd = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, core::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Reads every pending signal off the shutdown signalfd (non-blocking); true when at
/// least one was there.
fn drain_signals(fd: RawFd) -> bool {
    let mut info = [0u8; 128];
    let mut got = false;
    // SAFETY: reading into a buffer of `info.len()` bytes (one signalfd_siginfo).
    while unsafe { libc::read(fd, info.as_mut_ptr().cast(), info.len()) } > 0 {
        got = true;
    }
    got
}

impl Default for SysHost {
    fn default() -> Self {
        SysHost {
            stdout: STDOUT_FD,
            stderr: STDERR_FD,
            taps: NO_TAPS,
            frame_max: [0; MAX_DEVICES],
            blocks: NO_BLOCKS,
            signal: -1,
        }
    }
}

impl SysHost {
    /// A host writing the console to fds 1 and 2, with no net devices.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A host writing the console to fds 1 and 2, device `i`'s frames going through
    /// the non-blocking tap fd `taps[i]`, whose MTU is `mtus[i]`.
    #[must_use]
    pub fn with_taps(taps: TapTable, mtus: [u32; MAX_DEVICES]) -> Self {
        SysHost {
            taps,
            frame_max: mtus.map(|mtu| mtu.saturating_add(14 + 4)),
            ..Self::default()
        }
    }

    /// This host with device `i`'s sectors in the file `blocks[i]`.
    #[must_use]
    pub fn with_blocks(self, blocks: BlockTable) -> Self {
        SysHost { blocks, ..self }
    }

    /// This host reporting [`YIELD_SHUTDOWN`] once the signalfd `signal`
    /// ([`shutdown_signal_fd`]) has delivered SIGTERM.
    #[must_use]
    pub fn with_shutdown_signal(self, signal: RawFd) -> Self {
        SysHost { signal, ..self }
    }

    fn block(&self, device: usize) -> Result<RawFd, HcError> {
        match self.blocks.get(device) {
            Some(&fd) if fd >= 0 => Ok(fd),
            _ => Err(HcError::NoDevice),
        }
    }

    fn tap(&self, device: usize) -> Result<RawFd, HcError> {
        match self.taps.get(device) {
            Some(&fd) if fd >= 0 => Ok(fd),
            _ => Err(HcError::NoDevice),
        }
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

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// `ppoll(fds, timeout, NULL)` as the raw syscall, so exactly the arguments the policy
/// checks reach the kernel (no signal mask). `None` waits without a timeout.
fn ppoll(fds: &mut [libc::pollfd], timeout_ns: Option<u64>) -> libc::c_long {
    let ts = timeout_ns.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    let fds_ptr = if fds.is_empty() {
        core::ptr::null_mut()
    } else {
        fds.as_mut_ptr()
    };
    let no_mask: *const libc::sigset_t = core::ptr::null();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds (or NULL with 0), `ts_ptr`
    // a valid timespec or NULL, no signal mask.
    unsafe {
        libc::syscall(
            libc::SYS_ppoll,
            fds_ptr,
            fds.len() as libc::c_ulong,
            ts_ptr,
            no_mask,
            8usize,
        )
    }
}

/// Sleeps about `ns` nanoseconds with `ppoll(NULL, 0, timeout, NULL)` (may return early
/// on a signal).
pub fn sleep_ns(ns: u64) {
    ppoll(&mut [], Some(ns));
}

/// Waits until the monotonic clock reaches `deadline_ns` (`u64::MAX`: never) or one of
/// the taps `taps[i]` with bit `i` of `wait_set` is readable; returns the readable
/// subset (an error or hang-up on a tap counts as readable: the read reports it).
pub fn wait_taps(taps: &TapTable, deadline_ns: u64, wait_set: u64) -> u64 {
    wait_fds(taps, -1, deadline_ns, wait_set)
}

/// [`wait_taps`], also waking when `signal` (unless -1) is readable, which is reported
/// as [`YIELD_SHUTDOWN`].
fn wait_fds(taps: &TapTable, signal: RawFd, deadline_ns: u64, wait_set: u64) -> u64 {
    let idle = libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    };
    let mut fds = [idle; MAX_DEVICES + 1];
    let mut slot_of = [0usize; MAX_DEVICES + 1];
    let mut n = 0;
    if signal >= 0 {
        fds[0] = libc::pollfd {
            fd: signal,
            events: libc::POLLIN,
            revents: 0,
        };
        slot_of[0] = 63;
        n = 1;
    }
    for (i, &fd) in taps.iter().enumerate() {
        if fd >= 0 && wait_set & (1 << i) != 0 {
            fds[n] = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            slot_of[n] = i;
            n += 1;
        }
    }
    loop {
        let timeout = if deadline_ns == u64::MAX {
            None
        } else {
            Some(deadline_ns.saturating_sub(monotonic_ns()))
        };
        if timeout == Some(0) && n == 0 {
            return 0;
        }
        let rc = ppoll(&mut fds[..n], timeout);
        if rc > 0 {
            return fds[..n]
                .iter()
                .zip(&slot_of)
                .filter(|(p, _)| p.revents != 0)
                .fold(0, |set, (_, &i)| set | 1u64 << i);
        }
        if rc == 0 && timeout == Some(0) {
            return 0;
        }
        if rc < 0 && errno() != libc::EINTR {
            // EFAULT/EINVAL/ENOMEM: nothing the guest can act on; let it retry.
            return 0;
        }
        // A timeout (re-checked against the clock) or EINTR: go round again.
    }
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

    fn wait_until(&mut self, deadline_ns: u64, wait_set: u64) -> u64 {
        if wait_set & YIELD_SHUTDOWN == 0 {
            return wait_taps(&self.taps, deadline_ns, wait_set);
        }
        if SHUTDOWN_REQUESTED.load(Ordering::Relaxed) {
            // Level-triggered: report it at once, with whatever input is there.
            return wait_taps(&self.taps, 0, wait_set) | YIELD_SHUTDOWN;
        }
        let ready = wait_fds(&self.taps, self.signal, deadline_ns, wait_set);
        if ready & YIELD_SHUTDOWN != 0 && !drain_signals(self.signal) {
            // Spurious wake-up (another reader took it): not a request.
            return ready & !YIELD_SHUTDOWN;
        }
        if ready & YIELD_SHUTDOWN != 0 {
            SHUTDOWN_REQUESTED.store(true, Ordering::Relaxed);
        }
        ready
    }

    fn net_write(&mut self, device: usize, frame: &[u8]) -> Result<bool, HcError> {
        let fd = self.tap(device)?;
        loop {
            // SAFETY: `frame` is a valid buffer of `frame.len()` bytes.
            let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                // A tap takes a frame whole or not at all.
                return Ok(true);
            }
            match errno() {
                libc::EINTR => {}
                libc::EAGAIN => return Ok(false),
                // The tap's link is down: the frame is lost, as on a NIC without link.
                libc::EIO => return Ok(true),
                _ => return Err(HcError::Io),
            }
        }
    }

    fn net_read(&mut self, device: usize, buf: &mut [u8]) -> Result<Option<usize>, HcError> {
        let fd = self.tap(device)?;
        // A tap truncates a frame that does not fit silently, returning the length it
        // copied: a buffer shorter than the longest possible frame goes through the
        // scratch buffer, so an oversized frame is seen (and dropped) whole.
        if buf.len() >= self.frame_max[device] as usize {
            return tap_read(fd, buf);
        }
        let Some(mut scratch) = Scratch::take() else {
            // Only possible with several threads (unit tests): read directly.
            return tap_read(fd, buf);
        };
        let got = tap_read(fd, scratch.bytes());
        if let Ok(Some(n)) = got {
            if n <= buf.len() {
                buf[..n].copy_from_slice(&scratch.bytes()[..n]);
            }
        }
        got
    }

    fn block_read(&mut self, device: usize, offset: u64, buf: &mut [u8]) -> Result<(), HcError> {
        pread_all(self.block(device)?, offset, buf)
    }

    fn block_write(&mut self, device: usize, offset: u64, data: &[u8]) -> Result<(), HcError> {
        pwrite_all(self.block(device)?, offset, data)
    }

    fn block_flush(&mut self, device: usize) -> Result<(), HcError> {
        // Requests are served synchronously and in order: every earlier write has
        // completed (and with `,sync`, O_DSYNC made each durable). `fsync` is not one
        // of the policy's syscalls, so there is nothing more to do (docs/storage.md).
        self.block(device).map(drop)
    }
}

/// Reads all of `buf` from `fd` at `offset` with `pread64`, at most
/// [`BLOCK_IO_MAX`] bytes per syscall, retrying short reads and `EINTR`. End of file
/// before `buf` is full (the file shrank under us) is an I/O error.
pub fn pread_all(fd: RawFd, mut offset: u64, buf: &mut [u8]) -> Result<(), HcError> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let len = rest.len().min(BLOCK_IO_MAX as usize);
        let off = i64::try_from(offset).map_err(|_| HcError::Io)?;
        // SAFETY: `rest` is a valid, writable buffer of at least `len` bytes.
        let n = unsafe { libc::pread64(fd, rest.as_mut_ptr().cast(), len, off) };
        if n > 0 {
            done += n as usize;
            offset += n as u64;
            continue;
        }
        if n == 0 || errno() != libc::EINTR {
            return Err(HcError::Io);
        }
    }
    Ok(())
}

/// Writes all of `data` to `fd` at `offset` with `pwrite64`, at most
/// [`BLOCK_IO_MAX`] bytes per syscall, retrying short writes and `EINTR`.
pub fn pwrite_all(fd: RawFd, mut offset: u64, data: &[u8]) -> Result<(), HcError> {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        let len = rest.len().min(BLOCK_IO_MAX as usize);
        let off = i64::try_from(offset).map_err(|_| HcError::Io)?;
        // SAFETY: `rest` is a valid, initialized buffer of at least `len` bytes.
        let n = unsafe { libc::pwrite64(fd, rest.as_ptr().cast(), len, off) };
        if n > 0 {
            done += n as usize;
            offset += n as u64;
            continue;
        }
        if n == 0 || errno() != libc::EINTR {
            return Err(HcError::Io);
        }
    }
    Ok(())
}

/// One `read(2)` from a non-blocking tap: `Some(len)`, `None` when nothing waits.
fn tap_read(fd: RawFd, buf: &mut [u8]) -> Result<Option<usize>, HcError> {
    loop {
        // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            return Ok(Some(n as usize));
        }
        if n == 0 {
            return Ok(None);
        }
        match errno() {
            libc::EINTR => {}
            // EIO: the link is down, so nothing can arrive.
            libc::EAGAIN | libc::EIO => return Ok(None),
            _ => return Err(HcError::Io),
        }
    }
}

/// The longest frame a tap may deliver: its largest MTU, an Ethernet header and a VLAN
/// tag.
pub const TAP_FRAME_MAX: usize = 9000 + 14 + 4;

/// A static bounce buffer for short guest receive buffers (no allocation after
/// sealing), taken with an atomic flag: no syscall, no lock that may block.
struct Scratch(&'static mut [u8; TAP_FRAME_MAX + 1]);

struct ScratchCell {
    busy: AtomicBool,
    bytes: UnsafeCell<[u8; TAP_FRAME_MAX + 1]>,
}

// SAFETY: `bytes` is only reached through a `Scratch`, of which at most one exists at a
// time: `take` hands one out only after flipping `busy` from false to true (acquire),
// and its `Drop` flips it back (release).
unsafe impl Sync for ScratchCell {}

static SCRATCH: ScratchCell = ScratchCell {
    busy: AtomicBool::new(false),
    bytes: UnsafeCell::new([0; TAP_FRAME_MAX + 1]),
};

impl Scratch {
    fn take() -> Option<Scratch> {
        SCRATCH
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: we own the flag, so no other `Scratch` (the only way to the bytes)
        // exists until ours is dropped.
        Some(Scratch(unsafe { &mut *SCRATCH.bytes.get() }))
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.0[..]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        SCRATCH.busy.store(false, Ordering::Release);
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
            taps: NO_TAPS,
            frame_max: [0; MAX_DEVICES],
            blocks: NO_BLOCKS,
            signal: -1,
        };
        assert_eq!(h.console_write(Stream::Stdout, b"x"), Err(HcError::Io));
        let err = write_all(fds[1], b"x").unwrap_err();
        assert_eq!((err.written, err.errno), (0, libc::EPIPE));
        // SAFETY: closing the write end we own.
        unsafe { libc::close(fds[1]) };
        assert_eq!(h.console_write(Stream::Stderr, b"x"), Err(HcError::Io));
    }

    /// A non-blocking pipe standing in for a tap: `(read end, write end)`.
    fn nonblocking_pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two fds.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        (fds[0], fds[1])
    }

    #[test]
    fn taps_are_polled_read_and_written_without_blocking() {
        let (rx, tx) = nonblocking_pipe();
        let mut taps = NO_TAPS;
        taps[1] = rx;
        taps[2] = tx;
        let mut mtus = [0; MAX_DEVICES];
        mtus[1] = 1500;
        let mut h = SysHost::with_taps(taps, mtus);
        // Nothing waiting: the wait times out, a read finds nothing.
        let start = monotonic_ns();
        assert_eq!(h.wait_until(start + 20_000_000, 0b10), 0);
        assert!(monotonic_ns() >= start + 20_000_000);
        let mut buf = [0u8; 2048];
        assert_eq!(h.net_read(1, &mut buf), Ok(None));
        // A frame arrives: ready at once, even without a deadline.
        assert_eq!(h.net_write(2, &[7; 60]), Ok(true));
        assert_eq!(h.wait_until(u64::MAX, 0b10), 0b10);
        assert_eq!(h.wait_until(0, 0b10), 0b10, "a passed deadline still polls");
        assert_eq!(h.net_read(1, &mut buf), Ok(Some(60)));
        assert_eq!(&buf[..60], &[7; 60]);
        // A buffer shorter than the longest frame goes through the bounce buffer: the
        // frame's whole length comes back (the dispatcher drops it), nothing is copied.
        assert_eq!(h.net_write(2, &[9; 100]), Ok(true));
        let mut short = [0u8; 10];
        assert_eq!(h.net_read(1, &mut short), Ok(Some(100)));
        assert_eq!(short, [0; 10]);
        // Devices without a tap.
        assert_eq!(h.net_read(0, &mut buf), Err(HcError::NoDevice));
        assert_eq!(h.net_write(15, &buf[..60]), Err(HcError::NoDevice));
        assert_eq!(h.net_write(99, &buf[..60]), Err(HcError::NoDevice));
        // A full queue would block.
        while h.net_write(2, &buf) == Ok(true) {}
        assert_eq!(h.net_write(2, &buf), Ok(false));
        // SAFETY: closing fds we own.
        unsafe {
            libc::close(rx);
            libc::close(tx);
        }
    }

    #[test]
    fn block_files_are_read_and_written_in_place() {
        use std::io::{Read, Seek, SeekFrom, Write};
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("septem-host-blk-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        // 3 MiB: requests larger than one syscall's bound are split.
        let size = 3 << 20;
        let pattern: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&pattern).unwrap();
        let mut blocks = NO_BLOCKS;
        blocks[3] = f.as_raw_fd();
        let mut h = SysHost::new().with_blocks(blocks);
        let mut buf = vec![0u8; size - 512];
        h.block_read(3, 512, &mut buf).unwrap();
        assert_eq!(&buf[..], &pattern[512..]);
        let new = vec![0xa5u8; (1 << 20) + 1024];
        h.block_write(3, 1024, &new).unwrap();
        h.block_flush(3).unwrap();
        let mut back = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), size);
        assert_eq!(&back[..1024], &pattern[..1024]);
        assert_eq!(&back[1024..1024 + new.len()], &new[..]);
        assert_eq!(&back[1024 + new.len()..], &pattern[1024 + new.len()..]);
        // Reading past the end of the file is an I/O error, not a short success.
        let mut tail = [0u8; 1024];
        assert_eq!(
            h.block_read(3, size as u64 - 512, &mut tail),
            Err(HcError::Io)
        );
        assert_eq!(h.block_read(2, 0, &mut tail), Err(HcError::NoDevice));
        assert_eq!(h.block_write(99, 0, &tail), Err(HcError::NoDevice));
        assert_eq!(h.block_flush(0), Err(HcError::NoDevice));
    }

    #[test]
    fn writes_everything_through_a_pipe() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut h = SysHost {
            stdout: fds[1],
            stderr: fds[1],
            taps: NO_TAPS,
            frame_max: [0; MAX_DEVICES],
            blocks: NO_BLOCKS,
            signal: -1,
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

    #[test]
    fn sigterm_becomes_a_latched_shutdown_event() {
        // Blocked and raised on this test thread only, so no other test sees it.
        let fd = shutdown_signal_fd().unwrap();
        let mut h = SysHost::new().with_shutdown_signal(fd);
        let soon = monotonic_ns() + 20_000_000;
        assert_eq!(h.wait_until(soon, YIELD_SHUTDOWN), 0, "no request yet");
        // SAFETY: sending SIGTERM to this thread, which has it blocked (pending only).
        let sent = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGTERM) };
        assert_eq!(sent, 0);
        assert_eq!(h.wait_until(u64::MAX, YIELD_SHUTDOWN), YIELD_SHUTDOWN);
        // Level-triggered: at once, even with no deadline; and only when asked for.
        assert_eq!(h.wait_until(u64::MAX, YIELD_SHUTDOWN), YIELD_SHUTDOWN);
        assert_eq!(h.wait_until(0, 0), 0);
        // SAFETY: closing the signalfd this test opened.
        unsafe { libc::close(fd) };
    }
}
