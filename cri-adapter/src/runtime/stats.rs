//! Container and pod statistics (cgroup counters through runnc, eth0 counters).

use super::{Container, Error, Pod, Runtime};
use crate::{images, util};
use k8s_cri::v1 as cri;
use serde_json::Value;
use std::process::Command;

impl Runtime {
    // ---- stats ----------------------------------------------------------------------

    /// `runnc events --stats`: (cpu ns, memory bytes, memory limit) of a live container.
    pub(super) fn runnc_stats(&self, id: &str) -> Option<(u64, u64, u64)> {
        let out = self.runnc(&["events", "--stats", id]).ok()?;
        if !out.ok() {
            return None;
        }
        let v: Value = serde_json::from_str(out.stdout.lines().next()?).ok()?;
        let d = &v["data"];
        Some((
            d["cpu"]["usage"]["total"].as_u64()?,
            d["memory"]["usage"]["usage"].as_u64().unwrap_or(0),
            d["memory"]["usage"]["limit"].as_u64().unwrap_or(0),
        ))
    }

    pub(super) fn stats_of(&self, c: &Container) -> cri::ContainerStats {
        let now = util::now_ns();
        let attributes = Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        });
        let (used, inodes) = images::usage_of(&self.container_dir(&c.id));
        let writable_layer = Some(cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: self
                    .config
                    .state_dir
                    .join("containers")
                    .display()
                    .to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: used }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        });
        let live = c.finished_at == 0;
        let sample = if live { self.runnc_stats(&c.id) } else { None };
        let Some((cpu_ns, mem, limit)) = sample else {
            return cri::ContainerStats {
                attributes,
                cpu: None,
                memory: None,
                writable_layer,
                swap: None,
            };
        };
        let nano_cores = {
            let mut samples = self
                .cpu_samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let rate = samples.get(&c.id).and_then(|(t, prev)| {
                let dt = u64::try_from(now - t).ok().filter(|d| *d > 0)?;
                let dcpu = cpu_ns.checked_sub(*prev)?;
                Some(
                    u64::try_from(u128::from(dcpu) * 1_000_000_000 / u128::from(dt))
                        .unwrap_or(u64::MAX),
                )
            });
            samples.insert(c.id.clone(), (now, cpu_ns));
            rate
        };
        let u = |value| Some(cri::UInt64Value { value });
        cri::ContainerStats {
            attributes,
            cpu: Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: u(cpu_ns),
                usage_nano_cores: nano_cores.and_then(u),
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: u(mem),
                available_bytes: if limit > 0 && limit < (1 << 62) {
                    u(limit.saturating_sub(mem))
                } else {
                    None
                },
                usage_bytes: u(mem),
                rss_bytes: None,
                page_faults: None,
                major_page_faults: None,
            }),
            writable_layer,
            swap: None,
        }
    }

    /// ContainerStats.
    pub fn container_stats(&self, id: &str) -> Result<cri::ContainerStats, Error> {
        let c = self.require_container(id)?;
        Ok(self.stats_of(&c))
    }

    /// ListContainerStats: the containers that have not exited, filtered.
    #[must_use]
    pub fn list_container_stats(
        &self,
        f: Option<cri::ContainerStatsFilter>,
    ) -> Vec<cri::ContainerStats> {
        let f = f.unwrap_or_default();
        self.list_containers(Some(cri::ContainerFilter {
            id: f.id,
            state: None,
            pod_sandbox_id: f.pod_sandbox_id,
            label_selector: f.label_selector,
        }))
        .iter()
        .filter(|c| c.state != cri::ContainerState::ContainerExited as i32)
        .filter_map(|c| self.container(&c.id))
        .map(|c| self.stats_of(&c))
        .collect()
    }

    /// PodSandboxStats: the sum of its containers' CPU and memory.
    pub fn pod_stats(&self, id: &str) -> Result<cri::PodSandboxStats, Error> {
        let pod = self.require_pod(id)?;
        let containers = self.list_container_stats(Some(cri::ContainerStatsFilter {
            pod_sandbox_id: id.to_string(),
            ..Default::default()
        }));
        let now = util::now_ns();
        let sum = |f: &dyn Fn(&cri::ContainerStats) -> Option<u64>| -> Option<cri::UInt64Value> {
            let v: Vec<u64> = containers.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| cri::UInt64Value {
                value: v.iter().sum(),
            })
        };
        let cpu = cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: sum(&|c| {
                c.cpu
                    .as_ref()?
                    .usage_core_nano_seconds
                    .as_ref()
                    .map(|v| v.value)
            }),
            usage_nano_cores: sum(&|c| c.cpu.as_ref()?.usage_nano_cores.as_ref().map(|v| v.value)),
        };
        let memory = cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: sum(&|c| {
                c.memory
                    .as_ref()?
                    .working_set_bytes
                    .as_ref()
                    .map(|v| v.value)
            }),
            usage_bytes: sum(&|c| c.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value)),
            ..Default::default()
        };
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.config.metadata.clone(),
                labels: pod.config.labels.clone(),
                annotations: pod.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network: self.network_usage(&pod, now),
                process: None,
                containers,
            }),
            windows: None,
        })
    }

    /// The pod's eth0 counters (`ip -s -j link show eth0` in its namespace; with runnc's
    /// tc redirect they count the guest's traffic).
    pub(super) fn network_usage(&self, pod: &Pod, now: i64) -> Option<cri::NetworkUsage> {
        if pod.cni_result.is_none() || !pod.netns.exists() {
            return None;
        }
        let out = util::run(
            Command::new("ip").args(["-n", &pod.netns_name, "-s", "-j", "link", "show", "eth0"]),
            None,
        )
        .ok()
        .filter(util::Output::ok)?;
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        let st = &v[0]["stats64"];
        let u = |x: &Value| x.as_u64().map(|value| cri::UInt64Value { value });
        let eth0 = cri::NetworkInterfaceUsage {
            name: "eth0".into(),
            rx_bytes: u(&st["rx"]["bytes"]),
            rx_errors: u(&st["rx"]["errors"]),
            tx_bytes: u(&st["tx"]["bytes"]),
            tx_errors: u(&st["tx"]["errors"]),
        };
        Some(cri::NetworkUsage {
            timestamp: now,
            default_interface: Some(eth0.clone()),
            interfaces: vec![eth0],
        })
    }

    /// ListPodSandboxStats.
    #[must_use]
    pub fn list_pod_stats(
        &self,
        f: Option<cri::PodSandboxStatsFilter>,
    ) -> Vec<cri::PodSandboxStats> {
        let f = f.unwrap_or_default();
        self.list_pods(Some(cri::PodSandboxFilter {
            id: f.id,
            state: None,
            label_selector: f.label_selector,
        }))
        .iter()
        .filter_map(|p| self.pod_stats(&p.id).ok())
        .collect()
    }
}
