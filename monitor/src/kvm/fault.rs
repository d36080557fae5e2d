//! Guest exceptions and VM failures, turned into reports for the user.
//!
//! The ring-0 stubs (see [`super::stubs`]) leave a [`FaultRecord`] in the monitor page
//! at [`super::lowmem::FAULT_RECORD`]; the run loop reads it through a `GuestMemory`
//! view of that page and classifies it here. Everything here runs after sealing: it
//! formats into fixed buffers and never allocates.

use crate::exit_status;
use crate::fault::{write_location, FaultKind, FaultReport, PF_FETCH, PF_USER};
use crate::fmtbuf::FmtBuf;
use crate::layout::Layout;
use crate::memory::GuestMemory;
use crate::syscall_names::syscall_name;
use core::fmt::Write;
use septem_abi::GuestAddr;
use septem_image::Image;

/// Byte offsets in the fault record (one `u64` each).
pub mod rec {
    /// Vector (0..=31), or [`super::super::stubs::SYSCALL_VECTOR`].
    pub const VECTOR: u64 = 0;
    /// Error code (0 when the CPU pushes none).
    pub const ERROR: u64 = 8;
    /// Faulting RIP.
    pub const RIP: u64 = 16;
    /// CS at the fault.
    pub const CS: u64 = 24;
    /// RFLAGS at the fault.
    pub const RFLAGS: u64 = 32;
    /// RSP at the fault.
    pub const RSP: u64 = 40;
    /// SS at the fault.
    pub const SS: u64 = 48;
    /// CR2 (the faulting address of a #PF).
    pub const CR2: u64 = 56;
    /// RAX.
    pub const RAX: u64 = 64;
    /// RBX.
    pub const RBX: u64 = 72;
    /// RCX.
    pub const RCX: u64 = 80;
    /// RDX.
    pub const RDX: u64 = 88;
    /// RSI.
    pub const RSI: u64 = 96;
    /// RDI.
    pub const RDI: u64 = 104;
    /// RBP.
    pub const RBP: u64 = 112;
    /// R8.
    pub const R8: u64 = 120;
    /// R9.
    pub const R9: u64 = 128;
    /// R10.
    pub const R10: u64 = 136;
    /// R11.
    pub const R11: u64 = 144;
    /// R12.
    pub const R12: u64 = 152;
    /// R13.
    pub const R13: u64 = 160;
    /// R14.
    pub const R14: u64 = 168;
    /// R15.
    pub const R15: u64 = 176;
    /// Size of the record.
    pub const SIZE: u64 = 184;
}

/// What the exception stubs store (see [`rec`] for the offsets).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultRecord {
    /// Vector.
    pub vector: u64,
    /// Error code.
    pub error: u64,
    /// RIP.
    pub rip: u64,
    /// CS.
    pub cs: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// RSP.
    pub rsp: u64,
    /// SS.
    pub ss: u64,
    /// CR2.
    pub cr2: u64,
    /// RAX, RBX, RCX, RDX, RSI, RDI, RBP, R8..=R15.
    pub gprs: [u64; 15],
}
septem_abi::assert_size!(FaultRecord, rec::SIZE as usize);

// SAFETY: `#[repr(C)]`, only `u64` fields, no padding, valid for every bit pattern.
unsafe impl crate::memory::Pod for FaultRecord {}

impl FaultRecord {
    /// RAX at the fault.
    #[must_use]
    pub fn rax(&self) -> u64 {
        self.gprs[0]
    }

    /// RCX at the fault.
    #[must_use]
    pub fn rcx(&self) -> u64 {
        self.gprs[2]
    }
}

/// Everything a report may mention about the guest.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The image (for symbols).
    pub image: &'a Image,
    /// The layout (to recognize the stack guard page).
    pub layout: &'a Layout,
    /// Guest memory (to read the instruction at a faulting RIP).
    pub mem: &'a GuestMemory,
}

/// A classified stop: what to print and which status to exit with.
#[derive(Debug)]
pub struct Report {
    /// Text for standard error (ends with a newline).
    pub text: FmtBuf<1024>,
    /// Exit status.
    pub status: u8,
}

/// True when the record is a `syscall` caught through `LSTAR` (`syscall_page` is the
/// page `LSTAR` points at): the hardware-path stub's pseudo-vector, or (under
/// `kvm_pvm`) a user-mode instruction fetch #PF at exactly that address.
#[must_use]
pub fn is_syscall(r: &FaultRecord, syscall_page: u64) -> bool {
    r.vector == super::stubs::SYSCALL_VECTOR
        || (r.vector == 14
            && r.cr2 == syscall_page
            && r.rip == syscall_page
            && r.error & PF_FETCH != 0)
}

