//! Guest fault and forbidden-syscall reports, the same words on both backends.
//!
//! A backend fills a [`FaultReport`] from what it knows (the seccomp backend from the
//! signal's `siginfo`/`ucontext`, the KVM backend from the exception its IDT stubs
//! copied out) and writes it with [`FaultReport::write_report`] into a [`FmtBuf`]:
//! nothing here allocates, so it runs in signal handlers after sealing.
//!
//! ```text
//! septem-run: guest fault: page fault at address 0x0 (read of unmapped memory) rip=0x1001a3 in fault::main+0x13
//! ```

use crate::fmtbuf::FmtBuf;
use crate::syscall_names::{syscall_name, X32_SYSCALL_BIT};
use core::fmt::{self, Write};
use septem_image::Image;

/// Page-fault error code: the page was present (a protection violation).
pub const PF_PRESENT: u64 = 1 << 0;
/// Page-fault error code: the access was a write.
pub const PF_WRITE: u64 = 1 << 1;
/// Page-fault error code: the access came from user mode.
pub const PF_USER: u64 = 1 << 2;
/// Page-fault error code: a reserved bit was set in a paging structure.
pub const PF_RESERVED: u64 = 1 << 3;
/// Page-fault error code: the access was an instruction fetch.
pub const PF_FETCH: u64 = 1 << 4;

/// What went wrong: an x86 exception vector, or something a backend knows otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// An exception vector (0..=31).
    Exception(u8),
    /// A bus error (SIGBUS without a page-fault vector).
    BusError,
    /// A host signal that is not a CPU exception (number given).
    Signal(i32),
}

impl FaultKind {
    /// #DE.
    pub const DIVIDE_ERROR: FaultKind = FaultKind::Exception(0);
    /// #BP.
    pub const BREAKPOINT: FaultKind = FaultKind::Exception(3);
    /// #UD.
    pub const INVALID_OPCODE: FaultKind = FaultKind::Exception(6);
    /// #GP.
    pub const GENERAL_PROTECTION: FaultKind = FaultKind::Exception(13);
    /// #PF.
    pub const PAGE_FAULT: FaultKind = FaultKind::Exception(14);

    /// Human words for it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Exception(v) => match v {
                0 => "divide error",
                1 => "debug exception",
                2 => "non-maskable interrupt",
                3 => "breakpoint",
                4 => "overflow",
                5 => "bound range exceeded",
                6 => "invalid opcode",
                7 => "device not available",
                8 => "double fault",
                10 => "invalid TSS",
                11 => "segment not present",
                12 => "stack-segment fault",
                13 => "general protection fault",
                14 => "page fault",
                16 => "x87 floating-point error",
                17 => "alignment check",
                18 => "machine check",
                19 => "SIMD floating-point exception",
                20 => "virtualization exception",
                21 => "control protection exception",
                _ => "exception",
            },
            FaultKind::BusError => "bus error",
            FaultKind::Signal(_) => "signal",
        }
    }
}

/// Everything known about one guest fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultReport {
    /// What happened.
    pub kind: FaultKind,
    /// Guest instruction pointer (for traps such as int3: the next instruction).
    pub rip: u64,
    /// The faulting address (CR2 / `si_addr`) when the fault has one.
    pub addr: Option<u64>,
    /// The exception's error code, when it has one.
    pub error_code: Option<u64>,
    /// The stack guard page `[start, end)`: a fault there is a stack overflow.
    pub stack_guard: Option<(u64, u64)>,
}

/// `(access, what)` words for a page-fault error code, e.g. ("read of", "unmapped memory").
fn page_fault_words(code: u64) -> (&'static str, &'static str) {
    let access = if code & PF_FETCH != 0 {
        "instruction fetch from"
    } else if code & PF_WRITE != 0 {
        "write to"
    } else {
        "read of"
    };
    let what = if code & PF_RESERVED != 0 {
        "memory with a reserved page-table bit"
    } else if code & PF_PRESENT == 0 {
        "unmapped memory"
    } else if code & PF_FETCH != 0 {
        "non-executable memory"
    } else if code & PF_WRITE != 0 {
        "read-only memory"
    } else {
        "non-readable memory"
    };
    (access, what)
}

