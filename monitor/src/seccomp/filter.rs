//! Compiles a policy table ([`super::policy`]) with the seal-time fds into a classic
//! BPF seccomp program.
//!
//! Why our own small generator rather than seccompiler's `SeccompFilter` (we still use
//! seccompiler's `sock_filter` type and `apply_filter` to install it):
//! - a wrong architecture must be *reported*, not silently killed: seccompiler hardcodes
//!   `SECCOMP_RET_KILL_PROCESS` for an arch mismatch, we return `SECCOMP_RET_TRAP` so the
//!   SIGSYS handler can say "32-bit syscall";
//! - x32 syscall numbers (bit 30 set) are rejected explicitly, before any comparison;
//! - in seccompiler an empty rule chain means "allow unconditionally", so a class with no
//!   fds (no block device attached) would silently allow `pread64` on *any* fd; here a
//!   condition with no alternatives structurally matches nothing;
//! - the program is a direct, reviewable rendering of the table, checked instruction by
//!   instruction by the BPF interpreter in the tests and by the kernel in a forked child.
//!
//! Program shape:
//! ```text
//!   ld arch; jeq AUDIT_ARCH_X86_64 ? +1 : 0; ret TRAP
//!   ld nr;   jge X32_SYSCALL_BIT ? 0 : +1;  ret TRAP
//!   for each rule:
//!     ld nr; jeq NR ? +1 : 0; ja next_rule
//!     for each alternative (an AND of argument checks):
//!       check…  (a failing check jumps to the next alternative)
//!       ret ALLOW
//!     ret TRAP
//!   ret TRAP
//! ```

