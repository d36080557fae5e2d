//! `run`: create + start; without `-d` runnc stays the container process's parent,
//! forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to it, waits for it, deletes the container
//! and exits with its status (128 + signal when it was killed).

use super::{teardown, Ctx, Error};
use crate::cli::Run;
use crate::hooks;
use crate::state::{Dir, Status};
use std::time::Duration;

const FORWARDED: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// `run`.
pub fn run(ctx: &Ctx, r: &Run) -> Result<i32, Error> {
    let created = super::create::create(ctx, &r.create)?;
    let (dir, mut st, spec) = (created.dir, created.state, created.spec);
    if let Err(e) = super::start::start_locked(&dir, &mut st, Some(&spec)) {
        let _ = teardown(dir, &st);
        return Err(e);
    }
    if r.detach {
        return Ok(0);
    }
    let id = st.id.clone();
    let pid = st.pid;
    drop(dir);
    let status = wait_forwarding(pid)?;
    if let Some(dir) = Dir::open(&ctx.root, &id)? {
        if let Some(st) = dir.load()? {
            if let Some(h) = spec.hooks() {
                if let Err(e) = hooks::run(
                    "poststop",
                    h.poststop().as_ref(),
                    &st.oci_json(Status::Stopped),
                ) {
                    tracing::warn!("{e}");
                }
            }
            teardown(dir, &st)?;
        } else {
            dir.remove()?;
        }
    }
    Ok(status)
}

/// Blocks the forwarded signals, relays them to `pid` until it exits, returns its
/// exit status.
fn wait_forwarding(pid: i32) -> Result<i32, Error> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialize it; sigprocmask
    // only changes this thread's mask (runnc is single-threaded here).
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        // SIGCHLD wakes the wait at once when the container exits (never forwarded).
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: Duration::from_millis(200).as_nanos() as i64,
    };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a live local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                1
            });
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(super::io(format!("cannot wait for process {pid}"))(e));
            }
        }
        // SAFETY: set and timeout are live locals; the siginfo pointer may be null.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if sig > 0 && sig != libc::SIGCHLD {
            tracing::debug!("forwarding signal {sig} to {pid}");
            // SAFETY: kill has no memory preconditions; pid is our unreaped child.
            unsafe { libc::kill(pid, sig) };
        }
    }
}
