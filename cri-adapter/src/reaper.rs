//! septem-cri is a child subreaper (`PR_SET_CHILD_SUBREAPER`), and so is each container's
//! shim (`crate::shim`): `runnc create` forks the container process and exits, so the
//! container becomes its shim's child, whose `waitpid` gets the exit status (the
//! guest's). Orphans the shims leave behind (e.g. the detached process in which
//! septem-run closes a KVM VM, still running when the shim exits) are reparented to
//! septem-cri; the sweeper thread reaps those zombies.
//!
//! To not steal the status of a child someone waits for, every process septem-cri starts
//! (external commands, shims) is registered under the same lock as the sweep; an
//! unregistered zombie is reaped only when it was already a zombie one sweep earlier.
//! Processes that are not our children (a shim started by an earlier septem-cri) are
//! watched with [`wait_gone`].

use std::collections::HashSet;
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

fn registry() -> &'static Mutex<HashSet<i32>> {
    static R: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashSet::new()))
}

fn lock() -> std::sync::MutexGuard<'static, HashSet<i32>> {
    registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes this process a child subreaper (orphans of its subtree become its children).
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes this process a child subreaper and starts the sweeper.
pub fn init() -> std::io::Result<()> {
    become_subreaper()?;
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(sweeper)?;
    Ok(())
}

/// Spawns `cmd`, registered so the sweeper leaves it alone.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let mut set = lock();
    let child = cmd.spawn()?;
    set.insert(i32::try_from(child.id()).unwrap_or(-1));
    Ok(child)
}

/// Forgets `pid` (waited for).
pub fn forget(pid: i32) {
    lock().remove(&pid);
}

/// Blocks until child `pid` exits; its wait status, or None when it is not our child.
pub fn wait(pid: i32) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid int for waitpid to write.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            forget(pid);
            return Some(status);
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        forget(pid);
        return None;
    }
}

/// Waits for child `pid` on a thread of its own (its status is of no interest, but it
/// must not stay a zombie: registered children are not the sweeper's).
pub fn wait_in_background(pid: i32) {
    let spawned = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            wait(pid);
        });
    if let Err(e) = spawned {
        tracing::warn!(pid, "no thread to wait for it: {e}");
        forget(pid);
    }
}

/// A wait status as a container exit code (128 + signal when killed).
#[must_use]
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next(), f.next());
        if state == Some("Z") && ppid == Some(me.as_str()) {
            out.push(pid);
        }
    }
    out
}

fn sweeper() {
    let mut seen: HashSet<i32> = HashSet::new();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let set = lock();
        let zombies: HashSet<i32> = zombie_children()
            .into_iter()
            .filter(|p| !set.contains(p))
            .collect();
        for pid in zombies.intersection(&seen) {
            let mut status = 0;
            // SAFETY: status is a valid int; WNOHANG never blocks.
            unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) };
            tracing::debug!(pid, "reaped an orphan");
        }
        drop(set);
        seen = zombies;
    }
}

/// The start time (clock ticks after boot, field 22 of `/proc/PID/stat`) of a live,
/// non-zombie process.
#[must_use]
pub fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if matches!(f.first(), Some(&"Z" | &"X")) {
        return None;
    }
    f.get(19)?.parse().ok()
}

/// Blocks until process `pid`, started at `start` (clock ticks, see [`start_time`]),
/// has ended (exited or a zombie): for processes that are not our children, e.g. a
/// shim or a container septem-cri started before it restarted. A pidfd (`pidfd_open`
/// + `poll`) when the kernel has them, else a check every 100 ms.
pub fn wait_gone(pid: i32, start: u64) {
    match pidfd_open(pid) {
        Ok(pidfd) => {
            // The pidfd names whatever has the pid now: ours only if it started then.
            if start_time(pid) == Some(start) {
                poll_readable(&pidfd, None);
            }
        }
        Err(e) => {
            tracing::debug!(pid, "pidfd_open: {e}; polling /proc instead");
            while start_time(pid) == Some(start) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A pidfd of process `pid`: readable once it has ended.
pub fn pidfd_open(pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: pidfd_open takes a pid and flags; no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: pidfd_open returned a new descriptor that nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Waits until the pidfd is readable (its process has ended), at most `timeout`
/// (None: no limit); true when it is.
pub fn poll_readable(fd: &std::os::fd::OwnedFd, timeout: Option<Duration>) -> bool {
    use std::os::fd::AsRawFd as _;
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // Rounded up to whole milliseconds so a short rest does not spin; -1: no limit.
        let ms = deadline.map_or(-1, |d| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        // SAFETY: p is one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc > 0 {
            return true;
        }
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}
