//! The KVM backend (`septem-run --backend kvm`).
//!
//! One VM, one vCPU, guest-physical = guest-virtual `[0, mem_size)`; the guest runs in
//! 64-bit mode at CPL3 with SSE and NX, under page tables that mirror
//! [`Layout::regions`](crate::layout::Layout::regions) page by page. Below
//! `IMAGE_BASE` the monitor keeps its page tables, descriptor tables, ring-0 exception
//! stubs and the hypercall trampoline ([`lowmem`]). Hypercalls are one `out` exit each
//! (see [`stubs`] for the scheme), served by the shared [`crate::dispatch::dispatch`]
//! with the real [`crate::host::SysHost`]. The vCPU process seals itself with the KVM
//! seccomp policy before the guest's first instruction. See [`process`] for the fork
//! model that keeps VM teardown off the user's critical path.
//!
//! Concerns, one file each: [`paging`], [`gdt`], [`idt`], [`tss`], [`stubs`] are pure
//! and unit-tested without KVM; [`vm`] sets the machine up, [`vcpu`] runs it, [`fault`]
//! turns stops into reports, [`process`] forks and reports back.

pub mod fault;
pub mod gdt;
pub mod idt;
pub mod lowmem;
pub mod paging;
pub mod process;
pub mod stubs;
pub mod tss;
pub mod vcpu;
pub mod vm;

#[cfg(test)]
mod tests;

use crate::backend::{Backend, BackendKind, GuestSpec};
use crate::exit_status;
use crate::fmtbuf::FmtBuf;
use crate::host::{exit_group, write_all, SysHost, STDERR_FD};
use crate::seccomp::{self, SealFds};
use crate::RunError;
use core::fmt::Write;
use kvm_ioctls::Cap;
use process::{Message, Outcome};
use std::convert::Infallible;
use std::os::fd::{AsRawFd, RawFd};

/// Checks that KVM looks usable here: `/dev/kvm` opens, speaks API version 12 and has
/// the capabilities this backend needs. A handful of syscalls, no VM: creating one (in
/// a throwaway process, since destroying it costs milliseconds) doubled the KVM
/// backend's boot time. If VM creation fails anyway, the vCPU process reports it
/// ([`KvmBackend::run`] says how `--backend auto` got there).
pub fn probe() -> Result<(), String> {
    let kvm = vm::open_kvm().map_err(|e| describe(&e))?;
    for (cap, name) in [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::SyncRegs, "KVM_CAP_SYNC_REGS"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(format!("/dev/kvm lacks {name}"));
        }
    }
    Ok(())
}

fn describe(e: &vm::SetupError) -> String {
    if e.errno == 0 {
        e.what.clone()
    } else {
        format!("{}: {}", e.what, std::io::Error::from_raw_os_error(e.errno))
    }
}

/// The KVM backend.
#[derive(Debug, Default)]
pub struct KvmBackend {
    /// Chosen by `--backend auto` (set-up errors then say so and suggest seccomp).
    auto: bool,
}

impl KvmBackend {
    /// A KVM backend (nothing is opened until [`Backend::run`]).
    #[must_use]
    pub fn new() -> Self {
        KvmBackend { auto: false }
    }

    /// A KVM backend chosen by `--backend auto` because [`probe`] passed.
    #[must_use]
    pub fn auto() -> Self {
        KvmBackend { auto: true }
    }
}

impl Backend for KvmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kvm
    }

    fn run(self: Box<Self>, guest: GuestSpec) -> Result<u8, RunError> {
        // A tap stays busy until the vCPU process has exited: wait for that when the
        // guest has taps, so septem-run can be started again on them at once.
        let holds_taps = !guest.devices.tap_fds().is_empty();
        let outcome = process::fork_and_wait(process::Mode::Child, holds_taps, move |control| {
            child(guest, control)
        })
        .map_err(|source| RunError::HostSetup {
            what: "cannot fork the KVM vCPU process".into(),
            source,
        })?;
        match outcome {
            Outcome::Message(Message::Done(status)) => Ok(status),
            Outcome::Message(Message::Setup {
                status: _,
                errno,
                what,
            }) => Err(RunError::HostSetup {
                what: if self.auto {
                    format!(
                        "{what} (--backend auto chose KVM: /dev/kvm passed its checks; \
                         use --backend seccomp)"
                    )
                } else {
                    what
                },
                source: if errno == 0 {
                    std::io::Error::other("KVM set-up failed")
                } else {
                    std::io::Error::from_raw_os_error(errno)
                },
            }),
            // The child's own reporter (e.g. SIGSYS) already printed why.
            Outcome::Exited(code) => Ok(code as u8),
            Outcome::Signaled(sig) => Ok(report_signal(sig)),
            Outcome::Vanished => Ok(exit_status::INTERNAL),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGSYS => "SIGSYS",
        libc::SIGABRT => "SIGABRT",
        _ => "a signal",
    }
}

