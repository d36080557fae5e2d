//! Where runnc finds `septem-run` and `runc`, and the default backend: the optional
//! file `/etc/septem/runnc.toml` (path from `RUNNC_CONFIG`), overridden by the
//! environment (`RUNNC_SEPTEM_RUN`, `RUNNC_RUNC`, `RUNNC_BACKEND`). containerd's shim
//! passes no custom flags, so this is how users configure runnc.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The default config file.
pub const DEFAULT_CONFIG: &str = "/etc/septem/runnc.toml";

/// Errors reading the settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file exists but cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("invalid {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// A backend name that is not auto, kvm or seccomp.
    #[error("invalid backend {0:?} (from {1}): use auto, kvm or seccomp")]
    Backend(String, &'static str),
}

/// The file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    septem_run: Option<PathBuf>,
    runc: Option<PathBuf>,
    backend: Option<String>,
}

/// The resolved settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The monitor binary.
    pub septem_run: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// The default backend (`auto`, `kvm`, `seccomp`).
    pub backend: String,
}

/// Checks a backend name.
pub fn check_backend(name: &str, from: &'static str) -> Result<String, Error> {
    match name {
        "auto" | "kvm" | "seccomp" => Ok(name.to_string()),
        _ => Err(Error::Backend(name.to_string(), from)),
    }
}

impl Settings {
    /// Reads the config file (if any) and the environment; `septem-run` defaults to
    /// the one next to `runnc` (the runnc binary: the running one, or the one
    /// septem-cri's shim would otherwise run), else on PATH.
    pub fn load_for(runnc: Option<&Path>) -> Result<Settings, Error> {
        let path = std::env::var_os("RUNNC_CONFIG")
            .map_or_else(|| PathBuf::from(DEFAULT_CONFIG), PathBuf::from);
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<File>(&text).map_err(|source| Error::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(source) => return Err(Error::Read { path, source }),
        };
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let septem_run = env("RUNNC_SEPTEM_RUN")
            .map(PathBuf::from)
            .or(file.septem_run)
            .unwrap_or_else(|| default_septem_run(runnc));
        let runc = env("RUNNC_RUNC")
            .map(PathBuf::from)
            .or(file.runc)
            .unwrap_or_else(|| on_path("runc").unwrap_or_else(|| PathBuf::from("runc")));
        let backend = match env("RUNNC_BACKEND") {
            Some(b) => check_backend(&b.to_string_lossy(), "RUNNC_BACKEND")?,
            None => match file.backend {
                Some(b) => check_backend(&b, "the config file")?,
                None => "auto".to_string(),
            },
        };
        Ok(Settings {
            septem_run,
            runc,
            backend,
        })
    }
}

/// `septem-run` next to `runnc`, else on PATH.
fn default_septem_run(runnc: Option<&Path>) -> PathBuf {
    runnc
        .and_then(|exe| exe.parent().map(|d| d.join("septem-run")))
        .filter(|p| p.is_file())
        .or_else(|| on_path("septem-run"))
        .unwrap_or_else(|| PathBuf::from("septem-run"))
}

/// The first `name` in a PATH directory.
#[must_use]
pub fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
