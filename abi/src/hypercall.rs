//! Hypercall numbers and result codes.
//!
//! A guest calls `BootInfo::hypercall(nr, arg)` where `nr` is a [`Hypercall`] as `u64`
//! and `arg` points at that call's argument struct (see [`crate::args`]). The call
//! returns an `i64`: `>= 0` on success, a negative [`HcError`] otherwise.
//!
//! Number ranges: `0x01..=0x0f` core, `0x10..=0x1f` network devices, `0x20..=0x2f`
//! block devices, `0x30..=0x3f` reserved for lifecycle calls (a shutdown request is
//! not a call: it is the [`crate::YIELD_SHUTDOWN`] event of `Yield`). A monitor answers
//! any other number with [`HcError::Unsupported`].

use core::fmt;

/// First I/O port used by the KVM backend's trampoline; the port is
/// `HYPERCALL_PORT_BASE` (the argument's guest address goes out as the 32-bit value).
pub const HYPERCALL_PORT_BASE: u16 = 0x500;

/// Every hypercall this ABI version defines.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hypercall {
    /// Write bytes to the console. Args: [`crate::ConsoleWriteArgs`].
    ConsoleWrite = 0x01,
    /// Read the monotonic clock. Args: [`crate::ClockMonotonicArgs`].
    ClockMonotonic = 0x02,
    /// Read the wall clock. Args: [`crate::ClockWallArgs`].
    ClockWall = 0x03,
    /// Give up the CPU until a monotonic deadline (or a device is ready). Args: [`crate::YieldArgs`].
    Yield = 0x04,
    /// Exit with a status; never returns. Args: [`crate::ExitArgs`].
    Exit = 0x05,
    /// Abort with a message and a status; never returns. Args: [`crate::AbortArgs`].
    Abort = 0x06,
    /// Send up to [`crate::NET_BATCH_MAX`] frames on a net device. Args: [`crate::NetWriteArgs`].
    NetWrite = 0x10,
    /// Receive up to [`crate::NET_BATCH_MAX`] frames from a net device without blocking.
    /// Args: [`crate::NetReadArgs`].
    NetRead = 0x11,
    /// Read whole sectors from a block device into guest memory. Args: [`crate::BlockIoArgs`].
    BlockRead = 0x20,
    /// Write whole sectors from guest memory to a block device. Args: [`crate::BlockIoArgs`].
    BlockWrite = 0x21,
    /// A barrier: returns once every earlier write to the device has completed (see
    /// [`crate::BlockFlushArgs`] for what "completed" means). Args: [`crate::BlockFlushArgs`].
    BlockFlush = 0x22,
}

impl Hypercall {
    /// All hypercalls, in number order.
    pub const ALL: [Hypercall; 11] = [
        Hypercall::ConsoleWrite,
        Hypercall::ClockMonotonic,
        Hypercall::ClockWall,
        Hypercall::Yield,
        Hypercall::Exit,
        Hypercall::Abort,
        Hypercall::NetWrite,
        Hypercall::NetRead,
        Hypercall::BlockRead,
        Hypercall::BlockWrite,
        Hypercall::BlockFlush,
    ];

    /// A short lowercase name, for traces and error messages.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Hypercall::ConsoleWrite => "console_write",
            Hypercall::ClockMonotonic => "clock_monotonic",
            Hypercall::ClockWall => "clock_wall",
            Hypercall::Yield => "yield",
            Hypercall::Exit => "exit",
            Hypercall::Abort => "abort",
            Hypercall::NetWrite => "net_write",
            Hypercall::NetRead => "net_read",
            Hypercall::BlockRead => "block_read",
            Hypercall::BlockWrite => "block_write",
            Hypercall::BlockFlush => "block_flush",
        }
    }

    /// Size in bytes of the argument struct this call expects.
    #[must_use]
    pub const fn arg_size(self) -> usize {
        use core::mem::size_of;
        match self {
            Hypercall::ConsoleWrite => size_of::<crate::ConsoleWriteArgs>(),
            Hypercall::ClockMonotonic => size_of::<crate::ClockMonotonicArgs>(),
            Hypercall::ClockWall => size_of::<crate::ClockWallArgs>(),
            Hypercall::Yield => size_of::<crate::YieldArgs>(),
            Hypercall::Exit => size_of::<crate::ExitArgs>(),
            Hypercall::Abort => size_of::<crate::AbortArgs>(),
            Hypercall::NetWrite => size_of::<crate::NetWriteArgs>(),
            Hypercall::NetRead => size_of::<crate::NetReadArgs>(),
            Hypercall::BlockRead | Hypercall::BlockWrite => size_of::<crate::BlockIoArgs>(),
            Hypercall::BlockFlush => size_of::<crate::BlockFlushArgs>(),
        }
    }
}

