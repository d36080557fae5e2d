//! Containers: runnc bundles, their lifecycle and exit statuses.

use super::spec::{oci_resources, unikernel_mounts};
use super::waiter::Shim;
use super::{internal, labels_match, Container, Error, Pod, PodState, Runtime};
use crate::logs::LogFile;
use crate::{images, logs, reaper, shim, unpack, util};
use k8s_cri::v1 as cri;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Runtime {
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
        super::admit::admit(&pod, &config, &image)?;
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
        // The container's cgroup move in `runnc create` waits for an RCU grace period
        // after a quiet spell (cgroup v1): primed since RunPodSandbox, or from here.
        let primer = self.take_primer(&pod.id);
        let result = self.create_in(&id, &dir, &pod, &config, &image, &image_ref);
        drop(primer);
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

    pub(super) fn create_in(
        self: &Arc<Self>,
        id: &str,
        dir: &Path,
        pod: &Pod,
        config: &cri::ContainerConfig,
        image: &images::ImageRecord,
        image_ref: &str,
    ) -> Result<(), Error> {
        let mut laps = util::Laps::start("CreateContainer");
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(internal("creating the bundle"))?;
        let ic = self.images.config(&image.id)?;
        let spec = if image.septem {
            let unpacked = self.images.unpacked(&image.id)?;
            images::copy_tree(&unpacked, &bundle.join("rootfs"))
                .map_err(internal("copying the image's unpacked layers"))?;
            laps.lap("rootfs");
            let mut spec = self.spec(id, pod, config, &ic);
            spec["mounts"] = Value::Array(
                unikernel_mounts(dir, pod, config).map_err(internal("writing resolv.conf"))?,
            );
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
        laps.lap("bundle");

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
        let runnc_log = dir.join("runnc.log");
        let (report_r, report_w) = logs::pipe().map_err(internal("the shim's report pipe"))?;
        let mut cmd = self.shim_cmd(dir, &runnc_log);
        cmd.arg("create")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--pid-file")
            .arg(dir.join(shim::PID_FILE))
            .arg(id)
            .stdin(Stdio::from(report_w))
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w));
        laps.lap("fifos");
        let mut shim_child = reaper::spawn(&mut cmd).map_err(internal(
            "starting the container's shim (septem-cri __shim)",
        ))?;
        laps.lap("spawn_shim");
        drop(cmd); // our copies of the write ends: EOF when the container is gone
        logs::copy(out_r, "stdout", log.clone()).map_err(internal("log thread"))?;
        logs::copy(err_r, "stderr", log.clone()).map_err(internal("log thread"))?;
        let shim_pid = i32::try_from(shim_child.id()).unwrap_or(-1);
        let report = shim::read_report(
            std::fs::File::from(report_r),
            util::COMMAND_TIMEOUT + Duration::from_secs(10),
        );
        laps.lap("shim_report");
        let pid = match report {
            shim::Report::Created(pid) => pid,
            shim::Report::Failed(why) => {
                let _ = shim_child.kill();
                let _ = shim_child.wait();
                reaper::forget(shim_pid);
                return Err(Error::Internal(failed_create(&why, &runnc_log)));
            }
        };
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
            shim_pid,
            shim_start: reaper::start_time(shim_pid).unwrap_or(0),
            log_file,
            log_path,
        };
        if let Err(e) = self.save_container(c.clone()) {
            // The caller undoes the create (runnc delete --force): the shim then exits.
            reaper::wait_in_background(shim_pid);
            return Err(e);
        }
        self.logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string(), log);
        self.spawn_waiter(&c, Shim::Child(shim_pid));
        laps.lap("save");
        laps.log(id);
        self.emit(id, &pod.id, cri::ContainerEventType::ContainerCreatedEvent);
        tracing::info!(container = %id, pod = %pod.id, pid, shim_pid, "container created");
        Ok(())
    }

    /// `septem-cri __shim <dir> <runnc> --root … --log <runnc_log>` (then the runnc
    /// command), in a process group of its own. The binary is `/proc/self/exe`: the
    /// running septem-cri, even after its file was replaced by an upgrade.
    fn shim_cmd(&self, dir: &Path, runnc_log: &Path) -> std::process::Command {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.arg0("septem-cri-shim")
            .arg(shim::ARG)
            .arg(dir)
            .arg(&self.config.runnc)
            .arg("--root")
            .arg(self.runnc_root())
            .arg("--log")
            .arg(runnc_log)
            .process_group(0);
        if let Some(runc) = &self.config.runc {
            cmd.env("RUNNC_RUNC", runc);
        }
        cmd
    }

    /// StartContainer.
    pub fn start_container(&self, id: &str) -> Result<(), Error> {
        let mut laps = util::Laps::start("StartContainer");
        let lock = self.lock_of(id);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = self.require_container(id)?;
        match c.state() {
            cri::ContainerState::ContainerCreated => {}
            s => {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is {}, not created",
                    s.as_str_name()
                )))
            }
        }
        if c.septem {
            // runnc's start in this process (no fork: it opens the exec fifo and reads
            // one byte): a runnc exec less on the pod's critical path.
            runnc::commands::start_in_process(&self.runnc_root(), id)
                .map_err(|e| Error::Internal(format!("runnc start {id}: {e}")))?;
        } else {
            let out = self.runnc(&["start", id])?;
            if !out.ok() {
                return Err(Error::Internal(format!(
                    "runnc start {id}: {}",
                    out.stderr.trim()
                )));
            }
        }
        laps.lap("runnc_start");
        self.modify_container(id, |c| c.started_at = util::now_ns())?;
        laps.lap("save");
        laps.log(id);
        self.emit(
            id,
            &c.pod_id,
            cri::ContainerEventType::ContainerStartedEvent,
        );
        tracing::info!(container = %id, "container started");
        Ok(())
    }

    pub(super) fn wait_exit(&self, id: &str, timeout: Duration) -> bool {
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
        let c = self.require_container(id)?;
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
            // A shim may still be writing its exit record: once more after a moment.
            std::fs::remove_dir_all(&dir)
                .or_else(|_| {
                    std::thread::sleep(Duration::from_millis(200));
                    std::fs::remove_dir_all(&dir)
                })
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

    pub(super) fn to_cri(c: &Container) -> cri::Container {
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
        let c = self.require_container(id)?;
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
        let c = self.require_container(id)?;
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
        self.modify_container(id, |c| {
            let linux = c.config.linux.get_or_insert_with(Default::default);
            linux.resources = Some(r);
        })?;
        Ok(())
    }

    /// ReopenContainerLog.
    pub fn reopen_log(&self, id: &str) -> Result<(), Error> {
        let c = self.require_container(id)?;
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
        let c = self.require_container(id)?;
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
        let root = self.runnc_root().join(".runc");
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
        self.require_container(id).map(|c| c.septem)
    }

    /// Pod `id`, or NotFound naming it.
    pub fn require_pod(&self, id: &str) -> Result<Pod, Error> {
        self.pod(id)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))
    }
}

/// Why a create failed: the shim's report, with runnc's last log line when the report
/// does not carry it already (the runnc binary's exit status alone says little).
fn failed_create(why: &str, runnc_log: &Path) -> String {
    let log = std::fs::read_to_string(runnc_log).unwrap_or_default();
    let line = last_line(&log);
    if line.is_empty() || line.contains(why.trim_start_matches("runnc create: ")) {
        why.to_string()
    } else {
        format!("{why}: {line}")
    }
}

/// The last non-empty line of `text` (runnc's log: its error).
fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}
