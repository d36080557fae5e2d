//! The app's `Cargo.toml`: its package name and `[package.metadata.septem]`.
//!
//! ```toml
//! [package.metadata.septem]
//! memory = "64M"                                   # default guest memory ("1G", or MiB as a number)
//! devices = [{ name = "service", kind = "net" },   # kinds: net, block
//!            { name = "data", kind = "block" }]
//! ```

use septem_abi::manifest::{FLAG_FINALIZED, MAX_DEVICES};
use septem_abi::{DeviceKind, Manifest, ManifestError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What is wrong with an app's `Cargo.toml` or its Septem metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("{} is not valid TOML", path.display())]
    Toml {
        /// The manifest path.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: toml::de::Error,
    },
    /// No `[package]` (a virtual workspace manifest, say).
    #[error("{} has no [package] with a name: point septem-build at an app crate", path.display())]
    NoPackage {
        /// The manifest path.
        path: PathBuf,
    },
    /// `[package.metadata.septem]` has the wrong shape (unknown key, wrong type…).
    #[error("invalid [package.metadata.septem]")]
    Shape(#[source] toml::de::Error),
    /// A device kind other than `net` or `block`.
    #[error("device #{index} ({name:?}) has unknown kind {kind:?}; expected \"net\" or \"block\"")]
    UnknownKind {
        /// Position in `devices`.
        index: usize,
        /// Its name.
        name: String,
        /// The kind given.
        kind: String,
    },
    /// A device name that is empty, too long or has other characters.
    #[error(
        "device #{index} has an invalid name {name:?}: use 1 to 31 characters of A-Z a-z 0-9 _ -"
    )]
    BadName {
        /// Position in `devices`.
        index: usize,
        /// The name given.
        name: String,
    },
    /// Two devices with one name.
    #[error("device #{index} repeats the name {name:?}")]
    DuplicateName {
        /// Position of the second one.
        index: usize,
        /// The name.
        name: String,
    },
    /// More than [`MAX_DEVICES`] devices.
    #[error("{count} devices declared; an image may declare at most {MAX_DEVICES}")]
    TooManyDevices {
        /// How many were declared.
        count: usize,
    },
    /// A `memory` value that is not a size.
    #[error("invalid memory size {value:?}: {reason} (examples: \"64M\", \"1G\", 128)")]
    BadMemory {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One declared device.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDecl {
    /// Device name (the monitor attaches `--net:NAME=…` / `--block:NAME=…` to it).
    pub name: String,
    /// `net` or `block`.
    pub kind: String,
}

/// A memory size as written: a string with a unit, or a number of MiB.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum MemorySpec {
    /// MiB.
    Mib(u64),
    /// `"64M"`, `"64MiB"`, `"1G"`, `"1GiB"`.
    Text(String),
}

/// `[package.metadata.septem]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeptemMetadata {
    /// Devices the image expects.
    #[serde(default)]
    pub devices: Vec<DeviceDecl>,
    /// Default guest memory.
    #[serde(default)]
    pub memory: Option<MemorySpec>,
}

/// Parses a memory size into MiB: `"64M"`, `"64MiB"`, `"1G"`, `"1GiB"`, or `"128"` (MiB).
pub fn parse_memory_mib(value: &str) -> Result<u32, MetadataError> {
    let bad = |reason| MetadataError::BadMemory {
        value: value.to_owned(),
        reason,
    };
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    if digits.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    let n: u64 = digits.parse().map_err(|_| bad("the number is too large"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        _ => return Err(bad("unknown unit (use M or G)")),
    };
    mib_checked(n.checked_mul(factor), value)
}

fn mib_checked(mib: Option<u64>, value: &str) -> Result<u32, MetadataError> {
    let bad = |reason| MetadataError::BadMemory {
        value: value.to_owned(),
        reason,
    };
    match mib {
        Some(0) => Err(bad("it must be at least 1 MiB")),
        Some(m) => u32::try_from(m).map_err(|_| bad("it is too large")),
        None => Err(bad("it is too large")),
    }
}

impl SeptemMetadata {
    /// Default memory in MiB (0: the monitor's default).
    pub fn memory_mib(&self) -> Result<u32, MetadataError> {
        match &self.memory {
            None => Ok(0),
            Some(MemorySpec::Mib(n)) => mib_checked(Some(*n), &n.to_string()),
            Some(MemorySpec::Text(s)) => parse_memory_mib(s),
        }
    }

    /// The finalized manifest these declarations make.
    pub fn to_manifest(&self) -> Result<Manifest, MetadataError> {
        if self.devices.len() > MAX_DEVICES {
            return Err(MetadataError::TooManyDevices {
                count: self.devices.len(),
            });
        }
        let mut m = Manifest::EMPTY;
        for (index, d) in self.devices.iter().enumerate() {
            let kind =
                DeviceKind::from_name(&d.kind).ok_or_else(|| MetadataError::UnknownKind {
                    index,
                    name: d.name.clone(),
                    kind: d.kind.clone(),
                })?;
            m.push_device(kind, &d.name).map_err(|e| match e {
                ManifestError::DuplicateDeviceName { .. } => MetadataError::DuplicateName {
                    index,
                    name: d.name.clone(),
                },
                ManifestError::TooManyDevices(_) => MetadataError::TooManyDevices {
                    count: self.devices.len(),
                },
                _ => MetadataError::BadName {
                    index,
                    name: d.name.clone(),
                },
            })?;
        }
        m.header.default_mem_mib = self.memory_mib()?;
        m.header.flags |= FLAG_FINALIZED;
        Ok(m)
    }
}

/// What septem-build needs from an app's `Cargo.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppManifest {
    /// `package.name`.
    pub package_name: String,
    /// `[package.metadata.septem]` (defaults when absent).
    pub septem: SeptemMetadata,
}