use super::policy::{Bound, Cond, FdClass, Rule, Width};
use super::SealFds;
use crate::syscall_names::X32_SYSCALL_BIT;
use seccompiler::{sock_filter, BpfProgram};

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_TRAP`: deliver SIGSYS (the handler reports the syscall and exits).
pub const RET_TRAP: u32 = 0x0003_0000;

/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

// Classic BPF opcodes (linux/bpf_common.h).
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_JGE: u16 = 0x30;
const BPF_K: u16 = 0x00;
const BPF_RET_K: u16 = 0x06;
/// The kernel's limit on a program's length.
const BPF_MAXINSNS: usize = 4096;

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// A file descriptor given for a class is negative.
    #[error("invalid {class} fd {fd} for the seccomp filter")]
    BadFd {
        /// Class name.
        class: &'static str,
        /// The fd.
        fd: i32,
    },
    /// A conditional jump does not fit in 8 bits (too many fds for one syscall).
    #[error(
        "seccomp filter for {syscall} has too many alternatives (a jump exceeds 255 instructions)"
    )]
    JumpTooFar {
        /// The syscall whose rule is too long.
        syscall: &'static str,
    },
    /// The program is longer than the kernel accepts.
    #[error("seccomp filter has {0} instructions, more than the kernel's 4096")]
    TooLong(usize),
}

/// One comparison of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Eq { arg: u8, width: Width, value: u64 },
    Le { arg: u8, width: Width, max: u64 },
}

/// A jump target: fall through, or a label resolved at the end.
#[derive(Clone, Copy, Debug)]
enum Target {
    Next,
    Label(usize),
}

#[derive(Clone, Copy, Debug)]
enum Insn {
    Stmt {
        code: u16,
        k: u32,
    },
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Ja(usize),
}

#[derive(Debug, Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.insns.len());
    }
    fn ld(&mut self, offset: u32) {
        self.insns.push(Insn::Stmt {
            code: BPF_LD_W_ABS,
            k: offset,
        });
    }
    fn ret(&mut self, action: u32) {
        self.insns.push(Insn::Stmt {
            code: BPF_RET_K,
            k: action,
        });
    }
    fn jump(&mut self, op: u16, k: u32, jt: Target, jf: Target) {
        self.insns.push(Insn::Jump {
            code: BPF_JMP | op | BPF_K,
            k,
            jt,
            jf,
        });
    }

    /// Resolves labels; `who` names the rule being built for errors.
    fn finish(self, who: &[(usize, &'static str)]) -> Result<BpfProgram, FilterError> {
        let owner = |at: usize| {
            who.iter()
                .rev()
                .find(|(start, _)| *start <= at)
                .map_or("the prologue", |(_, name)| name)
        };
        let mut out = Vec::with_capacity(self.insns.len());
        for (at, insn) in self.insns.iter().enumerate() {
            let offset = |t: Target| -> Result<u8, FilterError> {
                match t {
                    Target::Next => Ok(0),
                    Target::Label(l) => {
                        let dest = self.labels[l].unwrap_or(usize::MAX);
                        dest.checked_sub(at + 1)
                            .and_then(|d| u8::try_from(d).ok())
                            .ok_or(FilterError::JumpTooFar { syscall: owner(at) })
                    }
                }
            };
            out.push(match *insn {
                Insn::Stmt { code, k } => sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                },
                Insn::Jump { code, k, jt, jf } => sock_filter {
                    code,
                    jt: offset(jt)?,
                    jf: offset(jf)?,
                    k,
                },
                Insn::Ja(l) => {
                    let dest = self.labels[l].unwrap_or(usize::MAX);
                    let k = dest
                        .checked_sub(at + 1)
                        .and_then(|d| u32::try_from(d).ok())
                        .ok_or(FilterError::JumpTooFar { syscall: owner(at) })?;
                    sock_filter {
                        code: BPF_JMP | BPF_JA,
                        jt: 0,
                        jf: 0,
                        k,
                    }
                }
            });
        }
        if out.len() > BPF_MAXINSNS {
            return Err(FilterError::TooLong(out.len()));
        }
        Ok(out)
    }

    /// Emits `check`, jumping to `fail` when it does not hold.
    fn check(&mut self, check: Check, fail: usize) {
        let lo = |arg: u8| DATA_ARGS + 8 * u32::from(arg);
        let hi = |arg: u8| lo(arg) + 4;
        let fail = Target::Label(fail);
        match check {
            Check::Eq {
                arg,
                width: Width::U32,
                value,
            } => {
                self.ld(lo(arg));
                self.jump(BPF_JEQ, value as u32, Target::Next, fail);
            }
            Check::Eq {
                arg,
                width: Width::U64,
                value,
            } => {
                self.ld(hi(arg));
                self.jump(BPF_JEQ, (value >> 32) as u32, Target::Next, fail);
                self.ld(lo(arg));
                self.jump(BPF_JEQ, value as u32, Target::Next, fail);
            }
            Check::Le {
                arg,
                width: Width::U32,
                max,
            } => {
                // A bound of 2^32 or more holds for every 32-bit value.
                if let Ok(max) = u32::try_from(max) {
                    self.ld(lo(arg));
                    self.jump(BPF_JGT, max, fail, Target::Next);
                }
            }
            Check::Le {
                arg,
                width: Width::U64,
                max,
            } => {
                // x <= max  <=>  hi(x) < hi(max) || (hi(x) == hi(max) && lo(x) <= lo(max))
                let pass = self.label();
                let max_hi = (max >> 32) as u32;
                self.ld(hi(arg));
                self.jump(BPF_JGT, max_hi, fail, Target::Next);
                self.jump(BPF_JEQ, max_hi, Target::Next, Target::Label(pass));
                self.ld(lo(arg));
                self.jump(BPF_JGT, max as u32, fail, Target::Next);
                self.bind(pass);
            }
        }
    }
}

/// Every way one condition can hold: a disjunction of conjunctions of checks.
fn alternatives(cond: &Cond, fds: &SealFds) -> Result<Vec<Vec<Check>>, FilterError> {
    Ok(match *cond {
        Cond::FdIn { arg, classes, .. } => {
            let mut alts = Vec::new();
            for &class in classes {
                for &fd in fds.fds(class) {
                    let value = u64::try_from(fd).map_err(|_| FilterError::BadFd {
                        class: class.name(),
                        fd,
                    })?;
                    let check = Check::Eq {
                        arg,
                        width: Width::U32,
                        value,
                    };
                    if !alts.contains(&vec![check]) {
                        alts.push(vec![check]);
                    }
                }
            }
            alts
        }
        Cond::OneOf {
            arg, width, values, ..
        } => values
            .iter()
            .map(|&(value, _)| vec![Check::Eq { arg, width, value }])
            .collect(),
        Cond::AtMost {
            arg, width, bound, ..
        } => {
            let max = match bound {
                Bound::Const(max) => max,
                Bound::CountOf(classes) => classes.iter().map(|&c| fds.fds(c).len() as u64).sum(),
            };
            vec![vec![Check::Le { arg, width, max }]]
        }
    })
}

/// The alternatives of a rule: the product of its conditions' alternatives. Empty when
/// some condition can never hold (e.g. a class with no fds): the syscall is then denied.
fn rule_alternatives(rule: &Rule, fds: &SealFds) -> Result<Vec<Vec<Check>>, FilterError> {
    let mut acc: Vec<Vec<Check>> = vec![Vec::new()];
    for cond in rule.conds {
        let alts = alternatives(cond, fds)?;
        let mut next = Vec::with_capacity(acc.len() * alts.len());
        for a in &acc {
            for b in &alts {
                next.push(a.iter().chain(b).copied().collect());
            }
        }
        acc = next;
    }
    Ok(acc)
}

/// Builds the BPF program enforcing `rules` with these fds. Allocates: call before
/// sealing.
pub fn compile(rules: &[Rule], fds: &SealFds) -> Result<BpfProgram, FilterError> {
    let mut asm = Asm::default();
    let mut owners = Vec::new();
    // Prologue: only native x86-64 syscalls reach the table.
    asm.ld(DATA_ARCH);
    let arch_ok = asm.label();
    asm.jump(
        BPF_JEQ,
        AUDIT_ARCH_X86_64,
        Target::Label(arch_ok),
        Target::Next,
    );
    asm.ret(RET_TRAP);
    asm.bind(arch_ok);
    asm.ld(DATA_NR);
    let native = asm.label();
    asm.jump(
        BPF_JGE,
        X32_SYSCALL_BIT as u32,
        Target::Next,
        Target::Label(native),
    );
    asm.ret(RET_TRAP);
    asm.bind(native);

    for rule in rules {
        owners.push((asm.insns.len(), rule.name));
        let next_rule = asm.label();
        let body = asm.label();
        asm.ld(DATA_NR);
        asm.jump(BPF_JEQ, rule.nr, Target::Label(body), Target::Next);
        asm.insns.push(Insn::Ja(next_rule));
        asm.bind(body);
        for alt in rule_alternatives(rule, fds)? {
            let next_alt = asm.label();
            for check in alt {
                asm.check(check, next_alt);
            }
            asm.ret(RET_ALLOW);
            asm.bind(next_alt);
        }
        asm.ret(RET_TRAP);
        asm.bind(next_rule);
    }
    asm.ret(RET_TRAP);
    asm.finish(&owners)
}

impl SealFds {
    /// The fds of a class.
    #[must_use]
    pub fn fds(&self, class: FdClass) -> &[i32] {
        match class {
            FdClass::Console => &self.console,
            FdClass::Tap => &self.tap,
            FdClass::Block => &self.block,
            FdClass::Vcpu => self.vcpu.as_slice(),
            FdClass::Control => self.control.as_slice(),
            FdClass::Signal => self.signal.as_slice(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::seccomp::policy::{BLOCK_IO_MAX, KVM_POLICY, KVM_RUN, SECCOMP_POLICY};

    /// A classic-BPF interpreter for the opcodes the generator emits, run over a
    /// `seccomp_data`. Panics on any other opcode or an out-of-range jump.
    pub(crate) fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let insn = &prog[pc];
            pc += 1;
            match insn.code {
                BPF_LD_W_ABS => {
                    let at = insn.k as usize;
                    assert!(at % 4 == 0 && at + 4 <= data.len());
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                BPF_RET_K => return insn.k,
                c if c == BPF_JMP | BPF_JA => pc += insn.k as usize,
                c => {
                    let taken = match c {
                        c if c == BPF_JMP | BPF_JEQ | BPF_K => acc == insn.k,
                        c if c == BPF_JMP | BPF_JGT | BPF_K => acc > insn.k,
                        c if c == BPF_JMP | BPF_JGE | BPF_K => acc >= insn.k,
                        other => panic!("unexpected opcode {other:#x}"),
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
            }
            assert!(pc < prog.len(), "ran off the end");
        }
    }

    fn fds() -> SealFds {
        SealFds {
            console: vec![1, 2],
            ..SealFds::default()
        }
    }

    const X86: u32 = AUDIT_ARCH_X86_64;

    fn sys(n: libc::c_long) -> u32 {
        n as u32
    }

    #[test]
    fn seccomp_filter_compiles_and_enforces_the_table() {
        let prog = compile(&SECCOMP_POLICY, &fds()).unwrap();
        let r = |nr, args| run(&prog, X86, sys(nr), args);
        // write: console fds only.
        assert_eq!(r(libc::SYS_write, [1, 0, 5, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r(libc::SYS_write, [2, 0, 5, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r(libc::SYS_write, [0, 0, 5, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_write, [3, 0, 5, 0, 0, 0]), RET_TRAP);
        // read: tap fds only, and there are none.
        assert_eq!(r(libc::SYS_read, [0, 0, 5, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_read, [1, 0, 5, 0, 0, 0]), RET_TRAP);
        // pread64/pwrite64: no block fds, so never.
        assert_eq!(r(libc::SYS_pread64, [1, 0, 512, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_pwrite64, [2, 0, 512, 0, 0, 0]), RET_TRAP);
        // ppoll: no fds to poll (no taps), no signal mask.
        assert_eq!(r(libc::SYS_ppoll, [0, 0, 0x1000, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r(libc::SYS_ppoll, [0x1000, 1, 0x1000, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_ppoll, [0, 0, 0x1000, 0x2000, 8, 0]), RET_TRAP);
        // clock_gettime: realtime and monotonic only.
        assert_eq!(
            r(libc::SYS_clock_gettime, [0, 0x1000, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            r(libc::SYS_clock_gettime, [1, 0x1000, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            r(libc::SYS_clock_gettime, [2, 0x1000, 0, 0, 0, 0]),
            RET_TRAP
        );
        assert_eq!(
            r(libc::SYS_clock_gettime, [7, 0x1000, 0, 0, 0, 0]),
            RET_TRAP
        );
        // exit_group: any status.
        assert_eq!(r(libc::SYS_exit_group, [125, 0, 0, 0, 0, 0]), RET_ALLOW);
        // Everything else traps.
        for nr in [
            libc::SYS_getpid,
            libc::SYS_mmap,
            libc::SYS_mprotect,
            libc::SYS_ioctl,
            libc::SYS_openat,
            libc::SYS_rt_sigreturn,
            libc::SYS_exit,
            libc::SYS_execve,
            libc::SYS_seccomp,
        ] {
            assert_eq!(r(nr, [1, 0, 0, 0, 0, 0]), RET_TRAP, "syscall {nr}");
        }
        // x32 numbers and other architectures never reach the table.
        let x32_write = sys(libc::SYS_write) | X32_SYSCALL_BIT as u32;
        assert_eq!(run(&prog, X86, x32_write, [1, 0, 5, 0, 0, 0]), RET_TRAP);
        let audit_arch_i386 = 0x4000_0003;
        assert_eq!(run(&prog, audit_arch_i386, 4, [1, 0, 5, 0, 0, 0]), RET_TRAP);
        assert_eq!(run(&prog, audit_arch_i386, 1, [0; 6]), RET_TRAP);
    }

    #[test]
    fn block_and_tap_fds_are_used_when_present() {
        let fds = SealFds {
            console: vec![1, 2],
            tap: vec![5, 6],
            block: vec![7],
            ..SealFds::default()
        };
        let prog = compile(&SECCOMP_POLICY, &fds).unwrap();
        let r = |nr, args| run(&prog, X86, sys(nr), args);
        assert_eq!(r(libc::SYS_read, [5, 0, 1514, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r(libc::SYS_write, [6, 0, 1514, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r(libc::SYS_read, [7, 0, 1514, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_pread64, [7, 0, 4096, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            r(libc::SYS_pwrite64, [7, 0, BLOCK_IO_MAX, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            r(libc::SYS_pwrite64, [7, 0, BLOCK_IO_MAX + 1, 0, 0, 0]),
            RET_TRAP
        );
        assert_eq!(r(libc::SYS_pread64, [7, 0, 1 << 32, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_pread64, [7, 0, u64::MAX, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_pread64, [5, 0, 512, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_ppoll, [0x1000, 2, 0, 0, 8, 0]), RET_ALLOW);
        assert_eq!(r(libc::SYS_ppoll, [0x1000, 3, 0, 0, 8, 0]), RET_TRAP);
    }

    #[test]
    fn kvm_filter_allows_only_kvm_run_on_the_vcpu() {
        let fds = SealFds {
            console: vec![1, 2],
            vcpu: Some(9),
            control: Some(11),
            ..SealFds::default()
        };
        let prog = compile(&KVM_POLICY, &fds).unwrap();
        let r = |nr, args| run(&prog, X86, sys(nr), args);
        assert_eq!(r(libc::SYS_ioctl, [9, KVM_RUN, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r(libc::SYS_ioctl, [9, 0xae81, 0, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_ioctl, [10, KVM_RUN, 0, 0, 0, 0]), RET_TRAP);
        assert_eq!(r(libc::SYS_write, [11, 0, 4, 0, 0, 0]), RET_ALLOW);
        assert_eq!(r(libc::SYS_write, [9, 0, 4, 0, 0, 0]), RET_TRAP);
        // The seccomp backend's filter has no ioctl at all.
        let spt = compile(&SECCOMP_POLICY, &fds).unwrap();
        assert_eq!(
            run(&spt, X86, sys(libc::SYS_ioctl), [9, KVM_RUN, 0, 0, 0, 0]),
            RET_TRAP
        );
        assert_eq!(
            run(&spt, X86, sys(libc::SYS_write), [11, 0, 4, 0, 0, 0]),
            RET_TRAP
        );
    }

    #[test]
    fn bad_fds_and_huge_classes_are_refused() {
        let fds = SealFds {
            console: vec![-1],
            ..SealFds::default()
        };
        assert!(matches!(
            compile(&SECCOMP_POLICY, &fds),
            Err(FilterError::BadFd { .. })
        ));
        let fds = SealFds {
            console: vec![1, 2],
            tap: (10..400).collect(),
            ..SealFds::default()
        };
        // Many fds are fine: each alternative is short and rules are skipped with `ja`.
        let prog = compile(&SECCOMP_POLICY, &fds).unwrap();
        assert_eq!(run(&prog, X86, 1, [399, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, X86, 1, [400, 0, 0, 0, 0, 0]), RET_TRAP);
    }

    /// The kernel accepts the program and enforces it: a forked child seals itself,
    /// writes, then makes a forbidden syscall and must die of SIGSYS (no handler).
    #[test]
    fn kernel_accepts_and_enforces_the_filter() {
        let prog = compile(&SECCOMP_POLICY, &fds()).unwrap();
        // SAFETY: the child only makes raw syscalls (no allocation, no locks) and ends
        // with `_exit`/a signal; the parent waits for it.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            if seccompiler::apply_filter(&prog).is_err() {
                // SAFETY: exiting the forked child.
                unsafe { libc::_exit(3) };
            }
            // SAFETY: raw syscalls with valid arguments.
            unsafe {
                let mut ts: libc::timespec = core::mem::zeroed();
                if libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts) != 0 {
                    libc::syscall(libc::SYS_exit_group, 4);
                }
                libc::syscall(libc::SYS_getpid);
                libc::syscall(libc::SYS_exit_group, 5);
            }
            unreachable!();
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "child status {status:#x}"
        );
    }
}
