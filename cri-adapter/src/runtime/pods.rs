//! Pods: network namespaces wired by CNI.

use super::{backend_of, internal, labels_match, Error, Pod, PodState, Runtime};
use crate::{cni, util};
use k8s_cri::v1 as cri;
use serde_json::{json, Value};
use std::path::PathBuf;

impl Runtime {
    // ---- pods -----------------------------------------------------------------------

    /// RunPodSandbox.
    pub fn run_pod(&self, req: cri::RunPodSandboxRequest) -> Result<String, Error> {
        let mut laps = util::Laps::start("RunPodSandbox");
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
        // The pod's first container will move a process into a cgroup: the kernel's
        // wait for that passes during CNI ADD (Runtime::take_primer).
        let primer = runnc::cgroup::prime::start();
        let lock = self.lock_of(&id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let netns_name = format!("septem-{id}");
        let net = cni::load(&self.config.cni_conf_dir)?;
        tracing::debug!(pod = %id, network = %net.list["name"], file = %net.file.display(), "CNI network");
        let mut pod = Pod {
            id: id.clone(),
            config,
            runtime_handler: req.runtime_handler,
            backend,
            created_at: util::now_ns(),
            state: PodState::Ready,
            netns: crate::netns::path_of(&netns_name),
            netns_name,
            cni_network: Some(net.list),
            cni_result: None,
            ip: String::new(),
        };
        // The intent first: a crash from here on leaves a record of what to undo
        // (reconcile.rs), and only pods this instance made are ever undone.
        self.write_intent(&pod)?;
        laps.lap("intent");
        if let Err(e) = self.create_netns(&pod).and_then(|()| {
            laps.lap("netns");
            self.setup_network(&mut pod)
        }) {
            tracing::warn!(pod = %id, "RunPodSandbox failed: {e}");
            self.undo_pod_network(&mut pod);
            self.remove_intent(&id);
            return Err(e);
        }
        laps.lap("cni_add");
        self.save_pod(pod.clone())?;
        self.remove_intent(&id);
        self.keep_primer(&id, primer);
        laps.lap("save");
        laps.log(&id);
        tracing::info!(pod = %id, name = %meta.name, namespace = %meta.namespace, ip = %pod.ip, "pod ready");
        self.emit(&id, &id, cri::ContainerEventType::ContainerCreatedEvent);
        self.emit(&id, &id, cri::ContainerEventType::ContainerStartedEvent);
        Ok(id)
    }

    fn create_netns(&self, pod: &Pod) -> Result<(), Error> {
        crate::netns::create(&pod.netns_name)?;
        Ok(())
    }

    /// Best effort: CNI DEL (releases the address, the veth, portmap rules), then the
    /// namespace (and the taps in it).
    pub(super) fn undo_pod_network(&self, pod: &mut Pod) {
        if let Err(e) = self.teardown_network(pod) {
            tracing::warn!(pod = %pod.id, "CNI DEL: {e}");
        }
        if let Err(e) = crate::netns::delete(&pod.netns_name) {
            tracing::warn!(pod = %pod.id, "{e}");
        }
    }

    pub(super) fn cni_args(pod: &Pod) -> String {
        let meta = pod.config.metadata.clone().unwrap_or_default();
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            meta.namespace, meta.name, pod.id, meta.uid
        )
    }

    pub(super) fn runtime_config(pod: &Pod) -> Value {
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

    /// CNI ADD with the network recorded in the pod (`lo` is up since the namespace was
    /// made).
    pub(super) fn setup_network(&self, pod: &mut Pod) -> Result<(), Error> {
        let net = cni::Network {
            file: PathBuf::new(),
            list: pod.cni_network.clone().unwrap_or_default(),
        };
        tracing::debug!(pod = %pod.id, network = %net.list["name"], "CNI ADD");
        let inv = cni::Invocation {
            container_id: &pod.id,
            netns: &pod.netns,
            ifname: "eth0",
            bin_dirs: &self.config.cni_bin_dir,
            args: Self::cni_args(pod),
            runtime_config: Self::runtime_config(pod),
            cwd: &self.config.state_dir,
        };
        let result = cni::add(&net, &inv)?;
        pod.ip = cni::pod_ip(&result).unwrap_or_default();
        pod.cni_result = Some(result);
        Ok(())
    }

    pub(super) fn teardown_network(&self, pod: &mut Pod) -> Result<(), Error> {
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

    pub(super) fn pod_containers(&self, pod_id: &str) -> Vec<String> {
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
        self.drop_primer(id);
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
        self.drop_primer(id);
        let Some(mut pod) = self.pod(id) else {
            return Ok(());
        };
        for c in self.pod_containers(id) {
            self.remove_container(&c)?;
        }
        self.teardown_network(&mut pod)?;
        crate::netns::delete(&pod.netns_name)?;
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

    pub(super) fn pod_sandbox_state(pod: &Pod) -> i32 {
        match pod.state {
            PodState::Ready => cri::PodSandboxState::SandboxReady as i32,
            PodState::NotReady => cri::PodSandboxState::SandboxNotready as i32,
        }
    }

    /// PodSandboxStatus.
    pub fn pod_status(&self, id: &str) -> Result<cri::PodSandboxStatus, Error> {
        let pod = self.require_pod(id)?;
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
}
