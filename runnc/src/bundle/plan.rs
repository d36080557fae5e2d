//! From a Septem bundle's config to the `septem-run` command line and the set-up runnc
//! does around it (docs/runnc.md "The septem-run command line").

use super::{rootfs_file, Bundle, Error, ANN_BACKEND, ANN_DISKS, ANN_MEMORY};
use crate::cgroup::Resources;
use crate::network::Wiring;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// What the monitor itself needs on top of the guest's memory.
pub const MONITOR_OVERHEAD: i64 = 16 << 20;
/// The smallest OCI memory limit runnc accepts.
pub const MIN_LIMIT: i64 = 32 << 20;
/// Mount destinations `/septem/block/<name>` attach a file as block device `name`.
pub const BLOCK_MOUNT_DIR: &str = "/septem/block/";

/// Where the container's network namespace comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// No network namespace entry: the host's (only allowed without net devices).
    Host,
    /// `linux.namespaces[type=network].path`.
    Join(PathBuf),
    /// A network namespace entry without a path: a new one.
    New,
}

/// The plan for one container.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--backend`.
    pub backend: String,
    /// `--mem` (None: the image's default).
    pub mem: Option<String>,
    /// `--env` values.
    pub env: Vec<String>,
    /// The guest's arguments (after `--`).
    pub args: Vec<String>,
    /// `--block:` values (`name=file[,ro]`).
    pub blocks: Vec<String>,
    /// `--dns` (only with net devices).
    pub dns: Option<Ipv4Addr>,
    /// The image's net device names.
    pub net_devices: Vec<String>,
    /// The network namespace.
    pub net: NetMode,
    /// Other namespaces to unshare in the child (mount, ipc, uts without a path).
    pub unshare_flags: i32,
    /// Cgroup limits.
    pub resources: Resources,
    /// `linux.cgroupsPath`.
    pub cgroups_path: Option<String>,
    /// `process.terminal`.
    pub terminal: bool,
    /// The image.
    pub image: PathBuf,
}

/// Converts the OCI resources runnc applies to the cgroup.
#[must_use]
pub fn resources(r: Option<&LinuxResources>) -> Resources {
    let mut out = Resources::default();
    let Some(r) = r else { return out };
    if let Some(m) = r.memory() {
        out.memory_limit = m.limit();
        out.memory_swap = m.swap();
    }
    if let Some(c) = r.cpu() {
        out.cpu_shares = c.shares();
        out.cpu_quota = c.quota();
        out.cpu_period = c.period();
        out.cpuset_cpus = c.cpus().clone();
    }
    if let Some(p) = r.pids() {
        out.pids_limit = Some(p.limit());
    }
    out
}

/// Guest memory for an OCI memory limit: the limit less the monitor's overhead.
pub fn guest_mem(limit: i64) -> Result<String, Error> {
    if limit < MIN_LIMIT {
        return Err(Error::Invalid(format!(
            "memory limit {limit} bytes is below runnc's floor of 32 MiB ({MIN_LIMIT} bytes): \
             the guest gets the limit less 16 MiB for the monitor"
        )));
    }
    Ok((limit - MONITOR_OVERHEAD).to_string())
}

/// Parses `name=/path,name2=/path2`.
fn parse_disks(value: &str) -> Result<Vec<(String, String)>, Error> {
    value
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            item.split_once('=')
                .map(|(n, p)| (n.trim().to_string(), p.trim().to_string()))
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "invalid {ANN_DISKS} entry {item:?}: use name=/path/in/rootfs"
                    ))
                })
        })
        .collect()
}

