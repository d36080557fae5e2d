//! Taking the kernel's cgroup migration lock early, so that placing the container
//! process in its cgroup does not wait for an RCU grace period on the critical path.
//!
//! Moving a process between cgroups (a `cgroup.procs` or `tasks` write) takes the
//! global `cgroup_threadgroup_rwsem` for writing. After a quiet spell that first writer
//! waits for a full RCU grace period (the rwsem's readers switch to their slow path):
//! 6–24 ms measured on this project's machine, while a write right after another one
//! costs ~0.1 ms (the switch stays on for a grace period after the last writer). The
//! lock is global to all hierarchies, so one write anywhere is enough.
//!
//! [`start`] writes runnc's own pid back into the cgroup it already is in — a move
//! that changes nothing — from a thread, right after `create` made the container's
//! cgroup; the grace period then passes while the network is wired, the thread keeps
//! the fast path on, and the real move of the container process is fast. septem-cri
//! primes the same way from CreateContainer's entry, so the wait also overlaps its
//! rootfs copy and the start of its shim and of runnc. Best effort: any failure
//! (no permission, no cgroup file) only means the later write pays the wait itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `cgroup.procs` of the cgroup this process is in: the unified (v2) one when
/// there is one, else the first v1 hierarchy's.
fn own_procs_file(proc_self_cgroup: &str, root: &Path) -> Option<PathBuf> {
    let mut first_v1 = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            let unified = if super::is_cgroup2_fs(root) {
                root.to_path_buf()
            } else {
                root.join("unified")
            };
            return Some(unified.join(rel).join("cgroup.procs"));
        }
        if first_v1.is_none() {
            // A v1 line: the directory is named after its first controller (or
            // `name=X` hierarchies after X).
            let first = controllers.split(',').next().unwrap_or_default();
            let dir = first.strip_prefix("name=").unwrap_or(first);
            if !dir.is_empty() {
                first_v1 = Some(root.join(dir).join(rel).join("cgroup.procs"));
            }
        }
    }
    first_v1
}

/// Keeps the migration lock's fast path on until [`Primer::finish`]: the no-op move is
/// repeated every [`INTERVAL`] (a write costs ~0.1 ms once the first one has waited),
/// because the kernel drops back to the slow path one grace period after the last
/// writer, and wiring the network can take longer than that. Gives up after
/// [`MAX_PRIMING`] in any case.
#[derive(Debug)]
pub struct Primer {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

/// The stop flag, with a condition variable so that [`Primer::finish`] wakes the thread
/// at once instead of after the rest of its [`INTERVAL`].
#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn set(&self) {
        *self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.wake.notify_all();
    }

    /// Waits up to `d`; true once stopped.
    fn wait(&self, d: Duration) -> bool {
        let stopped = self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, d, |s| !*s)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stopped
    }
}

/// How often the no-op move is repeated.
pub const INTERVAL: Duration = Duration::from_millis(3);
/// The longest the primer runs.
pub const MAX_PRIMING: Duration = Duration::from_secs(2);

impl Primer {
    /// Stops the repeats; the fast path stays on for one more grace period, long enough
    /// for the caller's own move right after.
    pub fn finish(mut self) {
        self.stop.set();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Primer {
    /// A create that fails before its move stops the repeats too (without waiting).
    fn drop(&mut self) {
        self.stop.set();
    }
}

/// Starts the no-op moves of this process into its own cgroup (see the module doc);
/// None when this process's cgroup cannot be found.
#[must_use]
pub fn start() -> Option<Primer> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let procs = own_procs_file(&text, Path::new(super::CGROUP_ROOT))?;
    let stop = Arc::new(Stop::default());
    let stop_ = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("cgroup-prime".into())
        .spawn(move || prime_until(&procs, &stop_))
        .ok()?;
    Some(Primer {
        stop,
        thread: Some(thread),
    })
}

fn prime_until(procs: &Path, stop: &Stop) {
    let started = Instant::now();
    let me = std::process::id().to_string();
    let mut first = None;
    while started.elapsed() < MAX_PRIMING {
        if let Err(e) = std::fs::write(procs, &me) {
            tracing::debug!(file = %procs.display(), "cgroup priming skipped: {e}");
            return;
        }
        first.get_or_insert_with(|| started.elapsed());
        if stop.wait(INTERVAL) {
            break;
        }
    }
    tracing::debug!(file = %procs.display(), first_write = ?first, "cgroup migration lock primed");
}

#[cfg(test)]
mod tests {
    use super::own_procs_file;
    use std::path::Path;

    #[test]
    fn own_cgroup_file_on_v1_and_v2() {
        let root = Path::new("/nonexistent-cgroup-root");
        let v1 = "12:pids:/user.slice\n11:cpu,cpuacct:/x\n1:name=systemd:/init.scope\n";
        assert_eq!(
            own_procs_file(v1, root).unwrap(),
            root.join("pids/user.slice/cgroup.procs")
        );
        let named = "1:name=systemd:/a/b\n";
        assert_eq!(
            own_procs_file(named, root).unwrap(),
            root.join("systemd/a/b/cgroup.procs")
        );
        // A hybrid host: the unified line wins (under `unified` unless the root is
        // cgroup2 itself, which a nonexistent path is not).
        let hybrid = "3:memory:/m\n0::/u/v\n";
        assert_eq!(
            own_procs_file(hybrid, root).unwrap(),
            root.join("unified/u/v/cgroup.procs")
        );
        assert!(own_procs_file("garbage", root).is_none());
    }

    #[test]
    fn priming_moves_nothing() {
        let before = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroups");
        if let Some(p) = super::start() {
            std::thread::sleep(super::INTERVAL * 3);
            p.finish();
        }
        let after = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroups");
        assert_eq!(before, after);
    }
}
