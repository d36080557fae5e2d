//! The hypercall dispatcher, shared by both backends.
//!
//! A backend catches a hypercall (a direct call under seccomp, a port exit under KVM)
//! and hands the number and the argument's guest address to [`dispatch`], which reads
//! the argument struct through [`GuestMemory`], does the work through a [`Host`], writes
//! results back, and tells the backend what to do next. The `Host` seam lets the tests
//! drive every hypercall without a guest, KVM or any syscall.
//!
//! After sealing, this code runs under the seccomp policy: it must not allocate, and
//! every host operation goes through the `Host`, whose real implementation uses only
//! the policy's syscalls.

use crate::fmtbuf::FmtBuf;
use crate::memory::{GuestMemory, MemError, Pod};
use core::fmt::Write;
use septem_abi::manifest::MAX_DEVICES;
use septem_abi::{
    AbortArgs, BlockFlushArgs, BlockIoArgs, ClockMonotonicArgs, ClockWallArgs, ConsoleWriteArgs,
    ExitArgs, GuestAddr, HcError, Hypercall, NetFrame, NetReadArgs, NetWriteArgs, YieldArgs,
    ABORT_MESSAGE_MAX, BLOCK_IO_MAX_SECTORS, BLOCK_SECTOR_SIZE, CONSOLE_STDERR, CONSOLE_STDOUT,
    NET_BATCH_MAX, NET_FRAME_MAX,
};

/// Shortest frame a guest may send: an Ethernet header.
pub const NET_FRAME_MIN: u32 = 14;

/// Which host stream console output goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What the dispatcher needs from the host. Implementations must not allocate.
pub trait Host {
    /// Writes all of `data` to `stream`; returns the bytes written.
    fn console_write(&mut self, stream: Stream, data: &[u8]) -> Result<usize, HcError>;
    /// Host monotonic clock in nanoseconds.
    fn monotonic_ns(&mut self) -> u64;
    /// Host wall clock in nanoseconds since the Unix epoch.
    fn wall_ns(&mut self) -> u64;
    /// Blocks until the monotonic clock reaches `deadline_ns` or a device in
    /// `wait_set` (bit `i` = device `i`, only net devices: the dispatcher checked) has
    /// input; returns the ready subset. `u64::MAX` means no deadline. With a deadline
    /// already passed it only checks which devices are ready, without blocking.
    fn wait_until(&mut self, deadline_ns: u64, wait_set: u64) -> u64;
    /// Sends one frame on net device `device`. `Ok(false)`: the host queue is full
    /// (would block), nothing was sent.
    fn net_write(&mut self, device: usize, frame: &[u8]) -> Result<bool, HcError> {
        let _ = (device, frame);
        Err(HcError::NoDevice)
    }
    /// Receives one frame from net device `device` into `buf`, without blocking.
    /// `Ok(None)`: nothing is waiting. `Ok(Some(n))` with `n > buf.len()`: the frame
    /// was longer than `buf` and is lost (the dispatcher drops it).
    fn net_read(&mut self, device: usize, buf: &mut [u8]) -> Result<Option<usize>, HcError> {
        let _ = (device, buf);
        Err(HcError::NoDevice)
    }
    /// Fills all of `buf` from block device `device` at byte `offset` (the dispatcher
    /// checked that the range lies inside the device).
    fn block_read(&mut self, device: usize, offset: u64, buf: &mut [u8]) -> Result<(), HcError> {
        let _ = (device, offset, buf);
        Err(HcError::NoDevice)
    }
    /// Writes all of `data` to block device `device` at byte `offset` (checked as above).
    fn block_write(&mut self, device: usize, offset: u64, data: &[u8]) -> Result<(), HcError> {
        let _ = (device, offset, data);
        Err(HcError::NoDevice)
    }
    /// Returns once every earlier write to `device` has completed.
    fn block_flush(&mut self, device: usize) -> Result<(), HcError> {
        let _ = device;
        Err(HcError::NoDevice)
    }
}

/// What the backend does after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Return this value to the guest and resume it.
    Resume(i64),
    /// The guest is done: exit with this status (0..=255).
    Exit(u8),
}

/// What the dispatcher checks block requests against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockLimits {
    /// Capacity in sectors; 0: not a block device.
    pub sectors: u64,
    /// Writes are refused with [`HcError::ReadOnly`].
    pub read_only: bool,
}

