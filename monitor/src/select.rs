//! Choosing the backend: `--backend auto|seccomp|kvm`.
//!
//! `auto` uses KVM when `/dev/kvm` works and falls back to seccomp otherwise, saying so
//! once on standard error. Usable means [`crate::kvm::probe`] passed: `/dev/kvm` opens,
//! speaks API version 12 and has the capabilities the backend needs (cheap checks, no
//! VM: if creating one fails after all, the KVM backend's error says so).

use crate::backend::{Backend, BackendKind};
use crate::spt::SptBackend;
use crate::RunError;
use std::io;

/// The `--backend` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendChoice {
    /// KVM when `/dev/kvm` is usable, else seccomp.
    #[default]
    Auto,
    /// A plain process sealed by seccomp.
    Seccomp,
    /// A KVM virtual machine.
    Kvm,
}

impl BackendChoice {
    /// The policy `--print-policy` prints for this choice (`auto` prints seccomp's: the
    /// output must not depend on the host).
    #[must_use]
    pub fn policy_kind(self) -> BackendKind {
        match self {
            BackendChoice::Auto | BackendChoice::Seccomp => BackendKind::Seccomp,
            BackendChoice::Kvm => BackendKind::Kvm,
        }
    }
}

/// The KVM backend, if this build has one: `None` when it is not built in, otherwise
/// the backend or why `/dev/kvm` cannot be used here.
fn kvm_backend(choice: BackendChoice) -> Option<Result<Box<dyn Backend>, String>> {
    let kvm = match choice {
        BackendChoice::Auto => crate::kvm::KvmBackend::auto(),
        _ => crate::kvm::KvmBackend::new(),
    };
    Some(crate::kvm::probe().map(|()| Box::new(kvm) as Box<dyn Backend>))
}

/// The backend to run with. Prints the auto-fallback notice (before sealing).
pub fn select(choice: BackendChoice) -> Result<Box<dyn Backend>, RunError> {
    match choice {
        BackendChoice::Seccomp => Ok(Box::new(SptBackend::new())),
        BackendChoice::Kvm => match kvm_backend(choice) {
            Some(Ok(kvm)) => Ok(kvm),
            Some(Err(why)) => Err(RunError::HostSetup {
                what: "cannot use the KVM backend".to_string(),
                source: io::Error::other(format!("{why}; use --backend seccomp or --backend auto")),
            }),
            None => Err(RunError::HostSetup {
                what: "--backend kvm".to_string(),
                source: io::Error::other(
                    "KVM backend not available in this build; use --backend seccomp",
                ),
            }),
        },
        BackendChoice::Auto => match kvm_backend(choice) {
            Some(Ok(kvm)) => Ok(kvm),
            Some(Err(why)) => {
                eprintln!("septem-run: /dev/kvm not usable ({why}); using the seccomp backend");
                Ok(Box::new(SptBackend::new()))
            }
            None => Ok(Box::new(SptBackend::new())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit_status;

    #[test]
    fn seccomp_is_always_available() {
        assert_eq!(
            select(BackendChoice::Seccomp).unwrap().kind(),
            BackendKind::Seccomp
        );
        let auto = select(BackendChoice::Auto).unwrap().kind();
        assert!(matches!(auto, BackendKind::Seccomp | BackendKind::Kvm));
    }

    #[test]
    fn kvm_without_the_backend_is_a_host_setup_error() {
        if kvm_backend(BackendChoice::Kvm).is_none() {
            let err = select(BackendChoice::Kvm).err().unwrap();
            assert_eq!(err.exit_status(), exit_status::HOST_SETUP);
        }
    }

    #[test]
    fn print_policy_choice_is_host_independent() {
        assert_eq!(BackendChoice::Auto.policy_kind(), BackendKind::Seccomp);
        assert_eq!(BackendChoice::Kvm.policy_kind(), BackendKind::Kvm);
    }
}