/// Reports a vCPU process that died of `sig` without a message; returns the status.
fn report_signal(sig: i32) -> u8 {
    let mut out = FmtBuf::<256>::new();
    let name = signal_name(sig);
    let status = match sig {
        libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT | libc::SIGKILL => {
            let _ = writeln!(out, "septem-run: guest stopped by {name} ({sig})");
            128 + sig as u8
        }
        _ => {
            let _ = writeln!(
                out,
                "septem-run: internal error: the KVM vCPU process died of {name} ({sig}); \
                 this is a septem-run bug, please report it"
            );
            exit_status::INTERNAL
        }
    };
    let _ = write_all(STDERR_FD, out.as_bytes());
    status
}

/// The vCPU process: set up, seal, run, report, exit. Never returns.
fn child(guest: GuestSpec, control: RawFd) -> Infallible {
    let fail = |e: vm::SetupError| -> ! {
        process::send(
            control,
            &Message::encode_setup(exit_status::HOST_SETUP, e.errno, &e.what),
        );
        exit_group(exit_status::HOST_SETUP)
    };
    let clocks = (crate::host::monotonic_ns(), crate::host::wall_ns());
    // The tap and block fds were opened before the fork (so attach errors reach the
    // user from the parent, as on the seccomp backend); this process inherited them
    // (fork keeps fds; O_CLOEXEC only closes them on exec).
    let mut p = match vm::prepare(
        &guest.image,
        &guest.image_bytes,
        &guest.layout,
        &guest.args,
        &guest.env,
        &guest.devices.boot_table(),
        clocks,
    ) {
        Ok(p) => p,
        Err(e) => fail(e),
    };
    if let Some(fifo) = &guest.start_fifo {
        // Free while the gate is closed (the runtime's start has not come yet).
        vm::warm_first_pages(&p.ram, &guest.layout);
        if let Err(e) = crate::gate::wait(fifo) {
            fail(vm::SetupError {
                what: format!("waiting at the start gate: {e}"),
                errno: e.errno(),
            });
        }
        let now = (crate::host::monotonic_ns(), crate::host::wall_ns());
        if let Err(e) = crate::boot::restamp_clocks(&p.mem, p.boot_info, now.0, now.1) {
            fail(vm::SetupError::other(format!(
                "restamping the boot clocks: {e}"
            )));
        }
    }
    let signal = match crate::host::shutdown_signal_fd() {
        Ok(fd) => fd,
        Err(e) => fail(vm::SetupError {
            what: "cannot turn SIGTERM into the guest's shutdown event".into(),
            errno: e.raw_os_error().unwrap_or(0),
        }),
    };
    let fds = SealFds {
        tap: guest.devices.tap_fds(),
        block: guest.devices.block_fds(),
        vcpu: Some(p.machine.vcpu.as_raw_fd()),
        control: Some(control),
        signal: Some(signal),
        ..SealFds::console_only()
    };
    let prog = match seccomp::compile(BackendKind::Kvm, &fds) {
        Ok(prog) => prog,
        Err(e) => fail(vm::SetupError {
            what: format!("cannot build the seccomp policy: {e}"),
            errno: 0,
        }),
    };
    if let Err(e) = seccomp::prepare_signals(BackendKind::Kvm, None) {
        fail(vm::SetupError {
            what: "cannot install the SIGSYS reporter".into(),
            errno: e.raw_os_error().unwrap_or(0),
        });
    }
    let ctx = fault::Context {
        image: &guest.image,
        layout: &guest.layout,
        mem: &p.mem,
    };
    let mut host: SysHost = guest.devices.sys_host().with_shutdown_signal(signal);
    if let Err(e) = seccomp::seal(&prog) {
        fail(vm::SetupError {
            what: "cannot seal the monitor with seccomp".into(),
            errno: e.raw_os_error().unwrap_or(0),
        });
    }
    // Sealed: from here on, no allocation and no syscall outside the policy.
    let stopped = vcpu::run(
        &mut p.machine.vcpu,
        &p.mem,
        &p.fault_view,
        &mut host,
        guest.dispatch,
        &ctx,
    );
    process::send(control, &Message::encode_done(stopped.status));
    exit_group(stopped.status)
}
