//! `runnc` end to end with real processes: Septem bundles made from `runnc spec` and
//! test guests, run under `septem-run` (backend seccomp via the bundle annotation, one
//! KVM case), lifecycle and forbidden orders, crash recovery, logging, fallback of a
//! busybox bundle to runc.
//!
//! Every test needs root (cgroups, namespaces) and skips with a printed reason
//! otherwise.

use septem_tests::runnc::{edit_config, pid_alive, skip_unless_root, Rt};
use septem_tests::{guest, kvm_usable};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

/// The cgroup directories recorded in the container's state file.
fn cgroup_dirs(rt: &Rt, id: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(rt.root.join(id).join("state.json")).expect("state.json");
    let v: Value = serde_json::from_str(&text).expect("state.json is JSON");
    v["cgroup"]["dirs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(PathBuf::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The container's `state.json` as runnc saved it, and the septem-run argv in it.
fn saved_state(rt: &Rt, id: &str) -> (Value, Vec<String>) {
    let path = rt.root.join(id).join("state.json");
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("state.json"))
        .expect("state.json is JSON");
    let argv = st["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    (st, argv)
}

/// A bundle of the long-lived `net_echo` guest (sends a frame every second, exits
/// after 30 s without an answer) in a network namespace runnc makes itself.
fn long_lived(rt: &Rt, name: &str) -> PathBuf {
    rt.bundle(name, &guest("net_echo"), &[])
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + WAIT;
    while pid_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// create → created (the guest has not run yet), start → it runs, then stopped;
/// delete removes state and cgroup.
#[test]
fn create_start_state_delete() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("lifecycle");
    let b = rt.bundle("b", &guest("args_env"), &["one", "two"]);
    edit_config(&b, |c| {
        c["process"]["env"] = serde_json::json!(["GREETING=hi"])
    });
    let pid = rt.create(&b, "c1");
    assert!(pid_alive(pid), "the pid file names a live process");
    let st = rt.state("c1");
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"], pid);
    assert_eq!(st["id"], "c1");
    assert_eq!(st["bundle"], b.to_str().unwrap());
    assert_eq!(st["annotations"]["org.septem.unikernel"], "true");
    assert!(st["created"].as_str().unwrap().ends_with('Z'));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rt.output("c1"), "", "the guest ran before start");
    let dirs = cgroup_dirs(&rt, "c1");
    assert!(!dirs.is_empty() && dirs.iter().all(|d| d.is_dir()));

    rt.runnc(&["start", "c1"]).expect_status(0);
    rt.wait_status("c1", "stopped", WAIT);
    let out = rt.output("c1");
    assert!(
        out.contains("arg[1]=one") && out.contains("arg[2]=two"),
        "{out}"
    );
    assert!(
        out.contains("env GREETING=hi") && out.contains("args_env done"),
        "{out}"
    );
    assert_eq!(rt.state("c1")["pid"], 0);

    rt.runnc(&["delete", "c1"]).expect_status(0);
    assert!(!rt.root.join("c1").exists(), "state dir left");
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
}

/// create executes septem-run at once (it sets the guest up and waits at its start
/// gate, the exec fifo); the guest's boot clock is taken at start, not at create. On
/// both backends (KVM when /dev/kvm works).
#[test]
fn monitor_waits_at_its_start_gate() {
    if skip_unless_root() {
        return;
    }
    match kvm_usable() {
        Ok(()) => held_at_the_gate("kvm"),
        Err(why) => eprintln!("SKIPPED (kvm part): {why}"),
    }
    held_at_the_gate("seccomp");
}

fn held_at_the_gate(backend: &str) {
    let rt = Rt::new(&format!("gate-{backend}"));
    let b = rt.bundle("b", &guest("clock"), &[]);
    edit_config(&b, |c| {
        c["annotations"]["org.septem.runnc.backend"] = backend.into()
    });
    let pid = rt.create(&b, "g1");
    let deadline = Instant::now() + WAIT;
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    while comm().trim() != "septem-run" {
        assert!(Instant::now() < deadline, "pid {pid} is {:?}", comm());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_, argv) = saved_state(&rt, "g1");
    let fifo = rt.root.join("g1/exec.fifo");
    assert!(
        argv.windows(2)
            .any(|w| w[0] == "--start-fifo" && Path::new(&w[1]) == fifo),
        "{argv:?}"
    );
    let held = Duration::from_millis(1500);
    std::thread::sleep(held);
    assert_eq!(rt.output("g1"), "", "the guest ran before start");
    assert_eq!(rt.state("g1")["status"], "created");
    rt.runnc(&["start", "g1"]).expect_status(0);
    rt.wait_status("g1", "stopped", WAIT);
    let out = rt.output("g1");
    assert!(out.contains("clock OK"), "{out}");
    let up_ms: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("up ")?
                .strip_suffix(" ms at main")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no uptime in {out}"));
    assert!(
        u128::from(up_ms) < held.as_millis(),
        "{backend}: the boot clock counts the {held:?} between create and start: up {up_ms} ms"
    );
    rt.runnc(&["delete", "g1"]).expect_status(0);
}

/// `run` exits with the guest's status and prints its args and environment.
#[test]
fn run_exit_status_args_env() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("run");
    let b = rt.bundle("exit", &guest("exit_code"), &["7"]);
    let o = rt.runnc(&["run", "--bundle", b.to_str().unwrap(), "r1"]);
    o.expect_status(7).stdout_has("exit_code: exiting with 7");
    assert!(!rt.root.join("r1").exists(), "run leaves no state");

    let b = rt.bundle("args", &guest("args_env"), &["x", "--flag"]);
    edit_config(&b, |c| {
        c["process"]["env"] = serde_json::json!(["A=1", "B=two words"])
    });
    let o = rt.runnc(&["run", "--bundle", b.to_str().unwrap(), "r2"]);
    o.expect_status(0)
        .stdout_has("arg[1]=x")
        .stdout_has("arg[2]=--flag")
        .stdout_has("env A=1")
        .stdout_has("env B=two words");
}