impl AppManifest {
    /// Parses the text of a `Cargo.toml` (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<AppManifest, MetadataError> {
        let doc: toml::Table = toml::from_str(text).map_err(|source| MetadataError::Toml {
            path: path.to_owned(),
            source,
        })?;
        let package = doc.get("package").and_then(toml::Value::as_table);
        let Some(name) = package
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str)
        else {
            return Err(MetadataError::NoPackage {
                path: path.to_owned(),
            });
        };
        let septem = match package
            .and_then(|p| p.get("metadata"))
            .and_then(|m| m.get("septem"))
        {
            None => SeptemMetadata::default(),
            Some(v) => v.clone().try_into().map_err(MetadataError::Shape)?,
        };
        // Validate now, so errors show before a long compile.
        septem.to_manifest()?;
        Ok(AppManifest {
            package_name: name.to_owned(),
            septem,
        })
    }

    /// Reads and parses `path` (a `Cargo.toml`).
    pub fn read(path: &Path) -> Result<AppManifest, MetadataError> {
        let text = std::fs::read_to_string(path).map_err(|source| MetadataError::Read {
            path: path.to_owned(),
            source,
        })?;
        AppManifest::parse(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<AppManifest, MetadataError> {
        let text = format!("[package]\nname = \"app\"\nversion = \"0.1.0\"\n{extra}");
        AppManifest::parse(&text, Path::new("Cargo.toml"))
    }

    #[test]
    fn no_metadata_means_no_devices_default_memory() {
        let app = parse("").unwrap();
        assert_eq!(app.package_name, "app");
        let m = app.septem.to_manifest().unwrap();
        assert!(m.is_finalized());
        assert_eq!(m.devices().len(), 0);
        assert_eq!(m.header.default_mem_mib, 0);
    }

    #[test]
    fn devices_and_memory() {
        let app = parse(
            r#"
[package.metadata.septem]
memory = "64M"
devices = [{ name = "service", kind = "net" }, { name = "data_1", kind = "block" }]
"#,
        )
        .unwrap();
        let m = app.septem.to_manifest().unwrap();
        assert_eq!(m.header.default_mem_mib, 64);
        assert_eq!(m.devices()[0].name_str(), "service");
        assert_eq!(m.devices()[0].device_kind(), Some(DeviceKind::Net));
        assert_eq!(m.devices()[1].device_kind(), Some(DeviceKind::Block));
        assert_eq!(Manifest::from_bytes(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mib("64M").unwrap(), 64);
        assert_eq!(parse_memory_mib("64MiB").unwrap(), 64);
        assert_eq!(parse_memory_mib("2G").unwrap(), 2048);
        assert_eq!(parse_memory_mib("1gib").unwrap(), 1024);
        assert_eq!(parse_memory_mib("128").unwrap(), 128);
        for bad in ["", "M", "0M", "12K", "-5M", "99999999999G", "1.5G"] {
            assert!(
                matches!(parse_memory_mib(bad), Err(MetadataError::BadMemory { .. })),
                "{bad:?} accepted"
            );
        }
        let app = parse("[package.metadata.septem]\nmemory = 256\n").unwrap();
        assert_eq!(app.septem.memory_mib().unwrap(), 256);
        assert!(parse("[package.metadata.septem]\nmemory = 0\n").is_err());
    }

    #[test]
    fn validation_errors_are_specific() {
        let dev = |list: &str| parse(&format!("[package.metadata.septem]\ndevices = [{list}]\n"));
        assert!(matches!(
            dev(r#"{ name = "x", kind = "gpu" }"#),
            Err(MetadataError::UnknownKind { index: 0, .. })
        ));
        assert!(matches!(
            dev(r#"{ name = "a", kind = "net" }, { name = "bad name", kind = "net" }"#),
            Err(MetadataError::BadName { index: 1, .. })
        ));
        assert!(matches!(
            dev(r#"{ name = "", kind = "net" }"#),
            Err(MetadataError::BadName { .. })
        ));
        let long = "x".repeat(32);
        assert!(matches!(
            dev(&format!(r#"{{ name = "{long}", kind = "net" }}"#)),
            Err(MetadataError::BadName { .. })
        ));
        assert!(matches!(
            dev(r#"{ name = "a", kind = "net" }, { name = "a", kind = "block" }"#),
            Err(MetadataError::DuplicateName { index: 1, .. })
        ));
        let many: Vec<String> = (0..17)
            .map(|i| format!(r#"{{ name = "d{i}", kind = "block" }}"#))
            .collect();
        assert!(matches!(
            dev(&many.join(", ")),
            Err(MetadataError::TooManyDevices { count: 17 })
        ));
        assert!(matches!(
            dev(r#"{ name = "a", kind = "net", speed = 10 }"#),
            Err(MetadataError::Shape(_))
        ));
        assert!(matches!(
            parse("[package.metadata.septem]\ndevice = []\n"),
            Err(MetadataError::Shape(_))
        ));
    }

    #[test]
    fn not_an_app_manifest() {
        assert!(matches!(
            AppManifest::parse("[workspace]\nmembers = []\n", Path::new("C")),
            Err(MetadataError::NoPackage { .. })
        ));
        assert!(matches!(
            AppManifest::parse("[package\n", Path::new("C")),
            Err(MetadataError::Toml { .. })
        ));
        let e = parse("[package.metadata.septem]\ndevices = [{ name = \"x\", kind = \"gpu\" }]\n")
            .unwrap_err();
        assert!(e.to_string().contains("unknown kind \"gpu\""), "{e}");
    }
}
