//! The container's cgroup: created at `create`, the monitor placed in it, limits from
//! `linux.resources`, frozen for `pause`, read for `ps`/`events --stats`, removed at
//! `delete`. cgroup v1 (one directory per controller) and v2 (one unified directory).
//!
//! INTERFACE (owned by the cgroup work; the lifecycle code relies on exactly this).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cgroup file or directory operation failed.
    #[error("cgroup {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The `linux.cgroupsPath` cannot be used.
    #[error("invalid cgroupsPath {path:?}: {why}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it is refused.
        why: String,
    },
    /// Not wired yet (skeleton only; must not remain).
    #[error("cgroups are not wired yet")]
    Unwired,
}

/// Limits from the bundle's `linux.resources` (and `runnc update`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `memory.limit` in bytes.
    pub memory_limit: Option<i64>,
    /// `memory.swap` (memory + swap) in bytes.
    pub memory_swap: Option<i64>,
    /// `cpu.shares` (v1 weight; converted to `cpu.weight` on v2).
    pub cpu_shares: Option<u64>,
    /// `cpu.quota` in microseconds per period (-1: unlimited).
    pub cpu_quota: Option<i64>,
    /// `cpu.period` in microseconds.
    pub cpu_period: Option<u64>,
    /// `cpu.cpus` (cpuset list such as `0-1`).
    pub cpuset_cpus: Option<String>,
    /// `pids.limit` (-1 or 0: unlimited).
    pub pids_limit: Option<i64>,
}

/// Usage numbers for `events --stats` and CRI stats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Total CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// Memory limit, bytes (u64::MAX-like values when unlimited).
    pub memory_limit: u64,
    /// Processes in the cgroup.
    pub pids_current: u64,
    /// Pids limit (0: unlimited).
    pub pids_limit: u64,
}

/// One container's cgroup, resolved to directories; recorded in the container state so
/// `delete` after a crash can remove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// The directories: one per v1 controller (`memory`, `cpu,cpuacct`, `pids`,
    /// `freezer`, `cpuset`…), or the single v2 directory.
    pub dirs: Vec<PathBuf>,
    /// True for cgroup v2 (unified).
    pub unified: bool,
}

impl Cgroup {
    /// Resolves `linux.cgroupsPath` (absent: `/runnc/<id>`; relative: under the
    /// runtime's own cgroup; `slice:prefix:name` with `systemd`) to directories, without
    /// touching the file system beyond reading mounts.
    pub fn resolve(cgroups_path: Option<&str>, id: &str, systemd: bool) -> Result<Cgroup, Error> {
        let _ = (cgroups_path, id, systemd);
        Err(Error::Unwired)
    }

    /// Creates the directories (and, on v2, enables the controllers in the parents).
    pub fn create(&self) -> Result<(), Error> {
        Err(Error::Unwired)
    }

    /// Writes the limits that are set in `r`.
    pub fn apply(&self, r: &Resources) -> Result<(), Error> {
        let _ = r;
        Err(Error::Unwired)
    }

    /// Moves `pid` into the cgroup (every directory).
    pub fn add_process(&self, pid: i32) -> Result<(), Error> {
        let _ = pid;
        Err(Error::Unwired)
    }

    /// The pids in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, Error> {
        Err(Error::Unwired)
    }

    /// Freezes (`pause`) or thaws (`resume`) every process; returns when done.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), Error> {
        let _ = frozen;
        Err(Error::Unwired)
    }

    /// True when the cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool, Error> {
        Err(Error::Unwired)
    }

    /// Sends `signal` to every process in the cgroup (`kill --all`).
    pub fn kill_all(&self, signal: i32) -> Result<(), Error> {
        let _ = signal;
        Err(Error::Unwired)
    }

    /// Usage numbers.
    pub fn stats(&self) -> Result<Stats, Error> {
        Err(Error::Unwired)
    }

    /// Removes the directories (kills nothing: fails with `EBUSY` while processes
    /// remain). Idempotent: absent directories are fine.
    pub fn remove(&self) -> Result<(), Error> {
        Err(Error::Unwired)
    }
}