/// The same on the KVM backend (when /dev/kvm works).
#[test]
fn run_on_kvm() {
    if skip_unless_root() {
        return;
    }
    if let Err(why) = kvm_usable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let rt = Rt::new("kvm");
    let b = rt.bundle("exit", &guest("exit_code"), &["5"]);
    edit_config(&b, |c| {
        c["annotations"]["org.septem.runnc.backend"] = "kvm".into()
    });
    rt.runnc(&["run", "--bundle", b.to_str().unwrap(), "k1"])
        .expect_status(5)
        .stdout_has("exiting with 5");
}

/// start twice, start after stop, create of an existing id, kill of a stopped
/// container: all refused with status 1.
#[test]
fn forbidden_orders() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("orders");
    let b = rt.bundle("b", &guest("exit_code"), &["0"]);
    rt.create(&b, "o1");
    let o = rt.runnc(&["create", "--bundle", b.to_str().unwrap(), "o1"]);
    o.expect_status(1).stderr_has("already exists");
    rt.runnc(&["start", "o1"]).expect_status(0);
    rt.wait_status("o1", "stopped", WAIT);
    rt.runnc(&["start", "o1"])
        .expect_status(1)
        .stderr_has("cannot start a container that has stopped");
    rt.runnc(&["kill", "o1", "TERM"])
        .expect_status(1)
        .stderr_has("container not running");
    rt.runnc(&["delete", "o1"]).expect_status(0);
}

/// Ids runnc does not know go to runc, which refuses them.
#[test]
fn unknown_ids_go_to_runc() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("unknown");
    for cmd in [
        &["state", "nope"][..],
        &["start", "nope"],
        &["kill", "nope", "KILL"],
    ] {
        let o = rt.runnc(cmd);
        assert_ne!(o.status, Some(0), "{cmd:?}: {o:?}");
        assert!(o.stderr.contains("does not exist"), "{cmd:?}: {o:?}");
    }
    rt.runnc(&["delete", "--force", "nope"]).expect_status(0);
}

