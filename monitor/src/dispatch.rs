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
use septem_abi::{
    AbortArgs, ClockMonotonicArgs, ClockWallArgs, ConsoleWriteArgs, ExitArgs, GuestAddr, HcError,
    Hypercall, NetReadArgs, NetWriteArgs, YieldArgs, ABORT_MESSAGE_MAX, CONSOLE_STDERR,
    CONSOLE_STDOUT,
};

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
    /// Blocks until the monotonic clock reaches `deadline_ns` (or a device in
    /// `wait_set` is ready); returns the ready subset.
    fn wait_until(&mut self, deadline_ns: u64, wait_set: u64) -> u64;
}

/// What the backend does after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Return this value to the guest and resume it.
    Resume(i64),
    /// The guest is done: exit with this status (0..=255).
    Exit(u8),
}

/// Per-guest dispatcher settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct DispatchConfig {
    /// Log every hypercall to standard error (`--trace`).
    pub trace: bool,
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
        Ok(call) => serve(mem, host, call, arg),
        Err(_) => Action::Resume(HcError::Unsupported.code()),
    };
    if config.trace {
        trace(mem, host, nr, arg, action, started);
    }
    action
}

fn serve(mem: &GuestMemory, host: &mut impl Host, call: Hypercall, arg: GuestAddr) -> Action {
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
        Hypercall::Yield => yield_until(mem, host, arg),
        Hypercall::Exit => return exit(mem, arg),
        Hypercall::Abort => return abort(mem, host, arg),
        // No net device can be attached yet: every device index is unknown.
        Hypercall::NetWrite | Hypercall::NetRead => Err(HcError::NoDevice),
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

fn yield_until(mem: &GuestMemory, host: &mut impl Host, arg: GuestAddr) -> Result<i64, HcError> {
    let mut args: YieldArgs = get(mem, arg)?;
    // ABI version 1 has no devices: any wait-set bit names a device that doesn't exist.
    if args.wait_set != 0 {
        return Err(HcError::NoDevice);
    }
    args.ready_set = if args.deadline > host.monotonic_ns() {
        host.wait_until(args.deadline, 0)
    } else {
        0
    };
    put(mem, arg, &args)
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
                "device={}, count={}, frames={:#x}",
                a.device,
                a.count,
                a.frames.raw()
            )
        }),
        Hypercall::NetRead => get::<NetReadArgs>(mem, arg).map(|a| {
            write!(
                out,
                "device={}, count={}, frames={:#x}",
                a.device,
                a.count,
                a.frames.raw()
            )
        }),
    };
    if r.is_err() {
        let _ = write!(out, "arg={:#x} <unreadable>", arg.raw());
    }
}

#[cfg(test)]
mod tests;
