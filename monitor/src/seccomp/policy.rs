//! The seccomp policy as reviewed data.
//!
//! One static table per backend lists every syscall the sealed monitor may make and
//! the conditions on its arguments. Conditions name *classes* of file descriptors
//! (console, tap, block, vcpu, control); the actual fd numbers are only known at seal
//! time and are substituted then ([`super::SealFds`]). The BPF filter
//! ([`super::filter`]) and `septem-run --print-policy` are both produced from these
//! tables and nothing else, so what is printed is what is enforced.
//!
//! Semantics: a syscall is allowed when its number is in the table and *all* of its
//! conditions hold. A class condition holds when the argument equals one of the fds
//! of that class; a class with no fds matches nothing (so with no block device,
//! `pread64` is never allowed). Everything else is trapped and reported (see
//! docs/threat-model.md).

use core::fmt;

/// A class of file descriptors, resolved to fd numbers at seal time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdClass {
    /// The console: the monitor's standard output and standard error.
    Console,
    /// Tap devices attached for the guest's net devices.
    Tap,
    /// Files attached for the guest's block devices.
    Block,
    /// The KVM vCPU (kvm backend only).
    Vcpu,
    /// The status pipe a sealed KVM child reports its exit status on (kvm backend only).
    Control,
    /// The signalfd that turns SIGTERM into the guest's shutdown event
    /// (`septem_abi::YIELD_SHUTDOWN`).
    Signal,
}

impl FdClass {
    /// Lowercase name, as printed.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            FdClass::Console => "console",
            FdClass::Tap => "tap",
            FdClass::Block => "block",
            FdClass::Vcpu => "vcpu",
            FdClass::Control => "control",
            FdClass::Signal => "signal",
        }
    }
}

/// How many bits of an argument a condition compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// The low 32 bits: for `int`/`unsigned int` arguments, whose upper half the kernel
    /// ignores (comparing it would only reject calls the kernel treats the same).
    U32,
    /// All 64 bits: for `size_t`, pointers.
    U64,
}

/// An upper bound of an [`Cond::AtMost`] condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// A constant.
    Const(u64),
    /// The number of fds in these classes together (e.g. `ppoll`'s
    /// `nfds <= #tap+#signal`).
    CountOf(&'static [FdClass]),
}

/// One condition on one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    /// Argument `arg` (a file descriptor) is one of the fds of `classes`.
    FdIn {
        /// Argument index (0..=5).
        arg: u8,
        /// Argument name, as printed.
        what: &'static str,
        /// Allowed classes.
        classes: &'static [FdClass],
    },
    /// Argument `arg` equals one of `values` (each with a printable name).
    OneOf {
        /// Argument index.
        arg: u8,
        /// Argument name.
        what: &'static str,
        /// Compared bits.
        width: Width,
        /// Allowed values.
        values: &'static [(u64, &'static str)],
    },
    /// Argument `arg` is at most `bound` (unsigned).
    AtMost {
        /// Argument index.
        arg: u8,
        /// Argument name.
        what: &'static str,
        /// Compared bits.
        width: Width,
        /// The bound.
        bound: Bound,
    },
}

/// One allowed syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Syscall name.
    pub name: &'static str,
    /// x86-64 syscall number.
    pub nr: u32,
    /// Conditions that must all hold (none: any arguments).
    pub conds: &'static [Cond],
}

/// Longest `pread64`/`pwrite64` a block device may issue in one syscall.
pub const BLOCK_IO_MAX: u64 = 1 << 20;

/// `KVM_RUN`: `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xae80;

const fn nr(n: libc::c_long) -> u32 {
    n as u32
}

const READ: Rule = Rule {
    name: "read",
    nr: nr(libc::SYS_read),
    conds: &[Cond::FdIn {
        arg: 0,
        what: "fd",
        classes: &[FdClass::Tap, FdClass::Signal],
    }],
};

const WRITE: Rule = Rule {
    name: "write",
    nr: nr(libc::SYS_write),
    conds: &[Cond::FdIn {
        arg: 0,
        what: "fd",
        classes: &[FdClass::Console, FdClass::Tap],
    }],
};

