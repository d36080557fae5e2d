//! cgroup v1: one directory per controller hierarchy (`memory`, `cpu,cpuacct`, …).

use super::fsutil::{self, io};
use super::{Error, Resources, Stats};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The controllers runnc uses, in the order their directories are recorded.
pub(super) const CONTROLLERS: [&str; 6] = ["memory", "cpu", "cpuacct", "pids", "freezer", "cpuset"];

/// Every v1 subsystem name, to recognise a hierarchy's mount directory in a path.
const SUBSYSTEMS: [&str; 14] = [
    "cpuset",
    "cpu",
    "cpuacct",
    "memory",
    "pids",
    "freezer",
    "blkio",
    "devices",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

/// Splits a recorded directory into its hierarchy's mount directory and the
/// controllers mounted there: the first path component that is a comma-separated
/// list of v1 subsystem names (`memory`, `cpu,cpuacct`).
pub(super) fn split(dir: &Path) -> Option<(PathBuf, Vec<String>)> {
    let mut mount = PathBuf::new();
    for c in dir.components() {
        mount.push(c);
        let name = c.as_os_str().to_str()?;
        let names: Vec<&str> = name.split(',').collect();
        if !name.is_empty() && names.iter().all(|n| SUBSYSTEMS.contains(n)) {
            return Some((mount, names.into_iter().map(str::to_string).collect()));
        }
    }
    None
}

/// The recorded directory of `controller`.
pub(super) fn dir_of<'a>(dirs: &'a [PathBuf], controller: &str) -> Option<&'a PathBuf> {
    dirs.iter()
        .find(|d| split(d).is_some_and(|(_, c)| c.iter().any(|x| x == controller)))
}

