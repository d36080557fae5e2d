//! cgroup v2: one directory in the unified hierarchy.

use super::fsutil::{self, io};
use super::{Error, Resources, Stats};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The controllers runnc enables for its cgroups.
const CONTROLLERS: [&str; 4] = ["cpu", "cpuset", "memory", "pids"];

/// runc's conversion of v1 `cpu.shares` [2, 262144] to v2 `cpu.weight` [1, 10000].
#[must_use]
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The hierarchy's root above `dir`: the highest ancestor holding `cgroup.controllers`.
fn mount_root(dir: &Path) -> Option<PathBuf> {
    let mut found = None;
    let mut cur = dir.parent();
    while let Some(d) = cur {
        if d.join("cgroup.controllers").exists() {
            found = Some(d.to_path_buf());
        } else if found.is_some() {
            break;
        }
        cur = d.parent();
    }
    found
}

pub(super) fn create(dir: &Path) -> Result<(), Error> {
    let root = mount_root(dir).ok_or_else(|| {
        io(
            "create",
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no cgroup v2 hierarchy above this directory",
            ),
        )
    })?;
    fsutil::mkdir_all(dir)?;
    // Enable the controllers in each parent's cgroup.subtree_control, root first, so
    // the leaf gets the interface files. What a parent offers is its
    // cgroup.controllers; where that file is absent (only in a fake tree) what was
    // enabled one level up.
    let Ok(rel) = dir.strip_prefix(&root) else {
        return Ok(());
    };
    let mut parent = root.clone();
    let mut offered: Vec<String> = Vec::new();
    for c in rel.components() {
        let available: Vec<String> =
            match std::fs::read_to_string(parent.join("cgroup.controllers")) {
                Ok(text) => text.split_whitespace().map(str::to_string).collect(),
                Err(_) => offered.clone(),
            };
        let control = parent.join("cgroup.subtree_control");
        let mut enabled: Vec<String> = std::fs::read_to_string(&control)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let missing: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| available.iter().any(|a| a == c) && !enabled.iter().any(|e| e == c))
            .collect();
        if !missing.is_empty() {
            let all = missing
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            if fsutil::write(&control, &all).is_ok() {
                enabled.extend(missing.iter().map(|c| c.to_string()));
            } else {
                // One at a time: a controller that cannot be enabled (e.g. cpu with
                // realtime tasks around) must not keep the others off.
                for ctrl in missing {
                    match fsutil::write(&control, &format!("+{ctrl}")) {
                        Ok(()) => enabled.push(ctrl.to_string()),
                        Err(e) => tracing::warn!(
                            error = %e,
                            controller = ctrl,
                            "cannot enable cgroup v2 controller"
                        ),
                    }
                }
            }
        }
        offered = enabled;
        parent = parent.join(c);
    }
    Ok(())
}

pub(super) fn apply(dir: &Path, r: &Resources) -> Result<(), Error> {
    if let Some(m) = r.memory_limit {
        fsutil::write(&dir.join("memory.max"), &max_or(m))?;
    }
    if let Some(swap) = r.memory_swap {
        let file = dir.join("memory.swap.max");
        // v1's memsw is memory + swap; v2 limits swap alone.
        let value = match (swap, r.memory_limit) {
            (s, _) if s < 0 => Some("max".to_string()),
            (s, Some(m)) if m >= 0 => {
                if s < m {
                    return Err(Error::InvalidResources {
                        why: format!("memory.swap ({s}) is below memory.limit ({m})"),
                    });
                }
                Some((s - m).to_string())
            }
            (_, Some(_)) => Some("max".to_string()),
            (_, None) => {
                tracing::warn!(
                    "memory.swap without memory.limit cannot be converted for cgroup v2; ignored"
                );
                None
            }
        };
        if let Some(v) = value {
            if file.exists() {
                fsutil::write(&file, &v)?;
            } else {
                tracing::warn!(
                    "memory.swap.max is absent (no swap accounting); swap limit ignored"
                );
            }
        }
    }
    if let Some(shares) = r.cpu_shares.filter(|s| *s > 0) {
        fsutil::write(
            &dir.join("cpu.weight"),
            &shares_to_weight(shares).to_string(),
        )?;
    }
    if r.cpu_quota.is_some() || r.cpu_period.is_some() {
        let quota = match r.cpu_quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        let period = r.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
        fsutil::write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
    }
    if let Some(cpus) = r.cpuset_cpus.as_deref() {
        fsutil::write(&dir.join("cpuset.cpus"), cpus)?;
    }
    if let Some(p) = r.pids_limit {
        let v = if p <= 0 {
            "max".to_string()
        } else {
            p.to_string()
        };
        fsutil::write(&dir.join("pids.max"), &v)?;
    }
    Ok(())
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

pub(super) fn add_process(dir: &Path, pid: i32) -> Result<(), Error> {
    fsutil::write(&dir.join("cgroup.procs"), &pid.to_string())
}

pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), Error> {
    let freeze = dir.join("cgroup.freeze");
    fsutil::write(&freeze, if frozen { "1" } else { "0" })?;
    let events = dir.join("cgroup.events");
    let result = fsutil::poll(
        if frozen { "freeze" } else { "thaw" },
        &events,
        Duration::from_secs(5),
        || Ok(()),
        || Ok(is_frozen(dir)? == frozen),
    );
    if result.is_err() && frozen {
        let _ = fsutil::write(&freeze, "0");
    }
    result
}

pub(super) fn is_frozen(dir: &Path) -> Result<bool, Error> {
    let text = fsutil::read(&dir.join("cgroup.events"))?;
    Ok(text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["frozen", "1"]))
}

pub(super) fn kill_all(dir: &Path, signal: i32) -> Result<(), Error> {
    let kill = dir.join("cgroup.kill");
    if signal == libc::SIGKILL && kill.exists() {
        return fsutil::write(&kill, "1");
    }
    fsutil::procs(dir)?
        .into_iter()
        .try_for_each(|pid| fsutil::signal(pid, signal))
}

pub(super) fn stats(dir: &Path) -> Result<Stats, Error> {
    let mut s = Stats::default();
    let cpu_stat = dir.join("cpu.stat");
    if cpu_stat.exists() {
        for line in fsutil::read(&cpu_stat)?.lines() {
            if let Some(v) = line.strip_prefix("usage_usec ") {
                s.cpu_usage_ns = v.trim().parse::<u64>().unwrap_or(0).saturating_mul(1000);
            }
        }
    }
    s.memory_usage = fsutil::read_u64_opt(&dir.join("memory.current"), u64::MAX)?;
    s.memory_limit = fsutil::read_u64_opt(&dir.join("memory.max"), u64::MAX)?;
    s.pids_current = fsutil::read_u64_opt(&dir.join("pids.current"), 0)?;
    s.pids_limit = fsutil::read_u64_opt(&dir.join("pids.max"), 0)?;
    Ok(s)
}
