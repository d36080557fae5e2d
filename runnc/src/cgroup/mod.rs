//! The container's cgroup: created at `create`, the monitor placed in it, limits from
//! `linux.resources`, frozen for `pause`, read for `ps`/`events --stats`, removed at
//! `delete`. cgroup v1 (one directory per controller) and v2 (one unified directory).
//!
//! INTERFACE (owned by the cgroup work; the lifecycle code relies on exactly this).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod fsutil;
mod path;
pub mod prime;
#[cfg(test)]
mod tests;
mod v1;
mod v2;

pub use v2::shares_to_weight;

/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

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
    /// No cgroup hierarchy runnc can use is mounted at the root.
    #[error("no usable cgroup hierarchy under {root}")]
    NoHierarchy {
        /// The mount root looked at.
        root: PathBuf,
    },
    /// The resources cannot be expressed (e.g. swap below memory).
    #[error("invalid resources: {why}")]
    InvalidResources {
        /// Why.
        why: String,
    },
    /// A process of the cgroup could not be signalled.
    #[error("cannot signal process {pid}")]
    Kill {
        /// The process.
        pid: i32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// True when `path` is on a cgroup2 file system (statfs magic `CGROUP2_SUPER_MAGIC`).
#[must_use]
pub fn is_cgroup2_fs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `buf` is a plain C struct that statfs fills; zeroed is a valid value.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `buf` a valid, writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    // The magic's type differs between libc targets; compare as u64.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let magic = buf.f_type as u64;
    rc == 0 && magic == libc::CGROUP2_SUPER_MAGIC as u64
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
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Cgroup::resolve_in(Path::new(CGROUP_ROOT), &own, cgroups_path, id, systemd)
    }

    /// [`Cgroup::resolve`] against the hierarchies mounted at `root` (v2 when `root`
    /// holds `cgroup.controllers`, i.e. a cgroup2 mount; else v1 with one directory per
    /// controller, `cpu`/`cpuacct` possibly symlinks to `cpu,cpuacct`) and
    /// `proc_self_cgroup`, the text of `/proc/self/cgroup` (for relative paths).
    ///
    /// With `systemd`, `slice:prefix:name` maps to the directory systemd would use for
    /// that scope (`system.slice:cri-containerd:ID` → `system.slice/cri-containerd-ID.scope`,
    /// `kubepods-besteffort-podX.slice` → `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podX.slice`);
    /// runnc does not talk to systemd (no transient unit is registered), it manages
    /// those directories itself as runc's cgroupfs driver would.
    pub fn resolve_in(
        root: &Path,
        proc_self_cgroup: &str,
        cgroups_path: Option<&str>,
        id: &str,
        systemd: bool,
    ) -> Result<Cgroup, Error> {
        let anchor = path::anchor(cgroups_path, id, systemd)?;
        let unified = is_cgroup2_fs(root) || root.join("cgroup.controllers").exists();
        let (rel, own) = match &anchor {
            path::Anchor::Root(rel) => (rel.as_path(), None),
            path::Anchor::OwnCgroup(rel) => (rel.as_path(), Some(proc_self_cgroup)),
        };
        let dirs = if unified {
            let base = match own.and_then(|t| path::own_cgroup(t, None)) {
                Some(p) => root.join(p),
                None => root.to_path_buf(),
            };
            vec![base.join(rel)]
        } else {
            v1::resolve(root, own, rel)
        };
        if dirs.is_empty() {
            return Err(Error::NoHierarchy {
                root: root.to_path_buf(),
            });
        }
        tracing::debug!(?dirs, unified, "cgroup resolved");
        Ok(Cgroup { dirs, unified })
    }

    /// The single directory of a v2 cgroup.
    fn dir(&self) -> Result<&Path, Error> {
        self.dirs
            .first()
            .map(PathBuf::as_path)
            .ok_or_else(|| Error::NoHierarchy {
                root: PathBuf::new(),
            })
    }

    /// Creates the directories (and, on v2, enables the controllers in the parents).
    pub fn create(&self) -> Result<(), Error> {
        if self.unified {
            v2::create(self.dir()?)
        } else {
            v1::create(&self.dirs)
        }
    }

    /// Writes the limits that are set in `r`.
    pub fn apply(&self, r: &Resources) -> Result<(), Error> {
        if self.unified {
            v2::apply(self.dir()?, r)
        } else {
            v1::apply(&self.dirs, r)
        }
    }

    /// Moves `pid` into the cgroup (every directory).
    pub fn add_process(&self, pid: i32) -> Result<(), Error> {
        if self.unified {
            v2::add_process(self.dir()?, pid)
        } else {
            v1::add_process(&self.dirs, pid)
        }
    }

    /// The pids in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, Error> {
        if self.unified {
            let mut p = fsutil::procs(self.dir()?)?;
            p.sort_unstable();
            Ok(p)
        } else {
            v1::pids(&self.dirs)
        }
    }

    /// Freezes (`pause`) or thaws (`resume`) every process; returns when done.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), Error> {
        tracing::debug!(frozen, "cgroup freeze");
        if self.unified {
            v2::set_frozen(self.dir()?, frozen)
        } else {
            v1::set_frozen(&self.dirs, frozen)
        }
    }

    /// True when the cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool, Error> {
        if self.unified {
            v2::is_frozen(self.dir()?)
        } else {
            v1::is_frozen(&self.dirs)
        }
    }

    /// Sends `signal` to every process in the cgroup (`kill --all`).
    pub fn kill_all(&self, signal: i32) -> Result<(), Error> {
        tracing::debug!(signal, "cgroup kill --all");
        if self.unified {
            v2::kill_all(self.dir()?, signal)
        } else {
            v1::kill_all(&self.dirs, signal)
        }
    }

    /// Usage numbers.
    pub fn stats(&self) -> Result<Stats, Error> {
        if self.unified {
            v2::stats(self.dir()?)
        } else {
            v1::stats(&self.dirs)
        }
    }

    /// Removes the directories (kills nothing: fails with `EBUSY` while processes
    /// remain). Idempotent: absent directories are fine.
    pub fn remove(&self) -> Result<(), Error> {
        for dir in &self.dirs {
            fsutil::remove_tree(dir)?;
        }
        Ok(())
    }
}