/// A hypercall number this ABI version does not define.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownHypercall(pub u64);

impl fmt::Display for UnknownHypercall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown hypercall number {:#x}", self.0)
    }
}

impl TryFrom<u64> for Hypercall {
    type Error = UnknownHypercall;

    fn try_from(nr: u64) -> Result<Self, Self::Error> {
        match nr {
            0x01 => Ok(Hypercall::ConsoleWrite),
            0x02 => Ok(Hypercall::ClockMonotonic),
            0x03 => Ok(Hypercall::ClockWall),
            0x04 => Ok(Hypercall::Yield),
            0x05 => Ok(Hypercall::Exit),
            0x06 => Ok(Hypercall::Abort),
            0x10 => Ok(Hypercall::NetWrite),
            0x11 => Ok(Hypercall::NetRead),
            0x20 => Ok(Hypercall::BlockRead),
            0x21 => Ok(Hypercall::BlockWrite),
            0x22 => Ok(Hypercall::BlockFlush),
            other => Err(UnknownHypercall(other)),
        }
    }
}

/// Negative results of a hypercall.
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HcError {
    /// A guest address or length in the arguments is outside guest memory (or overflows).
    BadAddress = -1,
    /// An argument has a value the call does not accept (bad stream, reserved bits…).
    Invalid = -2,
    /// The hypercall number is unknown to this monitor.
    Unsupported = -3,
    /// The named device does not exist or is not attached.
    NoDevice = -4,
    /// Nothing to do now; try again later.
    Again = -5,
    /// The host failed the I/O.
    Io = -6,
    /// The device is read-only (a write to a block device attached with `,ro`).
    ReadOnly = -7,
}

impl HcError {
    /// All error codes.
    pub const ALL: [HcError; 7] = [
        HcError::BadAddress,
        HcError::Invalid,
        HcError::Unsupported,
        HcError::NoDevice,
        HcError::Again,
        HcError::Io,
        HcError::ReadOnly,
    ];

    /// The raw value returned by the hypercall.
    #[must_use]
    pub const fn code(self) -> i64 {
        self as i64
    }

    /// A short description.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            HcError::BadAddress => "bad guest address",
            HcError::Invalid => "invalid argument",
            HcError::Unsupported => "unsupported hypercall",
            HcError::NoDevice => "no such device",
            HcError::Again => "try again",
            HcError::Io => "host I/O error",
            HcError::ReadOnly => "read-only device",
        }
    }

    /// Decodes a hypercall result: `Ok(value)` for `>= 0`, the error otherwise.
    /// An unknown negative value maps to [`HcError::Io`].
    pub const fn check(result: i64) -> Result<u64, HcError> {
        if result >= 0 {
            return Ok(result as u64);
        }
        Err(match result {
            -1 => HcError::BadAddress,
            -2 => HcError::Invalid,
            -3 => HcError::Unsupported,
            -4 => HcError::NoDevice,
            -5 => HcError::Again,
            -7 => HcError::ReadOnly,
            _ => HcError::Io,
        })
    }
}

impl fmt::Display for HcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl core::error::Error for UnknownHypercall {}
impl core::error::Error for HcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for hc in Hypercall::ALL {
            assert_eq!(Hypercall::try_from(hc as u64), Ok(hc));
        }
    }

    #[test]
    fn unknown_numbers_are_rejected() {
        for nr in [0u64, 7, 0x12, 0x1f, 0x23, 0x2f, 0x3f, u64::MAX] {
            assert_eq!(Hypercall::try_from(nr), Err(UnknownHypercall(nr)));
        }
    }

    #[test]
    fn error_codes_round_trip() {
        for e in HcError::ALL {
            assert_eq!(HcError::check(e.code()), Err(e));
        }
        assert_eq!(HcError::check(0), Ok(0));
        assert_eq!(HcError::check(42), Ok(42));
    }
}
