//! Exit statuses. Each container has a shim (`shim.rs`) that waits for the container
//! process and writes `<dir>/exit.json`; septem-cri has a thread per running container
//! that waits for the shim to end and records what the file says:
//!
//! - after CreateContainer the shim is septem-cri's child: `waitpid`;
//! - after a restart of septem-cri it is not: its pid is watched (a pidfd, with the
//!   start time recorded at create so a reused pid is never mistaken for it);
//! - a shim that ended without writing the file (killed), or a container recorded
//!   before shims existed: the container process is watched the same way, and its exit
//!   status is `Unknown` (255) once it is gone.

use super::{Container, Runtime};
use crate::shim::{self, Exit};
use crate::{reaper, util};
use k8s_cri::v1 as cri;
use std::sync::Arc;

/// What a waiter thread waits for before it reads the exit record.
#[derive(Clone, Copy, Debug)]
pub(super) enum Shim {
    /// Our child (started by this septem-cri): `waitpid`.
    Child(i32),
    /// Started by an earlier septem-cri: watched by pid and start time.
    Foreign {
        /// Its pid.
        pid: i32,
        /// Its start time (clock ticks after boot).
        start: u64,
    },
    /// None to wait for (it is gone, or the container never had one).
    Gone,
}

impl Runtime {
    /// Starts the thread that records container `c`'s exit once `shim` has ended.
    pub(super) fn spawn_waiter(self: &Arc<Self>, c: &Container, shim: Shim) {
        let rt = Arc::clone(self);
        let c_ = c.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("wait-{}", c.pid))
            .spawn(move || {
                let exit = rt.wait_for_exit(&c_, shim);
                rt.record_exit(&c_.id, exit);
            });
        if let Err(e) = spawned {
            tracing::warn!(container = %c.id, "no waiter thread: {e}");
        }
    }

    /// Blocks until container `c` has ended; how it ended.
    fn wait_for_exit(&self, c: &Container, shim: Shim) -> Exit {
        let status = match shim {
            Shim::Child(pid) => reaper::wait(pid),
            Shim::Foreign { pid, start } => {
                reaper::wait_gone(pid, start);
                None
            }
            Shim::Gone => None,
        };
        let dir = self.container_dir(&c.id);
        if let Some(exit) = shim::read_exit(&dir) {
            return exit;
        }
        // No record: the shim was killed (or there never was one). The container
        // process may still run; its status is lost either way.
        if c.pid > 0 {
            reaper::wait_gone(c.pid, c.pid_start);
        }
        Exit::unknown(match (shim, status) {
            (Shim::Gone, _) if c.shim_pid == 0 => {
                "the container started before septem-cri had shims and exited while \
                 septem-cri was not its parent: exit status unknown"
                    .to_string()
            }
            (_, Some(s)) => format!(
                "the container's shim ended (wait status {s:#x}) without recording its \
                 exit: exit status unknown"
            ),
            _ => "the container's shim ended without recording its exit: exit status unknown"
                .to_string(),
        })
    }

    /// Records container `id`'s exit (state.json, then the STOPPED event).
    pub(super) fn record_exit(&self, id: &str, exit: Exit) {
        tracing::info!(container = %id, code = exit.exit_code, reason = %exit.reason, "container exited");
        if !self.container_dir(id).exists() {
            return; // removed meanwhile
        }
        let mut recorded = false;
        let changed = self.modify_container(id, |c| {
            if c.finished_at != 0 {
                return;
            }
            c.finished_at = if exit.finished_at > 0 {
                exit.finished_at
            } else {
                util::now_ns()
            };
            c.exit_code = exit.exit_code;
            c.reason = exit.reason;
            c.message = exit.message;
            recorded = true;
        });
        let pod_id = match changed {
            Ok(Some(c)) if recorded => c.pod_id,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(container = %id, "{e}");
                return;
            }
        };
        self.emit(id, &pod_id, cri::ContainerEventType::ContainerStoppedEvent);
    }
}