/// A running guest: delete refused without --force, ps/list/events show it,
/// pause/resume round trip, delete --force leaves nothing.
#[test]
fn running_guest_ps_list_pause_force_delete() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("running");
    let b = long_lived(&rt, "b");
    let pid = rt.create(&b, "n1");
    rt.runnc(&["start", "n1"]).expect_status(0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rt.status("n1"), "running", "output: {}", rt.output("n1"));

    let ps = rt.runnc(&["ps", "--format", "json", "n1"]);
    ps.expect_status(0);
    let pids: Vec<i32> = serde_json::from_str(&ps.stdout).expect("ps JSON");
    assert!(pids.contains(&pid), "{pids:?} lacks {pid}");

    let list = rt.runnc(&["list", "--format", "json"]);
    list.expect_status(0);
    let all: Value = serde_json::from_str(&list.stdout).expect("list JSON");
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == "n1" && c["status"] == "running" && c["pid"] == pid));
    rt.runnc(&["list", "-q"]).expect_status(0).stdout_has("n1");

    let ev = rt.runnc(&["events", "--stats", "n1"]);
    ev.expect_status(0);
    let ev: Value = serde_json::from_str(ev.stdout.trim()).expect("events JSON");
    assert_eq!(ev["type"], "stats");
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1, "{ev}");

    rt.runnc(&["pause", "n1"]).expect_status(0);
    assert_eq!(rt.status("n1"), "paused");
    rt.runnc(&["resume", "n1"]).expect_status(0);
    assert_eq!(rt.status("n1"), "running");

    rt.runnc(&["delete", "n1"])
        .expect_status(1)
        .stderr_has("not stopped: running");
    let dirs = cgroup_dirs(&rt, "n1");
    rt.runnc(&["delete", "--force", "n1"]).expect_status(0);
    assert!(!pid_alive(pid), "process left");
    assert!(!rt.root.join("n1").exists(), "state left");
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left");
}

/// kill TERM and kill KILL of a running guest stop it.
#[test]
fn kill_term_and_kill() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("kill");
    let b = long_lived(&rt, "b");
    for (id, sig, all) in [
        ("t1", "TERM", false),
        ("t2", "SIGKILL", false),
        ("t3", "9", false),
        ("t4", "KILL", true),
    ] {
        let pid = rt.create(&b, id);
        rt.runnc(&["start", id]).expect_status(0);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(rt.status(id), "running");
        if all {
            rt.runnc(&["kill", "--all", id, sig]).expect_status(0);
        } else {
            rt.runnc(&["kill", id, sig]).expect_status(0);
        }
        rt.wait_status(id, "stopped", WAIT);
        wait_gone(pid);
        rt.runnc(&["delete", id]).expect_status(0);
    }
}

/// Crash recovery: the container process is killed behind runnc's back → stopped;
/// delete cleans; a stale state.json.tmp is ignored.
#[test]
fn crash_then_delete() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("crash");
    let b = rt.bundle("b", &guest("exit_code"), &["0"]);
    let pid = rt.create(&b, "x1");
    std::fs::write(rt.root.join("x1/state.json.tmp"), b"{ half written").unwrap();
    assert_eq!(rt.status("x1"), "created");
    // SAFETY: kill has no memory preconditions; pid is the container process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
    assert_eq!(rt.status("x1"), "stopped");
    rt.runnc(&["start", "x1"]).expect_status(1);
    let dirs = cgroup_dirs(&rt, "x1");
    rt.runnc(&["delete", "x1"]).expect_status(0);
    assert!(!rt.root.join("x1").exists());
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left");
}

/// A created container is deleted only with --force.
#[test]
fn delete_created_needs_force() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("created");
    let b = rt.bundle("b", &guest("exit_code"), &["0"]);
    let pid = rt.create(&b, "d1");
    rt.runnc(&["delete", "d1"])
        .expect_status(1)
        .stderr_has("not stopped: created");
    rt.runnc(&["delete", "-f", "d1"]).expect_status(0);
    wait_gone(pid);
    assert_eq!(rt.output("d1"), "", "the guest never ran");
}

