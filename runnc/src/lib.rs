//! runnc: a runc-compatible OCI runtime for Septem unikernels.
//!
//! A bundle whose image is a Septem unikernel runs under `septem-run`; any other
//! bundle is handed to `runc` unchanged (docs/runnc.md).

pub mod bundle;
pub mod cgroup;
pub mod cli;
pub mod commands;
pub mod hooks;
pub mod logging;
pub mod netns;
pub mod network;
pub mod process;
pub mod runc;
pub mod settings;
pub mod signal;
pub mod state;
pub mod time;

/// The OCI runtime spec version runnc implements.
pub const OCI_VERSION: &str = "1.0.2";