/// Makes the plan.
pub fn plan(b: &Bundle, default_backend: &str) -> Result<Plan, Error> {
    let spec = &b.spec;
    let process = spec.process().as_ref();
    let args: Vec<String> = process
        .and_then(|p| p.args().clone())
        .unwrap_or_default()
        .into_iter()
        .skip(1)
        .collect();
    let env = process.and_then(|p| p.env().clone()).unwrap_or_default();
    let terminal = process.and_then(|p| p.terminal()).unwrap_or(false);
    let cwd = process.map_or_else(|| "/".to_string(), |p| p.cwd().display().to_string());

    let backend = match b.annotations.get(ANN_BACKEND) {
        Some(v) => crate::settings::check_backend(v, "the org.septem.runnc.backend annotation")
            .map_err(|e| Error::Invalid(e.to_string()))?,
        None => default_backend.to_string(),
    };

    let linux = spec.linux().as_ref();
    let resources = resources(linux.and_then(|l| l.resources().as_ref()));
    let mem = match resources.memory_limit.filter(|l| *l > 0) {
        Some(limit) => Some(guest_mem(limit)?),
        None => b
            .annotations
            .get(ANN_MEMORY)
            .cloned()
            .or_else(|| b.marker.as_ref().and_then(|m| m.memory.clone())),
    };

    // Block devices: shipped disks, overridden by mounts onto /septem/block/<name>.
    let mut disks: Vec<(String, String)> = Vec::new();
    let shipped = match b.annotations.get(ANN_DISKS) {
        Some(v) => parse_disks(v)?,
        None => b
            .marker
            .as_ref()
            .map(|m| {
                m.disks
                    .iter()
                    .map(|d| (d.name.clone(), d.path.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mounts = spec.mounts().clone().unwrap_or_default();
    let mut resolv: Option<PathBuf> = None;
    for m in &mounts {
        let dest = m.destination().display().to_string();
        if dest == "/etc/resolv.conf" {
            resolv = m.source().clone();
        }
        let Some(name) = dest.strip_prefix(BLOCK_MOUNT_DIR) else {
            continue;
        };
        let Some(source) = m.source() else {
            return Err(Error::Invalid(format!(
                "mount onto {dest} has no source file"
            )));
        };
        let ro = m
            .options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|x| x == "ro"));
        let file = format!("{}{}", source.display(), if ro { ",ro" } else { "" });
        disks.retain(|(n, _)| n != name);
        disks.push((name.to_string(), file));
    }
    // Shipped disks only for devices no mount provides (resolved inside the rootfs).
    for (name, path) in shipped {
        if !disks.iter().any(|(n, _)| *n == name) {
            let file = if b.image.block.contains(&name) {
                rootfs_file(&b.rootfs, &cwd, &path)?.display().to_string()
            } else {
                path
            };
            disks.push((name, file));
        }
    }
    let mut blocks = Vec::new();
    for name in &b.image.block {
        match disks.iter().find(|(n, _)| n == name) {
            Some((_, file)) => blocks.push(format!("{name}={file}")),
            None => {
                return Err(Error::Invalid(format!(
                    "the image declares block device {name:?} but the bundle provides no file for it: \
                     add a bind mount onto {BLOCK_MOUNT_DIR}{name} or ship a disk in the rootfs and \
                     name it in the {ANN_DISKS} annotation ({name}=/path/in/rootfs)"
                )))
            }
        }
    }
    for (name, _) in &disks {
        if !b.image.block.contains(name) {
            tracing::warn!("block device {name:?} is not declared by the image; ignored");
        }
    }

    // Namespaces.
    let mut net = NetMode::Host;
    let mut unshare_flags = 0;
    for ns in linux
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
    {
        match ns.typ() {
            LinuxNamespaceType::Network => {
                net = ns.path().clone().map_or(NetMode::New, NetMode::Join);
            }
            LinuxNamespaceType::Mount if ns.path().is_none() => unshare_flags |= libc::CLONE_NEWNS,
            LinuxNamespaceType::Ipc if ns.path().is_none() => unshare_flags |= libc::CLONE_NEWIPC,
            LinuxNamespaceType::Uts if ns.path().is_none() => unshare_flags |= libc::CLONE_NEWUTS,
            other => tracing::debug!(
                "namespace {other:?} ({:?}) is not needed by the monitor; ignored",
                ns.path()
            ),
        }
    }
    if net == NetMode::Host {
        if let Some(dev) = b.image.net.first() {
            return Err(Error::Invalid(format!(
                "image declares net device {dev} but the bundle shares the host's network namespace; \
                 add a network namespace"
            )));
        }
    }
    let dns = if b.image.net.is_empty() {
        None
    } else {
        let file = resolv.unwrap_or_else(|| b.rootfs.join("etc/resolv.conf"));
        crate::network::nameserver(&file)
    };
    Ok(Plan {
        backend,
        mem,
        env,
        args,
        blocks,
        dns,
        net_devices: b.image.net.clone(),
        net,
        unshare_flags,
        resources,
        cgroups_path: linux
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.display().to_string()),
        terminal,
        image: b.image_path.clone(),
    })
}

impl Plan {
    /// The `septem-run` argv (argv[0] = `septem_run`), with the taps of `wiring` and
    /// the exec fifo as its start gate (`--start-fifo`: it sets the guest up at
    /// `create` and starts it when `start` opens the fifo).
    #[must_use]
    pub fn argv(
        &self,
        septem_run: &Path,
        wiring: Option<&Wiring>,
        start_fifo: &Path,
    ) -> Vec<String> {
        let mut v = vec![
            septem_run.display().to_string(),
            "--backend".to_string(),
            self.backend.clone(),
        ];
        if let Some(m) = &self.mem {
            v.push("--mem".into());
            v.push(m.clone());
        }
        for e in &self.env {
            v.push("--env".into());
            v.push(e.clone());
        }
        for nic in wiring.map(|w| w.nics.as_slice()).unwrap_or_default() {
            let d = &nic.device;
            v.push(format!("--net:{d}={}", nic.tap));
            if let Some(mac) = &nic.mac {
                v.push(format!("--net-mac:{d}={mac}"));
            }
            if let Some((ip, prefix)) = nic.ipv4 {
                v.push(format!("--net-ip:{d}={ip}/{prefix}"));
            }
            if let Some(gw) = nic.gateway {
                v.push(format!("--net-gw:{d}={gw}"));
            }
        }
        if let Some(dns) = self.dns {
            v.push("--dns".into());
            v.push(dns.to_string());
        }
        for b in &self.blocks {
            v.push(format!("--block:{b}"));
        }
        v.push("--start-fifo".into());
        v.push(start_fifo.display().to_string());
        v.push(self.image.display().to_string());
        if !self.args.is_empty() {
            v.push("--".into());
            v.extend(self.args.iter().cloned());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_floor() {
        assert!(guest_mem(31 << 20).is_err());
        assert_eq!(guest_mem(64 << 20).unwrap(), (48u64 << 20).to_string());
    }

    #[test]
    fn disks_annotation() {
        assert_eq!(
            parse_disks("www=/disks/www.img, data=/d.img").unwrap(),
            vec![
                ("www".to_string(), "/disks/www.img".to_string()),
                ("data".to_string(), "/d.img".to_string())
            ]
        );
        assert!(parse_disks("nope").is_err());
    }
}