/// Errors: exit 1, `runnc: …` on stderr, and with --log-format json a JSON line with
/// level/msg/time in the log file. exec/checkpoint/restore are refused.
#[test]
fn errors_and_json_log() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("log");
    let b = rt.bundle("b", &guest("exit_code"), &["0"]);
    rt.create(&b, "l1");
    let log = rt.dir.join("log.json");
    let logs = log.to_str().unwrap();
    rt.runnc(&["--log", logs, "--log-format", "json", "delete", "l1"])
        .expect_status(1)
        .stderr_has("runnc: cannot delete container l1");
    let text = std::fs::read_to_string(&log).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).expect("JSON log line");
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"].as_str().unwrap().contains("not stopped"),
        "{last}"
    );
    assert!(last["time"].as_str().unwrap().contains('T'));
    assert_eq!(last.as_object().unwrap().len(), 3, "{last}");

    rt.runnc(&["--frobnicate", "state", "l1"])
        .expect_status(1)
        .stderr_has("runnc: unexpected argument");
    for cmd in ["exec", "checkpoint", "restore"] {
        rt.runnc(&[cmd, "l1"])
            .expect_status(1)
            .stderr_has("not supported by unikernels");
    }
    rt.runnc(&["update", "--memory", "64M", "l1"])
        .expect_status(1)
        .stderr_has("guest memory is fixed at boot");
}

/// spec writes a config runnc accepts and refuses to overwrite it; features is JSON.
#[test]
fn spec_and_features() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("spec");
    let dir = rt.dir.join("s");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    rt.runnc(&["spec", "--bundle", d]).expect_status(0);
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["process"]["args"][0], "/unikernel/app.septem");
    assert_eq!(c["annotations"]["org.septem.unikernel"], "true");
    assert_eq!(c["root"]["readonly"], true);
    assert!(c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "network"));
    rt.runnc(&["spec", "--bundle", d])
        .expect_status(1)
        .stderr_has("exists");

    let f = rt.runnc(&["features"]);
    f.expect_status(0);
    let f: Value = serde_json::from_str(&f.stdout).expect("features JSON");
    assert!(f["ociVersionMax"].is_string());
    assert!(f["linux"]["namespaces"].is_array());
}

/// The memory limit becomes the guest's memory less 16 MiB; below 32 MiB is refused.
#[test]
fn memory_limit() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("mem");
    let b = rt.bundle("b", &guest("exit_code"), &["0"]);
    edit_config(&b, |c| {
        c["linux"]["resources"] = serde_json::json!({ "memory": { "limit": 16 << 20 } });
    });
    rt.runnc(&["create", "--bundle", b.to_str().unwrap(), "m1"])
        .expect_status(1)
        .stderr_has("32 MiB");
    assert!(!rt.root.join("m1").exists(), "failed create left state");
    edit_config(&b, |c| {
        c["linux"]["resources"] = serde_json::json!({ "memory": { "limit": 80 << 20 } });
    });
    rt.create(&b, "m2");
    let st = std::fs::read_to_string(rt.root.join("m2/state.json")).unwrap();
    assert!(st.contains(&(64u64 << 20).to_string()), "{st}");
    rt.runnc(&["start", "m2"]).expect_status(0);
    rt.wait_status("m2", "stopped", WAIT);
    assert!(
        rt.output("m2").contains("exiting with 0"),
        "{}",
        rt.output("m2")
    );
}