const WRITE_KVM: Rule = Rule {
    conds: &[Cond::FdIn {
        arg: 0,
        what: "fd",
        classes: &[FdClass::Console, FdClass::Tap, FdClass::Control],
    }],
    ..WRITE
};

const BLOCK_CONDS: &[Cond] = &[
    Cond::FdIn {
        arg: 0,
        what: "fd",
        classes: &[FdClass::Block],
    },
    Cond::AtMost {
        arg: 2,
        what: "count",
        width: Width::U64,
        bound: Bound::Const(BLOCK_IO_MAX),
    },
];

const PREAD64: Rule = Rule {
    name: "pread64",
    nr: nr(libc::SYS_pread64),
    conds: BLOCK_CONDS,
};

const PWRITE64: Rule = Rule {
    name: "pwrite64",
    nr: nr(libc::SYS_pwrite64),
    conds: BLOCK_CONDS,
};

const PPOLL: Rule = Rule {
    name: "ppoll",
    nr: nr(libc::SYS_ppoll),
    conds: &[
        Cond::AtMost {
            arg: 1,
            what: "nfds",
            width: Width::U32,
            bound: Bound::CountOf(&[FdClass::Tap, FdClass::Signal]),
        },
        Cond::OneOf {
            arg: 3,
            what: "sigmask",
            width: Width::U64,
            values: &[(0, "NULL")],
        },
    ],
};

const CLOCK_GETTIME: Rule = Rule {
    name: "clock_gettime",
    nr: nr(libc::SYS_clock_gettime),
    conds: &[Cond::OneOf {
        arg: 0,
        what: "clockid",
        width: Width::U32,
        values: &[
            (libc::CLOCK_REALTIME as u64, "CLOCK_REALTIME"),
            (libc::CLOCK_MONOTONIC as u64, "CLOCK_MONOTONIC"),
        ],
    }],
};

const EXIT_GROUP: Rule = Rule {
    name: "exit_group",
    nr: nr(libc::SYS_exit_group),
    conds: &[],
};

const IOCTL_KVM_RUN: Rule = Rule {
    name: "ioctl",
    nr: nr(libc::SYS_ioctl),
    conds: &[
        Cond::FdIn {
            arg: 0,
            what: "fd",
            classes: &[FdClass::Vcpu],
        },
        Cond::OneOf {
            arg: 1,
            what: "request",
            width: Width::U32,
            values: &[(KVM_RUN, "KVM_RUN")],
        },
    ],
};

/// The seccomp backend's policy: the seven syscalls of DESIGN.md.
pub static SECCOMP_POLICY: [Rule; 7] = [
    READ,
    WRITE,
    PREAD64,
    PWRITE64,
    PPOLL,
    CLOCK_GETTIME,
    EXIT_GROUP,
];

/// The KVM backend's policy (applied to the monitor after set-up): the same seven,
/// `write` also on the control pipe, plus `ioctl(vcpu, KVM_RUN)`.
pub static KVM_POLICY: [Rule; 8] = [
    READ,
    WRITE_KVM,
    PREAD64,
    PWRITE64,
    PPOLL,
    CLOCK_GETTIME,
    EXIT_GROUP,
    IOCTL_KVM_RUN,
];

/// The policy for a backend.
#[must_use]
pub fn policy_for(kind: crate::backend::BackendKind) -> &'static [Rule] {
    match kind {
        crate::backend::BackendKind::Seccomp => &SECCOMP_POLICY,
        crate::backend::BackendKind::Kvm => &KVM_POLICY,
    }
}

/// Displays a rule's conditions, e.g. `fd in {console, tap}`.
#[derive(Clone, Copy, Debug)]
pub struct CondsDisplay<'a>(pub &'a [Cond]);

