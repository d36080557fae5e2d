//! Running `ip`/`tc` inside a network namespace: a short-lived thread joins the
//! namespace with `setns(CLONE_NEWNET)` and spawns the commands from there (a child
//! inherits the namespaces of the thread that forks it), so no `nsenter` is needed and
//! the process's other threads keep their namespace.

use super::Error;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

/// Commands run inside one namespace (only exists on the thread that joined it).
#[derive(Debug)]
pub(super) struct Ns {
    _private: (),
}

/// Runs `f` on a new thread inside the namespace at `path`. `Ok(None)` when the
/// namespace does not exist (any more).
pub(super) fn enter<T: Send>(
    path: &Path,
    missing_ok: bool,
    f: impl FnOnce(&Ns) -> Result<T, Error> + Send,
) -> Result<Option<T>, Error> {
    let netns_err = |source: std::io::Error| Error::Netns {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e)
            if missing_ok
                && (e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ESRCH)) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(netns_err(e)),
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: `file` is an open descriptor for the duration of the call;
            // joining a network namespace changes only this thread's view of the
            // network, and the thread ends with `f`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(netns_err(std::io::Error::last_os_error()));
            }
            drop(file);
            f(&Ns { _private: () }).map(Some)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl Ns {
    /// Runs `argv` and returns its stdout; a failure carries the command and stderr.
    pub(super) fn run(&self, argv: &[&str]) -> Result<String, Error> {
        let line = argv.join(" ");
        tracing::debug!(command = %line, "network");
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .map_err(|source| Error::Setup {
                what: format!("`{line}`: cannot run {}", argv[0]),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(Error::Setup {
                what: format!("`{line}` failed ({}): {stderr}", out.status),
                source: std::io::Error::other(stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a command printing JSON (`ip -j`, `tc -j`) and parses it (empty → `[]`).
    pub(super) fn json(&self, argv: &[&str]) -> Result<serde_json::Value, Error> {
        let text = self.run(argv)?;
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        serde_json::from_str(&text).map_err(|e| Error::Setup {
            what: format!("`{}` printed JSON that does not parse", argv.join(" ")),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }
}
