//! `start`: release a created container's process through the exec fifo.

use super::{io, Ctx, Error};
use crate::hooks;
use crate::state::{proc, Dir, State, Status, EXEC_FIFO};
use oci_spec::runtime::Spec;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::{Duration, Instant};

/// How long `start` waits for the process to write the fifo.
const FIFO_TIMEOUT: Duration = Duration::from_secs(10);

/// `start ID`.
pub fn start(ctx: &Ctx, id: &str) -> Result<(), Error> {
    let (dir, mut st) = ctx.open(id)?;
    let spec = load_spec(&st);
    start_locked(&dir, &mut st, spec.as_ref())
}

/// `start ID` for a library caller (septem-cri, in its own process): the same as the
/// command, except that an id runnc has no container for is an error, not a hand-over
/// to runc (which would replace the caller's process).
pub fn start_in_process(root: &std::path::Path, id: &str) -> Result<(), Error> {
    let Some((dir, mut st)) = super::open_owned(root, id)? else {
        return Err(Error::Refused(format!(
            "runnc has no container {id} under {}",
            root.display()
        )));
    };
    let spec = load_spec(&st);
    start_locked(&dir, &mut st, spec.as_ref())
}

/// The bundle's config (for hooks); None when it cannot be read any more.
pub fn load_spec(st: &State) -> Option<Spec> {
    match Spec::load(st.bundle.join("config.json")) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot read the config of {} (hooks skipped): {e}", st.id);
            None
        }
    }
}

/// `start` on a locked directory.
pub fn start_locked(dir: &Dir, st: &mut State, spec: Option<&Spec>) -> Result<(), Error> {
    match st.status() {
        Status::Created => {}
        Status::Stopped => {
            return Err(Error::Refused(
                "cannot start a container that has stopped".into(),
            ))
        }
        Status::Running | Status::Paused => {
            return Err(Error::Refused(format!(
                "cannot start an already running container ({} is {})",
                st.id,
                st.status().name()
            )))
        }
    }
    let hooks = spec.and_then(|s| s.hooks().as_ref());
    if let Some(h) = hooks {
        hooks::run(
            "startContainer",
            h.start_container().as_ref(),
            &st.oci_json(Status::Created),
        )?;
    }
    let fifo = dir.path.join(EXEC_FIFO);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .map_err(io(format!("cannot open {}", fifo.display())))?;
    let deadline = Instant::now() + FIFO_TIMEOUT;
    let mut byte = [0u8; 1];
    loop {
        match f.read(&mut byte) {
            Ok(1) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io("cannot read the exec fifo")(e)),
        }
        if !proc::alive(st.pid, st.pid_start_time) {
            return Err(Error::Refused(format!(
                "the container process of {} exited before start",
                st.id
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::Refused(format!(
                "the container process of {} did not reach the exec fifo in {FIFO_TIMEOUT:?}",
                st.id
            )));
        }
        // Sleeps until the byte arrives: a FIFO's reader sees POLLIN on data, and no
        // POLLHUP before a writer has come and gone.
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is a live pollfd for our open descriptor.
        let r = unsafe { libc::poll(&mut pfd, 1, 10) };
        if r > 0 && pfd.revents & libc::POLLHUP != 0 && pfd.revents & libc::POLLIN == 0 {
            // The writer opened and closed without writing: the process is exiting.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    drop(f);
    let _ = std::fs::remove_file(&fifo);
    st.started = true;
    dir.save(st)?;
    if let Some(h) = hooks {
        if let Err(e) = hooks::run(
            "poststart",
            h.poststart().as_ref(),
            &st.oci_json(Status::Running),
        ) {
            tracing::warn!("{e}");
        }
    }
    Ok(())
}
