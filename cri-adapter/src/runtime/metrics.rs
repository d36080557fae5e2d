//! ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor-named metrics (the kubelet's
//! `/metrics/cadvisor` when it takes them from the runtime) from the same sources as
//! ContainerStats and PodSandboxStats: the container's cgroup through `runnc events
//! --stats`, its directory for the writable layer, the pod's eth0 counters.
//!
//! Container metrics carry the labels `id`, `name` (the container's name in its pod)
//! and `image`; the pod's network metrics `id` and `name` of the pod and `interface`.
//! Values are integers (CRI's `UInt64Value`): CPU time in whole seconds, times as Unix
//! seconds. Timestamps are 0: every value is gathered live.

use super::{Container, Pod, Runtime};
use k8s_cri::v1 as cri;

/// Labels of a container's metrics, in the order of their values.
const CONTAINER_LABELS: &[&str] = &["id", "name", "image"];
/// Labels of a pod's network metrics.
const NETWORK_LABELS: &[&str] = &["id", "name", "interface"];

const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
const MEMORY_USAGE: &str = "container_memory_usage_bytes";
const MEMORY_WORKING_SET: &str = "container_memory_working_set_bytes";
const MEMORY_LIMIT: &str = "container_spec_memory_limit_bytes";
const FS_USAGE: &str = "container_fs_usage_bytes";
const FS_INODES: &str = "container_fs_inodes_total";
const START_TIME: &str = "container_start_time_seconds";
const RX_BYTES: &str = "container_network_receive_bytes_total";
const TX_BYTES: &str = "container_network_transmit_bytes_total";
const RX_ERRORS: &str = "container_network_receive_errors_total";
const TX_ERRORS: &str = "container_network_transmit_errors_total";

/// Every metric septem-cri reports: name, help, labels.
const DESCRIPTORS: &[(&str, &str, &[&str])] = &[
    (
        CPU_USAGE,
        "Cumulative cpu time consumed in seconds.",
        CONTAINER_LABELS,
    ),
    (
        MEMORY_USAGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        CONTAINER_LABELS,
    ),
    (
        MEMORY_WORKING_SET,
        "Current working set in bytes.",
        CONTAINER_LABELS,
    ),
    (
        MEMORY_LIMIT,
        "Memory limit for the container (a unikernel's guest memory).",
        CONTAINER_LABELS,
    ),
    (
        FS_USAGE,
        "Number of bytes that are consumed by the container on this filesystem.",
        CONTAINER_LABELS,
    ),
    (FS_INODES, "Number of Inodes used.", CONTAINER_LABELS),
    (
        START_TIME,
        "Start time of the container since unix epoch in seconds.",
        CONTAINER_LABELS,
    ),
    (
        RX_BYTES,
        "Cumulative count of bytes received.",
        NETWORK_LABELS,
    ),
    (
        TX_BYTES,
        "Cumulative count of bytes transmitted.",
        NETWORK_LABELS,
    ),
    (
        RX_ERRORS,
        "Cumulative count of errors encountered while receiving.",
        NETWORK_LABELS,
    ),
    (
        TX_ERRORS,
        "Cumulative count of errors encountered while transmitting.",
        NETWORK_LABELS,
    ),
];

/// ListMetricDescriptors.
#[must_use]
pub fn metric_descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|(name, help, labels)| cri::MetricDescriptor {
            name: (*name).into(),
            help: (*help).into(),
            label_keys: labels.iter().map(|l| (*l).to_string()).collect(),
        })
        .collect()
}

/// Counters only grow; everything else here is a gauge.
fn metric_type(name: &str) -> cri::MetricType {
    if name.ends_with("_total") && name != FS_INODES {
        cri::MetricType::Counter
    } else {
        cri::MetricType::Gauge
    }
}

fn metric(name: &str, labels: &[String], value: u64) -> cri::Metric {
    cri::Metric {
        name: name.into(),
        timestamp: 0,
        metric_type: metric_type(name) as i32,
        label_values: labels.to_vec(),
        value: Some(cri::UInt64Value { value }),
    }
}

/// A container's metrics from its stats (those it has: an exited container has no CPU
/// or memory sample).
fn container_metrics(c: &Container, stats: &cri::ContainerStats) -> cri::ContainerMetrics {
    let labels = [
        c.id.clone(),
        c.config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        c.image.clone(),
    ];
    let value = |v: Option<&cri::UInt64Value>| v.map(|v| v.value);
    let mut samples: Vec<(&str, Option<u64>)> = Vec::new();
    if let Some(cpu) = &stats.cpu {
        samples.push((
            CPU_USAGE,
            value(cpu.usage_core_nano_seconds.as_ref()).map(|ns| ns / 1_000_000_000),
        ));
    }
    if let Some(m) = &stats.memory {
        samples.push((MEMORY_USAGE, value(m.usage_bytes.as_ref())));
        samples.push((MEMORY_WORKING_SET, value(m.working_set_bytes.as_ref())));
    }
    let limit = c
        .config
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .map_or(0, |r| r.memory_limit_in_bytes);
    samples.push((MEMORY_LIMIT, u64::try_from(limit).ok()));
    if let Some(fs) = &stats.writable_layer {
        samples.push((FS_USAGE, value(fs.used_bytes.as_ref())));
        samples.push((FS_INODES, value(fs.inodes_used.as_ref())));
    }
    if c.started_at > 0 {
        samples.push((START_TIME, u64::try_from(c.started_at / 1_000_000_000).ok()));
    }
    cri::ContainerMetrics {
        container_id: c.id.clone(),
        metrics: samples
            .into_iter()
            .filter_map(|(name, v)| v.map(|v| metric(name, &labels, v)))
            .collect(),
    }
}

