//! Sealing the monitor with seccomp: the policy (reviewed data), its BPF compilation,
//! the SIGSYS reporter, and the sealing step itself. Used by both backends (the KVM
//! backend seals its vCPU process with [`policy::KVM_POLICY`]).
//!
//! Order (DESIGN.md): allocate everything first (guest memory, the image's symbols,
//! buffers, [`compile`] the filter), then [`prepare_signals`] (alternate signal stack,
//! SIGSYS reporter, SIGPIPE ignored) and the backend's own fault handlers, then
//! [`seal`]. After sealing: no allocation, no locks that may syscall, no `tracing`, no
//! `println!`; output goes through [`crate::host::write_all`].
//!
//! The default action is `SECCOMP_RET_TRAP`, not `KILL_PROCESS`: the user must learn
//! *which* syscall was refused (see docs/threat-model.md). The SIGSYS handler writes one
//! report with `write` and ends the process with `exit_group`; should it itself make a
//! forbidden syscall, SIGSYS is blocked inside its handler and the kernel kills the
//! process instead (the last resort).

pub mod filter;
pub mod policy;

use crate::backend::BackendKind;
use crate::exit_status;
use crate::fault::write_forbidden_syscall;
use crate::fmtbuf::FmtBuf;
use crate::host::{exit_group, write_all, STDERR_FD};
use core::fmt;
use seccompiler::BpfProgram;
use septem_image::Image;
use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;

pub use filter::FilterError;

/// The fds the policy's classes resolve to, known at seal time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealFds {
    /// Console output (normally 1 and 2).
    pub console: Vec<RawFd>,
    /// Tap devices.
    pub tap: Vec<RawFd>,
    /// Block device files.
    pub block: Vec<RawFd>,
    /// The vCPU fd (kvm backend).
    pub vcpu: Option<RawFd>,
    /// The status pipe to the parent (kvm backend).
    pub control: Option<RawFd>,
    /// The shutdown signalfd ([`crate::host::ShutdownSignal`]).
    pub signal: Option<RawFd>,
}

impl SealFds {
    /// Only the console: standard output and standard error.
    #[must_use]
    pub fn console_only() -> Self {
        SealFds {
            console: vec![crate::host::STDOUT_FD, STDERR_FD],
            ..SealFds::default()
        }
    }
}

/// Builds the BPF program for a backend's policy with these fds (allocates: before
/// sealing).
pub fn compile(kind: BackendKind, fds: &SealFds) -> Result<BpfProgram, FilterError> {
    filter::compile(policy::policy_for(kind), fds)
}

/// Sets `PR_SET_NO_NEW_PRIVS` and installs `prog` (through seccompiler's
/// `apply_filter`: `prctl` then `seccomp(SECCOMP_SET_MODE_FILTER)`, nothing after).
/// From here on the process may make only the policy's syscalls.
pub fn seal(prog: &BpfProgram) -> io::Result<()> {
    seccompiler::apply_filter(prog).map_err(|e| match e {
        seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
        other => io::Error::other(other.to_string()),
    })
}

/// What the SIGSYS reporter needs, set once before sealing.
#[derive(Debug)]
struct SigsysContext {
    kind: BackendKind,
    /// The guest image, when the guest runs in this process (seccomp backend).
    image: Option<&'static Image>,
}

static SIGSYS_CONTEXT: OnceLock<SigsysContext> = OnceLock::new();

/// Size of the alternate signal stack the reporters run on.
pub const SIGNAL_STACK_SIZE: usize = 256 << 10;

