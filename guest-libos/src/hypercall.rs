//! The one raw hypercall path, through `BootInfo::hypercall`, and typed wrappers.
//!
//! Most code wants [`crate::console`], [`crate::time`] or [`crate::process`]; the raw
//! functions are public for tests that probe the monitor (bad pointers, unknown
//! numbers).

use crate::boot;
use septem_abi::{
    AbortArgs, ClockMonotonicArgs, ClockWallArgs, ConsoleWriteArgs, ExitArgs, GuestAddr, HcError,
    Hypercall, HypercallFn, YieldArgs,
};

pub use septem_abi::{CONSOLE_STDERR, CONSOLE_STDOUT};

fn entry_point() -> Option<HypercallFn> {
    let raw = boot::boot_info()?.hypercall;
    if raw == 0 {
        return None;
    }
    // SAFETY: the monitor's contract (abi/src/boot.rs) is that a valid `BootInfo`'s
    // `hypercall` field is the address of a `HypercallFn`; `_start` only records a
    // `BootInfo` whose magic and version it checked. Function pointers are address-sized.
    Some(unsafe { core::mem::transmute::<usize, HypercallFn>(raw as usize) })
}

/// Makes hypercall `nr` with argument pointer `arg`, both unchecked: the number may be
/// one the ABI does not define and the pointer may point anywhere (the monitor must cope).
/// Returns [`HcError::Unsupported`]'s code when no monitor entry point is known.
///
/// # Safety
/// For a defined number, `arg` must point at that call's argument struct, valid for
/// reads and writes of its size (the monitor writes the "out" fields).
pub unsafe fn raw_hypercall(nr: u64, arg: *mut u8) -> i64 {
    match entry_point() {
        // SAFETY: forwarded from the caller's contract.
        Some(f) => unsafe { f(nr, arg) },
        None => HcError::Unsupported.code(),
    }
}

/// Makes hypercall `nr` with its argument struct at `arg`.
///
/// # Safety
/// `arg` must point at the argument struct `nr` expects (see [`Hypercall::arg_size`]),
/// valid for reads and writes.
pub unsafe fn hypercall<T>(nr: Hypercall, arg: *mut T) -> i64 {
    // SAFETY: forwarded from the caller's contract.
    unsafe { raw_hypercall(nr as u64, arg.cast()) }
}

fn addr_of(bytes: &[u8]) -> GuestAddr {
    GuestAddr::new(bytes.as_ptr() as u64)
}

/// Writes `bytes` to console `stream`, unbuffered. Returns the bytes written.
pub fn console_write(stream: u32, bytes: &[u8]) -> Result<u64, HcError> {
    let mut args = ConsoleWriteArgs {
        data: addr_of(bytes),
        len: bytes.len() as u64,
        stream,
        _pad: 0,
        written: 0,
    };
    // SAFETY: `args` is a live ConsoleWriteArgs and `data`/`len` describe `bytes`.
    HcError::check(unsafe { hypercall(Hypercall::ConsoleWrite, &mut args) })?;
    Ok(args.written)
}

/// The host's monotonic clock in nanoseconds.
pub fn clock_monotonic() -> Result<u64, HcError> {
    let mut args = ClockMonotonicArgs::default();
    // SAFETY: `args` is a live ClockMonotonicArgs.
    HcError::check(unsafe { hypercall(Hypercall::ClockMonotonic, &mut args) })?;
    Ok(args.nanos)
}

/// The host's wall clock in nanoseconds since the Unix epoch.
pub fn clock_wall() -> Result<u64, HcError> {
    let mut args = ClockWallArgs::default();
    // SAFETY: `args` is a live ClockWallArgs.
    HcError::check(unsafe { hypercall(Hypercall::ClockWall, &mut args) })?;
    Ok(args.nanos_since_epoch)
}

/// Gives up the CPU until the monotonic clock reaches `deadline_ns` (or a device in
/// `wait_set` is ready). Returns the ready subset of `wait_set`. Also wakes for a
/// shutdown request, which [`crate::lifecycle`] handles (it never appears in the
/// returned set).
pub fn yield_until(deadline_ns: u64, wait_set: u64) -> Result<u64, HcError> {
    let mut args = YieldArgs {
        deadline: deadline_ns,
        wait_set: wait_set | crate::lifecycle::wait_bit(),
        ready_set: 0,
    };
    // SAFETY: `args` is a live YieldArgs.
    HcError::check(unsafe { hypercall(Hypercall::Yield, &mut args) })?;
    Ok(crate::lifecycle::take_event(args.ready_set))
}

/// Exits with `status` at once, without flushing the console (see [`crate::exit`]).
pub fn exit_raw(status: i32) -> ! {
    let mut args = ExitArgs { status, _pad: 0 };
    // SAFETY: `args` is a live ExitArgs.
    let _ = unsafe { hypercall(Hypercall::Exit, &mut args) };
    halt()
}

/// Aborts with `message` and `status` at once, without flushing the console.
pub fn abort_raw(message: &[u8], status: i32) -> ! {
    let mut args = AbortArgs {
        message: addr_of(message),
        len: message.len() as u64,
        status,
        _pad: 0,
    };
    // SAFETY: `args` is a live AbortArgs and `message`/`len` describe `message`.
    let _ = unsafe { hypercall(Hypercall::Abort, &mut args) };
    halt()
}

/// Stops the guest when there is no monitor to exit to: an invalid-opcode fault, which
/// every backend reports.
pub fn halt() -> ! {
    loop {
        // SAFETY: `ud2` only raises #UD; it touches no memory and no stack.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    }
}
