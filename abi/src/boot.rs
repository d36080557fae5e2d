//! [`BootInfo`]: what the monitor gives the guest at entry.
//!
//! Entry convention (both backends): the guest's ELF entry point is called as
//! `extern "sysv64" fn(boot: *const BootInfo) -> !` with `RSP` at `stack_top`
//! (16-byte aligned, minus 8 as after a `call`), interrupts irrelevant, SSE usable.
//! The `BootInfo`, its argument and environment tables and their strings live in guest
//! memory, in the boot area between the image and the heap; the guest may keep
//! pointers into it for its whole life.

use crate::{assert_size, GuestAddr};

/// `BootInfo::magic`: "SEPTEMBI" little-endian.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"SEPTEMBI");

/// The hypercall entry point's type.
///
/// `nr` is a [`crate::Hypercall`] number, `arg` the guest address of its argument
/// struct. Under the seccomp backend this is a function in the monitor; under KVM, a
/// trampoline page that exits to the monitor with an `out` instruction.
pub type HypercallFn = unsafe extern "sysv64" fn(nr: u64, arg: *mut u8) -> i64;

/// A string in guest memory (not NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootStr {
    /// First byte.
    pub addr: GuestAddr,
    /// Length in bytes.
    pub len: u64,
}
assert_size!(BootStr, 16);

/// `NetConfig::flags`: `ipv4`/`prefix_len` hold a static address. Without it the
/// guest configures itself (DHCP).
pub const NET_HAS_ADDRESS: u32 = 1;
/// `NetConfig::flags`: `gateway` holds the default gateway.
pub const NET_HAS_GATEWAY: u32 = 2;
/// `NetConfig::flags`: `dns` holds a name server.
pub const NET_HAS_DNS: u32 = 4;

/// Configuration of a network device, as the monitor was told on its command line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// Must be zero.
    pub _pad0: [u8; 2],
    /// MTU in bytes (IP packet size; frames are up to `mtu + 14` bytes).
    pub mtu: u32,
    /// Static IPv4 address (valid with [`NET_HAS_ADDRESS`]).
    pub ipv4: [u8; 4],
    /// Prefix length of `ipv4` (0..=32).
    pub prefix_len: u8,
    /// Must be zero.
    pub _pad1: [u8; 3],
    /// Default gateway (valid with [`NET_HAS_GATEWAY`]).
    pub gateway: [u8; 4],
    /// Name server (valid with [`NET_HAS_DNS`]).
    pub dns: [u8; 4],
    /// `NET_HAS_*` bits.
    pub flags: u32,
}
assert_size!(NetConfig, 32);

/// `BlockConfig::flags`: the device refuses writes.
pub const BLOCK_READ_ONLY: u32 = 1;

/// Configuration of a block device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockConfig {
    /// Sector size in bytes (512).
    pub sector_size: u32,
    /// `BLOCK_*` bits.
    pub flags: u32,
    /// Capacity in sectors.
    pub sectors: u64,
    /// Zero; room for later versions.
    pub _reserved: [u64; 2],
}
assert_size!(BlockConfig, 32);

/// One attached device. Device `i` of `BootInfo::devices` is the `i`-th device of the
/// image's manifest, and `i` is how hypercalls and [`crate::YieldArgs::wait_set`] name it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootDevice {
    /// A [`crate::DeviceKind`] as `u32`.
    pub kind: u32,
    /// Must be zero.
    pub _pad: u32,
    /// Device name, NUL-padded (as in the manifest).
    pub name: [u8; 32],
    /// Valid for net devices, zero otherwise.
    pub net: NetConfig,
    /// Valid for block devices, zero otherwise.
    pub block: BlockConfig,
}
assert_size!(BootDevice, 104);

impl BootDevice {
    /// The name as a string.
    #[must_use]
    pub fn name_str(&self) -> &str {
        crate::manifest::nul_padded_str(&self.name)
    }
}

/// Backend identifiers for [`BootInfo::backend`].
pub mod backend {
    /// The guest runs in the monitor's own process, sealed by seccomp.
    pub const SECCOMP: u32 = 1;
    /// The guest runs in a KVM virtual machine.
    pub const KVM: u32 = 2;
}

/// The boot information block. RDI points at it on entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`crate::ABI_VERSION`] of the monitor.
    pub abi_version: u32,
    /// One of [`backend`]'s constants (informational: the guest behaves the same).
    pub backend: u32,
    /// Address of the [`HypercallFn`].
    pub hypercall: u64,
    /// Lowest guest address of guest memory (the image base).
    pub mem_start: GuestAddr,
    /// One past the highest guest address of guest memory.
    pub mem_end: GuestAddr,
    /// The heap: `[heap_start, heap_end)`, page-aligned, readable and writable.
    pub heap_start: GuestAddr,
    /// End of the heap.
    pub heap_end: GuestAddr,
    /// Initial stack pointer's region top (16-byte aligned).
    pub stack_top: GuestAddr,
    /// Size of the stack below `stack_top`, in bytes (a guard page lies below it).
    pub stack_size: u64,
    /// Number of [`BootStr`] entries at `argv` (argv\[0\] is the image name).
    pub argc: u64,
    /// Table of arguments.
    pub argv: GuestAddr,
    /// Number of [`BootStr`] entries at `envp`, each `KEY=VALUE`.
    pub envc: u64,
    /// Table of environment entries.
    pub envp: GuestAddr,
    /// Monotonic clock at boot, nanoseconds.
    pub boot_monotonic_ns: u64,
    /// Wall clock at boot, nanoseconds since the Unix epoch.
    pub boot_wall_ns: u64,
    /// Number of [`BootDevice`] entries at `devices`.
    pub device_count: u64,
    /// Table of attached devices.
    pub devices: GuestAddr,
    /// Zero; room for later ABI versions.
    pub _reserved: [u64; 8],
}
assert_size!(BootInfo, 200);

impl BootInfo {
    /// True when `magic` and `abi_version` are what this crate defines.
    #[must_use]
    pub const fn is_valid(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC && self.abi_version == crate::ABI_VERSION
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn layout_is_stable() {
        assert_eq!(offset_of!(BootInfo, hypercall), 16);
        assert_eq!(offset_of!(BootInfo, mem_start), 24);
        assert_eq!(offset_of!(BootInfo, argc), 72);
        assert_eq!(offset_of!(BootInfo, envp), 96);
        assert_eq!(offset_of!(BootInfo, devices), 128);
        assert_eq!(offset_of!(BootInfo, _reserved), 136);
        assert_eq!(core::mem::align_of::<BootInfo>(), 8);
    }

    #[test]
    fn default_is_invalid() {
        assert!(!BootInfo::default().is_valid());
    }
}
