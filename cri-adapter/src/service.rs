//! The gRPC services: CRI v1 `RuntimeService` and `ImageService` over [`Runtime`].
//! Blocking work runs on tokio's blocking threads; every method answers (what a
//! unikernel cannot do gets a status saying why; what is not built yet says so).

use crate::images::{self, Credentials, PullFailure};
use crate::runtime::{self, Runtime};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The CRI server.
#[derive(Debug, Clone)]
pub struct Cri {
    rt: Arc<Runtime>,
}

impl Cri {
    /// Wraps the runtime.
    #[must_use]
    pub fn new(rt: Arc<Runtime>) -> Cri {
        Cri { rt }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<Runtime>) -> Result<T, runtime::Error> + Send + 'static,
    ) -> Result<T, Status> {
        let rt = Arc::clone(&self.rt);
        tokio::task::spawn_blocking(move || f(rt))
            .await
            .map_err(|e| Status::internal(format!("task failed: {e}")))?
            .map_err(to_status)
    }
}

type R<T> = Result<Response<T>, Status>;

/// The causes of `e`, outermost first.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push(c.to_string());
        cause = c.source();
    }
    out.join(": ")
}

fn to_status(e: runtime::Error) -> Status {
    use runtime::Error as E;
    match e {
        E::NotFound(m) => Status::not_found(m),
        E::InvalidArgument(m) => Status::invalid_argument(m),
        E::FailedPrecondition(m) => Status::failed_precondition(m),
        E::Internal(m) => Status::internal(m),
        E::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        E::Cni(e) => Status::internal(format!("CNI: {e}")),
        E::Netns(e) => Status::internal(format!("{e}: {}", error_chain(&e))),
        E::Image(e @ images::Error::BadReference { .. }) => Status::invalid_argument(e.to_string()),
        E::Image(e @ images::Error::Pinned { .. }) => Status::failed_precondition(e.to_string()),
        E::Image(images::Error::Pull { reference, source }) => {
            let m = format!("pulling {reference}: {source:#}");
            match images::classify(&source) {
                PullFailure::NotFound => Status::not_found(m),
                PullFailure::NotSeptem => Status::failed_precondition(format!(
                    "{m}; septem-cri runs Septem unikernel images and ordinary linux/amd64 \
                     images with gzip layers"
                )),
                PullFailure::BadReference => Status::invalid_argument(m),
                PullFailure::Auth => Status::unauthenticated(format!(
                    "{m}; the registry refused the pull's credentials (the kubelet sends them \
                     from the pod's imagePullSecrets as AuthConfig)"
                )),
                PullFailure::Unreachable => Status::unavailable(m),
                PullFailure::Integrity => Status::data_loss(m),
                PullFailure::BadLayer => Status::failed_precondition(format!(
                    "{m}; the image's layer is not a complete gzip tar (its digests match what \
                     the registry has, so the image itself is damaged)"
                )),
                PullFailure::Other => Status::internal(m),
            }
        }
        E::Image(e) => Status::internal(e.to_string()),
    }
}

fn unikernel_cannot(what: &str) -> Status {
    Status::failed_precondition(format!(
        "{what} is not possible in a Septem unikernel container: it runs one application \
         linked with a library OS, with no shell, no other processes and no way to start one \
         inside it (check the application over the network instead)"
    ))
}

