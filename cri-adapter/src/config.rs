//! septem-cri's settings: an optional TOML file (`--config`, default
//! `/etc/septem/cri.toml`) overridden by command-line flags.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Default socket.
pub const DEFAULT_LISTEN: &str = "/run/septem/cri.sock";
/// Default config file (optional: absent is fine).
pub const DEFAULT_CONFIG: &str = "/etc/septem/cri.toml";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/septem-cri";
/// Default CNI configuration directory.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Default CNI plugin directory (Debian's containernetworking-plugins).
pub const DEFAULT_CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for us.
    #[error("{} is not a valid septem-cri configuration", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// A backend name that runnc does not know.
    #[error("unknown backend {0:?} (expected auto, kvm or seccomp)")]
    Backend(String),
}

/// The file's contents; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Socket path.
    pub listen: Option<PathBuf>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// CNI configuration directory.
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directories (colon-separated, as CNI_PATH).
    pub cni_bin_dir: Option<String>,
    /// The runnc binary.
    pub runnc: Option<PathBuf>,
    /// The runc binary runnc hands ordinary bundles to.
    pub runc: Option<PathBuf>,
    /// Backend for the `septem` runtime handler: auto, kvm or seccomp.
    pub default_backend: Option<String>,
    /// Image references reported as pinned (never removed by RemoveImage).
    pub pinned_images: Option<Vec<String>>,
}

impl FileConfig {
    /// Reads `path`; a missing file is an empty configuration when `optional`.
    pub fn load(path: &Path, optional: bool) -> Result<FileConfig, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|source| Error::Parse {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(FileConfig::default())
            }
            Err(source) => Err(Error::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// The settings in force.
#[derive(Clone, Debug)]
pub struct Config {
    /// Socket path.
    pub listen: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// CNI configuration directory.
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories (colon-separated).
    pub cni_bin_dir: String,
    /// The runnc binary.
    pub runnc: PathBuf,
    /// The runc binary (passed to runnc as `RUNNC_RUNC`), if set.
    pub runc: Option<PathBuf>,
    /// Backend of the `septem` handler.
    pub default_backend: String,
    /// Image references reported as pinned (the kubelet's image GC leaves them alone;
    /// RemoveImage refuses them).
    pub pinned_images: Vec<String>,
}

/// Checks a backend name.
pub fn check_backend(b: &str) -> Result<String, Error> {
    match b {
        "auto" | "kvm" | "seccomp" => Ok(b.to_string()),
        _ => Err(Error::Backend(b.to_string())),
    }
}

/// `runnc` next to our own executable, else on PATH (found at spawn time).
pub fn default_runnc() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("runnc")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("runnc"))
}

/// `program` as a path (when it has a slash) or found on PATH, if it is an executable file.
#[must_use]
pub fn find_executable(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let ok = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return ok(program).then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| ok(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_by_path_or_on_path() {
        assert!(find_executable(Path::new("sh")).is_some());
        assert!(find_executable(Path::new("/bin/sh")).is_some());
        assert!(find_executable(Path::new("/nonexistent/runnc")).is_none());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(find_executable(&plain).is_none(), "not executable");
        assert!(find_executable(Path::new("no-such-program-here")).is_none());
    }

    #[test]
    fn file_config_keys_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cri.toml");
        std::fs::write(
            &f,
            "listen = \"/x.sock\"\ndefault-backend = \"kvm\"\ncni-bin-dir = \"/a:/b\"\n\
             pinned-images = [\"registry.example.com/septem/httpd:1\", \"busybox\"]\n",
        )
        .unwrap();
        let c = FileConfig::load(&f, false).unwrap();
        assert_eq!(c.listen.as_deref(), Some(Path::new("/x.sock")));
        assert_eq!(c.default_backend.as_deref(), Some("kvm"));
        assert_eq!(c.cni_bin_dir.as_deref(), Some("/a:/b"));
        assert_eq!(
            c.pinned_images.as_deref(),
            Some(
                &[
                    "registry.example.com/septem/httpd:1".to_string(),
                    "busybox".into()
                ][..]
            )
        );
        std::fs::write(&f, "lisen = 1\n").unwrap();
        assert!(matches!(
            FileConfig::load(&f, false),
            Err(Error::Parse { .. })
        ));
        let missing = dir.path().join("none.toml");
        assert!(FileConfig::load(&missing, true).is_ok());
        assert!(matches!(
            FileConfig::load(&missing, false),
            Err(Error::Read { .. })
        ));
        assert!(check_backend("kvm").is_ok());
        assert!(matches!(check_backend("xen"), Err(Error::Backend(_))));
    }
}