impl BlockLimits {
    /// Not a block device.
    pub const NONE: BlockLimits = BlockLimits {
        sectors: 0,
        read_only: false,
    };
}

/// Per-guest dispatcher settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct DispatchConfig {
    /// Log every hypercall to standard error (`--trace`).
    pub trace: bool,
    /// Bit `i` set: device `i` of `BootInfo::devices` is a net device. Hypercalls and
    /// wait sets naming any other index get [`HcError::NoDevice`].
    pub net_devices: u64,
    /// Entry `i`: device `i`'s capacity and flags when it is a block device.
    pub blocks: [BlockLimits; MAX_DEVICES],
}

impl DispatchConfig {
    /// True when `device` names an attached net device.
    #[must_use]
    pub fn is_net(&self, device: u32) -> bool {
        device < 64 && self.net_devices & (1 << device) != 0
    }

    /// The limits of block device `device`, `None` when it is not one.
    #[must_use]
    pub fn block(&self, device: u32) -> Option<BlockLimits> {
        self.blocks
            .get(device as usize)
            .copied()
            .filter(|b| b.sectors > 0)
    }
}

/// Serves hypercall `nr` with its argument struct at `arg`.
pub fn dispatch(
    mem: &GuestMemory,
    host: &mut impl Host,
    config: DispatchConfig,
    nr: u64,
    arg: GuestAddr,
) -> Action {
    let started = if config.trace { host.monotonic_ns() } else { 0 };
    let call = Hypercall::try_from(nr);
    let action = match call {
        Ok(call) => serve(mem, host, config, call, arg),
        Err(_) => Action::Resume(HcError::Unsupported.code()),
    };
    if config.trace {
        trace(mem, host, nr, arg, action, started);
    }
    action
}

fn serve(
    mem: &GuestMemory,
    host: &mut impl Host,
    config: DispatchConfig,
    call: Hypercall,
    arg: GuestAddr,
) -> Action {
    let result = match call {
        Hypercall::ConsoleWrite => console_write(mem, host, arg),
        Hypercall::ClockMonotonic => {
            let nanos = host.monotonic_ns();
            put(mem, arg, &ClockMonotonicArgs { nanos })
        }
        Hypercall::ClockWall => {
            let nanos_since_epoch = host.wall_ns();
            put(mem, arg, &ClockWallArgs { nanos_since_epoch })
        }
        Hypercall::Yield => yield_until(mem, host, config, arg),
        Hypercall::Exit => return exit(mem, arg),
        Hypercall::Abort => return abort(mem, host, arg),
        Hypercall::NetWrite => net_write(mem, host, config, arg),
        Hypercall::NetRead => net_read(mem, host, config, arg),
        Hypercall::BlockRead => block_io(mem, host, config, arg, false),
        Hypercall::BlockWrite => block_io(mem, host, config, arg, true),
        Hypercall::BlockFlush => block_flush(mem, host, config, arg),
    };
    Action::Resume(match result {
        Ok(v) => v,
        Err(e) => e.code(),
    })
}

fn get<T: Pod>(mem: &GuestMemory, arg: GuestAddr) -> Result<T, HcError> {
    mem.read_obj(arg).map_err(bad_address)
}

fn put<T: Pod>(mem: &GuestMemory, arg: GuestAddr, value: &T) -> Result<i64, HcError> {
    mem.write_obj(arg, value).map_err(bad_address)?;
    Ok(0)
}

fn bad_address(_: MemError) -> HcError {
    HcError::BadAddress
}

fn console_write(mem: &GuestMemory, host: &mut impl Host, arg: GuestAddr) -> Result<i64, HcError> {
    let mut args: ConsoleWriteArgs = get(mem, arg)?;
    let stream = match (args.stream, args._pad) {
        (CONSOLE_STDOUT, 0) => Stream::Stdout,
        (CONSOLE_STDERR, 0) => Stream::Stderr,
        _ => return Err(HcError::Invalid),
    };
    let data = mem.read_bytes(args.data, args.len).map_err(bad_address)?;
    let written = host.console_write(stream, data)?;
    args.written = written as u64;
    put(mem, arg, &args)?;
    Ok(written as i64)
}

