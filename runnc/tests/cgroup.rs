//! The cgroup module against this machine's real cgroup hierarchy (v1 or v2). Needs
//! root; prints `SKIPPED: <reason>` and passes otherwise.

use runnc::cgroup::{Cgroup, Resources};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (creates cgroups)");
        return true;
    }
    false
}

/// A child killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the cgroup on drop (after killing what is left), also when the test fails.
struct Guard(Cgroup);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.set_frozen(false);
        let _ = self.0.kill_all(libc::SIGKILL);
        let _ = self.0.remove();
    }
}

/// Total CPU ticks (utime + stime) of `pid`, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the comm: state is [0]; utime/stime are fields 14/15 → [11]/[12].
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn real_cgroup_lifecycle() {
    if skip() {
        return;
    }
    let id = format!("runnc-test-{}", std::process::id());
    let cg = Cgroup::resolve(None, &id, false).expect("resolve");
    eprintln!("cgroup dirs: {:?} (unified: {})", cg.dirs, cg.unified);
    cg.create().expect("create");
    let guard = Guard(cg.clone());
    for d in &cg.dirs {
        assert!(d.is_dir(), "{} not created", d.display());
    }

    // A busy loop, so freezing shows as CPU time that stops growing. It execs after
    // joining the cgroup so its fresh memory is charged there (v1 does not move the
    // charges of a process that joins).
    let child = Command::new("sh")
        .args(["-c", "sleep 0.2; exec sh -c 'while :; do :; done'"])
        .spawn()
        .expect("spawn sh");
    let child = Reaped(child);
    let pid = child.0.id();
    cg.add_process(i32::try_from(pid).unwrap())
        .expect("add_process");
    assert_eq!(cg.pids().unwrap(), vec![i32::try_from(pid).unwrap()]);

    let res = Resources {
        memory_limit: Some(256 << 20),
        memory_swap: None,
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0".into()),
        pids_limit: Some(64),
    };
    cg.apply(&res).expect("apply");
    let read = |ctrl: &str, file: &str| -> String {
        let d = cg
            .dirs
            .iter()
            .find(|d| d.join(file).exists())
            .unwrap_or_else(|| panic!("no directory has {file} ({ctrl})"));
        std::fs::read_to_string(d.join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    if cg.unified {
        assert_eq!(read("memory", "memory.max"), (256u64 << 20).to_string());
        assert_eq!(read("cpu", "cpu.max"), "50000 100000");
        assert_eq!(read("pids", "pids.max"), "64");
    } else {
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (256u64 << 20).to_string()
        );
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpuset", "cpuset.cpus"), "0");
        assert_eq!(read("pids", "pids.max"), "64");
    }

    // Let it exec and run, then freeze: its CPU time stops growing.
    std::thread::sleep(Duration::from_millis(600));
    cg.set_frozen(true).expect("freeze");
    assert!(cg.is_frozen().unwrap());
    if !cg.unified {
        assert_eq!(read("freezer", "freezer.state"), "FROZEN");
    }
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(500));
    let t1 = cpu_ticks(pid);
    assert_eq!(t0, t1, "a frozen process kept running ({t0} → {t1} ticks)");
    cg.set_frozen(false).expect("thaw");
    assert!(!cg.is_frozen().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while cpu_ticks(pid) == t1 {
        assert!(Instant::now() < deadline, "the thawed process does not run");
        std::thread::sleep(Duration::from_millis(50));
    }

    let stats = cg.stats().expect("stats");
    eprintln!("stats: {stats:?}");
    assert!(stats.cpu_usage_ns > 0, "{stats:?}");
    assert!(stats.memory_usage > 0, "{stats:?}");
    assert_eq!(stats.memory_limit, 256 << 20);
    assert_eq!(stats.pids_current, 1);
    assert_eq!(stats.pids_limit, 64);

    // Processes remain: remove refuses (EBUSY) and keeps the directories.
    let e = cg.remove().expect_err("remove with a process inside");
    eprintln!("remove while busy: {e}");

    cg.kill_all(libc::SIGKILL).expect("kill_all");
    let mut child = child;
    let status = child.0.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cg.pids().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "processes remain after kill_all");
        std::thread::sleep(Duration::from_millis(10));
    }
    cg.remove().expect("remove");
    for d in &cg.dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    cg.remove().expect("second remove");
    drop(guard);
}

#[test]
fn real_cgroup_kill_all_sigterm() {
    if skip() {
        return;
    }
    let id = format!("runnc-test-term-{}", std::process::id());
    let cg = Cgroup::resolve(Some(&format!("/runnc-test/{id}")), &id, false).expect("resolve");
    cg.create().expect("create");
    let _guard = Guard(cg.clone());
    let mut kids: Vec<Reaped> = (0..3)
        .map(|_| {
            Reaped(
                Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .expect("spawn sleep"),
            )
        })
        .collect();
    for k in &kids {
        cg.add_process(i32::try_from(k.0.id()).unwrap()).unwrap();
    }
    assert_eq!(cg.pids().unwrap().len(), 3);
    cg.kill_all(libc::SIGTERM).expect("kill_all");
    for k in &mut kids {
        let s = k.0.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&s),
            Some(libc::SIGTERM)
        );
    }
    cg.remove().expect("remove");
    // The parent made for the absolute path stays; tidy it (test only).
    for d in &cg.dirs {
        let _ = std::fs::remove_dir(d.parent().unwrap());
    }
}
