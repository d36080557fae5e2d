//! One `#[repr(C)]` argument struct per hypercall. Fields marked "out" are written by
//! the monitor before the call returns; everything else is read by the monitor.

use crate::{assert_size, GuestAddr};

/// Console stream: standard output.
pub const CONSOLE_STDOUT: u32 = 1;
/// Console stream: standard error.
pub const CONSOLE_STDERR: u32 = 2;

/// [`crate::Hypercall::ConsoleWrite`]: write `len` bytes at `data` to `stream`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleWriteArgs {
    /// Bytes to write.
    pub data: GuestAddr,
    /// Number of bytes.
    pub len: u64,
    /// [`CONSOLE_STDOUT`] or [`CONSOLE_STDERR`].
    pub stream: u32,
    /// Must be zero.
    pub _pad: u32,
    /// Out: bytes written (all of them unless the host console failed).
    pub written: u64,
}
assert_size!(ConsoleWriteArgs, 32);

/// [`crate::Hypercall::ClockMonotonic`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockMonotonicArgs {
    /// Out: nanoseconds of the host's monotonic clock.
    pub nanos: u64,
}
assert_size!(ClockMonotonicArgs, 8);

/// [`crate::Hypercall::ClockWall`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockWallArgs {
    /// Out: nanoseconds since the Unix epoch (host realtime clock).
    pub nanos_since_epoch: u64,
}
assert_size!(ClockWallArgs, 8);

/// [`crate::Hypercall::Yield`]: sleep until the monotonic clock reaches `deadline`, a
/// device in `wait_set` has input, or (with [`YIELD_SHUTDOWN`] in `wait_set`) the host
/// has asked the guest to shut down. Returns at once when the deadline has passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct YieldArgs {
    /// Monotonic deadline in nanoseconds (same clock as [`ClockMonotonicArgs`]).
    pub deadline: u64,
    /// Bit `i` set: wake when device `i` of `BootInfo::devices` (a net device) has
    /// input. Bit 63 ([`YIELD_SHUTDOWN`]): wake when a shutdown is requested. Any other
    /// bit naming no net device gives [`crate::HcError::NoDevice`].
    pub wait_set: u64,
    /// Out: the subset of `wait_set` that is ready.
    pub ready_set: u64,
}
assert_size!(YieldArgs, 24);

/// The lifecycle event bit of [`YieldArgs::wait_set`]/`ready_set`: the host asked the
/// guest to shut down (SIGTERM to `septem-run`, `runnc kill ID TERM`, a CRI
/// `StopContainer`). Level-triggered: once requested, every later `Yield` naming it
/// reports it at once. A guest that never waits for it is only stopped by force.
pub const YIELD_SHUTDOWN: u64 = 1 << 63;

// Device bits and the shutdown bit never overlap.
const _: () = assert!(crate::manifest::MAX_DEVICES < 63);

/// [`crate::Hypercall::Exit`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitArgs {
    /// Exit status; the monitor exits with `status & 0xff`.
    pub status: i32,
    /// Must be zero.
    pub _pad: u32,
}
assert_size!(ExitArgs, 8);

/// [`crate::Hypercall::Abort`]: the guest gives up; the monitor prints `message` on
/// its standard error and exits with `status & 0xff`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbortArgs {
    /// UTF-8 message (the monitor prints it lossily).
    pub message: GuestAddr,
    /// Length of `message` in bytes; the monitor prints at most 4 KiB of it.
    pub len: u64,
    /// Exit status (the libOS uses 101 for a panic).
    pub status: i32,
    /// Must be zero.
    pub _pad: u32,
}
assert_size!(AbortArgs, 24);

/// The exit status the libOS uses for a panic, as Rust's std does.
pub const PANIC_EXIT_STATUS: i32 = 101;

/// The longest abort message the monitor prints.
pub const ABORT_MESSAGE_MAX: u64 = 4096;

/// Most frames one [`NetWriteArgs`] or [`NetReadArgs`] call may carry.
pub const NET_BATCH_MAX: u32 = 64;

/// Largest frame accepted: an Ethernet header plus a 9000-byte jumbo payload.
pub const NET_FRAME_MAX: u32 = 9014;