impl fmt::Display for CondsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("any arguments");
        }
        for (i, cond) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" && ")?;
            }
            match *cond {
                Cond::FdIn { what, classes, .. } => {
                    write!(f, "{what} in {{")?;
                    for (j, c) in classes.iter().enumerate() {
                        let sep = if j > 0 { ", " } else { "" };
                        write!(f, "{sep}{}", c.name())?;
                    }
                    f.write_str("}")?;
                }
                Cond::OneOf {
                    what,
                    values: [(0, "NULL")],
                    ..
                } => write!(f, "{what} == NULL")?,
                Cond::OneOf {
                    what,
                    values: [(v, name)],
                    ..
                } => write!(f, "{what} == {name} ({v:#x})")?,
                Cond::OneOf { what, values, .. } => {
                    write!(f, "{what} in {{")?;
                    for (j, (v, name)) in values.iter().enumerate() {
                        let sep = if j > 0 { ", " } else { "" };
                        write!(f, "{sep}{name} ({v})")?;
                    }
                    f.write_str("}")?;
                }
                Cond::AtMost { what, bound, .. } => match bound {
                    Bound::Const(max) => write!(f, "{what} <= {max}")?,
                    Bound::CountOf(classes) => {
                        write!(f, "{what} <= ")?;
                        for (i, class) in classes.iter().enumerate() {
                            let plus = if i == 0 { "" } else { "+" };
                            write!(f, "{plus}#{}", class.name())?;
                        }
                    }
                },
            }
        }
        Ok(())
    }
}

/// Writes the policy, one line per syscall: name, number, conditions.
pub fn write_policy(out: &mut impl fmt::Write, rules: &[Rule]) -> fmt::Result {
    for rule in rules {
        writeln!(
            out,
            "{:<14}{:>4}  {}",
            rule.name,
            rule.nr,
            CondsDisplay(rule.conds)
        )?;
    }
    Ok(())
}

/// Writes `read, write, … and exit_group`: the names of the allowed syscalls.
pub fn write_name_list(out: &mut impl fmt::Write, rules: &[Rule]) -> fmt::Result {
    for (i, rule) in rules.iter().enumerate() {
        let sep = match i {
            0 => "",
            i if i + 1 == rules.len() => " and ",
            _ => ", ",
        };
        write!(out, "{sep}{}", rule.name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::syscall_names::syscall_name;

    fn printed(kind: BackendKind) -> String {
        let mut s = String::new();
        write_policy(&mut s, policy_for(kind)).unwrap();
        s
    }

    #[test]
    fn seccomp_policy_prints_exactly_seven_syscalls() {
        let text = printed(BackendKind::Seccomp);
        assert_eq!(text.lines().count(), 7, "{text}");
        let names: Vec<&str> = text
            .lines()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "read",
                "write",
                "pread64",
                "pwrite64",
                "ppoll",
                "clock_gettime",
                "exit_group"
            ]
        );
        assert!(
            text.contains("write            1  fd in {console, tap}"),
            "{text}"
        );
        assert!(text.contains("clockid in {CLOCK_REALTIME (0), CLOCK_MONOTONIC (1)}"));
        assert!(text.contains("exit_group     231  any arguments"));
    }

    #[test]
    fn kvm_policy_prints_exactly_eight_syscalls() {
        let text = printed(BackendKind::Kvm);
        assert_eq!(text.lines().count(), 8, "{text}");
        assert!(text.contains("ioctl           16  fd in {vcpu} && request == KVM_RUN (0xae80)"));
        assert!(text.contains("fd in {console, tap, control}"));
    }

    #[test]
    fn numbers_and_names_agree_with_the_syscall_table() {
        for rule in SECCOMP_POLICY.iter().chain(KVM_POLICY.iter()) {
            assert_eq!(syscall_name(u64::from(rule.nr)), Some(rule.name));
        }
    }

    #[test]
    fn name_list_reads_as_prose() {
        let mut s = String::new();
        write_name_list(&mut s, &SECCOMP_POLICY).unwrap();
        assert_eq!(
            s,
            "read, write, pread64, pwrite64, ppoll, clock_gettime and exit_group"
        );
    }
}
