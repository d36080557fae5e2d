//! `septem-abi`: the one contract between the Septem monitor (`septem-run`) and a guest.
//!
//! Everything that crosses the boundary is defined here and nowhere else:
//! - [`BootInfo`]: what the monitor hands the guest at entry (RDI points at it);
//! - [`Hypercall`]: the numbered calls a guest makes through `BootInfo::hypercall`,
//!   each with one `#[repr(C)]` argument struct in [`args`];
//! - [`manifest`]: the ELF note in which an image declares its ABI version and devices.
//!
//! Rules: every `#[repr(C)]` struct has explicit padding fields and a `const` size
//! assert, so the layout cannot drift silently; enums convert from raw numbers with
//! `TryFrom`, never by transmute. The crate is `no_std` and has no dependencies.
#![no_std]

pub mod args;
pub mod boot;
pub mod hypercall;
pub mod manifest;

pub use args::*;
pub use boot::{
    BlockConfig, BootDevice, BootInfo, BootStr, HypercallFn, NetConfig, BLOCK_READ_ONLY,
    BOOT_INFO_MAGIC, NET_HAS_ADDRESS, NET_HAS_DNS, NET_HAS_GATEWAY,
};
pub use hypercall::{HcError, Hypercall, UnknownHypercall, HYPERCALL_PORT_BASE};
pub use manifest::{DeviceKind, Manifest, ManifestDevice, ManifestError, ManifestHeader};

/// Version of this contract. A monitor refuses an image whose manifest names another one.
///
/// Bump it on any change to a struct layout, a hypercall number or its semantics.
/// History: 2 added networking and block devices; 3 added the shutdown event
/// ([`YIELD_SHUTDOWN`]).
pub const ABI_VERSION: u32 = 3;

/// Guests are linked to load here (1 MiB). Nothing of the guest is mapped below it:
/// the low area is the monitor's (page tables, descriptor tables, trampolines under KVM;
/// nothing at all under seccomp, so a null-ish pointer always faults).
pub const IMAGE_BASE: u64 = 0x10_0000;

/// Page size of the guest address space.
pub const PAGE_SIZE: u64 = 4096;

/// An address in the guest's address space.
///
/// The host never dereferences one directly: it converts it through the monitor's one
/// bounds-checked guest-memory API. There is deliberately no `Deref`, no `as_ptr`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestAddr(u64);

impl GuestAddr {
    /// The null guest address (never mapped).
    pub const NULL: GuestAddr = GuestAddr(0);

    /// Wraps a raw guest address.
    #[must_use]
    pub const fn new(raw: u64) -> Self {
        GuestAddr(raw)
    }

    /// The raw numeric value.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// `self + offset`, or `None` on overflow.
    #[must_use]
    pub const fn checked_add(self, offset: u64) -> Option<GuestAddr> {
        match self.0.checked_add(offset) {
            Some(v) => Some(GuestAddr(v)),
            None => None,
        }
    }

    /// True for the null address.
    #[must_use]
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }
}

/// Asserts at compile time that `$t` is exactly `$size` bytes.
#[macro_export]
macro_rules! assert_size {
    ($t:ty, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
    };
}

assert_size!(GuestAddr, 8);