fn yield_until(
    mem: &GuestMemory,
    host: &mut impl Host,
    config: DispatchConfig,
    arg: GuestAddr,
) -> Result<i64, HcError> {
    let mut args: YieldArgs = get(mem, arg)?;
    // Every bit must name a net device (only they can become ready) or the shutdown
    // event.
    if args.wait_set & !(config.net_devices | septem_abi::YIELD_SHUTDOWN) != 0 {
        return Err(HcError::NoDevice);
    }
    args.ready_set = if args.wait_set != 0 || args.deadline > host.monotonic_ns() {
        host.wait_until(args.deadline, args.wait_set) & args.wait_set
    } else {
        0
    };
    put(mem, arg, &args)
}

/// Reads and checks a net call's frame table: every entry's `_pad` is zero and its
/// length passes `len_ok`; the table itself must be readable guest memory.
fn frame_table(
    mem: &GuestMemory,
    frames: GuestAddr,
    count: u32,
    len_ok: impl Fn(u32) -> bool,
) -> Result<[NetFrame; NET_BATCH_MAX as usize], HcError> {
    if count == 0 || count > NET_BATCH_MAX {
        return Err(HcError::Invalid);
    }
    let entry = size_of::<NetFrame>() as u64;
    mem.check(
        frames,
        u64::from(count) * entry,
        crate::memory::Access::Read,
    )
    .map_err(bad_address)?;
    let mut table = [NetFrame::default(); NET_BATCH_MAX as usize];
    for (i, slot) in table.iter_mut().take(count as usize).enumerate() {
        let at = frames
            .checked_add(i as u64 * entry)
            .ok_or(HcError::BadAddress)?;
        let f: NetFrame = get(mem, at)?;
        if f._pad != 0 || !len_ok(f.len) {
            return Err(HcError::Invalid);
        }
        *slot = f;
    }
    Ok(table)
}

/// `NetWrite`: checks the whole request first (so a bad entry sends nothing), then
/// sends frames in order until one would block.
fn net_write(
    mem: &GuestMemory,
    host: &mut impl Host,
    config: DispatchConfig,
    arg: GuestAddr,
) -> Result<i64, HcError> {
    let mut args: NetWriteArgs = get(mem, arg)?;
    if args._pad != 0 {
        return Err(HcError::Invalid);
    }
    if !config.is_net(args.device) {
        return Err(HcError::NoDevice);
    }
    let table = frame_table(mem, args.frames, args.count, |len| {
        (NET_FRAME_MIN..=NET_FRAME_MAX).contains(&len)
    })?;
    let table = &table[..args.count as usize];
    for f in table {
        mem.check(f.data, u64::from(f.len), crate::memory::Access::Read)
            .map_err(bad_address)?;
    }
    let mut done = 0u32;
    for f in table {
        let frame = mem
            .read_bytes(f.data, u64::from(f.len))
            .map_err(bad_address)?;
        match host.net_write(args.device as usize, frame) {
            Ok(true) => done += 1,
            Ok(false) => break,
            // Report the frames that did go out; the guest sees the error next time.
            Err(_) if done > 0 => break,
            Err(e) => return Err(e),
        }
    }
    args.done = done;
    put(mem, arg, &args)?;
    Ok(i64::from(done))
}

/// `NetRead`: fills the buffers in order with waiting frames, without blocking. A frame
/// longer than its buffer is dropped and the next one read into the same buffer.
fn net_read(
    mem: &GuestMemory,
    host: &mut impl Host,
    config: DispatchConfig,
    arg: GuestAddr,
) -> Result<i64, HcError> {
    let mut args: NetReadArgs = get(mem, arg)?;
    if args._pad != 0 {
        return Err(HcError::Invalid);
    }
    if !config.is_net(args.device) {
        return Err(HcError::NoDevice);
    }
    let mut table = frame_table(mem, args.frames, args.count, |_| true)?;
    let count = args.count as usize;
    for f in &table[..count] {
        mem.check(f.data, u64::from(f.len), crate::memory::Access::Write)
            .map_err(bad_address)?;
    }
    // The results go back into the table: it must be writable too.
    mem.check(
        args.frames,
        u64::from(args.count) * size_of::<NetFrame>() as u64,
        crate::memory::Access::Write,
    )
    .map_err(bad_address)?;
    let mut done = 0usize;
    // Oversized frames are dropped; bound how many one call may skip.
    let mut drops_left = NET_BATCH_MAX;
    while done < count {
        let f = &mut table[done];
        // SAFETY: no other borrow of guest memory is alive while `buf` is: the table
        // was copied out, and `buf` is dropped before the next guest-memory access.
        let buf = unsafe { mem.slice_mut(f.data, u64::from(f.len)) }.map_err(bad_address)?;
        let got = match host.net_read(args.device as usize, buf) {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(_) if done > 0 => break,
            Err(e) => return Err(e),
        };
        if got > f.len as usize {
            if drops_left == 0 {
                break;
            }
            drops_left -= 1;
            continue;
        }
        f.len = got as u32;
        done += 1;
    }
    for (i, f) in table[..done].iter().enumerate() {
        let at = GuestAddr::new(args.frames.raw() + (i * size_of::<NetFrame>()) as u64);
        put(mem, at, f)?;
    }
    args.done = done as u32;
    put(mem, arg, &args)?;
    Ok(done as i64)
}

