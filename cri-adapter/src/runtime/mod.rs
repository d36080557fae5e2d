//! Pods and containers: state on disk, CNI, network namespaces and runnc.
//!
//! A pod is a network namespace (`/run/netns/septem-<id>`, crate::netns) wired by CNI; no pause
//! container is needed, the namespace *is* the pod. Containers are runnc bundles whose
//! config.json names that namespace; runnc puts a tap next to the namespace's eth0.
//!
//! ```text
//! <state>/pods/<id>.json             a pod (written atomically)
//! <state>/pods/<id>.pending          a RunPodSandbox in progress (what to undo after a crash)
//! <state>/containers/<id>/state.json a container
//! <state>/containers/<id>/bundle/    its OCI bundle (config.json + rootfs)
//! <state>/containers/<id>/exit.json  its exit status, written by its shim
//! <state>/runnc/                     runnc --root
//! ```
//!
//! Each container has a shim (`crate::shim`, this binary in a hidden mode) that waits
//! for the container process and writes `exit.json`, so an exit survives a restart of
//! septem-cri (`waiter.rs`). At start, `reconcile.rs` settles what a crash or a restart
//! left: interrupted pod and container creates, runnc containers without a record,
//! exits that happened while septem-cri was down.
//!
//! Everything here blocks (external commands): the gRPC layer calls it from blocking
//! threads. Each pod and container id has a lock of its own, so operations on one
//! object are serialized while different pods proceed in parallel.

mod admit;
mod containers;
mod metrics;
mod pods;
mod reconcile;
mod spec;
mod stats;
#[cfg(test)]
mod tests;
mod waiter;

pub use metrics::metric_descriptors;
pub(crate) use spec::mounts;

use crate::config::Config;
use crate::images::{self, Store};
use crate::logs::LogFile;
use crate::{cni, util};
use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, RwLock};

/// Errors, each with its gRPC class.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such pod, container or image.
    #[error("{0}")]
    NotFound(String),
    /// A bad request.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request cannot be done in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something failed on the node.
    #[error("{0}")]
    Internal(String),
    /// A deadline passed (ExecSync's timeout).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// CNI failed.
    #[error(transparent)]
    Cni(#[from] cni::Error),
    /// A pod's network namespace could not be made or removed.
    #[error(transparent)]
    Netns(#[from] crate::netns::Error),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] images::Error),
}

fn internal(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.to_string();
    move |e| Error::Internal(format!("{what}: {e}"))
}

/// Pod state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    /// Network up.
    Ready,
    /// Stopped.
    NotReady,
}

/// A pod on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pod {
    /// Id.
    pub id: String,
    /// The kubelet's config.
    pub config: cri::PodSandboxConfig,
    /// RuntimeClass handler.
    pub runtime_handler: String,
    /// Backend for its containers.
    pub backend: String,
    /// Creation time (ns).
    pub created_at: i64,
    /// Ready or not.
    pub state: PodState,
    /// `ip netns` name.
    pub netns_name: String,
    /// Namespace path.
    pub netns: PathBuf,
    /// The CNI network used (conflist shape), kept for DEL.
    pub cni_network: Option<Value>,
    /// The ADD result while the network is up.
    pub cni_result: Option<Value>,
    /// Pod IP.
    pub ip: String,
}

/// A container on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    /// Id.
    pub id: String,
    /// Its pod.
    pub pod_id: String,
    /// The kubelet's config.
    pub config: cri::ContainerConfig,
    /// Image id (`sha256:…`).
    pub image_id: String,
    /// Image reference as asked.
    pub image: String,
    /// A Septem unikernel (false: an ordinary container, run by runc through runnc).
    #[serde(default = "yes")]
    pub septem: bool,
    /// Creation time (ns).
    pub created_at: i64,
    /// Start time (ns, 0 until started).
    pub started_at: i64,
    /// Exit time (ns, 0 while not exited).
    pub finished_at: i64,
    /// Exit code.
    pub exit_code: i32,
    /// Reason of the exit.
    pub reason: String,
    /// Message of the exit.
    pub message: String,
    /// Container process pid.
    pub pid: i32,
    /// Its start time in clock ticks (pid reuse check).
    pub pid_start: u64,
    /// Its shim's pid (0: recorded before shims existed).
    #[serde(default)]
    pub shim_pid: i32,
    /// The shim's start time in clock ticks (pid reuse check).
    #[serde(default)]
    pub shim_start: u64,
    /// The log file (kubelet's path, or our own).
    pub log_file: PathBuf,
    /// The log path reported to the kubelet ("" when it gave none).
    pub log_path: String,
}

