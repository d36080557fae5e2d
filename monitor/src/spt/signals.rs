//! Guest fault reports under the seccomp backend: SIGSEGV, SIGBUS, SIGILL, SIGFPE and
//! SIGTRAP handlers (on the alternate signal stack) turn the kernel's `siginfo` and
//! `ucontext` into a [`FaultReport`], write it with `write` and end the process with
//! [`exit_status::GUEST_FAULT`]. Installed before sealing; no allocation.

use super::STATE;
use crate::exit_status;
use crate::fault::{FaultKind, FaultReport};
use crate::fmtbuf::FmtBuf;
use crate::host::{exit_group, write_all, STDERR_FD};
use crate::seccomp::install_handler;
use core::fmt::Write;
use std::io;

/// The signals a guest fault raises.
pub const FAULT_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
];

/// Installs the fault reporters (the alternate stack must already be set up).
pub fn install_fault_handlers() -> io::Result<()> {
    for sig in FAULT_SIGNALS {
        install_handler(sig, on_fault)?;
    }
    Ok(())
}

/// The common head of Linux's `siginfo_t` on x86-64 plus the first union word
/// (`si_addr` for SIGSEGV/SIGBUS/SIGILL/SIGFPE, `si_pid`/`si_uid` for SI_USER).
#[repr(C)]
struct SigInfoHead {
    si_signo: libc::c_int,
    si_errno: libc::c_int,
    si_code: libc::c_int,
    _pad: libc::c_int,
    addr_or_pid: u64,
}

fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTRAP => "SIGTRAP",
        _ => "a signal",
    }
}

/// The fault kind from the signal and the trap number the kernel recorded.
pub(crate) fn fault_kind(sig: libc::c_int, trapno: u64) -> FaultKind {
    let vector = u8::try_from(trapno).ok().filter(|&v| v < 32);
    match (sig, vector) {
        (libc::SIGSEGV, Some(v @ (11..=14 | 21))) => FaultKind::Exception(v),
        (libc::SIGSEGV, _) => FaultKind::PAGE_FAULT,
        (libc::SIGBUS, Some(17)) => FaultKind::Exception(17),
        (libc::SIGBUS, _) => FaultKind::BusError,
        (libc::SIGILL, Some(v @ (6 | 13))) => FaultKind::Exception(v),
        (libc::SIGILL, _) => FaultKind::INVALID_OPCODE,
        (libc::SIGFPE, Some(v @ (0 | 16 | 19))) => FaultKind::Exception(v),
        (libc::SIGFPE, _) => FaultKind::DIVIDE_ERROR,
        (libc::SIGTRAP, Some(v @ (1 | 3))) => FaultKind::Exception(v),
        (libc::SIGTRAP, _) => FaultKind::BREAKPOINT,
        (other, _) => FaultKind::Signal(other),
    }
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t (128 bytes) to an SA_SIGINFO handler;
    // `SigInfoHead` covers its first 24 bytes.
    let info = unsafe { &*info.cast::<SigInfoHead>() };
    let mut out = FmtBuf::<1024>::new();
    if info.si_code <= 0 {
        // Sent by a process (kill, sigqueue), not raised by the guest's execution.
        let pid = info.addr_or_pid as u32;
        let _ = writeln!(
            out,
            "septem-run: stopped by {} sent by process {pid}",
            signal_name(sig)
        );
        let _ = write_all(STDERR_FD, out.as_bytes());
        exit_group(128u8.wrapping_add(sig as u8));
    }
    // SAFETY: for SA_SIGINFO handlers the third argument is the interrupted context.
    let uc = unsafe { &*ctx.cast::<libc::ucontext_t>() };
    let greg = |r: libc::c_int| uc.uc_mcontext.gregs[r as usize] as u64;
    let kind = fault_kind(sig, greg(libc::REG_TRAPNO));
    let addr = match kind {
        FaultKind::Exception(14) | FaultKind::BusError => Some(info.addr_or_pid),
        _ => None,
    };
    let error_code = match kind {
        FaultKind::Exception(8 | 10..=14 | 17 | 21) => Some(greg(libc::REG_ERR)),
        _ => None,
    };
    let state = STATE.get();
    let report = FaultReport {
        kind,
        rip: greg(libc::REG_RIP),
        addr,
        error_code,
        stack_guard: state.map(|s| (s.layout.stack_guard, s.layout.stack_bottom)),
    };
    match state {
        Some(s) => report.write_report(s.image, &mut out),
        None => {
            let _ = writeln!(out, "septem-run: {} at rip={:#x}", kind.name(), report.rip);
        }
    }
    let _ = write_all(STDERR_FD, out.as_bytes());
    exit_group(exit_status::GUEST_FAULT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_trap_number() {
        assert_eq!(fault_kind(libc::SIGSEGV, 14), FaultKind::PAGE_FAULT);
        assert_eq!(fault_kind(libc::SIGSEGV, 13), FaultKind::GENERAL_PROTECTION);
        assert_eq!(fault_kind(libc::SIGILL, 6), FaultKind::INVALID_OPCODE);
        assert_eq!(fault_kind(libc::SIGFPE, 0), FaultKind::DIVIDE_ERROR);
        assert_eq!(fault_kind(libc::SIGTRAP, 3), FaultKind::BREAKPOINT);
        assert_eq!(fault_kind(libc::SIGBUS, 14), FaultKind::BusError);
        // Implausible trap numbers fall back to the signal's usual meaning.
        assert_eq!(fault_kind(libc::SIGILL, 999), FaultKind::INVALID_OPCODE);
        assert_eq!(fault_kind(libc::SIGSEGV, 6), FaultKind::PAGE_FAULT);
    }

    #[test]
    fn siginfo_head_layout() {
        assert_eq!(core::mem::offset_of!(SigInfoHead, addr_or_pid), 16);
    }
}
