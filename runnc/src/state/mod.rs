//! Container state: `<root>/<id>/state.json`, written atomically (temporary file,
//! rename; no fsync, see [`Dir::save`]), under an exclusive `flock` on the
//! `<root>/<id>` directory so concurrent commands on one id serialize.

pub mod proc;

use crate::cgroup::Cgroup;
use crate::network::Wiring;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

/// The state file's name inside the container directory.
pub const STATE_FILE: &str = "state.json";
/// The fifo the container process blocks on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";
/// Where runnc bind-mounts a network namespace it made itself.
pub const NETNS_FILE: &str = "netns";

/// Errors of state handling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("corrupt state file {path}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The id already has a state directory.
    #[error("container with id {0} already exists")]
    Exists(String),
    /// An id runc would refuse too.
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.', not starting with '.'")]
    InvalidId(String),
}

/// Status as the OCI runtime spec names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The process exists and waits for `start`.
    Created,
    /// Started and alive.
    Running,
    /// Alive, cgroup frozen.
    Paused,
    /// The process is gone.
    Stopped,
}

impl Status {
    /// The lowercase name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What runnc records about one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The container id.
    pub id: String,
    /// The container process (runnc's child, then `septem-run` after exec).
    pub pid: i32,
    /// Its start time (`/proc/<pid>/stat` field 22), to detect pid reuse.
    pub pid_start_time: u64,
    /// The bundle directory (absolute).
    pub bundle: PathBuf,
    /// The rootfs (absolute).
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The config's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The `septem-run` argv (argv[0] is the monitor's path).
    pub argv: Vec<String>,
    /// The container's cgroup (None when none was made).
    pub cgroup: Option<Cgroup>,
    /// The network wiring (taps) to undo at delete.
    pub wiring: Option<Wiring>,
    /// True when runnc made the network namespace (`<root>/<id>/netns`).
    pub own_netns: bool,
    /// True once `start` has released the process.
    pub started: bool,
}

/// A locked container directory `<root>/<id>`; the lock is released on drop.
#[derive(Debug)]
pub struct Dir {
    /// The directory.
    pub path: PathBuf,
    lock: File,
}

/// Checks an id: what runc accepts (`^[\w+-\.]+$`), not starting with '.' (runnc keeps
/// runc's state in `<root>/.runc`).
pub fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn lock(path: &Path) -> Result<File, Error> {
    let f = File::open(path).map_err(io("cannot open", path))?;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io("cannot lock", path)(e));
        }
    }
}

impl Dir {
    /// Makes `<root>/<id>` (the id must be new) and locks it.
    pub fn create(root: &Path, id: &str) -> Result<Dir, Error> {
        check_id(id)?;
        std::fs::create_dir_all(root).map_err(io("cannot create", root))?;
        let path = root.join(id);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(id.to_string()))
            }
            Err(e) => return Err(io("cannot create", &path)(e)),
        }
        let lock = lock(&path)?;
        Ok(Dir { path, lock })
    }

    /// Locks an existing `<root>/<id>`; None when runnc has no such container (the
    /// directory vanished while waiting for the lock counts as none).
    pub fn open(root: &Path, id: &str) -> Result<Option<Dir>, Error> {
        if check_id(id).is_err() {
            return Ok(None);
        }
        let path = root.join(id);
        if !path.is_dir() {
            return Ok(None);
        }
        let lock = match lock(&path) {
            Ok(l) => l,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if !path.is_dir() {
            return Ok(None);
        }
        Ok(Some(Dir { path, lock }))
    }

    /// The descriptor holding the lock (the container process closes it at once).
    #[must_use]
    pub fn lock_fd(&self) -> i32 {
        self.lock.as_raw_fd()
    }

    /// Reads `state.json`; None when it is missing (a create that crashed half-way).
    /// A stale `state.json.tmp` is never read.
    pub fn load(&self) -> Result<Option<State>, Error> {
        let p = self.path.join(STATE_FILE);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| Error::Corrupt { path: p, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &p)(e)),
        }
    }

    /// Writes `state.json` atomically (a temporary file renamed over it), without
    /// fsync: a runnc crash keeps it (the page cache survives it); an OS crash takes
    /// every process, cgroup, tap and namespace it describes with it, and the pid's start
    /// time tells a record from before a reboot (runc does not sync its state either).
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|source| Error::Corrupt {
            path: self.path.join(STATE_FILE),
            source,
        })?;
        write_atomic(&self.path.join(STATE_FILE), &bytes)
    }

    /// Removes the directory and everything in it (the lock goes with it).
    pub fn remove(self) -> Result<(), Error> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot remove", &self.path)(e)),
        }
    }
}

/// Writes `path` atomically: `path.tmp`, then rename over `path` (no fsync, see
/// [`Dir::save`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut f = File::create(&tmp).map_err(io("cannot create", &tmp))?;
    f.write_all(bytes).map_err(io("cannot write", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("cannot rename to", path))
}

impl State {
    /// The status now: the process's liveness and start time, the started flag, and
    /// the cgroup's freezer.
    #[must_use]
    pub fn status(&self) -> Status {
        if !proc::alive(self.pid, self.pid_start_time) {
            return Status::Stopped;
        }
        if let Some(cg) = &self.cgroup {
            if cg.is_frozen().unwrap_or(false) {
                return Status::Paused;
            }
        }
        if self.started {
            Status::Running
        } else {
            Status::Created
        }
    }

    /// The state as the OCI spec defines it (hooks get this on stdin).
    #[must_use]
    pub fn oci_json(&self, status: Status) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": crate::OCI_VERSION,
            "id": self.id,
            "status": status.name(),
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "bundle": self.bundle,
            "annotations": self.annotations,
        })
    }

    /// The state as `runnc state` prints it (runc's shape).
    #[must_use]
    pub fn runc_json(&self, status: Status) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": crate::OCI_VERSION,
            "id": self.id,
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "status": status.name(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
            "annotations": self.annotations,
        })
    }
}
