//! `delete [--force] ID`, and [`teardown`], which undoes everything a container had
//! (also after a failed create and at the end of `run`). Each step tolerates what a
//! crash may have left: no process, no cgroup, no taps, no state file.

use super::{Ctx, Error};
use crate::cli::Delete;
use crate::state::{proc, Dir, State, Status, NETNS_FILE};
use crate::{hooks, network};
use std::time::{Duration, Instant};

/// How long teardown waits for killed processes to go.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// `delete`.
pub fn delete(ctx: &Ctx, d: &Delete) -> Result<(), Error> {
    let Some(dir) = Dir::open(&ctx.root, &d.id)? else {
        return Err(ctx.forward());
    };
    let loaded = match dir.load() {
        Err(e @ crate::state::Error::Corrupt { .. }) if d.force => {
            tracing::warn!("{e}; removing what is left of {}", d.id);
            None
        }
        other => other?,
    };
    let Some(st) = loaded else {
        // A create that crashed before writing any state: only the directory (and
        // maybe an unmounted netns file) exist.
        let _ = crate::netns::remove(&dir.path.join(NETNS_FILE));
        dir.remove()?;
        return Ok(());
    };
    let status = st.status();
    if status != Status::Stopped && !d.force {
        return Err(Error::Refused(format!(
            "cannot delete container {} that is not stopped: {}",
            d.id,
            status.name()
        )));
    }
    kill_and_wait(&st);
    if let Some(spec) = super::start::load_spec(&st) {
        if let Some(h) = spec.hooks() {
            if let Err(e) = hooks::run(
                "poststop",
                h.poststop().as_ref(),
                &st.oci_json(Status::Stopped),
            ) {
                tracing::warn!("{e}");
            }
        }
    }
    teardown(dir, &st)
}

/// SIGKILLs the container process and its cgroup, then waits (bounded) for them.
fn kill_and_wait(st: &State) {
    let alive = proc::alive(st.pid, st.pid_start_time);
    if alive {
        // SAFETY: kill has no memory preconditions; pid and start time match.
        unsafe { libc::kill(st.pid, libc::SIGKILL) };
    }
    if let Some(cg) = &st.cgroup {
        let _ = cg.kill_all(libc::SIGKILL);
        // v1 freezer: killed tasks only die once thawed.
        let _ = cg.set_frozen(false);
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pid_gone = !proc::alive(st.pid, st.pid_start_time);
        let cg_empty = st.cgroup.as_ref().is_none_or(|cg| {
            cg.pids()
                .map(|p| p.iter().all(|pid| proc::start_time(*pid).is_none()))
                .unwrap_or(true)
        });
        if pid_gone && cg_empty {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!("processes of {} still there after {KILL_WAIT:?}", st.id);
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills what is left and removes the taps, the cgroup, runnc's netns and the state
/// directory. On an error the directory stays, so `delete` can be retried.
pub fn teardown(dir: Dir, st: &State) -> Result<(), Error> {
    if st.pid > 0 {
        kill_and_wait(st);
    }
    let mut first: Option<Error> = None;
    if let Some(w) = &st.wiring {
        match network::unwire(w) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!("{e}");
                first.get_or_insert(e.into());
            }
        }
    }
    if let Some(cg) = &st.cgroup {
        match cg.remove() {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!("{e}");
                first.get_or_insert(e.into());
            }
        }
    }
    if st.own_netns {
        if let Err(e) = crate::netns::remove(&dir.path.join(NETNS_FILE)) {
            tracing::warn!("{e}");
            first.get_or_insert(e.into());
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(dir.remove()?),
    }
}