/// The directories for cgroup path `rel`: below each hierarchy's root, or, when `own`
/// (the text of `/proc/self/cgroup`) is given, below the runtime's own cgroup there.
pub(super) fn resolve(root: &Path, own: Option<&str>, rel: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for ctrl in CONTROLLERS {
        let link = root.join(ctrl);
        if !link.is_dir() {
            tracing::debug!(
                controller = ctrl,
                "cgroup v1 controller not mounted; skipped"
            );
            continue;
        }
        // `cpu` and `cpuacct` are usually symlinks to `cpu,cpuacct`: record the real
        // directory, once.
        let mount = match std::fs::read_link(&link) {
            Ok(target) if target.components().count() == 1 => root.join(target),
            _ => link,
        };
        let base = match own.and_then(|text| super::path::own_cgroup(text, Some(ctrl))) {
            Some(p) => mount.join(p),
            None => mount,
        };
        let dir = base.join(rel);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

pub(super) fn create(dirs: &[PathBuf]) -> Result<(), Error> {
    for dir in dirs {
        fsutil::mkdir_all(dir)?;
        let Some((mount, ctrls)) = split(dir) else {
            continue;
        };
        if ctrls.iter().any(|c| c == "cpuset") {
            init_cpuset(&mount, dir)?;
        }
    }
    Ok(())
}

/// A new v1 cpuset cgroup starts with empty `cpuset.cpus`/`cpuset.mems`, and no task
/// can join it: copy them down from the parent, top to bottom.
fn init_cpuset(mount: &Path, leaf: &Path) -> Result<(), Error> {
    let Ok(rel) = leaf.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_path_buf();
    for c in rel.components() {
        let dir = parent.join(c);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(file);
            let current = std::fs::read_to_string(&own).unwrap_or_default();
            if current.trim().is_empty() {
                let from = parent.join(file);
                let value = std::fs::read_to_string(&from).unwrap_or_default();
                if !value.trim().is_empty() {
                    fsutil::write(&own, value.trim())?;
                }
            }
        }
        parent = dir;
    }
    Ok(())
}

pub(super) fn apply(dirs: &[PathBuf], r: &Resources) -> Result<(), Error> {
    if let Some(mem) = dir_of(dirs, "memory") {
        let limit = mem.join("memory.limit_in_bytes");
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        let swap = r.memory_swap.filter(|_| memsw.exists());
        if r.memory_swap.is_some() && swap.is_none() {
            tracing::warn!(
                "memory.memsw.limit_in_bytes is absent (no swap accounting); swap limit ignored"
            );
        }
        match (r.memory_limit, swap) {
            (Some(m), Some(s)) => {
                // memory ≤ memsw always: raise memsw first when the new memory limit
                // is above the current memsw limit.
                let current = fsutil::read_u64(&memsw, u64::MAX).unwrap_or(u64::MAX);
                let m_u = if m < 0 { u64::MAX } else { m as u64 };
                if m_u > current {
                    fsutil::write(&memsw, &s.to_string())?;
                    fsutil::write(&limit, &m.to_string())?;
                } else {
                    fsutil::write(&limit, &m.to_string())?;
                    fsutil::write(&memsw, &s.to_string())?;
                }
            }
            (Some(m), None) => fsutil::write(&limit, &m.to_string())?,
            (None, Some(s)) => fsutil::write(&memsw, &s.to_string())?,
            (None, None) => {}
        }
    } else if r.memory_limit.is_some() || r.memory_swap.is_some() {
        tracing::warn!("memory controller not mounted; memory limits ignored");
    }
    if let Some(cpu) = dir_of(dirs, "cpu") {
        // 0 means "not set" for shares, period and quota (as in runc).
        if let Some(shares) = r.cpu_shares.filter(|s| *s > 0) {
            fsutil::write(&cpu.join("cpu.shares"), &shares.to_string())?;
        }
        if let Some(period) = r.cpu_period.filter(|p| *p > 0) {
            fsutil::write(&cpu.join("cpu.cfs_period_us"), &period.to_string())?;
        }
        if let Some(quota) = r.cpu_quota.filter(|q| *q != 0) {
            let q = if quota < 0 { -1 } else { quota };
            fsutil::write(&cpu.join("cpu.cfs_quota_us"), &q.to_string())?;
        }
    }
    if let (Some(cpuset), Some(cpus)) = (dir_of(dirs, "cpuset"), r.cpuset_cpus.as_deref()) {
        fsutil::write(&cpuset.join("cpuset.cpus"), cpus)?;
    }
    if let (Some(pids), Some(limit)) = (dir_of(dirs, "pids"), r.pids_limit) {
        let v = if limit <= 0 {
            "max".to_string()
        } else {
            limit.to_string()
        };
        fsutil::write(&pids.join("pids.max"), &v)?;
    }
    Ok(())
}

pub(super) fn add_process(dirs: &[PathBuf], pid: i32) -> Result<(), Error> {
    for dir in dirs {
        fsutil::write(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

pub(super) fn pids(dirs: &[PathBuf]) -> Result<Vec<i32>, Error> {
    let mut all = Vec::new();
    for dir in dirs {
        all.extend(fsutil::procs(dir)?);
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

fn freezer(dirs: &[PathBuf]) -> Result<&PathBuf, Error> {
    dir_of(dirs, "freezer").ok_or_else(|| {
        io(
            "freeze",
            dirs.first().map_or(Path::new(""), |d| d.as_path()),
            std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the freezer controller is not mounted",
            ),
        )
    })
}

pub(super) fn set_frozen(dirs: &[PathBuf], frozen: bool) -> Result<(), Error> {
    let state = freezer(dirs)?.join("freezer.state");
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let result = fsutil::poll(
        if frozen { "freeze" } else { "thaw" },
        &state,
        Duration::from_secs(5),
        // FREEZING can stall on a task in an uninterruptible sleep: rewriting the
        // state retries the tasks that were not frozen yet.
        || fsutil::write(&state, want),
        || Ok(fsutil::read(&state)?.trim() == want),
    );
    if result.is_err() && frozen {
        let _ = fsutil::write(&state, "THAWED");
    }
    result
}

pub(super) fn is_frozen(dirs: &[PathBuf]) -> Result<bool, Error> {
    let state = freezer(dirs)?.join("freezer.state");
    Ok(fsutil::read(&state)?.trim() == "FROZEN")
}

pub(super) fn kill_all(dirs: &[PathBuf], signal: i32) -> Result<(), Error> {
    // For SIGKILL, freeze first so nothing forks behind our back, as runc does.
    let freeze = signal == libc::SIGKILL
        && dir_of(dirs, "freezer").is_some_and(|d| d.exists())
        && !is_frozen(dirs).unwrap_or(true);
    if freeze {
        if let Err(e) = set_frozen(dirs, true) {
            tracing::warn!(error = %e, "could not freeze before SIGKILL; signalling anyway");
        }
    }
    let result = pids(dirs).and_then(|pids| {
        pids.into_iter()
            .try_for_each(|pid| fsutil::signal(pid, signal))
    });
    if freeze {
        set_frozen(dirs, false)?;
    }
    result
}

pub(super) fn stats(dirs: &[PathBuf]) -> Result<Stats, Error> {
    let mut s = Stats::default();
    if let Some(d) = dir_of(dirs, "cpuacct") {
        s.cpu_usage_ns = fsutil::read_u64_opt(&d.join("cpuacct.usage"), u64::MAX)?;
    }
    if let Some(d) = dir_of(dirs, "memory") {
        s.memory_usage = fsutil::read_u64_opt(&d.join("memory.usage_in_bytes"), u64::MAX)?;
        s.memory_limit = fsutil::read_u64_opt(&d.join("memory.limit_in_bytes"), u64::MAX)?;
    }
    if let Some(d) = dir_of(dirs, "pids") {
        s.pids_current = fsutil::read_u64_opt(&d.join("pids.current"), 0)?;
        s.pids_limit = fsutil::read_u64_opt(&d.join("pids.max"), 0)?;
    }
    Ok(s)
}
