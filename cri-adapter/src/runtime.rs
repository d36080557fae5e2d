//! Pods and containers: state on disk, CNI, network namespaces and runnc.
//!
//! A pod is a network namespace (`ip netns add septem-<id>`) wired by CNI; no pause
//! container is needed, the namespace *is* the pod. Containers are runnc bundles whose
//! config.json names that namespace; runnc puts a tap next to the namespace's eth0.
//!
//! ```text
//! <state>/pods/<id>.json             a pod (written atomically)
//! <state>/containers/<id>/state.json a container
//! <state>/containers/<id>/bundle/    its OCI bundle (config.json + rootfs)
//! <state>/runnc/                     runnc --root
//! ```
//!
//! Everything here blocks (external commands): the gRPC layer calls it from blocking
//! threads. Each pod and container id has a lock of its own, so operations on one
//! object are serialized while different pods proceed in parallel.

use crate::config::Config;
use crate::images::{self, Store};
use crate::logs::{self, LogFile};
use crate::{cni, reaper, unpack, util};
use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

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
    waited: Mutex<std::collections::HashSet<String>>,
    pod_cidr: Mutex<String>,
    cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    events: Mutex<Option<tokio::sync::broadcast::Sender<cri::ContainerEventResponse>>>,
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

/// CRI resources as OCI `linux.resources` (memory limit, CPU shares/quota/period).
fn oci_resources(r: &cri::LinuxContainerResources) -> Value {
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

fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Runtime {
    /// Opens the state directory and loads what is there.
    pub fn open(config: Config) -> Result<Arc<Runtime>, Error> {
        let s = &config.state_dir;
        for d in ["pods", "containers", "runnc", "images"] {
            std::fs::create_dir_all(s.join(d))
                .map_err(internal(format!("creating {}", s.join(d).display())))?;
        }
        let images = Store::open(&s.join("images"))?;
        let mut pods = HashMap::new();
        for e in std::fs::read_dir(s.join("pods"))
            .map_err(internal("reading pods"))?
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                match util::read_json::<Pod>(&p) {
                    Ok(Some(mut pod)) => {
                        // After a reboot the namespace is gone: the pod is not ready
                        // (Stop/Remove still run CNI DEL to release its address).
                        if pod.state == PodState::Ready && !pod.netns.exists() {
                            tracing::warn!(pod = %pod.id, "network namespace gone: pod not ready");
                            pod.state = PodState::NotReady;
                        }
                        pods.insert(pod.id.clone(), pod);
                    }
                    Ok(None) => {}
                    Err(err) => tracing::warn!("ignoring {}: {err}", p.display()),
                }
            }
        }
        let mut containers = HashMap::new();
        for e in std::fs::read_dir(s.join("containers"))
            .map_err(internal("reading containers"))?
            .flatten()
        {
            let p = e.path().join("state.json");
            match util::read_json::<Container>(&p) {
                Ok(Some(c)) => {
                    containers.insert(c.id.clone(), c);
                }
                Ok(None) => {
                    // A create interrupted by a crash (no state recorded): undo it.
                    let id = e.file_name().to_string_lossy().into_owned();
                    tracing::warn!(container = %id, "removing an unfinished create");
                    let mut cmd = Command::new(&config.runnc);
                    cmd.arg("--root").arg(s.join("runnc"));
                    cmd.args(["delete", "--force", &id]);
                    if let Err(err) = util::run(&mut cmd, None) {
                        tracing::warn!(container = %id, "runnc delete: {err}");
                    }
                    let _ = std::fs::remove_dir_all(e.path());
                }
                Err(err) => tracing::warn!("ignoring {}: {err}", p.display()),
            }
        }
        let pod_cidr = util::read_json::<String>(&s.join("pod-cidr.json"))
            .ok()
            .flatten()
            .unwrap_or_default();
        tracing::info!(
            pods = pods.len(),
            containers = containers.len(),
            "state loaded"
        );
        let mut log_files = HashMap::new();
        for c in containers.values() {
            if c.finished_at != 0 || reaper::start_time(c.pid) != Some(c.pid_start) {
                continue;
            }
            match Self::reattach_logs(&s.join("containers").join(&c.id), &c.log_file) {
                Ok(log) => {
                    log_files.insert(c.id.clone(), log);
                }
                Err(e) => tracing::warn!(container = %c.id, "output not reattached: {e}"),
            }
        }
        let rt = Arc::new(Runtime {
            config,
            images,
            pods: RwLock::new(pods),
            containers: RwLock::new(containers),
            locks: Mutex::new(HashMap::new()),
            logs: Mutex::new(log_files),
            waited: Mutex::new(std::collections::HashSet::new()),
            pod_cidr: Mutex::new(pod_cidr),
            cpu_samples: Mutex::new(HashMap::new()),
            events: Mutex::new(Some(tokio::sync::broadcast::channel(1024).0)),
        });
        Ok(rt)
    }

    /// Reopens a running container's FIFOs (septem-cri restarted) and copies them again.
    fn reattach_logs(dir: &Path, log_file: &Path) -> std::io::Result<Arc<LogFile>> {
        let log = LogFile::open(log_file)?;
        for stream in ["stdout", "stderr"] {
            let r = logs::open_reader(&dir.join(format!("{stream}.fifo")))?;
            logs::copy(r, stream, log.clone())?;
        }
        Ok(log)
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

    fn pod(&self, id: &str) -> Option<Pod> {
        self.pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn container(&self, id: &str) -> Option<Container> {
        self.refresh(id);
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

    fn save_container(&self, c: Container) -> Result<(), Error> {
        util::write_json_atomic(&self.container_dir(&c.id).join("state.json"), &c)
            .map_err(internal("saving the container"))?;
        self.containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(c.id.clone(), c);
        Ok(())
    }

    /// A container whose process we cannot wait for (septem-cri restarted): exited when
    /// its process is gone, exit status unknown.
    fn refresh(&self, id: &str) {
        let c = {
            let map = self
                .containers
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match map.get(id) {
                Some(c) if c.finished_at == 0 && c.pid > 0 => c.clone(),
                _ => return,
            }
        };
        if self
            .waited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
        {
            return;
        }
        if reaper::start_time(c.pid) == Some(c.pid_start) {
            return;
        }
        let mut c = c;
        let pod_id = c.pod_id.clone();
        c.finished_at = util::now_ns();
        c.exit_code = 255;
        c.reason = "Unknown".into();
        c.message = "the container exited while septem-cri was not its parent (septem-cri restarted): exit status unknown".into();
        if let Err(e) = self.save_container(c) {
            tracing::warn!("{e}");
        }
        self.emit(id, &pod_id, cri::ContainerEventType::ContainerStoppedEvent);
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
        util::write_json_atomic(&self.config.state_dir.join("pod-cidr.json"), &cidr)
            .map_err(internal("saving the pod CIDR"))?;
        *self
            .pod_cidr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cidr.to_string();
        Ok(())
    }

    // ---- runnc ----------------------------------------------------------------------

    fn runnc_cmd(&self, log: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.config.runnc);
        cmd.arg("--root").arg(self.config.state_dir.join("runnc"));
        if let Some(log) = log {
            cmd.arg("--log").arg(log);
        }
        if let Some(runc) = &self.config.runc {
            cmd.env("RUNNC_RUNC", runc);
        }
        cmd
    }

    fn runnc(&self, args: &[&str]) -> Result<util::Output, Error> {
        let mut cmd = self.runnc_cmd(None);
        cmd.args(args);
        util::run(&mut cmd, None)
            .map_err(internal(format!("running {}", self.config.runnc.display())))
    }

    // ---- pods -----------------------------------------------------------------------

    /// RunPodSandbox.
    pub fn run_pod(&self, req: cri::RunPodSandboxRequest) -> Result<String, Error> {
        let config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("RunPodSandbox without a config".into()))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("pod config without metadata".into()))?;
        let backend = backend_of(&req.runtime_handler, &self.config.default_backend)?;
        let host_network = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|n| n.network == cri::NamespaceMode::Node as i32);
        if host_network {
            return Err(Error::InvalidArgument(
                "hostNetwork pods are not supported by septem-cri: a unikernel pod is a network \
                 namespace of its own whose eth0 is handed to the guest"
                    .into(),
            ));
        }
        let id = util::random_id().map_err(internal("random id"))?;
        let lock = self.lock_of(&id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let netns_name = format!("septem-{id}");
        let netns = PathBuf::from("/var/run/netns").join(&netns_name);
        let out = util::run(Command::new("ip").args(["netns", "add", &netns_name]), None)
            .map_err(internal("running ip netns add"))?;
        if !out.ok() {
            return Err(Error::Internal(format!(
                "ip netns add {netns_name}: {}",
                out.stderr.trim()
            )));
        }
        let mut pod = Pod {
            id: id.clone(),
            config,
            runtime_handler: req.runtime_handler,
            backend,
            created_at: util::now_ns(),
            state: PodState::Ready,
            netns_name: netns_name.clone(),
            netns,
            cni_network: None,
            cni_result: None,
            ip: String::new(),
        };
        // Saved before CNI ADD, so a crash in between leaves a pod that Remove cleans.
        if let Err(e) = self
            .save_pod(pod.clone())
            .and_then(|()| self.setup_network(&mut pod))
        {
            tracing::warn!(pod = %id, "RunPodSandbox failed: {e}");
            let _ = self.teardown_network(&mut pod);
            let _ = util::run(Command::new("ip").args(["netns", "del", &netns_name]), None);
            let _ = std::fs::remove_file(self.pod_file(&id));
            self.pods
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
            return Err(e);
        }
        tracing::info!(pod = %id, name = %meta.name, namespace = %meta.namespace, ip = %pod.ip, "pod ready");
        self.save_pod(pod)?;
        self.emit(&id, &id, cri::ContainerEventType::ContainerCreatedEvent);
        self.emit(&id, &id, cri::ContainerEventType::ContainerStartedEvent);
        Ok(id)
    }

    fn cni_args(pod: &Pod) -> String {
        let meta = pod.config.metadata.clone().unwrap_or_default();
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            meta.namespace, meta.name, pod.id, meta.uid
        )
    }

    fn runtime_config(pod: &Pod) -> Value {
        let ports: Vec<Value> = pod
            .config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let proto = match cri::Protocol::try_from(p.protocol) {
                    Ok(cri::Protocol::Udp) => "udp",
                    Ok(cri::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                };
                json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": proto, "hostIP": p.host_ip})
            })
            .collect();
        json!({ "portMappings": ports })
    }

    fn setup_network(&self, pod: &mut Pod) -> Result<(), Error> {
        let _ = util::run(
            Command::new("ip").args(["-n", &pod.netns_name, "link", "set", "lo", "up"]),
            None,
        );
        let net = cni::load(&self.config.cni_conf_dir)?;
        tracing::debug!(pod = %pod.id, network = %net.list["name"], file = %net.file.display(), "CNI ADD");
        pod.cni_network = Some(net.list.clone());
        self.save_pod(pod.clone())?;
        let args = Self::cni_args(pod);
        let inv = cni::Invocation {
            container_id: &pod.id,
            netns: &pod.netns,
            ifname: "eth0",
            bin_dirs: &self.config.cni_bin_dir,
            args,
            runtime_config: Self::runtime_config(pod),
            cwd: &self.config.state_dir,
        };
        let result = cni::add(&net, &inv)?;
        pod.ip = cni::pod_ip(&result).unwrap_or_default();
        pod.cni_result = Some(result);
        Ok(())
    }

    fn teardown_network(&self, pod: &mut Pod) -> Result<(), Error> {
        let Some(list) = pod.cni_network.clone() else {
            return Ok(());
        };
        let net = cni::Network {
            file: PathBuf::new(),
            list,
        };
        let inv = cni::Invocation {
            container_id: &pod.id,
            netns: &pod.netns,
            ifname: "eth0",
            bin_dirs: &self.config.cni_bin_dir,
            args: Self::cni_args(pod),
            runtime_config: Self::runtime_config(pod),
            cwd: &self.config.state_dir,
        };
        cni::del(&net, &inv, pod.cni_result.as_ref())?;
        pod.cni_network = None;
        pod.cni_result = None;
        Ok(())
    }

    fn pod_containers(&self, pod_id: &str) -> Vec<String> {
        self.containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|c| c.pod_id == pod_id)
            .map(|c| c.id.clone())
            .collect()
    }

    /// StopPodSandbox: stops its containers (KILL), CNI DEL. Idempotent; an unknown id
    /// is fine (the kubelet may retry after a remove).
    pub fn stop_pod(&self, id: &str) -> Result<(), Error> {
        let lock = self.lock_of(id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut pod) = self.pod(id) else {
            return Ok(());
        };
        for c in self.pod_containers(id) {
            self.stop_container(&c, 0)?;
        }
        self.teardown_network(&mut pod)?;
        let was_ready = pod.state == PodState::Ready;
        pod.state = PodState::NotReady;
        self.save_pod(pod)?;
        if was_ready {
            self.emit(id, id, cri::ContainerEventType::ContainerStoppedEvent);
        }
        tracing::info!(pod = %id, "pod stopped");
        Ok(())
    }

    /// RemovePodSandbox: removes its containers, the network and the namespace, then
    /// the state. Idempotent.
    pub fn remove_pod(&self, id: &str) -> Result<(), Error> {
        let lock = self.lock_of(id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut pod) = self.pod(id) else {
            return Ok(());
        };
        for c in self.pod_containers(id) {
            self.remove_container(&c)?;
        }
        self.teardown_network(&mut pod)?;
        if pod.netns.exists() {
            let out = util::run(
                Command::new("ip").args(["netns", "del", &pod.netns_name]),
                None,
            )
            .map_err(internal("running ip netns del"))?;
            if !out.ok() && pod.netns.exists() {
                return Err(Error::Internal(format!(
                    "ip netns del {}: {}",
                    pod.netns_name,
                    out.stderr.trim()
                )));
            }
        }
        match std::fs::remove_file(self.pod_file(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Internal(format!("removing the pod state: {e}"))),
        }
        self.pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.emit(id, id, cri::ContainerEventType::ContainerDeletedEvent);
        tracing::info!(pod = %id, "pod removed");
        Ok(())
    }

    fn pod_sandbox_state(pod: &Pod) -> i32 {
        match pod.state {
            PodState::Ready => cri::PodSandboxState::SandboxReady as i32,
            PodState::NotReady => cri::PodSandboxState::SandboxNotready as i32,
        }
    }

    /// PodSandboxStatus.
    pub fn pod_status(&self, id: &str) -> Result<cri::PodSandboxStatus, Error> {
        let pod = self
            .pod(id)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))?;
        Ok(cri::PodSandboxStatus {
            id: pod.id.clone(),
            metadata: pod.config.metadata.clone(),
            state: Self::pod_sandbox_state(&pod),
            created_at: pod.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: if pod.cni_result.is_some() {
                    pod.ip.clone()
                } else {
                    String::new()
                },
                additional_ips: vec![],
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption::default()),
                }),
            }),
            labels: pod.config.labels.clone(),
            annotations: pod.config.annotations.clone(),
            runtime_handler: pod.runtime_handler.clone(),
        })
    }

    /// The pod's record as JSON (verbose status: netns, CNI network and result, config).
    #[must_use]
    pub fn pod_info(&self, id: &str) -> Option<String> {
        self.pod(id).and_then(|p| serde_json::to_string(&p).ok())
    }

    /// The container's record plus its bundle's config.json (verbose status).
    #[must_use]
    pub fn container_info(&self, id: &str) -> Option<String> {
        let c = self.container(id)?;
        let spec: Value = std::fs::read(self.container_dir(id).join("bundle/config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        serde_json::to_string(&json!({ "container": c, "runtimeSpec": spec, "pid": c.pid })).ok()
    }

    /// ListPodSandbox.
    #[must_use]
    pub fn list_pods(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let pods = self
            .pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<cri::PodSandbox> = pods
            .values()
            .filter(|p| match &filter {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || p.id == f.id || p.id.starts_with(&f.id))
                        && f.state
                            .as_ref()
                            .is_none_or(|s| s.state == Self::pod_sandbox_state(p))
                        && labels_match(&p.config.labels, &f.label_selector)
                }
            })
            .map(|p| cri::PodSandbox {
                id: p.id.clone(),
                metadata: p.config.metadata.clone(),
                state: Self::pod_sandbox_state(p),
                created_at: p.created_at,
                labels: p.config.labels.clone(),
                annotations: p.config.annotations.clone(),
                runtime_handler: p.runtime_handler.clone(),
            })
            .collect();
        out.sort_by_key(|p| p.created_at);
        out
    }

    // ---- containers -----------------------------------------------------------------

    /// CreateContainer.
    pub fn create_container(
        self: &Arc<Self>,
        req: cri::CreateContainerRequest,
    ) -> Result<String, Error> {
        let pod = self.pod(&req.pod_sandbox_id).ok_or_else(|| {
            Error::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id))
        })?;
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("CreateContainer without a config".into()))?;
        if config.metadata.is_none() {
            return Err(Error::InvalidArgument(
                "container config without metadata".into(),
            ));
        }
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_ref.is_empty() {
            return Err(Error::InvalidArgument(
                "container config without an image".into(),
            ));
        }
        let image = self.images.find(&image_ref).ok_or_else(|| {
            Error::NotFound(format!(
                "image {image_ref:?} not found: pull it first (PullImage)"
            ))
        })?;
        if config.tty || config.stdin {
            return Err(Error::InvalidArgument(if image.septem {
                "a unikernel container has no terminal and no standard input: tty and stdin must be false".into()
            } else {
                "septem-cri does not attach to containers yet (Attach is not implemented for \
                 ordinary containers): tty and stdin must be false"
                    .into()
            }));
        }
        let id = util::random_id().map_err(internal("random id"))?;
        let lock = self.lock_of(&id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = self.container_dir(&id);
        let result = self.create_in(&id, &dir, &pod, &config, &image, &image_ref);
        if let Err(e) = &result {
            tracing::warn!(container = %id, "CreateContainer failed: {e}");
            let _ = self.runnc(&["delete", "--force", &id]);
            let _ = std::fs::remove_dir_all(&dir);
            self.containers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
        }
        result.map(|()| id)
    }

    fn create_in(
        self: &Arc<Self>,
        id: &str,
        dir: &Path,
        pod: &Pod,
        config: &cri::ContainerConfig,
        image: &images::ImageRecord,
        image_ref: &str,
    ) -> Result<(), Error> {
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(internal("creating the bundle"))?;
        let ic = self.images.config(&image.id)?;
        let spec = if image.septem {
            images::unpack(&ic.layers, &bundle.join("rootfs"))
                .map_err(internal("unpacking the image layer"))?;
            let mut spec = self.spec(id, pod, config, &ic);
            spec["mounts"] =
                Value::Array(mounts(dir, pod, config).map_err(internal("writing resolv.conf"))?);
            spec
        } else {
            let rootfs = bundle.join("rootfs");
            unpack::unpack(&ic.layers, &rootfs).map_err(|e| {
                Error::Internal(format!("unpacking the layers of {}: {e}", image.id))
            })?;
            let mut spec = self.spec(id, pod, config, &ic);
            crate::ordinary::adapt(&mut spec, dir, &rootfs, pod, config, &ic)?;
            spec
        };
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap_or_default(),
        )
        .map_err(internal("writing config.json"))?;

        let (log_file, log_path) = {
            let dir_ = &pod.config.log_directory;
            let p = &config.log_path;
            if !p.is_empty() && !dir_.is_empty() {
                (Path::new(dir_).join(p), p.clone())
            } else if Path::new(p).is_absolute() {
                (PathBuf::from(p), p.clone())
            } else {
                (dir.join("console.log"), String::new())
            }
        };
        let log = LogFile::open(&log_file)
            .map_err(internal(format!("opening {}", log_file.display())))?;
        let (out_r, out_w) =
            logs::fifo(&dir.join("stdout.fifo")).map_err(internal("stdout fifo"))?;
        let (err_r, err_w) =
            logs::fifo(&dir.join("stderr.fifo")).map_err(internal("stderr fifo"))?;
        let pid_file = dir.join("pid");
        let runnc_log = dir.join("runnc.log");
        let mut cmd = self.runnc_cmd(Some(&runnc_log));
        cmd.arg("create")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w));
        let mut child = reaper::spawn(&mut cmd)
            .map_err(internal(format!("running {}", self.config.runnc.display())))?;
        drop(cmd); // our copies of the write ends: EOF when the container is gone
        logs::copy(out_r, "stdout", log.clone()).map_err(internal("log thread"))?;
        logs::copy(err_r, "stderr", log.clone()).map_err(internal("log thread"))?;
        let status = util::wait_timeout(&mut child, util::COMMAND_TIMEOUT);
        reaper::forget(i32::try_from(child.id()).unwrap_or(-1));
        let status = status.map_err(internal("waiting for runnc create"))?;
        if !status.success() {
            let msg = std::fs::read_to_string(&runnc_log).unwrap_or_default();
            let last = msg
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            return Err(Error::Internal(format!(
                "runnc create failed ({status}): {last}"
            )));
        }
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .map_err(internal("reading the pid file"))?
            .trim()
            .parse()
            .map_err(|e| Error::Internal(format!("runnc's pid file: {e}")))?;
        let c = Container {
            id: id.to_string(),
            pod_id: pod.id.clone(),
            config: config.clone(),
            image_id: image.id.clone(),
            image: image_ref.to_string(),
            septem: image.septem,
            created_at: util::now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid,
            pid_start: reaper::start_time(pid).unwrap_or(0),
            log_file,
            log_path,
        };
        self.save_container(c)?;
        self.logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string(), log);
        self.spawn_waiter(id, pid);
        self.emit(id, &pod.id, cri::ContainerEventType::ContainerCreatedEvent);
        tracing::info!(container = %id, pod = %pod.id, pid, "container created");
        Ok(())
    }

    fn spawn_waiter(self: &Arc<Self>, id: &str, pid: i32) {
        reaper::register(pid);
        self.waited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string());
        let rt = Arc::clone(self);
        let id_ = id.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("wait-{pid}"))
            .spawn(move || {
                let id = id_;
                let status = reaper::wait(pid);
                let (code, reason, message) = match status {
                    Some(s) => {
                        let code = reaper::exit_code(s);
                        (
                            code,
                            if code == 0 { "Completed" } else { "Error" },
                            String::new(),
                        )
                    }
                    None => (
                        255,
                        "Unknown",
                        "the container process was not septem-cri's child".to_string(),
                    ),
                };
                tracing::info!(container = %id, pid, code, "container exited");
                let c = rt
                    .containers
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&id)
                    .cloned();
                if let Some(mut c) = c {
                    c.finished_at = util::now_ns();
                    c.exit_code = code;
                    c.reason = reason.to_string();
                    c.message = message;
                    if rt.container_dir(&id).exists() {
                        let pod_id = c.pod_id.clone();
                        if let Err(e) = rt.save_container(c) {
                            tracing::warn!(container = %id, "{e}");
                        }
                        rt.emit(&id, &pod_id, cri::ContainerEventType::ContainerStoppedEvent);
                    }
                }
                rt.waited
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&id);
            });
        if let Err(e) = spawned {
            tracing::warn!(container = %id, "no waiter thread: {e}");
        }
    }

    fn spec(
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

    /// StartContainer.
    pub fn start_container(&self, id: &str) -> Result<(), Error> {
        let lock = self.lock_of(id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = self
            .container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        match c.state() {
            cri::ContainerState::ContainerCreated => {}
            s => {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is {}, not created",
                    s.as_str_name()
                )))
            }
        }
        let out = self.runnc(&["start", id])?;
        if !out.ok() {
            return Err(Error::Internal(format!(
                "runnc start {id}: {}",
                out.stderr.trim()
            )));
        }
        if let Some(mut c) = self.container(id) {
            c.started_at = util::now_ns();
            self.save_container(c)?;
        }
        self.emit(
            id,
            &c.pod_id,
            cri::ContainerEventType::ContainerStartedEvent,
        );
        tracing::info!(container = %id, "container started");
        Ok(())
    }

    fn wait_exit(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.container(id) {
                None => return true,
                Some(c) if c.finished_at != 0 => return true,
                Some(_) => {}
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// StopContainer: TERM (graceful: the guest drains and exits 0), then KILL after
    /// `timeout` seconds. Idempotent; unknown ids are NotFound.
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Error> {
        let lock = self.lock_of(id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = self
            .container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        if c.finished_at != 0 {
            return Ok(());
        }
        if timeout > 0 {
            let out = self.runnc(&["kill", id, "TERM"])?;
            if !out.ok() {
                tracing::debug!(container = %id, "runnc kill TERM: {}", out.stderr.trim());
            }
            if self.wait_exit(id, Duration::from_secs(timeout.unsigned_abs())) {
                return Ok(());
            }
        }
        let out = self.runnc(&["kill", id, "KILL"])?;
        if !out.ok() {
            tracing::debug!(container = %id, "runnc kill KILL: {}", out.stderr.trim());
        }
        if self.wait_exit(id, Duration::from_secs(10)) {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "container {id} did not exit 10 s after SIGKILL"
            )))
        }
    }

    /// RemoveContainer: `runnc delete --force`, files removed. Idempotent.
    pub fn remove_container(&self, id: &str) -> Result<(), Error> {
        let lock = self.lock_of(id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(c) = self.container(id) else {
            return Ok(());
        };
        let out = self.runnc(&["delete", "--force", id])?;
        if !out.ok() && !out.stderr.contains("not exist") && !out.stderr.contains("not found") {
            return Err(Error::Internal(format!(
                "runnc delete {id}: {}",
                out.stderr.trim()
            )));
        }
        // The process is gone now; give the waiter a moment to record it.
        self.wait_exit(id, Duration::from_secs(2));
        let dir = self.container_dir(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(internal(format!("removing {}", dir.display())))?;
        }
        self.containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.emit(
            id,
            &c.pod_id,
            cri::ContainerEventType::ContainerDeletedEvent,
        );
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    fn to_cri(c: &Container) -> cri::Container {
        cri::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            metadata: c.config.metadata.clone(),
            image: Some(cri::ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            image_ref: c.image_id.clone(),
            state: c.state() as i32,
            created_at: c.created_at,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            image_id: c.image_id.clone(),
        }
    }

    /// ListContainers.
    #[must_use]
    pub fn list_containers(&self, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
        let ids: Vec<String> = self
            .containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        let mut out: Vec<cri::Container> = ids
            .iter()
            .filter_map(|id| self.container(id))
            .filter(|c| match &filter {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || c.id == f.id || c.id.starts_with(&f.id))
                        && (f.pod_sandbox_id.is_empty() || c.pod_id == f.pod_sandbox_id)
                        && f.state.as_ref().is_none_or(|s| s.state == c.state() as i32)
                        && labels_match(&c.config.labels, &f.label_selector)
                }
            })
            .map(|c| Self::to_cri(&c))
            .collect();
        out.sort_by_key(|c| c.created_at);
        out
    }

    /// ContainerStatus.
    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, Error> {
        let c = self
            .container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        Ok(cri::ContainerStatus {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            state: c.state() as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: Some(cri::ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            image_ref: c.image_id.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            mounts: vec![],
            log_path: c.log_path.clone(),
            resources: c.config.linux.as_ref().map(|l| cri::ContainerResources {
                linux: l.resources.clone(),
                windows: None,
            }),
            image_id: c.image_id.clone(),
            user: None,
        })
    }

    /// UpdateContainerResources: `runnc update -r` with the new CPU limits. The guest's
    /// memory is fixed at boot, so a different memory limit is refused.
    pub fn update_resources(
        &self,
        id: &str,
        r: Option<cri::LinuxContainerResources>,
    ) -> Result<(), Error> {
        let lock = self.lock_of(id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut c = self
            .container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        let Some(r) = r else { return Ok(()) };
        if c.finished_at != 0 {
            return Err(Error::FailedPrecondition(format!(
                "container {id} has exited"
            )));
        }
        let current = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map_or(0, |r| r.memory_limit_in_bytes);
        if c.septem && r.memory_limit_in_bytes > 0 && r.memory_limit_in_bytes != current {
            return Err(Error::FailedPrecondition(format!(
                "container {id}: a unikernel's memory is fixed when it boots; \
                 recreate the container to change its memory limit"
            )));
        }
        let mut res = oci_resources(&r);
        if c.septem {
            if let Some(o) = res.as_object_mut() {
                o.remove("memory");
            }
        }
        let file = self.container_dir(id).join("resources.json");
        std::fs::write(&file, res.to_string()).map_err(internal("writing resources.json"))?;
        let out = self.runnc(&["update", "-r", &file.to_string_lossy(), id])?;
        if !out.ok() {
            return Err(Error::Internal(format!(
                "runnc update {id}: {}",
                out.stderr.trim()
            )));
        }
        let linux = c.config.linux.get_or_insert_with(Default::default);
        linux.resources = Some(r);
        self.save_container(c)
    }

    /// ReopenContainerLog.
    pub fn reopen_log(&self, id: &str) -> Result<(), Error> {
        let c = self
            .container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        if c.state() != cri::ContainerState::ContainerRunning {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        let log = self
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "container {id}'s output is not connected to this septem-cri (it was restarted)"
                ))
            })?;
        log.reopen()
            .map_err(internal(format!("reopening {}", c.log_file.display())))
    }

    /// ExecSync: `cmd` in ordinary container `id` through runc (None for a unikernel
    /// container: the caller says why it cannot).
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<Option<crate::ordinary::Exec>, Error> {
        let c = self
            .container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        if c.septem {
            return Ok(None);
        }
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("ExecSync without a command".into()));
        }
        if c.state() != cri::ContainerState::ContainerRunning {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        let runc = self
            .config
            .runc
            .clone()
            .unwrap_or_else(|| PathBuf::from("runc"));
        let root = self.config.state_dir.join("runnc").join(".runc");
        match crate::ordinary::exec_sync(&runc, &root, id, &self.container_dir(id), cmd, timeout) {
            Ok(out) => Ok(Some(out)),
            Err(e @ crate::ordinary::ExecError::Timeout(_)) => {
                Err(Error::DeadlineExceeded(format!("ExecSync in {id}: {e}")))
            }
            Err(e) => Err(Error::Internal(format!("ExecSync in {id}: {e}"))),
        }
    }

    /// Whether container `id` is a Septem unikernel (NotFound when there is none).
    pub fn is_septem(&self, id: &str) -> Result<bool, Error> {
        self.container(id)
            .map(|c| c.septem)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))
    }

    /// The pod's existence.
    pub fn require_pod(&self, id: &str) -> Result<(), Error> {
        self.pod(id)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))
    }

    // ---- stats ----------------------------------------------------------------------

    /// `runnc events --stats`: (cpu ns, memory bytes, memory limit) of a live container.
    fn runnc_stats(&self, id: &str) -> Option<(u64, u64, u64)> {
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

    fn stats_of(&self, c: &Container) -> cri::ContainerStats {
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
        let c = self
            .container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
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
        let pod = self
            .pod(id)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))?;
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
    fn network_usage(&self, pod: &Pod, now: i64) -> Option<cri::NetworkUsage> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(dir: &Path) -> Arc<Runtime> {
        Runtime::open(Config {
            listen: dir.join("sock"),
            state_dir: dir.join("state"),
            cni_conf_dir: dir.join("net.d"),
            cni_bin_dir: "/nonexistent".into(),
            runnc: "/nonexistent/runnc".into(),
            runc: None,
            default_backend: "auto".into(),
        })
        .unwrap()
    }

    fn pod(backend: &str, parent: &str) -> Pod {
        Pod {
            id: "p1".into(),
            config: cri::PodSandboxConfig {
                hostname: "h".into(),
                linux: Some(cri::LinuxPodSandboxConfig {
                    cgroup_parent: parent.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            runtime_handler: String::new(),
            backend: backend.into(),
            created_at: 1,
            state: PodState::Ready,
            netns_name: "septem-p1".into(),
            netns: "/var/run/netns/septem-p1".into(),
            cni_network: None,
            cni_result: None,
            ip: String::new(),
        }
    }

    fn image() -> images::ImageConfig {
        images::ImageConfig {
            entrypoint: vec!["/unikernel/app.septem".into()],
            cmd: vec!["--port".into(), "80".into()],
            env: vec!["A=1".into(), "B=2".into()],
            labels: [
                (
                    "org.septem.unikernel.binary".to_string(),
                    "/unikernel/app.septem".to_string(),
                ),
                ("other".to_string(), "x".to_string()),
            ]
            .into(),
            layers: vec![],
            ..images::ImageConfig::default()
        }
    }

    #[test]
    fn handlers_map_to_backends() {
        assert_eq!(backend_of("", "auto").unwrap(), "auto");
        assert_eq!(backend_of("septem", "seccomp").unwrap(), "seccomp");
        assert_eq!(backend_of("septem-kvm", "auto").unwrap(), "kvm");
        assert_eq!(backend_of("septem-seccomp", "auto").unwrap(), "seccomp");
        assert!(matches!(
            backend_of("runc", "auto"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn ordinary_spec_is_a_plain_runc_container() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/passwd"), "app:x:10:20::/:/bin/sh\n").unwrap();
        let ic = images::ImageConfig {
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec!["-c".into(), "sleep 1".into()],
            env: vec!["A=1".into()],
            user: "app".into(),
            working_dir: "/work".into(),
            ..images::ImageConfig::default()
        };
        let mut p = pod("seccomp", "/kubepods");
        p.ip = "10.0.0.5".into();
        p.config.dns_config = Some(cri::DnsConfig {
            servers: vec!["10.0.0.1".into()],
            ..Default::default()
        });
        let config = cri::ContainerConfig::default();
        let mut s = rt.spec("c1", &p, &config, &ic);
        crate::ordinary::adapt(&mut s, dir.path(), &rootfs, &p, &config, &ic).unwrap();
        assert_eq!(
            s["annotations"],
            json!({"io.kubernetes.cri.sandbox-id": "p1"})
        );
        assert_eq!(s["root"]["readonly"], false);
        assert_eq!(s["process"]["user"], json!({"uid": 10, "gid": 20}));
        assert_eq!(s["process"]["cwd"], "/work");
        assert_eq!(s["process"]["args"], json!(["/bin/sh", "-c", "sleep 1"]));
        assert!(s["process"]["env"][0]
            .as_str()
            .unwrap()
            .starts_with("PATH="));
        assert_eq!(s["linux"]["cgroupsPath"], "/kubepods/c1");
        assert_eq!(
            s["linux"]["namespaces"][0]["path"],
            "/var/run/netns/septem-p1"
        );
        assert_eq!(s["hostname"], "h");
        let dests: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
        ] {
            assert!(dests.contains(&d), "{d} in {dests:?}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hosts"))
                .unwrap()
                .lines()
                .last(),
            Some("10.0.0.5\th")
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hostname")).unwrap(),
            "h\n"
        );
        // Nothing to run.
        let empty = images::ImageConfig::default();
        let mut s = rt.spec("c2", &p, &config, &empty);
        assert!(matches!(
            crate::ordinary::adapt(&mut s, dir.path(), &rootfs, &p, &config, &empty),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn spec_args_env_annotations_cgroup_and_resources() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let mut config = cri::ContainerConfig::default();
        // Image defaults.
        let s = rt.spec("c1", &pod("kvm", ""), &config, &image());
        assert_eq!(
            s["process"]["args"],
            json!(["/unikernel/app.septem", "--port", "80"])
        );
        assert_eq!(s["process"]["env"], json!(["A=1", "B=2"]));
        assert_eq!(s["annotations"]["org.septem.unikernel"], "true");
        assert_eq!(s["annotations"]["org.septem.runnc.backend"], "kvm");
        assert_eq!(
            s["annotations"]["org.septem.unikernel.binary"],
            "/unikernel/app.septem"
        );
        assert!(s["annotations"].get("other").is_none());
        assert!(s["linux"].get("cgroupsPath").is_none());
        assert_eq!(
            s["linux"]["namespaces"][0]["path"],
            "/var/run/netns/septem-p1"
        );
        assert_eq!(s["hostname"], "h");
        // args replace Cmd; env overrides by key.
        config.args = vec!["--log".into()];
        config.envs = vec![cri::KeyValue {
            key: "A".into(),
            value: "9".into(),
        }];
        let s = rt.spec("c1", &pod("kvm", ""), &config, &image());
        assert_eq!(
            s["process"]["args"],
            json!(["/unikernel/app.septem", "--log"])
        );
        assert_eq!(s["process"]["env"], json!(["B=2", "A=9"]));
        // command replaces Entrypoint and drops Cmd.
        config.args = vec![];
        config.command = vec!["/unikernel/other.septem".into()];
        let s = rt.spec("c1", &pod("kvm", ""), &config, &image());
        assert_eq!(s["process"]["args"], json!(["/unikernel/other.septem"]));
        // cgroup parent and resources.
        config.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            ..Default::default()
        });
        let s = rt.spec("c1", &pod("seccomp", "/kubepods/pod-u/"), &config, &image());
        assert_eq!(s["linux"]["cgroupsPath"], "/kubepods/pod-u/c1");
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(
            s["linux"]["resources"]["cpu"],
            json!({"shares": 256, "quota": 50_000, "period": 100_000})
        );
    }

    #[test]
    fn dns_and_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pod("kvm", "");
        let config = cri::ContainerConfig {
            mounts: vec![cri::Mount {
                container_path: "/septem/block/data".into(),
                host_path: "/srv/data.img".into(),
                readonly: false,
                ..Default::default()
            }],
            ..Default::default()
        };
        let m = mounts(dir.path(), &p, &config).unwrap();
        assert_eq!(m.len(), 1, "no DNS config, no resolv.conf");
        assert_eq!(m[0]["options"], json!(["rbind", "rw"]));
        p.config.dns_config = Some(cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["a.b".into(), "b".into()],
            options: vec!["ndots:5".into()],
        });
        let m = mounts(dir.path(), &p, &config).unwrap();
        assert_eq!(m[1]["destination"], "/etc/resolv.conf");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
            "nameserver 10.0.0.10\nsearch a.b b\noptions ndots:5\n"
        );
    }

    #[test]
    fn state_survives_reopen_and_a_vanished_netns_makes_the_pod_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let mut p = pod("kvm", "");
        p.netns = dir.path().join("no-such-netns");
        rt.save_pod(p).unwrap();
        rt.set_pod_cidr("10.1.0.0/16").unwrap();
        let unfinished = dir.path().join("state/containers/c9/bundle");
        std::fs::create_dir_all(&unfinished).unwrap();
        drop(rt);
        let rt = runtime(dir.path());
        let pods = rt.list_pods(None);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].state, cri::PodSandboxState::SandboxNotready as i32);
        assert_eq!(rt.pod_cidr(), "10.1.0.0/16");
        assert!(
            !dir.path().join("state/containers/c9").exists(),
            "unfinished create left"
        );
        let ready = rt.list_pods(Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        }));
        assert!(ready.is_empty());
    }
}