/// Writes ` in sym+0x13`, or where the address lies when no symbol covers it.
pub fn write_location<const N: usize>(out: &mut FmtBuf<N>, image: &Image, addr: u64) {
    let segment = image
        .segments
        .iter()
        .find(|s| addr >= s.vaddr && addr < s.page_end());
    let _ = match (image.symbolize(addr), segment) {
        (Some((name, off)), _) => write!(out, " in {name}+{off:#x}"),
        (None, Some(seg)) => write!(
            out,
            " (in the image's {} segment at {:#x}, no symbol)",
            seg.perms, seg.vaddr
        ),
        (None, None) => write!(out, " (outside the guest image)"),
    };
}

impl FaultReport {
    /// True when the fault address lies in the stack guard page.
    #[must_use]
    pub fn is_stack_overflow(&self) -> bool {
        match (self.addr, self.stack_guard) {
            (Some(a), Some((lo, hi))) => a >= lo && a < hi,
            _ => false,
        }
    }

    /// Writes the one-line report (with its newline), naming functions from `image`.
    pub fn write_report<const N: usize>(&self, image: &Image, out: &mut FmtBuf<N>) {
        let _ = self.write_words(out);
        let _ = write!(out, " rip={:#x}", self.rip);
        write_location(out, image, self.rip);
        let _ = writeln!(out);
    }

    fn write_words<const N: usize>(&self, out: &mut FmtBuf<N>) -> fmt::Result {
        write!(out, "septem-run: guest fault: {}", self.kind.name())?;
        match self.kind {
            FaultKind::Exception(14) => {
                let addr = self.addr.unwrap_or(0);
                write!(out, " at address {addr:#x}")?;
                let (access, what) = page_fault_words(self.error_code.unwrap_or(0));
                if self.is_stack_overflow() {
                    let access = access.trim_end_matches(" of").trim_end_matches(" to");
                    let access = access.trim_end_matches(" from");
                    write!(
                        out,
                        " (stack overflow: {access} in the guard page below the stack)"
                    )
                } else {
                    write!(out, " ({access} {what})")
                }
            }
            FaultKind::BusError => match self.addr {
                Some(a) => write!(out, " at address {a:#x}"),
                None => Ok(()),
            },
            FaultKind::Exception(v @ (8 | 10..=13 | 17 | 21)) => {
                write!(out, " (vector {v}")?;
                if let Some(code) = self.error_code.filter(|&c| c != 0) {
                    write!(out, ", error code {code:#x}")?;
                }
                if self.is_stack_overflow() {
                    write!(out, ", stack overflow")?;
                }
                write!(out, ")")
            }
            FaultKind::Exception(v) => write!(out, " (vector {v})"),
            FaultKind::Signal(sig) => write!(out, " {sig}"),
        }
    }
}

/// Writes `syscall name (nr)` for a syscall made on architecture `arch`.
fn write_syscall<const N: usize>(out: &mut FmtBuf<N>, nr: u64, arch: u32) {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    let _ = match arch {
        AUDIT_ARCH_X86_64 if nr & X32_SYSCALL_BIT != 0 => {
            let native = nr & !X32_SYSCALL_BIT;
            match syscall_name(native) {
                Some(name) => write!(out, "x32-ABI {name} ({nr:#x})"),
                None => write!(out, "x32-ABI {nr:#x}"),
            }
        }
        AUDIT_ARCH_X86_64 => match syscall_name(nr) {
            Some(name) => write!(out, "{name} ({nr})"),
            None => write!(out, "{nr}"),
        },
        AUDIT_ARCH_I386 => write!(out, "32-bit (int 0x80) syscall {nr}"),
        other => write!(out, "syscall {nr} of audit architecture {other:#x}"),
    };
}