/// A non-Septem bundle (busybox) goes to runc: output printed, state under
/// `<root>/.runc`.
#[test]
fn fallback_to_runc() {
    if skip_unless_root() {
        return;
    }
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        eprintln!("SKIPPED: busybox-static is not installed (scripts/test.sh installs it)");
        return;
    };
    let rt = Rt::new("fallback");
    let b = rt.dir.join("bb");
    std::fs::create_dir_all(b.join("rootfs/bin")).unwrap();
    std::fs::copy(busybox, b.join("rootfs/bin/busybox")).unwrap();
    for tool in ["sh", "echo", "sleep"] {
        std::os::unix::fs::symlink("busybox", b.join("rootfs/bin").join(tool)).unwrap();
    }
    let o = std::process::Command::new("runc")
        .args(["spec", "--bundle", b.to_str().unwrap()])
        .output()
        .expect("runc spec");
    assert!(o.status.success(), "{o:?}");
    edit_config(&b, |c| {
        c["process"]["terminal"] = false.into();
        c["process"]["args"] = serde_json::json!(["/bin/echo", "hi from busybox"]);
    });
    rt.runnc(&["run", "--bundle", b.to_str().unwrap(), "f1"])
        .expect_status(0)
        .stdout_has("hi from busybox");

    // Detached: runc's state lives under <root>/.runc, list shows it.
    edit_config(&b, |c| {
        c["process"]["args"] = serde_json::json!(["/bin/sleep", "30"]);
    });
    rt.create(&b, "f2");
    assert!(
        rt.root.join(".runc/f2").is_dir(),
        "runc state not under .runc"
    );
    assert!(!rt.root.join("f2").exists());
    assert_eq!(rt.status("f2"), "created");
    let list = rt.runnc(&["list", "--format", "json"]);
    let all: Value = serde_json::from_str(&list.stdout).expect("list JSON");
    assert!(
        all.as_array().unwrap().iter().any(|c| c["id"] == "f2"),
        "{all}"
    );
    rt.runnc(&["delete", "--force", "f2"]).expect_status(0);
}

/// Block devices: one from the `org.septem.unikernel.disks` annotation (a disk shipped
/// in the rootfs), one from a read-only bind mount onto /septem/block/<name>; a
/// declared device with neither is refused at create, naming both ways.
#[test]
fn block_devices_from_annotation_and_mount() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("block");
    let b = rt.bundle("b", &guest("block_rw"), &[]);
    std::fs::create_dir_all(b.join("rootfs/disks")).unwrap();
    let disk: Vec<u8> = (0..8192u64 * 512).map(|o| (o * 7 % 251) as u8).collect();
    std::fs::write(b.join("rootfs/disks/disk.img"), &disk).unwrap();
    let ro = rt.dir.join("ro.img");
    let ro_bytes: Vec<u8> = (0..4096u32).map(|i| (i * 3 % 256) as u8).collect();
    std::fs::write(&ro, &ro_bytes).unwrap();

    edit_config(&b, |c| {
        c["annotations"]["org.septem.unikernel.disks"] = "disk=/disks/disk.img".into();
    });
    rt.runnc(&["create", "--bundle", b.to_str().unwrap(), "b0"])
        .expect_status(1)
        .stderr_has("block device \"ro\"")
        .stderr_has("/septem/block/ro")
        .stderr_has("org.septem.unikernel.disks");
    assert!(!rt.root.join("b0").exists());

    edit_config(&b, |c| {
        c["mounts"] = serde_json::json!([{
            "destination": "/septem/block/ro",
            "type": "bind",
            "source": ro.to_str().unwrap(),
            "options": ["bind", "ro"]
        }]);
    });
    // A shipped disk that is a link out of the rootfs is refused.
    std::os::unix::fs::symlink("/etc/passwd", b.join("rootfs/disks/evil.img")).unwrap();
    edit_config(&b, |c| {
        c["annotations"]["org.septem.unikernel.disks"] = "disk=/disks/evil.img".into();
    });
    rt.runnc(&["create", "--bundle", b.to_str().unwrap(), "b2"])
        .expect_status(1)
        .stderr_has("outside the rootfs");
    edit_config(&b, |c| {
        c["annotations"]["org.septem.unikernel.disks"] = "disk=/disks/disk.img".into();
    });
    rt.runnc(&["run", "--bundle", b.to_str().unwrap(), "b1"])
        .expect_status(0)
        .stdout_has("block_rw: ro index=1 sectors=8 sector_size=512 read_only=true")
        .stdout_has("block_rw: OK");
}