/// One Ethernet frame (no FCS) in guest memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFrame {
    /// First byte of the frame (write) or of the receive buffer (read).
    pub data: GuestAddr,
    /// Write: frame length. Read: in, buffer capacity; out, frame length.
    pub len: u32,
    /// Must be zero.
    pub _pad: u32,
}
assert_size!(NetFrame, 16);

/// [`crate::Hypercall::NetWrite`]: send `count` frames from the table at `frames`.
/// Returns the number of frames sent (all unless the host's queue is full: then the
/// guest retries the rest later).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetWriteArgs {
    /// Index of the net device in `BootInfo::devices`.
    pub device: u32,
    /// Number of [`NetFrame`] entries (1..=[`NET_BATCH_MAX`]).
    pub count: u32,
    /// Table of frames.
    pub frames: GuestAddr,
    /// Out: frames sent.
    pub done: u32,
    /// Must be zero.
    pub _pad: u32,
}
assert_size!(NetWriteArgs, 24);

/// [`crate::Hypercall::NetRead`]: receive up to `count` frames into the buffers of the
/// table at `frames` (each entry's `len` becomes the frame's length). Never blocks:
/// returns the number received, 0 when nothing is waiting (use `Yield` with a
/// `wait_set` to sleep until input arrives). A frame longer than its buffer is dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetReadArgs {
    /// Index of the net device in `BootInfo::devices`.
    pub device: u32,
    /// Number of [`NetFrame`] buffers (1..=[`NET_BATCH_MAX`]).
    pub count: u32,
    /// Table of buffers.
    pub frames: GuestAddr,
    /// Out: frames received.
    pub done: u32,
    /// Must be zero.
    pub _pad: u32,
}
assert_size!(NetReadArgs, 24);

/// Sector size of every block device, in bytes.
pub const BLOCK_SECTOR_SIZE: u32 = 512;

/// Most bytes one [`BlockIoArgs`] request may move (1 MiB: 2048 sectors). The
/// monitor's seccomp policy bounds each `pread64`/`pwrite64` by the same number.
pub const BLOCK_IO_MAX_BYTES: u32 = 1 << 20;

/// Most sectors one [`BlockIoArgs`] request may move.
pub const BLOCK_IO_MAX_SECTORS: u32 = BLOCK_IO_MAX_BYTES / BLOCK_SECTOR_SIZE;

/// [`crate::Hypercall::BlockRead`] / [`crate::Hypercall::BlockWrite`]: move `count`
/// whole sectors, starting at sector `sector` of block device `device`, between the
/// device and the guest buffer at `data` (`count * 512` bytes). The request is checked
/// whole before any I/O: `sector + count` within the capacity, `1 <= count <=`
/// [`BLOCK_IO_MAX_SECTORS`], the buffer writable (read) or readable (write) guest
/// memory. Returns the number of sectors moved (all of them) and stores it in `done`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockIoArgs {
    /// Index of the block device in `BootInfo::devices`.
    pub device: u32,
    /// Number of sectors (1..=[`BLOCK_IO_MAX_SECTORS`]).
    pub count: u32,
    /// First sector.
    pub sector: u64,
    /// Guest buffer of `count * 512` bytes (any alignment).
    pub data: GuestAddr,
    /// Out: sectors moved.
    pub done: u32,
    /// Must be zero.
    pub _pad: u32,
}
assert_size!(BlockIoArgs, 32);

/// [`crate::Hypercall::BlockFlush`]: a barrier. The monitor serves block requests
/// synchronously and in order, so when it returns every earlier write has completed:
/// on a device attached with `,sync` (opened `O_DSYNC`) each write was already on
/// stable storage when it returned; without `,sync` writes are in the host's page
/// cache, and flushing does not force them to disk (`fsync` is not one of the
/// monitor's seven syscalls): they are durable against a guest or monitor crash, not
/// against a host crash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockFlushArgs {
    /// Index of the block device in `BootInfo::devices`.
    pub device: u32,
    /// Must be zero.
    pub _pad: u32,
}
assert_size!(BlockFlushArgs, 8);