/// Writes the report for a forbidden syscall: the guest's (`made_by_guest`) or, after
/// sealing, the monitor's own (a bug). `allowed` is the prose list of allowed syscalls.
/// `call_addr` is where the syscall was made.
#[allow(clippy::too_many_arguments)]
pub fn write_forbidden_syscall<const N: usize>(
    out: &mut FmtBuf<N>,
    nr: u64,
    arch: u32,
    call_addr: u64,
    image: Option<&Image>,
    made_by_guest: bool,
    allowed: impl fmt::Display,
) {
    if made_by_guest {
        let _ = write!(out, "septem-run: guest stopped: forbidden syscall ");
        write_syscall(out, nr, arch);
        let _ = writeln!(out, ": the seccomp policy allows only {allowed}");
        let _ = write!(out, "septem-run: the syscall was made at {call_addr:#x}");
    } else {
        let _ = write!(
            out,
            "septem-run: internal error: the sealed monitor made forbidden syscall "
        );
        write_syscall(out, nr, arch);
        let _ = write!(
            out,
            " at {call_addr:#x}, outside the guest image: a septem-run bug (unless the guest jumped into monitor code), please report it (policy: {allowed})"
        );
    }
    if let (true, Some(image)) = (made_by_guest, image) {
        write_location(out, image, call_addr);
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny valid image is not needed for most words; these use one built by hand
    /// through `Image::parse` failing, so location tests live with the backends.
    fn words(r: &FaultReport) -> String {
        let mut b = FmtBuf::<512>::new();
        r.write_words(&mut b).unwrap();
        String::from_utf8(b.as_bytes().to_vec()).unwrap()
    }

    fn pf(addr: u64, code: u64) -> FaultReport {
        FaultReport {
            kind: FaultKind::PAGE_FAULT,
            rip: 0x10_01a3,
            addr: Some(addr),
            error_code: Some(code),
            stack_guard: Some((0x03ef_f000, 0x03f0_0000)),
        }
    }

    #[test]
    fn page_faults_say_what_was_touched() {
        assert_eq!(
            words(&pf(0, PF_USER)),
            "septem-run: guest fault: page fault at address 0x0 (read of unmapped memory)"
        );
        assert_eq!(
            words(&pf(0x10_0000, PF_USER | PF_WRITE | PF_PRESENT)),
            "septem-run: guest fault: page fault at address 0x100000 (write to read-only memory)"
        );
        assert_eq!(
            words(&pf(0x20_0000, PF_USER | PF_FETCH | PF_PRESENT)),
            "septem-run: guest fault: page fault at address 0x200000 (instruction fetch from non-executable memory)"
        );
        assert_eq!(
            words(&pf(0x03ef_fff8, PF_USER | PF_WRITE)),
            "septem-run: guest fault: page fault at address 0x3effff8 (stack overflow: write in the guard page below the stack)"
        );
    }

    #[test]
    fn other_exceptions_are_named() {
        let r = FaultReport {
            kind: FaultKind::INVALID_OPCODE,
            rip: 0x10_0000,
            addr: None,
            error_code: None,
            stack_guard: None,
        };
        assert_eq!(
            words(&r),
            "septem-run: guest fault: invalid opcode (vector 6)"
        );
        let r = FaultReport {
            kind: FaultKind::GENERAL_PROTECTION,
            error_code: Some(0x18),
            ..r
        };
        assert_eq!(
            words(&r),
            "septem-run: guest fault: general protection fault (vector 13, error code 0x18)"
        );
        assert_eq!(FaultKind::DIVIDE_ERROR.name(), "divide error");
        assert_eq!(FaultKind::BREAKPOINT.name(), "breakpoint");
    }

    #[test]
    fn forbidden_syscalls_are_named() {
        let mut b = FmtBuf::<1024>::new();
        write_forbidden_syscall(
            &mut b,
            39,
            0xc000_003e,
            0x10_0040,
            None,
            true,
            "read and exit_group",
        );
        let text = String::from_utf8(b.as_bytes().to_vec()).unwrap();
        assert_eq!(
            text,
            "septem-run: guest stopped: forbidden syscall getpid (39): the seccomp policy allows only read and exit_group\n\
             septem-run: the syscall was made at 0x100040\n"
        );
        let mut b = FmtBuf::<1024>::new();
        write_forbidden_syscall(&mut b, 0x4000_0027, 0xc000_003e, 0, None, true, "x");
        assert!(String::from_utf8_lossy(b.as_bytes()).contains("x32-ABI getpid (0x40000027)"));
        let mut b = FmtBuf::<1024>::new();
        write_forbidden_syscall(&mut b, 400, 0xc000_003e, 0, None, true, "x");
        assert!(String::from_utf8_lossy(b.as_bytes()).contains("forbidden syscall 400: "));
        let mut b = FmtBuf::<1024>::new();
        write_forbidden_syscall(&mut b, 9, 0xc000_003e, 0x5555_0000, None, false, "x");
        assert!(String::from_utf8_lossy(b.as_bytes()).starts_with(
            "septem-run: internal error: the sealed monitor made forbidden syscall mmap (9)"
        ));
    }
}
