//! The OCI runtime spec (config.json) of a container.

use super::{admit, Pod, Runtime};
use crate::images;
use k8s_cri::v1 as cri;
use serde_json::{json, Value};
use std::path::Path;

/// The request's mounts as OCI bind mounts (runnc attaches `/septem/block/NAME` ones as
/// block devices and ignores the others), plus the pod's DNS config as
/// `/etc/resolv.conf` (runnc hands its first nameserver to the guest).
pub(crate) fn mounts(
    dir: &Path,
    pod: &Pod,
    config: &cri::ContainerConfig,
) -> std::io::Result<Vec<Value>> {
    let mut out: Vec<Value> = config
        .mounts
        .iter()
        .map(|m| {
            json!({
                "destination": m.container_path,
                "source": m.host_path,
                "type": "bind",
                "options": ["rbind", if m.readonly { "ro" } else { "rw" }],
            })
        })
        .collect();
    let has_resolv = config
        .mounts
        .iter()
        .any(|m| m.container_path == "/etc/resolv.conf");
    if let Some(dns) = pod
        .config
        .dns_config
        .as_ref()
        .filter(|d| !d.servers.is_empty())
    {
        if !has_resolv {
            let mut text = String::new();
            for s in &dns.servers {
                text += &format!("nameserver {s}\n");
            }
            if !dns.searches.is_empty() {
                text += &format!("search {}\n", dns.searches.join(" "));
            }
            if !dns.options.is_empty() {
                text += &format!("options {}\n", dns.options.join(" "));
            }
            let file = dir.join("resolv.conf");
            std::fs::write(&file, text)?;
            out.push(json!({
                "destination": "/etc/resolv.conf",
                "source": file,
                "type": "bind",
                "options": ["rbind", "ro"],
            }));
        }
    }
    Ok(out)
}

/// A unikernel's mounts: [`mounts`] plus its block devices. Each device (checked by
/// `admit`: `/septem/block/<name>` and a regular file) becomes a bind mount of its host
/// file onto `/septem/block/<name>`, which runnc attaches as the guest's block device
/// `<name>`; read-only unless its cgroup permissions have `w`.
pub(super) fn unikernel_mounts(
    dir: &Path,
    pod: &Pod,
    config: &cri::ContainerConfig,
) -> std::io::Result<Vec<Value>> {
    let mut out = mounts(dir, pod, config)?;
    out.extend(block_device_mounts(config));
    Ok(out)
}

/// The request's devices as runnc's block device bind mounts.
pub(super) fn block_device_mounts(config: &cri::ContainerConfig) -> Vec<Value> {
    config
        .devices
        .iter()
        .map(|d| {
            json!({
                "destination": d.container_path,
                "source": d.host_path,
                "type": "bind",
                "options": ["rbind", if admit::writable(d) { "rw" } else { "ro" }],
            })
        })
        .collect()
}

/// CRI resources as OCI `linux.resources` (memory limit, CPU shares/quota/period).
pub(super) fn oci_resources(r: &cri::LinuxContainerResources) -> Value {
    let mut res = json!({});
    if r.memory_limit_in_bytes > 0 {
        res["memory"] = json!({ "limit": r.memory_limit_in_bytes });
    }
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), r.cpu_shares.into());
    }
    if r.cpu_quota > 0 {
        cpu.insert("quota".into(), r.cpu_quota.into());
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), r.cpu_period.into());
    }
    if !cpu.is_empty() {
        res["cpu"] = Value::Object(cpu);
    }
    res
}
impl Runtime {
    pub(super) fn spec(
        &self,
        id: &str,
        pod: &Pod,
        config: &cri::ContainerConfig,
        ic: &images::ImageConfig,
    ) -> Value {
        let entry = if config.command.is_empty() {
            ic.entrypoint.clone()
        } else {
            config.command.clone()
        };
        let rest = if !config.args.is_empty() {
            config.args.clone()
        } else if config.command.is_empty() {
            ic.cmd.clone()
        } else {
            vec![]
        };
        let args: Vec<String> = entry.into_iter().chain(rest).collect();
        let mut env: Vec<String> = ic.env.clone();
        for kv in &config.envs {
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != kv.key);
            env.push(format!("{}={}", kv.key, kv.value));
        }
        let mut annotations: serde_json::Map<String, Value> = ic
            .labels
            .iter()
            .filter(|(k, _)| k.starts_with("org.septem."))
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        annotations.insert("org.septem.unikernel".into(), "true".into());
        annotations.insert(
            "org.septem.runnc.backend".into(),
            pod.backend.clone().into(),
        );
        annotations.insert("io.kubernetes.cri.sandbox-id".into(), pod.id.clone().into());
        let mut linux = json!({
            "namespaces": [
                { "type": "network", "path": pod.netns },
                { "type": "mount" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "pid" },
            ],
        });
        let parent = pod
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        if !parent.is_empty() {
            linux["cgroupsPath"] = format!("{}/{id}", parent.trim_end_matches('/')).into();
        }
        if let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
            linux["resources"] = oci_resources(r);
        }
        let hostname = if pod.config.hostname.is_empty() {
            pod.config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default()
        } else {
            pod.config.hostname.clone()
        };
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": { "uid": 0, "gid": 0 },
                "args": args,
                "env": env,
                "cwd": if config.working_dir.is_empty() { "/" } else { config.working_dir.as_str() },
            },
            "root": { "path": "rootfs", "readonly": true },
            "hostname": hostname,
            "annotations": annotations,
            "linux": linux,
        })
    }
}
