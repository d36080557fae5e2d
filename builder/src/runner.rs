//! Finding (and, under `cargo run`, building) the monitor `septem-run`, and running an
//! image with it.

use std::path::{Path, PathBuf};
use std::process::Command;
use tracing::debug;

/// The monitor's executable name.
pub const MONITOR_BIN: &str = "septem-run";

/// Environment variable naming the monitor executable.
pub const MONITOR_ENV: &str = "SEPTEM_RUN";

/// The workspace this septem-build was compiled in (to build the monitor from).
#[must_use]
pub fn source_workspace() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    root.join("monitor")
        .join("Cargo.toml")
        .is_file()
        .then(|| root.to_owned())
}

/// Why the monitor could not be found or started.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Nowhere to be found.
    #[error("cannot find {MONITOR_BIN} (looked in: {}); build it with `cargo build -p septem-monitor` (add --release for release builds) or set ${MONITOR_ENV}", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// The places looked at.
        searched: Vec<PathBuf>,
    },
    /// Cargo could not be started to build the monitor.
    #[error("cannot run cargo to build {MONITOR_BIN}")]
    SpawnCargo(#[source] std::io::Error),
    /// Building the monitor failed.
    #[error("`cargo build -p septem-monitor` failed ({0}); its errors are above")]
    BuildFailed(std::process::ExitStatus),
    /// The monitor could not be started.
    #[error("cannot start {}", path.display())]
    Spawn {
        /// The monitor.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// The monitor next to the running executable.
fn beside_current_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(MONITOR_BIN))
}

/// Looks for `septem-run`: next to this executable, then `$SEPTEM_RUN`, then `PATH`.
pub fn find_monitor() -> Result<PathBuf, RunnerError> {
    let mut searched = Vec::new();
    if let Some(p) = beside_current_exe() {
        if is_executable(&p) {
            return Ok(p);
        }
        searched.push(p);
    }
    if let Some(p) = std::env::var_os(MONITOR_ENV).map(PathBuf::from) {
        if is_executable(&p) {
            return Ok(p);
        }
        searched.push(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(MONITOR_BIN);
            if is_executable(&p) {
                return Ok(p);
            }
        }
        searched.push(PathBuf::from("$PATH"));
    }
    Err(RunnerError::NotFound { searched })
}

/// When septem-build runs from a cargo target directory of its own workspace (as with
/// `cargo run -p septem-build`), builds `septem-run` into the same directory with the
/// same profile, so the two always match. Returns whether it did.
pub fn build_monitor_beside_us() -> Result<bool, RunnerError> {
    let (Some(root), Some(cargo)) = (source_workspace(), std::env::var_os("CARGO")) else {
        return Ok(false);
    };
    let Some(exe) = std::env::current_exe().ok() else {
        return Ok(false);
    };
    let (Some(profile_dir), Some(target_dir)) = (exe.parent(), exe.parent().and_then(Path::parent))
    else {
        return Ok(false);
    };
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--quiet",
            "-p",
            "septem-monitor",
            "--bin",
            MONITOR_BIN,
        ])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    debug!(?cmd, "building the monitor");
    let status = cmd.status().map_err(RunnerError::SpawnCargo)?;
    if !status.success() {
        return Err(RunnerError::BuildFailed(status));
    }
    Ok(true)
}

/// The monitor command line: options, the image, then `--` and the guest's arguments.
#[must_use]
pub fn monitor_command(
    monitor: &Path,
    options: &[String],
    image: &Path,
    args: &[String],
) -> Command {
    let mut cmd = Command::new(monitor);
    cmd.args(options).arg(image);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_shape() {
        let cmd = monitor_command(
            Path::new("/bin/septem-run"),
            &["--backend".into(), "kvm".into()],
            Path::new("x.septem"),
            &["-v".into(), "world".into()],
        );
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args, ["--backend", "kvm", "x.septem", "--", "-v", "world"]);
        let cmd = monitor_command(Path::new("m"), &[], Path::new("x"), &[]);
        assert_eq!(cmd.get_args().count(), 1);
    }

    #[test]
    fn the_source_workspace_has_the_monitor() {
        assert!(source_workspace().is_some());
    }
}