impl Container {
    fn state(&self) -> cri::ContainerState {
        if self.finished_at != 0 {
            cri::ContainerState::ContainerExited
        } else if self.started_at != 0 {
            cri::ContainerState::ContainerRunning
        } else {
            cri::ContainerState::ContainerCreated
        }
    }
}

/// The runtime.
#[derive(Debug)]
pub struct Runtime {
    /// Settings.
    pub config: Config,
    /// Images.
    pub images: Store,
    pods: RwLock<HashMap<String, Pod>>,
    containers: RwLock<HashMap<String, Container>>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    logs: Mutex<HashMap<String, Arc<LogFile>>>,
    pod_cidr: Mutex<String>,
    cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    events: Mutex<Option<tokio::sync::broadcast::Sender<cri::ContainerEventResponse>>>,
    /// Per new pod, the cgroup priming started by RunPodSandbox, taken over by the
    /// pod's first CreateContainer (see [`Runtime::take_primer`]).
    pod_primers: Mutex<HashMap<String, runnc::cgroup::prime::Primer>>,
}

/// Containers recorded before ordinary ones existed are all unikernels.
fn yes() -> bool {
    true
}

/// The runtime handler names and their backends.
pub fn backend_of(handler: &str, default: &str) -> Result<String, Error> {
    match handler {
        "" | "septem" => Ok(default.to_string()),
        "septem-kvm" => Ok("kvm".into()),
        "septem-seccomp" => Ok("seccomp".into()),
        other => Err(Error::InvalidArgument(format!(
            "unknown runtime handler {other:?}: septem-cri knows septem (backend {default}), \
             septem-kvm and septem-seccomp"
        ))),
    }
}

