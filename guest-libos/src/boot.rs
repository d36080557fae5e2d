//! The [`BootInfo`] the monitor handed to `_start`, kept for the guest's whole life.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};
use septem_abi::{BootInfo, GuestAddr};

const UNSET: u8 = 0;
const WRITING: u8 = 1;
const SET: u8 = 2;

struct BootCell {
    state: AtomicU8,
    info: UnsafeCell<BootInfo>,
}

// SAFETY: `info` is written exactly once, by whoever moves `state` from UNSET to
// WRITING, and is only read after `state` is SET (release/acquire), never written again.
unsafe impl Sync for BootCell {}

const ZERO: BootInfo = BootInfo {
    magic: 0,
    abi_version: 0,
    backend: 0,
    hypercall: 0,
    mem_start: GuestAddr::NULL,
    mem_end: GuestAddr::NULL,
    heap_start: GuestAddr::NULL,
    heap_end: GuestAddr::NULL,
    stack_top: GuestAddr::NULL,
    stack_size: 0,
    argc: 0,
    argv: GuestAddr::NULL,
    envc: 0,
    envp: GuestAddr::NULL,
    boot_monotonic_ns: 0,
    boot_wall_ns: 0,
    device_count: 0,
    devices: GuestAddr::NULL,
    _reserved: [0; 8],
};

static BOOT: BootCell = BootCell {
    state: AtomicU8::new(UNSET),
    info: UnsafeCell::new(ZERO),
};

/// Records the boot information. Only the first call has an effect (it returns `true`).
pub(crate) fn install(info: &BootInfo) -> bool {
    if BOOT
        .state
        .compare_exchange(UNSET, WRITING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    // SAFETY: we moved the state out of UNSET, so we are the only writer ever, and no
    // reader looks at `info` before the state is SET below.
    unsafe { *BOOT.info.get() = *info };
    BOOT.state.store(SET, Ordering::Release);
    true
}

/// The boot information, once `_start` has recorded it (always, inside `main`).
#[must_use]
pub fn boot_info() -> Option<&'static BootInfo> {
    if BOOT.state.load(Ordering::Acquire) == SET {
        // SAFETY: SET means the single write has completed; it is never written again.
        Some(unsafe { &*BOOT.info.get() })
    } else {
        None
    }
}

/// Which backend runs the guest ([`septem_abi::boot::backend`]), 0 if unknown.
#[must_use]
pub fn backend() -> u32 {
    boot_info().map_or(0, |b| b.backend)
}

/// The guest's memory layout, for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Lowest guest address (the image base).
    pub mem_start: u64,
    /// One past the highest guest address.
    pub mem_end: u64,
    /// Heap start.
    pub heap_start: u64,
    /// Heap end.
    pub heap_end: u64,
    /// Top of the initial stack.
    pub stack_top: u64,
    /// Stack size in bytes.
    pub stack_size: u64,
}

/// The memory layout from the boot information.
#[must_use]
pub fn memory_layout() -> Option<MemoryLayout> {
    boot_info().map(|b| MemoryLayout {
        mem_start: b.mem_start.raw(),
        mem_end: b.mem_end.raw(),
        heap_start: b.heap_start.raw(),
        heap_end: b.heap_end.raw(),
        stack_top: b.stack_top.raw(),
        stack_size: b.stack_size,
    })
}

/// The attached devices (`BootInfo::devices`), in manifest order; empty before boot.
#[must_use]
pub fn devices() -> &'static [septem_abi::BootDevice] {
    let Some(b) = boot_info() else {
        return &[];
    };
    if b.devices.is_null() || b.device_count == 0 {
        return &[];
    }
    // SAFETY: the monitor's contract (abi/src/boot.rs) is that `devices` points at
    // `device_count` BootDevice entries in the boot area, live and unchanged for the
    // guest's whole life.
    unsafe {
        core::slice::from_raw_parts(
            b.devices.raw() as *const septem_abi::BootDevice,
            b.device_count as usize,
        )
    }
}