/// The pull credentials of a CRI `AuthConfig`: `username`/`password`, else `auth`
/// (base64 `user:password`), else `registry_token` (sent as `Authorization: Bearer`),
/// else `identity_token` (exchanged at the registry's token service for a bearer token,
/// the OAuth2 refresh-token flow of the distribution token spec).
fn credentials(auth: Option<cri::AuthConfig>) -> Result<Option<Credentials>, Status> {
    let Some(a) = auth else { return Ok(None) };
    if !a.username.is_empty() {
        return Ok(Some(Credentials::Basic {
            username: a.username,
            password: a.password,
        }));
    }
    if !a.auth.is_empty() {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| Status::invalid_argument(format!("AuthConfig.auth is not base64: {e}")))?;
        let text = String::from_utf8(raw)
            .map_err(|_| Status::invalid_argument("AuthConfig.auth is not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("AuthConfig.auth is not user:password"))?;
        return Ok(Some(Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    if !a.registry_token.is_empty() {
        return Ok(Some(Credentials::Token(a.registry_token)));
    }
    if !a.identity_token.is_empty() {
        return Ok(Some(Credentials::IdentityToken(a.identity_token)));
    }
    Ok(None)
}

fn to_image(r: &images::ImageRecord, pinned: bool) -> cri::Image {
    cri::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid: None,
        username: String::new(),
        spec: Some(cri::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned,
    }
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "septem".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn status(&self, _: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        let network = match crate::cni::load(&self.rt.config.cni_conf_dir) {
            Ok(_) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            Err(e) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: format!("Network plugin returns error: {e}"),
            },
        };
        let runtime = match crate::config::find_executable(&self.rt.config.runnc) {
            Some(_) => cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            None => cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: false,
                reason: "RuntimeNotReady".into(),
                message: format!(
                    "runnc ({}) is not an executable file: give its path with --runnc",
                    self.rt.config.runnc.display()
                ),
            },
        };
        let handler = |name: &str| cri::RuntimeHandler {
            name: name.into(),
            features: Some(cri::RuntimeHandlerFeatures::default()),
        };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info: [("podCIDR".to_string(), self.rt.pod_cidr())]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            runtime_handlers: vec![
                handler("septem"),
                handler("septem-kvm"),
                handler("septem-seccomp"),
            ],
            features: None,
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> R<cri::RunPodSandboxResponse> {
        let req = req.into_inner();
        let id = self.blocking(move |rt| rt.run_pod(req)).await?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> R<cri::StopPodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        self.blocking(move |rt| rt.stop_pod(&id)).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> R<cri::RemovePodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        self.blocking(move |rt| rt.remove_pod(&id)).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> R<cri::PodSandboxStatusResponse> {
        let req = req.into_inner();
        let id = req.pod_sandbox_id;
        let rt = Arc::clone(&self.rt);
        let status = rt.pod_status(&id).map_err(to_status)?;
        let info = if req.verbose {
            rt.pod_info(&id)
                .map(|v| [("info".to_string(), v)].into())
                .unwrap_or_default()
        } else {
            HashMap::new()
        };
        let containers_statuses = rt
            .list_containers(Some(cri::ContainerFilter {
                pod_sandbox_id: id.clone(),
                ..Default::default()
            }))
            .iter()
            .filter_map(|c| rt.container_status(&c.id).ok())
            .collect();
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses,
            timestamp: crate::util::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> R<cri::ListPodSandboxResponse> {
        Ok(Response::new(cri::ListPodSandboxResponse {
            items: self.rt.list_pods(req.into_inner().filter),
        }))
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> R<cri::CreateContainerResponse> {
        let req = req.into_inner();
        let id = self.blocking(move |rt| rt.create_container(req)).await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> R<cri::StartContainerResponse> {
        let id = req.into_inner().container_id;
        self.blocking(move |rt| rt.start_container(&id)).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> R<cri::StopContainerResponse> {
        let req = req.into_inner();
        self.blocking(move |rt| rt.stop_container(&req.container_id, req.timeout))
            .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> R<cri::RemoveContainerResponse> {
        let id = req.into_inner().container_id;
        self.blocking(move |rt| rt.remove_container(&id)).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> R<cri::ListContainersResponse> {
        let filter = req.into_inner().filter;
        let containers = self
            .blocking(move |rt| Ok(rt.list_containers(filter)))
            .await?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> R<cri::ContainerStatusResponse> {
        let req = req.into_inner();
        let id = req.container_id;
        let (status, info) = self
            .blocking(move |rt| {
                let status = rt.container_status(&id)?;
                let info = if req.verbose {
                    rt.container_info(&id)
                } else {
                    None
                };
                Ok((status, info))
            })
            .await?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(status),
            info: info
                .map(|v| [("info".to_string(), v)].into())
                .unwrap_or_default(),
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        self.blocking(move |rt| rt.update_resources(&req.container_id, req.linux))
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        let id = req.into_inner().container_id;
        self.blocking(move |rt| rt.reopen_log(&id)).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        let req = req.into_inner();
        let timeout = std::time::Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        let out = self
            .blocking(move |rt| rt.exec_sync(&req.container_id, &req.cmd, timeout))
            .await?;
        let Some(out) = out else {
            return Err(unikernel_cannot(
                "ExecSync (running a command in the container)",
            ));
        };
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        if self
            .rt
            .is_septem(&req.into_inner().container_id)
            .map_err(to_status)?
        {
            return Err(unikernel_cannot(
                "Exec (running a command in the container)",
            ));
        }
        Err(Status::unimplemented(
            "not implemented yet in septem-cri: Exec (streaming) into an ordinary container; \
             ExecSync works",
        ))
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        if self
            .rt
            .is_septem(&req.into_inner().container_id)
            .map_err(to_status)?
        {
            return Err(unikernel_cannot(
                "Attach (the container has no terminal or standard input; its output is in the log)",
            ));
        }
        Err(Status::unimplemented(
            "not implemented yet in septem-cri: Attach to an ordinary container (its output is \
             in the log)",
        ))
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> R<cri::PortForwardResponse> {
        self.rt
            .require_pod(&req.into_inner().pod_sandbox_id)
            .map_err(to_status)?;
        Err(unikernel_cannot(
            "PortForward (it needs a process in the pod's network namespace, whose eth0 traffic \
             all goes to the unikernel; connect to the pod IP instead)",
        ))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> R<cri::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let stats = self.blocking(move |rt| rt.container_stats(&id)).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = self
            .blocking(move |rt| Ok(rt.list_container_stats(filter)))
            .await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> R<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let stats = self.blocking(move |rt| rt.pod_stats(&id)).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = self
            .blocking(move |rt| Ok(rt.list_pod_stats(filter)))
            .await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            self.blocking(move |rt| rt.set_pod_cidr(&cidr)).await?;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    /// Unimplemented, as containerd answers when it cannot checkpoint, whatever the id
    /// (the method itself is what the runtime lacks), saying why for the container's kind.
    async fn checkpoint_container(
        &self,
        req: Request<cri::CheckpointContainerRequest>,
    ) -> R<cri::CheckpointContainerResponse> {
        const UNIKERNEL: &str = "a unikernel container cannot be checkpointed by septem-cri: \
            the guest's memory and device state live in its septem-run monitor, which can \
            neither save nor restore a running guest";
        const ORDINARY: &str = "not implemented yet in septem-cri: CheckpointContainer of an \
            ordinary container (runc's CRIU checkpoints are not driven)";
        let id = req.into_inner().container_id;
        Err(Status::unimplemented(match self.rt.is_septem(&id) {
            Ok(true) => format!("CheckpointContainer: {UNIKERNEL}"),
            Ok(false) => ORDINARY.to_string(),
            Err(_) => format!("{ORDINARY}; {UNIKERNEL} (no container {id:?} anyway)"),
        }))
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        use tokio_stream::StreamExt as _;
        let rx = self
            .rt
            .subscribe()
            .ok_or_else(|| Status::unavailable("septem-cri is shutting down"))?;
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|e| match e {
            Ok(ev) => Some(Ok(ev)),
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!("a GetContainerEvents client lagged: {n} events dropped");
                None
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> R<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: runtime::metric_descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> R<cri::ListPodSandboxMetricsResponse> {
        let pod_metrics = self.blocking(|rt| Ok(rt.list_pod_metrics())).await?;
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> R<cri::RuntimeConfigResponse> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> R<cri::ListImagesResponse> {
        let want = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let store = &self.rt.images;
        let image = |r: &images::ImageRecord| to_image(r, store.pinned_by(r).is_some());
        let images = match want {
            Some(i) => store.find(&i).iter().map(image).collect(),
            None => store.list().iter().map(image).collect(),
        };
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> R<cri::ImageStatusResponse> {
        let req = req.into_inner();
        let image = req.image.map(|i| i.image).unwrap_or_default();
        let found = self.rt.images.find(&image);
        // Verbose: the stored record (with `septem`: a unikernel image or an ordinary one).
        let info = match &found {
            Some(rec) if req.verbose => HashMap::from([(
                "info".to_string(),
                serde_json::to_string(rec).unwrap_or_default(),
            )]),
            _ => HashMap::new(),
        };
        Ok(Response::new(cri::ImageStatusResponse {
            image: found
                .as_ref()
                .map(|r| to_image(r, self.rt.images.pinned_by(r).is_some())),
            info,
        }))
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        let req = req.into_inner();
        let image = req.image.map(|i| i.image).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("PullImage without an image"));
        }
        let auth = credentials(req.auth)?;
        tracing::info!(%image, "pulling");
        let rec = self
            .blocking(move |rt| rt.images.pull(&image, auth).map_err(runtime::Error::from))
            .await?;
        tracing::info!(id = %rec.id, "pulled");
        Ok(Response::new(cri::PullImageResponse { image_ref: rec.id }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> R<cri::RemoveImageResponse> {
        let image = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        self.blocking(move |rt| {
            rt.images
                .remove(&image)
                .map(|_| ())
                .map_err(runtime::Error::from)
        })
        .await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> R<cri::ImageFsInfoResponse> {
        let (bytes, inodes) = self.blocking(|rt| Ok(rt.images.usage())).await?;
        let usage = |mount: String, bytes: u64, inodes: u64| cri::FilesystemUsage {
            timestamp: crate::util::now_ns(),
            fs_id: Some(cri::FilesystemIdentifier { mountpoint: mount }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        };
        let containers = self.rt.config.state_dir.join("containers");
        let (cbytes, cinodes) = crate::images::usage_of(&containers);
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage(
                self.rt.images.dir().display().to_string(),
                bytes,
                inodes,
            )],
            container_filesystems: vec![usage(containers.display().to_string(), cbytes, cinodes)],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_configs_become_credentials_in_order() {
        let basic = |u: &str, p: &str| {
            Some(Credentials::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        let auth = |a: cri::AuthConfig| credentials(Some(a)).unwrap();
        assert_eq!(credentials(None).unwrap(), None);
        assert_eq!(auth(cri::AuthConfig::default()), None);
        assert_eq!(
            auth(cri::AuthConfig {
                username: "u".into(),
                password: "p".into(),
                identity_token: "i".into(),
                ..Default::default()
            }),
            basic("u", "p")
        );
        // base64("alice:s3cr:et"): the password keeps its colons.
        assert_eq!(
            auth(cri::AuthConfig {
                auth: "YWxpY2U6czNjcjpldA==".into(),
                ..Default::default()
            }),
            basic("alice", "s3cr:et")
        );
        assert_eq!(
            auth(cri::AuthConfig {
                registry_token: "r".into(),
                identity_token: "i".into(),
                ..Default::default()
            }),
            Some(Credentials::Token("r".into()))
        );
        assert_eq!(
            auth(cri::AuthConfig {
                identity_token: "i".into(),
                ..Default::default()
            }),
            Some(Credentials::IdentityToken("i".into()))
        );
        for bad in ["!!", "bm9jb2xvbg=="] {
            let e = credentials(Some(cri::AuthConfig {
                auth: bad.into(),
                ..Default::default()
            }))
            .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
