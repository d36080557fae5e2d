//! The way in (the trampoline onto the guest's stack) and the way back (the hypercall
//! entry the guest calls through `BootInfo::hypercall`).

use super::STATE;
use crate::dispatch::{dispatch, Action};
use crate::host::{exit_group, SysHost};
use septem_abi::{GuestAddr, HcError};

// The address `BootInfo::hypercall` holds: a tiny shim that makes the call safe for
// Rust code whatever state a (possibly C, possibly buggy) guest calls it in: it clears
// the direction flag and aligns the stack to 16 bytes (Rust may use aligned SSE moves
// on its stack) before calling `septem_spt_hypercall`, and restores RSP afterwards.
// Callee-saved registers are preserved: RBP by the shim, the rest by the Rust function.
core::arch::global_asm!(
    ".pushsection .text.septem_spt_hypercall_entry,\"ax\",@progbits",
    ".globl septem_spt_hypercall_entry",
    ".type septem_spt_hypercall_entry,@function",
    "septem_spt_hypercall_entry:",
    "push rbp",
    "mov rbp, rsp",
    "and rsp, -16",
    "cld",
    "call {inner}",
    "mov rsp, rbp",
    "pop rbp",
    "ret",
    ".size septem_spt_hypercall_entry, . - septem_spt_hypercall_entry",
    ".popsection",
    inner = sym septem_spt_hypercall,
);

extern "sysv64" {
    /// The hypercall entry the guest calls (see the shim above).
    pub fn septem_spt_hypercall_entry(nr: u64, arg: *mut u8) -> i64;
}

/// The hypercall handler of the seccomp backend, called through
/// `septem_spt_hypercall_entry`.
///
/// Runs on the guest's stack, after sealing: it only uses the state set before
/// sealing, the bounds-checked guest memory and [`SysHost`] (no allocation, no locks).
/// `Exit` ends the process here with `exit_group` (the console is unbuffered).
pub extern "sysv64" fn septem_spt_hypercall(nr: u64, arg: *mut u8) -> i64 {
    let Some(state) = STATE.get() else {
        return HcError::Unsupported.code();
    };
    let mut host: SysHost = state.host;
    match dispatch(
        &state.mem,
        &mut host,
        state.config,
        nr,
        GuestAddr::new(arg as u64),
    ) {
        Action::Resume(value) => value,
        Action::Exit(status) => exit_group(status),
    }
}

/// Jumps to the guest's `entry` with `RSP = stack_ptr`, `RDI = boot_info`, the other
/// general registers zero and the direction flag clear. Never returns: the guest ends
/// the process through the `Exit`/`Abort` hypercalls or a reported fault.
///
/// # Safety
/// Guest memory must be loaded and protected, `entry` must be in an executable guest
/// segment, `stack_ptr` 8 below a 16-byte aligned stack top in writable guest memory
/// (as after a `call`), and the process sealed: the monitor's own stack is abandoned.
pub unsafe fn enter_guest(entry: u64, stack_ptr: u64, boot_info: u64) -> ! {
    // SAFETY: per the caller's contract; the asm switches to the guest stack and never
    // comes back, so no Rust state is live afterwards.
    unsafe {
        core::arch::asm!(
            "mov rsp, r12",
            "xor eax, eax",
            "xor ebx, ebx",
            "xor ecx, ecx",
            "xor edx, edx",
            "xor esi, esi",
            "xor ebp, ebp",
            "xor r8d, r8d",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "xor r11d, r11d",
            "xor r12d, r12d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            "cld",
            "jmp r13",
            in("r12") stack_ptr,
            in("r13") entry,
            in("rdi") boot_info,
            options(noreturn)
        )
    }
}