/// Hooks get the state on stdin: createRuntime at create, poststop at delete.
#[test]
fn hooks_run_with_state() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("hooks");
    let b = rt.bundle("b", &guest("exit_code"), &["0"]);
    let created = rt.dir.join("created.json");
    let stopped = rt.dir.join("stopped.json");
    let hook = |file: &Path| {
        serde_json::json!([{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}", file.display())],
            "timeout": 5
        }])
    };
    edit_config(&b, |c| {
        c["hooks"] = serde_json::json!({
            "createRuntime": hook(&created),
            "poststop": hook(&stopped),
        });
    });
    rt.create(&b, "h1");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&created).unwrap()).unwrap();
    assert_eq!(s["id"], "h1");
    assert_eq!(s["status"], "created");
    assert!(s["pid"].as_i64().unwrap() > 0);
    rt.runnc(&["start", "h1"]).expect_status(0);
    rt.wait_status("h1", "stopped", WAIT);
    rt.runnc(&["delete", "h1"]).expect_status(0);
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&stopped).unwrap()).unwrap();
    assert_eq!(s["status"], "stopped");

    // A failing createRuntime hook fails create and leaves nothing.
    edit_config(&b, |c| {
        c["hooks"] = serde_json::json!({
            "createRuntime": [{ "path": "/bin/false" }],
        });
    });
    rt.runnc(&["create", "--bundle", b.to_str().unwrap(), "h2"])
        .expect_status(1)
        .stderr_has("createRuntime hook /bin/false failed");
    assert!(!rt.root.join("h2").exists());
}

/// `run` in the foreground relays SIGTERM to the guest, then deletes the container.
#[test]
fn run_forwards_sigterm() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("fwd");
    let b = long_lived(&rt, "b");
    let out = std::fs::File::create(rt.dir.join("run.out")).unwrap();
    let mut child = std::process::Command::new(septem_tests::bin("runnc"))
        .args(["--root", rt.root.to_str().unwrap(), "run", "--bundle"])
        .arg(&b)
        .arg("s1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let o = rt.runnc(&["state", "s1"]);
        if o.status == Some(0) && o.stdout.contains("\"running\"") {
            break;
        }
        assert!(Instant::now() < deadline, "s1 never ran: {o:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill has no memory preconditions; the pid is our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "runnc run did not stop");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.code().is_some(), "runnc itself was killed: {status}");
    assert!(!rt.root.join("s1").exists(), "run left its state");
}

fn ip(args: &[&str]) {
    let o = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A network namespace given by path (what CNI/CRI hand over): runnc wires a tap to
/// its eth0 and passes eth0's MAC, address, gateway and the bundle's resolv.conf
/// nameserver to septem-run; delete removes the tap and leaves the namespace.
#[test]
fn joins_a_given_netns() {
    if skip_unless_root() {
        return;
    }
    if septem_tests::net::skip_unless_net() {
        return;
    }
    let rt = Rt::new("cni");
    let ns = format!("runnc-cni-test-{}", std::process::id());
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    ip(&["netns", "add", &ns]);
    let _ns = Ns(ns.clone());
    // A veth pair inside the namespace: eth0 sorts first, so the guest gets it.
    ip(&[
        "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    ip(&["-n", &ns, "link", "set", "peer0", "up"]);
    ip(&[
        "-n",
        &ns,
        "link",
        "set",
        "eth0",
        "address",
        "02:aa:bb:cc:dd:01",
    ]);
    ip(&["-n", &ns, "addr", "add", "10.77.0.2/24", "dev", "eth0"]);
    ip(&["-n", &ns, "link", "set", "eth0", "up"]);
    ip(&["-n", &ns, "route", "add", "default", "via", "10.77.0.1"]);
    let resolv = rt.dir.join("resolv.conf");
    std::fs::write(&resolv, "search example\nnameserver 10.77.0.53\n").unwrap();

    let b = long_lived(&rt, "b");
    edit_config(&b, |c| {
        c["linux"]["namespaces"] = serde_json::json!([
            { "type": "network", "path": format!("/var/run/netns/{ns}") },
            { "type": "mount" }
        ]);
        c["mounts"] = serde_json::json!([{
            "destination": "/etc/resolv.conf",
            "type": "bind",
            "source": resolv.to_str().unwrap(),
            "options": ["rbind", "ro"]
        }]);
    });
    rt.create(&b, "w1");
    let (st, argv) = saved_state(&rt, "w1");
    let tap = st["wiring"]["nics"][0]["tap"]
        .as_str()
        .expect("a tap")
        .to_string();
    for want in [
        format!("--net:service={tap}"),
        "--net-mac:service=02:aa:bb:cc:dd:01".to_string(),
        "--net-ip:service=10.77.0.2/24".to_string(),
        "--net-gw:service=10.77.0.1".to_string(),
        "10.77.0.53".to_string(),
    ] {
        assert!(argv.contains(&want), "{want} missing from {argv:?}");
    }
    assert_eq!(st["own_netns"], false);
    // septem-run is attached to the tap since create (waiting at its start gate), so
    // frames that come before start wait in the tap instead of being dropped.
    let carrier = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "cat"])
        .arg(format!("/sys/class/net/{tap}/carrier"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&carrier.stdout).trim(),
        "1",
        "tap {tap} has no reader after create"
    );
    rt.runnc(&["start", "w1"]).expect_status(0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rt.status("w1"), "running", "{}", rt.output("w1"));
    rt.runnc(&["delete", "--force", "w1"]).expect_status(0);
    let links = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&tap), "tap {tap} left:\n{links}");
    assert!(links.contains("eth0"), "{links}");
}