/// Allocates and installs an alternate signal stack (with a guard page below it), so
/// handlers run even when the guest's stack is exhausted. The memory is never freed.
pub fn install_signal_stack() -> io::Result<()> {
    let page = septem_abi::PAGE_SIZE as usize;
    let total = SIGNAL_STACK_SIZE + page;
    // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the first page of the mapping we just made becomes the guard page.
    if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let stack = libc::stack_t {
        // SAFETY: `page` is inside the `total`-byte mapping.
        ss_sp: unsafe { base.cast::<u8>().add(page) }.cast(),
        ss_flags: 0,
        ss_size: SIGNAL_STACK_SIZE,
    };
    // SAFETY: `stack` describes memory that stays mapped for the life of the process.
    if unsafe { libc::sigaltstack(&stack, core::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A signal handler taking `siginfo_t` and the `ucontext_t`.
pub type SigactionFn = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Installs `handler` for `sig` with `SA_SIGINFO | SA_ONSTACK`, every other signal
/// blocked while it runs (and `sig` itself, so a second one inside the handler kills
/// the process: the kernel's last resort).
pub fn install_handler(sig: libc::c_int, handler: SigactionFn) -> io::Result<()> {
    // SAFETY: zero is a valid `sigaction` (empty mask, no flags) before we fill it.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `sa.sa_mask` is a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut sa.sa_mask) };
    // SAFETY: `sa` is fully initialized; the handler is an `extern "C"` function that
    // only makes async-signal-safe calls.
    if unsafe { libc::sigaction(sig, &sa, core::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets up the signal side of sealing: the alternate signal stack, the SIGSYS reporter
/// for `kind`'s policy, and SIGPIPE ignored (a closed console must be an `EPIPE` the
/// host reports, not a silent death). `image` is the guest when it runs in this
/// process. Call once, before [`seal`].
pub fn prepare_signals(kind: BackendKind, image: Option<&'static Image>) -> io::Result<()> {
    SIGSYS_CONTEXT
        .set(SigsysContext { kind, image })
        .map_err(|_| io::Error::other("the SIGSYS reporter was already set up"))?;
    install_signal_stack()?;
    install_handler(libc::SIGSYS, on_sigsys)?;
    // SAFETY: setting a signal's disposition to "ignore".
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `_sigsys` member of Linux's `siginfo_t` on x86-64 (libc does not expose it).
#[repr(C)]
struct SigsysInfo {
    si_signo: libc::c_int,
    si_errno: libc::c_int,
    si_code: libc::c_int,
    _pad: libc::c_int,
    call_addr: u64,
    syscall: libc::c_int,
    arch: u32,
}

/// `SYS_SECCOMP`: the `si_code` of a SIGSYS raised by a seccomp `RET_TRAP`.
const SYS_SECCOMP: libc::c_int = 1;

struct AllowedList(&'static [policy::Rule]);

impl fmt::Display for AllowedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        policy::write_name_list(f, self.0)
    }
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t (128 bytes) for an SA_SIGINFO handler;
    // `SigsysInfo` covers its first 32 bytes.
    let info = unsafe { &*info.cast::<SigsysInfo>() };
    let mut out = FmtBuf::<2048>::new();
    if info.si_code != SYS_SECCOMP {
        let _ = fmt::Write::write_str(
            &mut out,
            "septem-run: stopped by a SIGSYS not raised by the seccomp policy\n",
        );
        let _ = write_all(STDERR_FD, out.as_bytes());
        exit_group(128 + libc::SIGSYS as u8);
    }
    let ctx = SIGSYS_CONTEXT.get();
    let kind = ctx.map_or(BackendKind::Seccomp, |c| c.kind);
    let image = ctx.and_then(|c| c.image);
    let by_guest = image.is_some_and(|img| {
        img.segments.iter().any(|s| {
            s.perms.exec && info.call_addr >= s.vaddr && info.call_addr - s.vaddr < s.mem_size
        })
    });
    write_forbidden_syscall(
        &mut out,
        info.syscall as u32 as u64,
        info.arch,
        info.call_addr,
        image,
        by_guest,
        AllowedList(policy::policy_for(kind)),
    );
    let _ = write_all(STDERR_FD, out.as_bytes());
    exit_group(if by_guest {
        exit_status::FORBIDDEN_SYSCALL
    } else {
        exit_status::INTERNAL
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigsys_layout_matches_the_kernel() {
        assert_eq!(core::mem::offset_of!(SigsysInfo, call_addr), 16);
        assert_eq!(core::mem::offset_of!(SigsysInfo, syscall), 24);
        assert_eq!(core::mem::offset_of!(SigsysInfo, arch), 28);
        assert!(size_of::<SigsysInfo>() <= size_of::<libc::siginfo_t>());
    }

    #[test]
    fn console_only_has_stdout_and_stderr() {
        let fds = SealFds::console_only();
        assert_eq!(fds.console, vec![1, 2]);
        assert!(fds.tap.is_empty() && fds.block.is_empty());
        assert!(compile(BackendKind::Seccomp, &fds).is_ok());
        assert!(compile(BackendKind::Kvm, &fds).is_ok());
    }
}
