//! runnc: a runc-compatible OCI runtime for Septem unikernels.
//!
//! A bundle whose image is a Septem unikernel runs under `septem-run`; any other
//! bundle is handed to `runc` unchanged (docs/runnc.md).

pub mod cgroup;
pub mod network;