/// Receives one descriptor sent with SCM_RIGHTS (what runc's console socket carries).
fn recv_fd(stream: &std::os::unix::net::UnixStream) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut cbuf = [0u8; 64];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len();
    // SAFETY: msg points at live buffers; recvmsg fills them.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, 0) };
    assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
    let name = String::from_utf8_lossy(&data[..n as usize]).into_owned();
    assert!(name.starts_with("/dev/pts/"), "pty name {name:?}");
    // SAFETY: the kernel filled cbuf with a control message; CMSG_* stay inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null(), "no control message");
        assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

/// process.terminal: the pty master arrives on --console-socket and carries the
/// guest's output; without a socket create is refused.
#[test]
fn terminal_through_console_socket() {
    if skip_unless_root() {
        return;
    }
    use std::io::Read as _;
    let rt = Rt::new("tty");
    let b = rt.bundle("b", &guest("args_env"), &["tty-arg"]);
    edit_config(&b, |c| c["process"]["terminal"] = true.into());
    rt.runnc(&["create", "--bundle", b.to_str().unwrap(), "t0"])
        .expect_status(1)
        .stderr_has("--console-socket");
    assert!(!rt.root.join("t0").exists());

    let sock = rt.dir.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || recv_fd(&listener.accept().unwrap().0));
    rt.runnc(&[
        "create",
        "--bundle",
        b.to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        "t1",
    ])
    .expect_status(0);
    let master = std::fs::File::from(receiver.join().unwrap());
    rt.runnc(&["start", "t1"]).expect_status(0);
    rt.wait_status("t1", "stopped", WAIT);
    let mut out = Vec::new();
    let mut master = master;
    let mut buf = [0u8; 4096];
    // The slave is closed once the guest is gone: read until EIO/EOF.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("arg[1]=tty-arg") && out.contains("args_env done"),
        "{out}"
    );
    rt.runnc(&["delete", "t1"]).expect_status(0);
}

/// Concurrent starts of one container serialize on its lock: exactly one succeeds.
#[test]
fn concurrent_starts_serialize() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("race");
    let b = long_lived(&rt, "b");
    rt.create(&b, "c1");
    let rt = std::sync::Arc::new(rt);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let rt = std::sync::Arc::clone(&rt);
            std::thread::spawn(move || rt.runnc(&["start", "c1"]))
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = outcomes.iter().filter(|o| o.status == Some(0)).count();
    assert_eq!(ok, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .filter(|o| o.status != Some(0))
        .all(|o| o.stderr.contains("already running")));
    rt.runnc(&["delete", "--force", "c1"]).expect_status(0);
}