/// `BlockRead`/`BlockWrite`: checks the whole request before any I/O, in this order:
/// the argument struct (readable and writable: `done` goes back), `_pad` zero
/// (`Invalid`), a block device (`NoDevice`), a write to a read-only device
/// (`ReadOnly`), `1 <= count <= BLOCK_IO_MAX_SECTORS` and `sector + count` within the
/// capacity without overflow (`Invalid`), the buffer in guest memory with the access
/// the transfer needs (`BadAddress`). Then moves everything or fails with `Io`.
fn block_io(
    mem: &GuestMemory,
    host: &mut impl Host,
    config: DispatchConfig,
    arg: GuestAddr,
    write: bool,
) -> Result<i64, HcError> {
    let mut args: BlockIoArgs = get(mem, arg)?;
    mem.check(
        arg,
        size_of::<BlockIoArgs>() as u64,
        crate::memory::Access::Write,
    )
    .map_err(bad_address)?;
    if args._pad != 0 {
        return Err(HcError::Invalid);
    }
    let limits = config.block(args.device).ok_or(HcError::NoDevice)?;
    if write && limits.read_only {
        return Err(HcError::ReadOnly);
    }
    if args.count == 0 || args.count > BLOCK_IO_MAX_SECTORS {
        return Err(HcError::Invalid);
    }
    let end = args
        .sector
        .checked_add(u64::from(args.count))
        .ok_or(HcError::Invalid)?;
    if end > limits.sectors {
        return Err(HcError::Invalid);
    }
    let sector = u64::from(BLOCK_SECTOR_SIZE);
    let offset = args.sector.checked_mul(sector).ok_or(HcError::Invalid)?;
    let len = u64::from(args.count) * sector;
    let device = args.device as usize;
    if write {
        let data = mem.read_bytes(args.data, len).map_err(bad_address)?;
        host.block_write(device, offset, data)?;
    } else {
        // SAFETY: no other borrow of guest memory is alive while `buf` is: `args` was
        // copied out, and `buf` is dropped before `put` below.
        let buf = unsafe { mem.slice_mut(args.data, len) }.map_err(bad_address)?;
        host.block_read(device, offset, buf)?;
    }
    args.done = args.count;
    put(mem, arg, &args)?;
    Ok(i64::from(args.count))
}

/// `BlockFlush`: a barrier (requests are served in order; see `BlockFlushArgs`).
fn block_flush(
    mem: &GuestMemory,
    host: &mut impl Host,
    config: DispatchConfig,
    arg: GuestAddr,
) -> Result<i64, HcError> {
    let args: BlockFlushArgs = get(mem, arg)?;
    if args._pad != 0 {
        return Err(HcError::Invalid);
    }
    config.block(args.device).ok_or(HcError::NoDevice)?;
    host.block_flush(args.device as usize)?;
    Ok(0)
}

fn exit(mem: &GuestMemory, arg: GuestAddr) -> Action {
    match get::<ExitArgs>(mem, arg) {
        Ok(args) if args._pad == 0 => Action::Exit(args.status as u8),
        Ok(_) => Action::Resume(HcError::Invalid.code()),
        Err(e) => Action::Resume(e.code()),
    }
}

