//! The vCPU run loop: one `KVM_RUN` per guest exit, nothing else.
//!
//! Runs sealed: no allocation, no locks, no ioctl but `KVM_RUN`. Registers come and go
//! through the `kvm_run` page (`KVM_CAP_SYNC_REGS`, set up in [`super::vm`]): a
//! hypercall reads RDI/RSI from it and writes RAX back by marking the registers dirty.

use super::fault::{self, Context, FaultRecord, Report, VmState};
use super::lowmem;
use crate::dispatch::{self, Action, DispatchConfig, Host, Stream};
use crate::memory::GuestMemory;
use kvm_bindings::KVM_SYNC_X86_REGS;
use kvm_ioctls::{VcpuExit, VcpuFd};
use septem_abi::{GuestAddr, HYPERCALL_PORT_BASE};

/// Why the loop ended: exit with `status` (a report, if any, has been written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// The monitor's exit status.
    pub status: u8,
}

enum Exit {
    Hypercall,
    FaultPort,
    OtherPort(&'static str, u16),
    Stop(&'static str, u64),
    Retry,
}

fn classify(vcpu: &mut VcpuFd) -> Exit {
    match vcpu.run() {
        Ok(VcpuExit::IoOut(port, _)) if port == HYPERCALL_PORT_BASE => Exit::Hypercall,
        Ok(VcpuExit::IoOut(port, _)) if port == lowmem::FAULT_PORT => Exit::FaultPort,
        Ok(VcpuExit::IoOut(port, _)) => Exit::OtherPort("guest wrote to I/O port", port),
        Ok(VcpuExit::IoIn(port, _)) => Exit::OtherPort("guest read from I/O port", port),
        Ok(VcpuExit::Shutdown) => Exit::Stop("triple fault (KVM_EXIT_SHUTDOWN)", 0),
        Ok(VcpuExit::InternalError) => Exit::Stop("KVM internal error", 0),
        Ok(VcpuExit::FailEntry(reason, _cpu)) => {
            Exit::Stop("KVM could not enter the guest (FAIL_ENTRY)", reason)
        }
        Ok(VcpuExit::Hlt) => Exit::Stop("the vCPU halted", 0),
        Ok(VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _)) => {
            Exit::Stop("access to guest-physical memory that does not exist", addr)
        }
        Ok(VcpuExit::Intr) => Exit::Retry,
        Ok(VcpuExit::SystemEvent(kind, _)) => Exit::Stop("KVM system event", u64::from(kind)),
        Ok(VcpuExit::Unsupported(reason)) => Exit::Stop("unexpected KVM exit", u64::from(reason)),
        Ok(_) => Exit::Stop("unexpected KVM exit", 0),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Exit::Retry,
        Err(e) => Exit::Stop("KVM_RUN failed (errno)", e.errno() as u64),
    }
}

fn vm_state(vcpu: &VcpuFd) -> VmState {
    let s = vcpu.sync_regs();
    let ev = s.events.exception;
    VmState {
        rip: Some(s.regs.rip),
        cr2: Some(s.sregs.cr2),
        exception: (ev.injected != 0 || ev.pending != 0).then_some(ev.nr),
        error_code: (ev.has_error_code != 0).then_some(ev.error_code),
    }
}

fn emit(host: &mut impl Host, report: &Report) -> Stopped {
    let _ = host.console_write(Stream::Stderr, report.text.as_bytes());
    Stopped {
        status: report.status,
    }
}

/// Runs the guest until it exits or stops; serves hypercalls with `dispatch`.
pub fn run(
    vcpu: &mut VcpuFd,
    mem: &GuestMemory,
    fault_view: &GuestMemory,
    host: &mut impl Host,
    config: DispatchConfig,
    ctx: &Context<'_>,
) -> Stopped {
    loop {
        match classify(vcpu) {
            Exit::Hypercall => {
                let regs = &mut vcpu.sync_regs_mut().regs;
                let (nr, arg) = (regs.rdi, GuestAddr::new(regs.rsi));
                match dispatch::dispatch(mem, host, config, nr, arg) {
                    Action::Resume(value) => {
                        vcpu.sync_regs_mut().regs.rax = value as u64;
                        vcpu.get_kvm_run().kvm_dirty_regs |= u64::from(KVM_SYNC_X86_REGS);
                    }
                    Action::Exit(status) => return Stopped { status },
                }
            }
            Exit::FaultPort => {
                let record = fault_view
                    .read_obj::<FaultRecord>(GuestAddr::new(lowmem::FAULT_RECORD))
                    .unwrap_or_default();
                return emit(
                    host,
                    &fault::report_fault(&record, ctx, lowmem::SYSCALL_PAGE),
                );
            }
            Exit::OtherPort(what, port) => {
                return emit(
                    host,
                    &fault::report_vm_failure(what, u64::from(port), &vm_state(vcpu), ctx),
                );
            }
            Exit::Stop(what, detail) => {
                return emit(
                    host,
                    &fault::report_vm_failure(what, detail, &vm_state(vcpu), ctx),
                );
            }
            Exit::Retry => {}
        }
    }
}