/// Settings from the environment, --debug logging of the septem-run argv, and
/// `update` of the pids limit on the cgroup.
#[test]
fn settings_debug_log_and_update() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("settings");
    let b = long_lived(&rt, "b");
    let bs = b.to_str().unwrap();
    rt.runnc_env(
        &["create", "--bundle", bs, "s0"],
        &[("RUNNC_SEPTEM_RUN", "/nonexistent/septem-run")],
    )
    .expect_status(1)
    .stderr_has("septem-run not found at /nonexistent/septem-run");
    rt.runnc_env(&["state", "s0"], &[("RUNNC_BACKEND", "qemu")])
        .expect_status(1)
        .stderr_has("invalid backend \"qemu\"");
    let conf = rt.dir.join("runnc.toml");
    std::fs::write(&conf, "backend = \"warp\"\n").unwrap();
    rt.runnc_env(&["list"], &[("RUNNC_CONFIG", conf.to_str().unwrap())])
        .expect_status(1)
        .stderr_has("invalid backend \"warp\"");

    let log = rt.dir.join("debug.log");
    let out = std::fs::File::create(rt.dir.join("s1.out")).unwrap();
    let status = std::process::Command::new(septem_tests::bin("runnc"))
        .args(["--root", rt.root.to_str().unwrap(), "--debug", "--log"])
        .arg(&log)
        .args(["create", "--bundle", bs, "s1"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("septem-run argv for s1"), "{text}");
    assert!(text.contains("level=debug"), "{text}");

    rt.runnc(&["start", "s1"]).expect_status(0);
    rt.runnc(&["update", "--pids-limit", "42", "s1"])
        .expect_status(0);
    let dirs = cgroup_dirs(&rt, "s1");
    let limit = dirs
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("pids.max")).ok())
        .expect("a pids.max");
    assert_eq!(limit.trim(), "42");
    rt.runnc(&["delete", "--force", "s1"]).expect_status(0);
}

/// `run -d` returns once the guest runs and leaves the container for delete.
#[test]
fn run_detached() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("detach");
    let b = long_lived(&rt, "b");
    let pid_file = rt.dir.join("d1.pid");
    rt.runnc(&[
        "run",
        "-d",
        "--bundle",
        b.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "d1",
    ])
    .expect_status(0);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(pid_alive(pid));
    assert_eq!(rt.status("d1"), "running");
    rt.runnc(&["kill", "d1", "KILL"]).expect_status(0);
    rt.wait_status("d1", "stopped", WAIT);
    rt.runnc(&["delete", "d1"]).expect_status(0);
}

/// Detection without the annotation: `unikernel/septem.json` (its binary and memory
/// used), or `args[0]` ending in `.septem` that is a runnable image; a `.septem` name
/// that is no image goes to runc.
#[test]
fn detection_without_annotation() {
    if skip_unless_root() {
        return;
    }
    let rt = Rt::new("detect");
    let argv_of = |id: &str| -> Vec<String> {
        let text = std::fs::read_to_string(rt.root.join(id).join("state.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };

    // Rule 2: the marker file names the binary; args[0] is something else.
    let b = rt.bundle("marker", &guest("exit_code"), &["3"]);
    std::fs::write(
        b.join("rootfs/unikernel/septem.json"),
        r#"{"unikernel": true, "binary": "/unikernel/app.septem", "memory": "40M"}"#,
    )
    .unwrap();
    edit_config(&b, |c| {
        c["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("org.septem.unikernel");
        c["process"]["args"][0] = "/entrypoint".into();
    });
    rt.create(&b, "m1");
    let argv = argv_of("m1");
    assert!(
        argv.windows(2).any(|w| w[0] == "--mem" && w[1] == "40M"),
        "{argv:?}"
    );
    rt.runnc(&["delete", "-f", "m1"]).expect_status(0);

    // Rule 3: only args[0].
    let b = rt.bundle("args0", &guest("exit_code"), &["4"]);
    edit_config(&b, |c| {
        c["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("org.septem.unikernel");
    });
    rt.runnc(&["run", "--bundle", b.to_str().unwrap(), "a1"])
        .expect_status(4)
        .stdout_has("exiting with 4");

    // A .septem name that is not an image: runc's bundle (and runc's error).
    std::fs::write(
        b.join("rootfs/unikernel/app.septem"),
        b"#!/bin/sh\necho no\n",
    )
    .unwrap();
    let o = rt.runnc(&["create", "--bundle", b.to_str().unwrap(), "a2"]);
    assert!(
        !rt.root.join("a2").exists(),
        "runnc took a non-Septem bundle"
    );
    if o.status == Some(0) {
        assert!(rt.root.join(".runc/a2").is_dir(), "{o:?}");
    }
}
