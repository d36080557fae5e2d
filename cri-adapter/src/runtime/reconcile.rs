//! At start: the state on disk is loaded and reconciled with the node, so a crash or a
//! restart of septem-cri loses nothing and leaks nothing.
//!
//! - **Interrupted pod creates.** RunPodSandbox writes `pods/<id>.pending` (the pod as
//!   it is about to be made: its netns name and CNI network) *before* the namespace is made
//!   and removes it once `pods/<id>.json` is saved. A pending intent without a pod is
//!   undone: CNI DEL (best effort: the address, the veth, portmap rules), `ip netns
//!   del` (the taps inside go with it), the intent removed. Only namespaces named in
//!   this state directory's intents are ever deleted: another septem-cri with another
//!   state directory shares the `septem-*` namespace names.
//! - **Interrupted container creates.** A container directory without `state.json`:
//!   `runnc delete --force`, files removed.
//! - **runnc containers without a record** (in `<state>/runnc`, `runnc list`):
//!   `runnc delete --force`.
//! - **Exits while septem-cri was down.** A container not yet recorded as exited takes
//!   its shim's `exit.json` when the shim is gone; while the shim runs, a waiter thread
//!   watches it (`waiter.rs`); a shim and a container both gone without a record make
//!   the status `Unknown`.
//! - **Pods whose namespace is gone** (a reboot) load as NOTREADY; Stop/Remove still
//!   run CNI DEL to release their address.
//! - The output FIFOs of running containers are opened again and copied into their
//!   logs.

