//! Writes [`BootInfo`], the device table and the argument/environment tables into the
//! boot area: `BootInfo` first, then the `BootDevice` table (8-byte aligned: `BootInfo`
//! is 200 bytes), the argv and envp `BootStr` tables, then the strings.

use crate::layout::Layout;
use crate::memory::{GuestMemory, MemError};
use septem_abi::{BootDevice, BootInfo, BootStr, GuestAddr, BOOT_INFO_MAGIC};

/// What goes into the boot area besides the layout.
#[derive(Clone, Debug)]
pub struct BootParams<'a> {
    /// Arguments, argv\[0\] first.
    pub args: &'a [String],
    /// Environment entries, `KEY=VALUE`.
    pub env: &'a [String],
    /// Attached devices, in manifest order.
    pub devices: &'a [BootDevice],
    /// Address of the hypercall entry the guest calls.
    pub hypercall: u64,
    /// `septem_abi::boot::backend::*`.
    pub backend: u32,
    /// Monotonic clock at boot.
    pub monotonic_ns: u64,
    /// Wall clock at boot.
    pub wall_ns: u64,
}

const INFO: u64 = size_of::<BootInfo>() as u64;
const STR: u64 = size_of::<BootStr>() as u64;
const DEVICE: u64 = size_of::<BootDevice>() as u64;

/// Writes new boot clocks into the `BootInfo` at `info_at` (written by
/// [`write_boot_area`]): the guest's uptime starts when it really starts, e.g. after
/// waiting at the start gate ([`crate::gate`]).
pub fn restamp_clocks(
    mem: &GuestMemory,
    info_at: GuestAddr,
    monotonic_ns: u64,
    wall_ns: u64,
) -> Result<(), MemError> {
    let field = |offset: usize| GuestAddr::new(info_at.raw() + offset as u64);
    mem.write_obj(
        field(core::mem::offset_of!(BootInfo, boot_monotonic_ns)),
        &monotonic_ns,
    )?;
    mem.write_obj(
        field(core::mem::offset_of!(BootInfo, boot_wall_ns)),
        &wall_ns,
    )
}

/// Bytes the boot area needs for these arguments, environment and `devices` devices.
#[must_use]
pub fn boot_area_size(args: &[String], env: &[String], devices: usize) -> u64 {
    let tables = (args.len() + env.len()) as u64 * STR + devices as u64 * DEVICE;
    let strings: u64 = args.iter().chain(env).map(|s| s.len() as u64).sum();
    INFO + tables + strings
}

/// Writes the boot area at `layout.boot_start`; returns the `BootInfo`'s guest address.
pub fn write_boot_area(
    mem: &GuestMemory,
    layout: &Layout,
    p: &BootParams<'_>,
) -> Result<GuestAddr, MemError> {
    let info_at = GuestAddr::new(layout.boot_start);
    let devices = GuestAddr::new(layout.boot_start + INFO);
    for (i, d) in p.devices.iter().enumerate() {
        mem.write_obj(GuestAddr::new(devices.raw() + i as u64 * DEVICE), d)?;
    }
    let argv = GuestAddr::new(devices.raw() + p.devices.len() as u64 * DEVICE);
    let envp = GuestAddr::new(argv.raw() + p.args.len() as u64 * STR);
    let mut strings = envp.raw() + p.env.len() as u64 * STR;
    for (table, items) in [(argv, p.args), (envp, p.env)] {
        for (i, s) in items.iter().enumerate() {
            mem.write_bytes(GuestAddr::new(strings), s.as_bytes())?;
            let entry = BootStr {
                addr: GuestAddr::new(strings),
                len: s.len() as u64,
            };
            mem.write_obj(GuestAddr::new(table.raw() + i as u64 * STR), &entry)?;
            strings += s.len() as u64;
        }
    }
    let info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        abi_version: septem_abi::ABI_VERSION,
        backend: p.backend,
        hypercall: p.hypercall,
        mem_start: GuestAddr::new(layout.image_start),
        mem_end: GuestAddr::new(layout.mem_size),
        heap_start: GuestAddr::new(layout.heap_start),
        heap_end: GuestAddr::new(layout.heap_end),
        stack_top: GuestAddr::new(layout.stack_top),
        stack_size: layout.stack_top - layout.stack_bottom,
        argc: p.args.len() as u64,
        argv,
        envc: p.env.len() as u64,
        envp,
        boot_monotonic_ns: p.monotonic_ns,
        boot_wall_ns: p.wall_ns,
        device_count: p.devices.len() as u64,
        devices: if p.devices.is_empty() {
            GuestAddr::NULL
        } else {
            devices
        },
        _reserved: [0; 8],
    };
    mem.write_obj(info_at, &info)?;
    Ok(info_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Region, RegionKind};

    #[test]
    fn restamping_changes_only_the_boot_clocks() {
        let mut buf = vec![0u8; 0x1000];
        // SAFETY: `buf` outlives `mem`.
        let mut mem = unsafe { GuestMemory::new(buf.as_mut_ptr(), 0x1000, 0x1000) };
        mem.add_region(Region {
            start: 0x1000,
            end: 0x2000,
            read: true,
            write: true,
            exec: false,
            kind: RegionKind::Boot,
        })
        .unwrap();
        let at = GuestAddr::new(0x1000);
        let before = BootInfo {
            magic: BOOT_INFO_MAGIC,
            argc: 3,
            boot_monotonic_ns: 5,
            boot_wall_ns: 6,
            device_count: 1,
            ..BootInfo::default()
        };
        mem.write_obj(at, &before).unwrap();
        restamp_clocks(&mem, at, 1_000, 2_000).unwrap();
        let after: BootInfo = mem.read_obj(at).unwrap();
        assert_eq!(
            (after.boot_monotonic_ns, after.boot_wall_ns),
            (1_000, 2_000)
        );
        assert_eq!(
            BootInfo {
                boot_monotonic_ns: 5,
                boot_wall_ns: 6,
                ..after
            },
            before
        );
    }
}
