//! Small file helpers that turn `io::Error`s into [`Error::Io`] with the path.

use super::Error;
use std::path::Path;
use std::time::{Duration, Instant};

pub(super) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` to a cgroup file (created when absent, which only happens in a fake
/// tree: cgroupfs refuses to create files).
pub(super) fn write(path: &Path, value: &str) -> Result<(), Error> {
    tracing::debug!(path = %path.display(), value, "cgroup write");
    std::fs::write(path, value).map_err(|e| io("write", path, e))
}

pub(super) fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| io("read", path, e))
}

/// Reads a number; `max` (and an empty file) reads as `max_value`.
pub(super) fn read_u64(path: &Path, max_value: u64) -> Result<u64, Error> {
    let text = read(path)?;
    let t = text.trim();
    if t == "max" || t.is_empty() {
        return Ok(max_value);
    }
    t.parse::<u64>().map_err(|e| {
        io(
            "parse",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{t:?}: {e}")),
        )
    })
}

/// Reads a number from an optional file: absent → 0.
pub(super) fn read_u64_opt(path: &Path, max_value: u64) -> Result<u64, Error> {
    if path.exists() {
        read_u64(path, max_value)
    } else {
        Ok(0)
    }
}

/// The pids listed in a `cgroup.procs` file; an absent directory has none.
pub(super) fn procs(dir: &Path) -> Result<Vec<i32>, Error> {
    let path = dir.join("cgroup.procs");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .split_whitespace()
            .filter_map(|w| w.parse::<i32>().ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io("read", &path, e)),
    }
}

pub(super) fn mkdir_all(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))
}

/// Sends `signal` to `pid`; a process that is gone already is fine.
pub(super) fn signal(pid: i32, signal: i32) -> Result<(), Error> {
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(Error::Kill { pid, source: e })
}

/// Removes `dir` and every cgroup below it, leaves first. Absent → Ok. `EBUSY`
/// (processes remain) is retried briefly — a killed process may still be leaving —
/// then returned.
pub(super) fn remove_tree(dir: &Path) -> Result<(), Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io("list", dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "cgroup removed");
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io("remove", dir, e)),
        }
    }
}

/// Polls `done` until true, every few milliseconds, for up to `timeout`; `retry` runs
/// before each check (rewriting a state file that may need a nudge).
pub(super) fn poll(
    what: &'static str,
    path: &Path,
    timeout: Duration,
    mut retry: impl FnMut() -> Result<(), Error>,
    mut done: impl FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_micros(200);
    loop {
        retry()?;
        if done()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io(
                what,
                path,
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("not done after {timeout:?}"),
                ),
            ));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}