/// Builds the report for a fault the stubs recorded.
#[must_use]
pub fn report_fault(r: &FaultRecord, ctx: &Context<'_>, syscall_page: u64) -> Report {
    let mut text = FmtBuf::new();
    let syscall = if is_syscall(r, syscall_page) {
        // RCX holds the address after the 2-byte `syscall`.
        Some((
            "a syscall instruction",
            "rax",
            r.rax(),
            r.rcx().wrapping_sub(2),
        ))
    } else if matches!(r.vector, 6 | 13) {
        // `int 0x80` and `sysenter` fault (#GP on hardware, #UD under kvm_pvm).
        let insn = ctx.mem.read_bytes(GuestAddr::new(r.rip), 2).ok();
        match insn {
            Some([0xcd, 0x80]) => Some((
                "int 0x80 (a 32-bit syscall)",
                "eax",
                r.rax() & 0xffff_ffff,
                r.rip,
            )),
            Some([0x0f, 0x34]) => Some((
                "sysenter (a 32-bit syscall)",
                "eax",
                r.rax() & 0xffff_ffff,
                r.rip,
            )),
            Some([0x0f, 0x05]) => Some(("a syscall instruction", "rax", r.rax(), r.rip)),
            _ => None,
        }
    } else {
        None
    };
    if let Some((what, reg, nr, at)) = syscall {
        let _ = write!(text, "septem-run: guest executed {what} ({reg} = {nr}");
        if let Some(name) = syscall_name(nr).filter(|_| reg == "rax") {
            let _ = write!(text, ", {name}?");
        }
        let _ = write!(text, ") at {at:#x}");
        write_location(&mut text, ctx.image, at);
        let _ = writeln!(text, "; a guest reaches the host only through hypercalls");
        return Report {
            text,
            status: exit_status::FORBIDDEN_SYSCALL,
        };
    }
    let vector = u8::try_from(r.vector).unwrap_or(u8::MAX);
    let has_code = super::idt::has_error_code(vector);
    let report = FaultReport {
        kind: FaultKind::Exception(vector),
        rip: r.rip,
        addr: (vector == 14).then_some(r.cr2),
        error_code: has_code.then_some(r.error),
        stack_guard: Some((ctx.layout.stack_guard, ctx.layout.stack_bottom)),
    };
    report.write_report(ctx.image, &mut text);
    if vector == 14 && r.error & PF_USER == 0 {
        let _ = writeln!(
            text,
            "septem-run: (the fault was in the monitor's ring-0 code: a septem-run bug)"
        );
    }
    Report {
        text,
        status: exit_status::GUEST_FAULT,
    }
}

/// What the monitor could learn about a VM that stopped without a fault record (from
/// the registers KVM copies into the `kvm_run` page on every exit).
#[derive(Clone, Copy, Debug, Default)]
pub struct VmState {
    /// RIP.
    pub rip: Option<u64>,
    /// CR2.
    pub cr2: Option<u64>,
    /// A pending or injected exception vector.
    pub exception: Option<u8>,
    /// Its error code, if it has one.
    pub error_code: Option<u32>,
}

/// Builds the report for a VM failure (`what`: e.g. "triple fault (KVM_EXIT_SHUTDOWN)").
#[must_use]
pub fn report_vm_failure(what: &str, detail: u64, state: &VmState, ctx: &Context<'_>) -> Report {
    let mut text = FmtBuf::new();
    let _ = write!(text, "septem-run: virtual machine failure: {what}");
    if detail != 0 {
        let _ = write!(text, " ({detail:#x})");
    }
    if let Some(rip) = state.rip {
        let _ = write!(text, " at rip={rip:#x}");
        write_location(&mut text, ctx.image, rip);
    }
    if let Some(v) = state.exception {
        let _ = write!(
            text,
            "; last exception: {} (vector {v})",
            FaultKind::Exception(v).name()
        );
        if let Some(code) = state.error_code {
            let _ = write!(text, ", error code {code:#x}");
        }
    }
    if let Some(cr2) = state.cr2.filter(|&c| c != 0) {
        let _ = write!(text, "; cr2={cr2:#x}");
    }
    let _ = writeln!(text);
    Report {
        text,
        status: exit_status::VM_FAILURE,
    }
}