/// A pod's network metrics from its eth0 counters.
fn network_metrics(pod: &Pod, net: &cri::NetworkUsage) -> Vec<cri::Metric> {
    let name = pod
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for i in &net.interfaces {
        let labels = [pod.id.clone(), name.clone(), i.name.clone()];
        for (metric_name, v) in [
            (RX_BYTES, &i.rx_bytes),
            (TX_BYTES, &i.tx_bytes),
            (RX_ERRORS, &i.rx_errors),
            (TX_ERRORS, &i.tx_errors),
        ] {
            if let Some(v) = v {
                out.push(metric(metric_name, &labels, v.value));
            }
        }
    }
    out
}

impl Runtime {
    /// ListPodSandboxMetrics: every pod, with the metrics of its containers that have
    /// not exited and its network's.
    #[must_use]
    pub fn list_pod_metrics(&self) -> Vec<cri::PodSandboxMetrics> {
        self.list_pods(None)
            .iter()
            .filter_map(|p| self.pod(&p.id))
            .map(|pod| self.pod_metrics(&pod))
            .collect()
    }

    fn pod_metrics(&self, pod: &Pod) -> cri::PodSandboxMetrics {
        let container_metrics = self
            .list_containers(Some(cri::ContainerFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }))
            .iter()
            .filter(|c| c.state != cri::ContainerState::ContainerExited as i32)
            .filter_map(|c| self.container(&c.id))
            .map(|c| container_metrics(&c, &self.stats_of(&c)))
            .collect();
        let metrics = self
            .network_usage(pod, crate::util::now_ns())
            .map(|net| network_metrics(pod, &net))
            .unwrap_or_default();
        cri::PodSandboxMetrics {
            pod_sandbox_id: pod.id.clone(),
            metrics,
            container_metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_unique_and_cover_what_is_reported() {
        let d = metric_descriptors();
        let mut names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), d.len());
        for want in [
            CPU_USAGE,
            MEMORY_USAGE,
            MEMORY_WORKING_SET,
            RX_BYTES,
            TX_BYTES,
        ] {
            assert!(names.contains(&want), "{want}");
        }
        assert_eq!(metric_type(CPU_USAGE), cri::MetricType::Counter);
        assert_eq!(metric_type(RX_BYTES), cri::MetricType::Counter);
        assert_eq!(metric_type(MEMORY_USAGE), cri::MetricType::Gauge);
        assert_eq!(metric_type(FS_INODES), cri::MetricType::Gauge);
    }

    #[test]
    fn container_metrics_follow_its_stats_and_labels() {
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "id": "c1", "pod_id": "p1", "image_id": "sha256:x",
            "config": serde_json::to_value(cri::ContainerConfig::default()).unwrap(),
            "image": "example.com/septem/httpd:1", "created_at": 1, "started_at": 0,
            "finished_at": 0, "exit_code": 0, "reason": "", "message": "", "pid": 0,
            "pid_start": 0, "log_file": "/x", "log_path": ""
        }))
        .unwrap();
        c.config.metadata = Some(cri::ContainerMetadata {
            name: "httpd".into(),
            attempt: 0,
        });
        c.config.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        c.started_at = 5_500_000_000;
        let u = |value| Some(cri::UInt64Value { value });
        let stats = cri::ContainerStats {
            cpu: Some(cri::CpuUsage {
                usage_core_nano_seconds: u(2_600_000_000),
                ..Default::default()
            }),
            memory: Some(cri::MemoryUsage {
                usage_bytes: u(1000),
                working_set_bytes: u(900),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = container_metrics(&c, &stats);
        assert_eq!(m.container_id, "c1");
        let get = |name: &str| {
            let x = m.metrics.iter().find(|x| x.name == name).expect(name);
            assert_eq!(
                x.label_values,
                ["c1", "httpd", "example.com/septem/httpd:1"]
            );
            x.value.as_ref().unwrap().value
        };
        assert_eq!(get(CPU_USAGE), 2);
        assert_eq!(get(MEMORY_USAGE), 1000);
        assert_eq!(get(MEMORY_WORKING_SET), 900);
        assert_eq!(get(MEMORY_LIMIT), 64 << 20);
        assert_eq!(get(START_TIME), 5);
        assert!(!m.metrics.iter().any(|x| x.name == FS_USAGE), "no fs stats");
    }
}
