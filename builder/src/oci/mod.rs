//! OCI images of Septem unikernels: package an image as an OCI image layout (directory
//! or tar archive), push it to and pull it from registries over the OCI distribution API.
//!
//! - [`package`]: `.septem` image (+ disks) → one-layer OCI image, reproducibly;
//! - [`layout`]: read, verify and write image layouts and their tar archives;
//! - [`reference`]: `NAME:TAG` and `REGISTRY/REPO:TAG` parsing, loopback detection;
//! - [`auth`]: credentials from flags or `~/.docker/config.json` (or tokens);
//! - [`token`]: an identity token exchanged for a bearer token (OAuth2 refresh token);
//! - [`registry`]: push and pull with `oci-client` on a tokio runtime local to them.
//!
//! See `docs/oci.md` for the layout, the annotations and what `runnc` reads.

pub mod auth;
pub mod layout;
pub mod package;
pub mod reference;
pub mod registry;
pub mod token;

use sha2::{Digest as _, Sha256};
use std::io::{self, Write};
use std::path::PathBuf;

/// Annotation and label: `"true"` on every Septem unikernel image.
pub const ANN_UNIKERNEL: &str = "org.septem.unikernel";
/// Annotation and label: the ABI version the unikernel speaks.
pub const ANN_ABI: &str = "org.septem.unikernel.abi";
/// Annotation and label: absolute path of the unikernel inside the image.
pub const ANN_BINARY: &str = "org.septem.unikernel.binary";
/// Annotation and label: declared devices, `kind:name` joined by commas.
pub const ANN_DEVICES: &str = "org.septem.unikernel.devices";
/// Annotation and label: default guest memory (`64M`); absent when the image leaves it
/// to the monitor.
pub const ANN_MEMORY: &str = "org.septem.unikernel.memory";
/// Annotation and label: disk images in the layer, `name=/unikernel/disks/name.img`
/// joined by commas; absent without disks.
pub const ANN_DISKS: &str = "org.septem.unikernel.disks";
/// Path of the facts file inside the layer.
pub const FACTS_PATH: &str = "/unikernel/septem.json";
/// Directory of the unikernel inside the layer.
pub const UNIKERNEL_DIR: &str = "/unikernel";

/// Media type of the image layout's index.
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of the manifest.
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the config.
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the layer.
pub const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker's manifest media type (accepted on pull, never written).
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list media type (accepted on pull, never written).
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Why an OCI operation failed, for the ones with their own exit status.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The file to package (or push) is not a runnable Septem image.
    #[error("{} is not a runnable Septem image", path.display())]
    InvalidImage {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: septem_image::ImageError,
    },
    /// A tag or image reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference {
        /// What was given.
        reference: String,
        /// Why it is refused.
        reason: String,
    },
    /// The registry could not be reached.
    #[error("registry {registry} is unreachable: {detail}")]
    Unreachable {
        /// Host[:port].
        registry: String,
        /// What failed.
        detail: String,
    },
    /// The registry refused our credentials (or wants some).
    #[error("authentication to {registry} failed: {detail}")]
    Auth {
        /// Host[:port].
        registry: String,
        /// What the registry said.
        detail: String,
    },
    /// A blob's digest or size is not what its descriptor says.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// The OCI image is not a Septem unikernel image.
    #[error("{what} is not a Septem unikernel image: {reason}")]
    NotSeptem {
        /// The image.
        what: String,
        /// Why.
        reason: String,
    },
    /// The registry has no such image.
    #[error("{reference} was not found in the registry: {detail}")]
    NotFound {
        /// The reference.
        reference: String,
        /// What the registry said.
        detail: String,
    },
}

impl OciError {
    /// The process exit status `septem-build` uses for this error (see `docs/oci.md`).
    #[must_use]
    pub fn exit_status(&self) -> u8 {
        match self {
            OciError::InvalidImage { .. } => 3,
            OciError::BadReference { .. } => 4,
            OciError::Unreachable { .. } => 5,
            OciError::Auth { .. } => 6,
            OciError::Integrity(_) => 7,
            OciError::NotSeptem { .. } => 8,
            OciError::NotFound { .. } => 9,
        }
    }
}

/// `sha256:<hex>` of `bytes`.
#[must_use]
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A writer that hashes (SHA-256) and counts what passes through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The inner writer, the `sha256:<hex>` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Serializes `value` as JSON with object keys sorted at every level (oci-spec keeps
/// annotations in hash maps, whose order changes from run to run), so the same content
/// always gives the same bytes and digest.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    serde_json::to_vec(&sort(serde_json::to_value(value)?))
}

/// RFC 3339 UTC timestamp (`2024-05-01T12:00:00Z`) of seconds since the Unix epoch.
#[must_use]
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `1234567` → `1.2 MiB`.
#[must_use]
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut m = std::collections::HashMap::new();
        for k in ["b", "a", "c", "z", "y"] {
            m.insert(k.to_owned(), serde_json::json!({"q": 1, "p": 2}));
        }
        let s = String::from_utf8(canonical_json(&m).unwrap()).unwrap();
        assert_eq!(
            s,
            r#"{"a":{"p":2,"q":1},"b":{"p":2,"q":1},"c":{"p":2,"q":1},"y":{"p":2,"q":1},"z":{"p":2,"q":1}}"#
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }
}
