//! `spec`: a config.json template for a Septem unikernel bundle.

use super::{io, Error};
use crate::bundle::ANN_UNIKERNEL;
use crate::cli::Spec;

/// The template for the unikernel at `image` (a path inside the rootfs).
#[must_use]
pub fn template(image: &str) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": [image],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/"
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "septem",
        "annotations": { ANN_UNIKERNEL: "true" },
        "linux": {
            "namespaces": [
                { "type": "network" },
                { "type": "mount" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "pid" }
            ]
        }
    })
}

/// `spec`.
pub fn spec(s: &Spec) -> Result<(), Error> {
    let path = s.bundle.join("config.json");
    if path.exists() {
        return Err(Error::Refused(format!(
            "File {} exists. Remove it first",
            path.display()
        )));
    }
    let text = serde_json::to_string_pretty(&template(&s.image)).unwrap_or_default();
    std::fs::write(&path, text + "\n").map_err(io(format!("cannot write {}", path.display())))
}