use super::waiter::Shim;
use super::{internal, Container, Error, Pod, PodState, Runtime};
use crate::logs::{self, LogFile};
use crate::shim::{self, Exit};
use crate::{reaper, util};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The pods recorded in `dir` (`<id>.json`).
pub(super) fn load_pods(dir: &Path) -> Result<HashMap<String, Pod>, Error> {
    let mut pods = HashMap::new();
    for e in std::fs::read_dir(dir)
        .map_err(internal("reading pods"))?
        .flatten()
    {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match util::read_json::<Pod>(&p) {
            Ok(Some(mut pod)) => {
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
    Ok(pods)
}

/// The containers recorded in `dir` (`<id>/state.json`), and the directories of
/// creates that never finished (no `state.json`).
pub(super) fn load_containers(
    dir: &Path,
) -> Result<(HashMap<String, Container>, Vec<String>), Error> {
    let mut containers = HashMap::new();
    let mut unfinished = Vec::new();
    for e in std::fs::read_dir(dir)
        .map_err(internal("reading containers"))?
        .flatten()
    {
        let p = e.path().join("state.json");
        match util::read_json::<Container>(&p) {
            Ok(Some(c)) => {
                containers.insert(c.id.clone(), c);
            }
            Ok(None) => unfinished.push(e.file_name().to_string_lossy().into_owned()),
            Err(err) => tracing::warn!("ignoring {}: {err}", p.display()),
        }
    }
    Ok((containers, unfinished))
}

impl Runtime {
    /// Settles what the previous septem-cri left (see the module's documentation).
    pub(super) fn reconcile(self: &Arc<Self>, unfinished_containers: &[String]) {
        for id in unfinished_containers {
            self.undo_container_create(id);
        }
        self.undo_pod_creates();
        self.delete_stray_runnc_containers();
        let ids: Vec<String> = self
            .containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.settle_exit(&id);
        }
    }

    // ---- pods -----------------------------------------------------------------------

    fn intent_file(&self, id: &str) -> PathBuf {
        self.config
            .state_dir
            .join("pods")
            .join(format!("{id}.pending"))
    }

    /// Records that pod `pod` is being made (before its namespace exists).
    pub(super) fn write_intent(&self, pod: &Pod) -> Result<(), Error> {
        util::write_json_atomic(&self.intent_file(&pod.id), pod)
            .map_err(internal("recording the pod's creation"))
    }

    /// The pod is saved (or undone): its intent goes.
    pub(super) fn remove_intent(&self, id: &str) {
        match std::fs::remove_file(self.intent_file(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(pod = %id, "removing the pod's intent record: {e}"),
        }
    }

    /// Undoes every RunPodSandbox that a crash interrupted.
    fn undo_pod_creates(&self) {
        let dir = self.config.state_dir.join("pods");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "pending") {
                continue;
            }
            match util::read_json::<Pod>(&p) {
                Ok(Some(pod)) if self.pod(&pod.id).is_some() => {
                    // Saved, the intent not yet removed: nothing to undo.
                    self.remove_intent(&pod.id);
                }
                Ok(Some(mut pod)) => {
                    tracing::warn!(
                        pod = %pod.id,
                        netns = %pod.netns_name,
                        "undoing an interrupted RunPodSandbox: CNI DEL, netns removed"
                    );
                    self.undo_pod_network(&mut pod);
                    self.remove_intent(&pod.id);
                }
                Ok(None) => {}
                Err(err) => tracing::warn!("ignoring {}: {err}", p.display()),
            }
        }
    }

    // ---- containers -----------------------------------------------------------------

    /// A create interrupted by a crash (a directory, no state recorded): undone.
    fn undo_container_create(&self, id: &str) {
        tracing::warn!(container = %id, "removing an unfinished create (runnc delete --force)");
        match self.runnc(&["delete", "--force", id]) {
            Ok(out) if !out.ok() => {
                tracing::debug!(container = %id, "runnc delete: {}", out.stderr.trim());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(container = %id, "{e}"),
        }
        let _ = std::fs::remove_dir_all(self.container_dir(id));
    }

    /// runnc containers under our runnc root that septem-cri has no record of.
    fn delete_stray_runnc_containers(&self) {
        let known: HashSet<String> = self
            .containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for id in self.runnc_ids() {
            if known.contains(&id) {
                continue;
            }
            tracing::warn!(container = %id, "runnc container without a septem-cri record: runnc delete --force");
            match self.runnc(&["delete", "--force", &id]) {
                Ok(out) if !out.ok() => {
                    tracing::warn!(container = %id, "runnc delete: {}", out.stderr.trim());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(container = %id, "{e}"),
            }
        }
    }

    /// The ids `runnc list --format json` knows under our root (runc's included).
    fn runnc_ids(&self) -> Vec<String> {
        let out = match self.runnc(&["list", "--format", "json"]) {
            Ok(out) if out.ok() => out,
            Ok(out) => {
                tracing::warn!("runnc list: {}", out.stderr.trim());
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!("{e}");
                return Vec::new();
            }
        };
        let list: Vec<serde_json::Value> =
            serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
                tracing::warn!("runnc list: not a JSON list: {e}");
                Vec::new()
            });
        list.iter()
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect()
    }

    /// Container `id` not yet recorded as exited: its exit record when its shim is
    /// gone, else a waiter thread; its output reattached while it runs.
    fn settle_exit(self: &Arc<Self>, id: &str) {
        let Some(c) = self.container(id) else { return };
        if c.finished_at != 0 {
            return;
        }
        let shim_alive = c.shim_pid > 0 && reaper::start_time(c.shim_pid) == Some(c.shim_start);
        let container_alive = c.pid > 0 && reaper::start_time(c.pid) == Some(c.pid_start);
        if !shim_alive {
            // Read after the liveness check: a shim writes its record, then exits.
            if let Some(exit) = shim::read_exit(&self.container_dir(id)) {
                tracing::info!(container = %id, "the container exited while septem-cri was down");
                self.record_exit(id, exit);
                return;
            }
            if !container_alive {
                self.record_exit(
                    id,
                    Exit::unknown(
                        "the container and its shim ended while septem-cri was down, \
                         without an exit record: exit status unknown",
                    ),
                );
                return;
            }
        }
        if container_alive {
            self.reattach_output(&c);
        }
        let shim = if shim_alive {
            Shim::Foreign {
                pid: c.shim_pid,
                start: c.shim_start,
            }
        } else {
            Shim::Gone
        };
        self.spawn_waiter(&c, shim);
    }

    /// Opens a running container's FIFOs again and copies them into its log.
    fn reattach_output(&self, c: &Container) {
        match Self::reattach_logs(&self.container_dir(&c.id), &c.log_file) {
            Ok(log) => {
                self.logs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(c.id.clone(), log);
            }
            Err(e) => tracing::warn!(container = %c.id, "output not reattached: {e}"),
        }
    }

    fn reattach_logs(dir: &Path, log_file: &Path) -> std::io::Result<Arc<LogFile>> {
        let log = LogFile::open(log_file)?;
        for stream in ["stdout", "stderr"] {
            let r = logs::open_reader(&dir.join(format!("{stream}.fifo")))?;
            logs::copy(r, stream, log.clone())?;
        }
        Ok(log)
    }
}
