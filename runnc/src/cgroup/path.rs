//! `linux.cgroupsPath` to a path relative to a hierarchy's root: validation and the
//! systemd `slice:prefix:name` mapping.

use super::Error;
use std::path::{Component, Path, PathBuf};

/// Where a resolved path hangs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Anchor {
    /// Below the hierarchy's root (absolute `cgroupsPath`, the default, systemd).
    Root(PathBuf),
    /// Below the runtime's own cgroup (relative `cgroupsPath`).
    OwnCgroup(PathBuf),
}

fn invalid(path: &str, why: impl Into<String>) -> Error {
    Error::InvalidPath {
        path: path.to_string(),
        why: why.into(),
    }
}

/// Checks that `p` has only normal components (no `..`, no `.`), and returns it
/// without its leading `/`.
fn clean(original: &str, p: &str) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid(original, "`..` is not allowed")),
            Component::Prefix(_) => return Err(invalid(original, "unexpected path prefix")),
        }
    }
    Ok(out)
}

/// Maps `cgroups_path`/`id`/`systemd` to where the container's cgroup goes.
pub(super) fn anchor(cgroups_path: Option<&str>, id: &str, systemd: bool) -> Result<Anchor, Error> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(invalid(
            cgroups_path.unwrap_or(""),
            format!("container id {id:?} cannot name a cgroup"),
        ));
    }
    let given = cgroups_path.filter(|p| !p.is_empty());
    if systemd {
        let spec = match given {
            Some(p) => p.to_string(),
            None => format!("system.slice:runnc:{id}"),
        };
        return systemd_path(&spec).map(Anchor::Root);
    }
    match given {
        None => Ok(Anchor::Root(PathBuf::from("runnc").join(id))),
        Some(p) if p.starts_with('/') => clean(p, p).map(Anchor::Root),
        Some(p) => {
            let rel = clean(p, p)?;
            if rel.as_os_str().is_empty() {
                return Err(invalid(p, "names no cgroup"));
            }
            Ok(Anchor::OwnCgroup(rel))
        }
    }
}

/// The cgroupfs path systemd gives the unit of `slice:prefix:name`, computed here
/// without asking systemd (runnc does not create transient units; it makes the
/// directories where systemd would put them, as runc's cgroupfs driver does for such
/// paths): `system.slice:cri-containerd:ID` → `system.slice/cri-containerd-ID.scope`;
/// a slice `a-b.slice` expands to `a.slice/a-b.slice`.
pub(super) fn systemd_path(spec: &str) -> Result<PathBuf, Error> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(invalid(
            spec,
            "a systemd cgroupsPath has the form slice:prefix:name",
        ));
    };
    if name.is_empty() {
        return Err(invalid(spec, "the name part is empty"));
    }
    for part in [slice, prefix, name] {
        if part.contains('/') {
            return Err(invalid(spec, "a systemd cgroupsPath part contains `/`"));
        }
        if part == "." || part == ".." {
            return Err(invalid(spec, "`..` is not allowed"));
        }
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let mut path = expand_slice(spec, slice)?;
    let unit = if name.ends_with(".slice") {
        // A slice as the leaf (as runc: the unit is the slice itself, below `slice`).
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    path.push(unit);
    Ok(path)
}

/// systemd's slice expansion: `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`;
/// `-.slice` is the root.
fn expand_slice(spec: &str, slice: &str) -> Result<PathBuf, Error> {
    let Some(base) = slice.strip_suffix(".slice") else {
        return Err(invalid(
            spec,
            format!("{slice:?} is not a slice (no .slice suffix)"),
        ));
    };
    if base == "-" {
        return Ok(PathBuf::new());
    }
    if base.is_empty() {
        return Err(invalid(
            spec,
            format!("{slice:?} is not a valid slice name"),
        ));
    }
    let mut out = PathBuf::new();
    let mut prefix = String::new();
    for comp in base.split('-') {
        if comp.is_empty() {
            return Err(invalid(
                spec,
                format!("{slice:?} is not a valid slice name"),
            ));
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(comp);
        out.push(format!("{prefix}.slice"));
    }
    Ok(out)
}

/// The runtime's own cgroup per hierarchy, from `/proc/self/cgroup` text: v1 lines
/// `N:ctrl[,ctrl]:/path`, the v2 line `0::/path`.
pub(super) fn own_cgroup(proc_self_cgroup: &str, controller: Option<&str>) -> Option<PathBuf> {
    for line in proc_self_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let matches = match controller {
            None => ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        if matches {
            return Some(PathBuf::from(path.trim_start_matches('/')));
        }
    }
    None
}