fn abort(mem: &GuestMemory, host: &mut impl Host, arg: GuestAddr) -> Action {
    let args: AbortArgs = match get(mem, arg) {
        Ok(a) => a,
        Err(e) => return Action::Resume(e.code()),
    };
    let len = args.len.min(ABORT_MESSAGE_MAX);
    let message = mem
        .read_bytes(args.message, len)
        .unwrap_or(b"<message not readable>");
    let mut out = FmtBuf::<{ ABORT_MESSAGE_MAX as usize + 128 }>::new();
    let text = core::str::from_utf8(message).unwrap_or("<message is not UTF-8>");
    let _ = writeln!(
        out,
        "septem-run: guest aborted (status {}): {}",
        args.status as u8,
        text.trim_end()
    );
    let _ = host.console_write(Stream::Stderr, out.as_bytes());
    Action::Exit(args.status as u8)
}

fn trace(
    mem: &GuestMemory,
    host: &mut impl Host,
    nr: u64,
    arg: GuestAddr,
    action: Action,
    started: u64,
) {
    let elapsed = host.monotonic_ns().saturating_sub(started);
    let mut out = FmtBuf::<512>::new();
    let _ = write!(out, "[septem-run trace] ");
    match Hypercall::try_from(nr) {
        Ok(call) => {
            let _ = write!(out, "{}(", call.name());
            trace_args(mem, &mut out, call, arg);
            let _ = write!(out, ")");
        }
        Err(_) => {
            let _ = write!(out, "unknown#{nr:#x}(arg={:#x})", arg.raw());
        }
    }
    let _ = match action {
        Action::Resume(v) if v < 0 => {
            let e = HcError::check(v).err().map_or("error", HcError::describe);
            writeln!(out, " = {v} ({e}) [{elapsed} ns]")
        }
        Action::Resume(v) => writeln!(out, " = {v} [{elapsed} ns]"),
        Action::Exit(s) => writeln!(out, " -> exit status {s} [{elapsed} ns]"),
    };
    let _ = host.console_write(Stream::Stderr, out.as_bytes());
}

fn trace_args(mem: &GuestMemory, out: &mut FmtBuf<512>, call: Hypercall, arg: GuestAddr) {
    let r = match call {
        Hypercall::ConsoleWrite => get::<ConsoleWriteArgs>(mem, arg).map(|a| {
            write!(
                out,
                "data={:#x}, len={}, stream={}",
                a.data.raw(),
                a.len,
                a.stream
            )
        }),
        Hypercall::ClockMonotonic => {
            get::<ClockMonotonicArgs>(mem, arg).map(|a| write!(out, "nanos={}", a.nanos))
        }
        Hypercall::ClockWall => get::<ClockWallArgs>(mem, arg)
            .map(|a| write!(out, "nanos_since_epoch={}", a.nanos_since_epoch)),
        Hypercall::Yield => get::<YieldArgs>(mem, arg).map(|a| {
            write!(
                out,
                "deadline={}, wait_set={:#x}, ready_set={:#x}",
                a.deadline, a.wait_set, a.ready_set
            )
        }),
        Hypercall::Exit => get::<ExitArgs>(mem, arg).map(|a| write!(out, "status={}", a.status)),
        Hypercall::Abort => get::<AbortArgs>(mem, arg).map(|a| {
            write!(
                out,
                "message={:#x}, len={}, status={}",
                a.message.raw(),
                a.len,
                a.status
            )
        }),
        Hypercall::NetWrite => get::<NetWriteArgs>(mem, arg).map(|a| {
            write!(
                out,
                "device={}, count={}, frames={:#x}, done={}",
                a.device,
                a.count,
                a.frames.raw(),
                a.done
            )
        }),
        Hypercall::BlockRead | Hypercall::BlockWrite => get::<BlockIoArgs>(mem, arg).map(|a| {
            write!(
                out,
                "device={}, sector={}, count={}, data={:#x}, done={}",
                a.device,
                a.sector,
                a.count,
                a.data.raw(),
                a.done
            )
        }),
        Hypercall::BlockFlush => {
            get::<BlockFlushArgs>(mem, arg).map(|a| write!(out, "device={}", a.device))
        }
        Hypercall::NetRead => get::<NetReadArgs>(mem, arg).map(|a| {
            write!(
                out,
                "device={}, count={}, frames={:#x}, done={}",
                a.device,
                a.count,
                a.frames.raw(),
                a.done
            )
        }),
    };
    if r.is_err() {
        let _ = write!(out, "arg={:#x} <unreadable>", arg.raw());
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod block_tests;