pub(super) fn labels_match(
    labels: &HashMap<String, String>,
    selector: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Runtime {
    /// Opens the state directory, loads what is there and reconciles it with the node
    /// (`reconcile.rs`).
    pub fn open(config: Config) -> Result<Arc<Runtime>, Error> {
        let s = &config.state_dir;
        for d in ["pods", "containers", "runnc", "images"] {
            std::fs::create_dir_all(s.join(d))
                .map_err(internal(format!("creating {}", s.join(d).display())))?;
        }
        let images = Store::open(&s.join("images"))?;
        let pods = reconcile::load_pods(&s.join("pods"))?;
        let (containers, unfinished) = reconcile::load_containers(&s.join("containers"))?;
        let pod_cidr = util::read_json::<String>(&s.join("pod-cidr.json"))
            .ok()
            .flatten()
            .unwrap_or_default();
        tracing::info!(
            pods = pods.len(),
            containers = containers.len(),
            "state loaded"
        );
        let rt = Arc::new(Runtime {
            config,
            images,
            pods: RwLock::new(pods),
            containers: RwLock::new(containers),
            locks: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            pod_cidr: Mutex::new(pod_cidr),
            cpu_samples: Mutex::new(HashMap::new()),
            events: Mutex::new(Some(tokio::sync::broadcast::channel(1024).0)),
            pod_primers: Mutex::new(HashMap::new()),
        });
        rt.reconcile(&unfinished);
        Ok(rt)
    }

    /// A receiver of the container (and pod) events from now on.
    /// None once shutting down.
    pub fn subscribe(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<cri::ContainerEventResponse>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(tokio::sync::broadcast::Sender::subscribe)
    }

    /// Ends every event stream (shutdown: streaming calls would never finish).
    pub fn close_events(&self) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    /// Sends an event about `id` (a container, or a pod as containerd does) of `pod_id`,
    /// with the pod's status and its containers' statuses.
    fn emit(&self, id: &str, pod_id: &str, kind: cri::ContainerEventType) {
        let sender = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(sender) = sender.filter(|s| s.receiver_count() > 0) else {
            return;
        };
        let containers_statuses = self
            .pod_containers(pod_id)
            .iter()
            .filter_map(|c| self.container_status(c).ok())
            .collect();
        let _ = sender.send(cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: util::now_ns(),
            pod_sandbox_status: self.pod_status(pod_id).ok(),
            containers_statuses,
        });
    }

    fn lock_of(&self, id: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Container `id`, or NotFound naming it.
    fn require_container(&self, id: &str) -> Result<Container, Error> {
        self.container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))
    }

    fn pod(&self, id: &str) -> Option<Pod> {
        self.pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn container(&self, id: &str) -> Option<Container> {
        self.containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn pod_file(&self, id: &str) -> PathBuf {
        self.config
            .state_dir
            .join("pods")
            .join(format!("{id}.json"))
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("containers").join(id)
    }

    fn save_pod(&self, pod: Pod) -> Result<(), Error> {
        util::write_json_atomic(&self.pod_file(&pod.id), &pod)
            .map_err(internal("saving the pod"))?;
        self.pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(pod.id.clone(), pod);
        Ok(())
    }

    /// Changes the stored container `id` with `f` as one step under the table's lock
    /// (read, change, write to disk): the exit waiter and the request handlers change
    /// different fields of the same record, and a copy taken before the other's write
    /// must not undo it (a guest that exits within StartContainer). The new record, or
    /// None when the container is gone.
    fn modify_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container),
    ) -> Result<Option<Container>, Error> {
        let mut table = self
            .containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(current) = table.get_mut(id) else {
            return Ok(None);
        };
        let mut next = current.clone();
        f(&mut next);
        util::write_json_atomic(&self.container_dir(id).join("state.json"), &next)
            .map_err(internal("saving the container"))?;
        *current = next.clone();
        Ok(Some(next))
    }

    fn save_container(&self, c: Container) -> Result<(), Error> {
        util::write_json_atomic(&self.container_dir(&c.id).join("state.json"), &c)
            .map_err(internal("saving the container"))?;
        self.containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(c.id.clone(), c);
        Ok(())
    }

    // ---- runtime config -------------------------------------------------------------

    /// The stored pod CIDR.
    #[must_use]
    pub fn pod_cidr(&self) -> String {
        self.pod_cidr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stores the pod CIDR.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<(), Error> {
        util::write_json_durable(&self.config.state_dir.join("pod-cidr.json"), &cidr)
            .map_err(internal("saving the pod CIDR"))?;
        *self
            .pod_cidr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cidr.to_string();
        Ok(())
    }

    // ---- runnc ----------------------------------------------------------------------

    /// The cgroup priming for a container of `pod_id`: the one its RunPodSandbox
    /// started (still running unless [`runnc::cgroup::prime::MAX_PRIMING`] passed), else
    /// a new one. Moving the container process into its cgroup (cgroup v1) waits for an
    /// RCU grace period after a quiet spell, 4–16 ms measured here; started with the
    /// pod, that wait passes during CNI ADD instead of on CreateContainer's path.
    fn take_primer(&self, pod_id: &str) -> Option<runnc::cgroup::prime::Primer> {
        let started = self
            .pod_primers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(pod_id);
        started.or_else(runnc::cgroup::prime::start)
    }

    /// Keeps `primer` for the first container of `pod_id`.
    fn keep_primer(&self, pod_id: &str, primer: Option<runnc::cgroup::prime::Primer>) {
        if let Some(p) = primer {
            self.pod_primers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(pod_id.to_string(), p);
        }
    }

    /// Stops a pod's unclaimed priming (its pod is going away).
    fn drop_primer(&self, pod_id: &str) {
        self.pod_primers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(pod_id);
    }

    /// runnc's `--root` for this septem-cri's containers.
    fn runnc_root(&self) -> std::path::PathBuf {
        self.config.state_dir.join("runnc")
    }

    fn runnc_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.config.runnc);
        cmd.arg("--root").arg(self.runnc_root());
        if let Some(runc) = &self.config.runc {
            cmd.env("RUNNC_RUNC", runc);
        }
        cmd
    }

    fn runnc(&self, args: &[&str]) -> Result<util::Output, Error> {
        let mut cmd = self.runnc_cmd();
        cmd.args(args);
        util::run(&mut cmd, None)
            .map_err(internal(format!("running {}", self.config.runnc.display())))
    }
}
