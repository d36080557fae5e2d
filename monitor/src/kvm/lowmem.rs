//! The monitor's area below `IMAGE_BASE` (1 MiB) in a KVM guest.
//!
//! Nothing here is guest-writable, and only the trampoline page is guest-accessible at
//! all (user, read + execute). Everything else is supervisor-only, or not mapped at all
//! (page 0, the page tables themselves: the CPU walks them by physical address).
//!
//! ```text
//! 0x0000  page 0: unmapped
//! 0x1000  GDT                              supervisor rw-
//! 0x2000  IDT (256 gates)                  supervisor r--
//! 0x3000  TSS + I/O permission bitmap      supervisor rw-   (3 pages)
//! 0x6000  exception stubs (ring 0)         supervisor r-x
//! 0x7000  LSTAR target ("syscall" page)    supervisor r-x
//! 0x8000  hypercall trampoline             user       r-x
//! 0x9000  fault record                     supervisor rw-
//! 0xa000  ring-0 stack (RSP0)              supervisor rw-   (2 pages)
//! 0xc000  IST1 stack (#DF, NMI, #MC)       supervisor rw-
//! 0x10000 page tables (up to IMAGE_BASE)   not mapped
//! ```

use super::paging::Mapping;
use septem_abi::{IMAGE_BASE, PAGE_SIZE};

/// Global descriptor table.
pub const GDT: u64 = 0x1000;
/// Interrupt descriptor table.
pub const IDT: u64 = 0x2000;
/// Task-state segment (104 bytes), followed by its I/O permission bitmap.
pub const TSS: u64 = 0x3000;
/// One past the TSS pages.
pub const TSS_END: u64 = 0x6000;
/// Ring-0 exception stubs: 16 bytes per vector, then the common tail.
pub const STUBS: u64 = 0x6000;
/// Where `LSTAR` points: a supervisor page, so a guest `syscall` faults (or, on
/// hardware KVM where `syscall` enters ring 0, runs a reporting stub).
pub const SYSCALL_PAGE: u64 = 0x7000;
/// The hypercall trampoline (`BootInfo::hypercall`).
pub const TRAMPOLINE: u64 = 0x8000;
/// The ring-0 stubs store a [`super::fault::FaultRecord`] here.
pub const FAULT_RECORD: u64 = 0x9000;
/// Ring-0 stack, used on every exception from CPL3.
pub const STACK0: u64 = 0xa000;
/// Top of the ring-0 stack (`TSS.RSP0`).
pub const STACK0_TOP: u64 = 0xc000;
/// IST1 stack, for #DF, NMI and #MC.
pub const IST1: u64 = 0xc000;
/// Top of the IST1 stack.
pub const IST1_TOP: u64 = 0xd000;
/// First page-table page (the PML4).
pub const PAGE_TABLES: u64 = 0x1_0000;
/// One past the last byte page tables may use.
pub const PAGE_TABLES_END: u64 = IMAGE_BASE;

/// The I/O port the exception stubs report on (closed to CPL3 by the TSS bitmap).
pub const FAULT_PORT: u16 = 0x5ff;

/// Mappings of the monitor area, as the guest page tables must show them.
#[must_use]
pub fn mappings() -> [Mapping; 9] {
    let sup = |start: u64, end: u64, write: bool, exec: bool| Mapping {
        start,
        end,
        user: false,
        write,
        exec,
    };
    [
        sup(GDT, GDT + PAGE_SIZE, true, false),
        sup(IDT, IDT + PAGE_SIZE, false, false),
        sup(TSS, TSS_END, true, false),
        sup(STUBS, STUBS + PAGE_SIZE, false, true),
        sup(SYSCALL_PAGE, SYSCALL_PAGE + PAGE_SIZE, false, true),
        Mapping {
            start: TRAMPOLINE,
            end: TRAMPOLINE + PAGE_SIZE,
            user: true,
            write: false,
            exec: true,
        },
        sup(FAULT_RECORD, FAULT_RECORD + PAGE_SIZE, true, false),
        sup(STACK0, STACK0_TOP, true, false),
        sup(IST1, IST1_TOP, true, false),
    ]
}
