//! `features`: runc's features JSON for runnc.

use super::Error;
use crate::bundle::{ANN_BACKEND, ANN_BINARY, ANN_DISKS, ANN_MEMORY, ANN_UNIKERNEL};

/// The features document.
#[must_use]
pub fn document() -> serde_json::Value {
    let reads = [
        ANN_UNIKERNEL,
        ANN_BINARY,
        ANN_MEMORY,
        ANN_DISKS,
        ANN_BACKEND,
    ]
    .join(",");
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "bind", "rbind"],
        "linux": {
            "namespaces": ["network", "mount", "ipc", "uts", "pid", "user", "cgroup"],
            "capabilities": [],
            "cgroup": { "v1": true, "v2": true, "systemd": true, "systemdUser": false },
            "seccomp": { "enabled": false },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "org.septem.runnc.version": env!("CARGO_PKG_VERSION"),
            "org.septem.runnc.reads": reads,
        }
    })
}

/// `features`.
pub fn features() -> Result<(), Error> {
    println!(
        "{}",
        serde_json::to_string_pretty(&document()).unwrap_or_default()
    );
    Ok(())
}
