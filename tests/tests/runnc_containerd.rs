//! runnc under a real containerd 1.6 (Debian's, with its `containerd-shim-runc-v2`) and
//! a real runc 1.1: Septem images packaged by `septem-build package` and imported with
//! `ctr images import` run through `ctr run --runc-binary runnc` (the runc v2 shim's
//! `BinaryName` option); an ordinary busybox image made here with umoci runs through
//! the same runnc and its fallback to runc.
//!
//! Each test starts a containerd of its own (root, state and socket in a temporary
//! directory, CRI plugin off) in a namespace of its own, and its `Drop` removes every
//! task and container, stops containerd and removes what the shim's runtime root and
//! the cgroup hierarchy kept for the namespace, also when a test fails. The tests need
//! root and skip with a printed `SKIPPED: …` when a tool is missing (`scripts/test.sh`
//! installs containerd, umoci and busybox-static).
//!
//! Where runnc keeps its state: the runc v2 shim calls the runtime with
//! `--root <Root option, default /run/containerd/runc>/<namespace>`, whatever
//! containerd's own `--state` is; ctr's default cgroup is `/<namespace>/<id>`.

use septem_tests::containerd::{Containerd as Daemon, CTR_TIMEOUT, NO_CRI};
use septem_tests::runnc::cgroup_dirs;
use septem_tests::{bin, example, kvm_usable, run_with_timeout, septem_build, Outcome};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The runc v2 shim's default runtime root.
const SHIM_RUNC_ROOT: &str = "/run/containerd/runc";
/// The static busybox of Debian's busybox-static.
const BUSYBOX: &str = "/bin/busybox";
/// Where containerd's own network namespaces and `ip netns` ones live.
const NETNS_DIR: &str = "/var/run/netns";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Prints why and returns true unless root with containerd, ctr and the shim (plus
/// `extra` tools) installed.
fn skip(extra: &[&str]) -> bool {
    if !is_root() {
        eprintln!("SKIPPED: needs root (containerd, cgroups, namespaces)");
        return true;
    }
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2", "runc"]
        .iter()
        .chain(extra)
    {
        if !on_path(tool) {
            eprintln!("SKIPPED: {tool} is not installed (scripts/test.sh installs it)");
            return true;
        }
    }
    false
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A unique suffix for namespaces, ids and interface names.
fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The test's containerd (CRI plugin off, see [`septem_tests::containerd`]) with what
/// this file needs on top: the shim's runtime root for its namespace, task states, and
/// on drop, after containerd has stopped, anything a failed test left to runnc (`runnc
/// delete --force`) and the namespace's cgroup parents removed.
struct Containerd(Daemon);

impl std::ops::Deref for Containerd {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl Containerd {
    fn start() -> Containerd {
        Containerd(Daemon::start(NO_CRI))
    }

    /// The runtime root the shim passes to runnc (`--root`) for this namespace.
    fn runtime_root(&self) -> PathBuf {
        Path::new(SHIM_RUNC_ROOT).join(self.namespace())
    }

    /// `(pid, status)` of task `id` in `ctr task ls`, None when it has no task.
    fn task(&self, id: &str) -> Option<(i32, String)> {
        let o = self.ctr_ok(&["task", "ls"]);
        o.stdout.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() == 3 && f[0] == id).then(|| (f[1].parse().expect("pid"), f[2].to_string()))
        })
    }

    /// Waits until task `id` is STOPPED; returns how long that took.
    fn wait_stopped(&self, id: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let task = self.task(id);
            if task.as_ref().is_some_and(|(_, st)| st == "STOPPED") {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "task {id} not STOPPED within {timeout:?}: {task:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ctr task delete ID` then `ctr container delete ID`; returns the task delete's
    /// outcome (ctr 1.6 warns `task ID exit with non-zero exit code N` on stderr and
    /// prints nothing for 0).
    fn delete(&self, id: &str) -> Outcome {
        let o = self.ctr_ok(&["task", "delete", id]);
        self.ctr_ok(&["container", "delete", id]);
        o
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.0.stop();
        // What runnc and runc keep per namespace (empty after a clean test): anything a
        // failed test left there goes through `runnc delete --force`.
        let root = self.runtime_root();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name != ".runc" {
                    let _ = Command::new(bin("runnc"))
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force", &name])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        let _ = std::fs::remove_dir(root.join(".runc"));
        let _ = std::fs::remove_dir(&root);
        // The cgroup parents `/<namespace>` (runc leaves them too).
        for dir in cgroup_dirs(self.namespace()) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A packaged Septem image in an OCI archive: `septem-build package IMAGE --tag …`.
fn package(image: &Path, tag: &str, dir: &Path) -> PathBuf {
    let archive = dir.join(format!("{}.tar", tag.replace([':', '/'], "_")));
    septem_build(&["package", s(image), "--tag", tag, "--archive", s(&archive)]).expect_status(0);
    archive
}

/// The path of `image` inside the packaged rootfs (the config's Entrypoint).
fn in_rootfs(image: &Path) -> String {
    format!(
        "/unikernel/{}",
        image.file_name().expect("file name").to_string_lossy()
    )
}

/// A one-layer OCI image with Debian's static busybox as `/bin/busybox` (plus `sh`
/// and `echo` links), cmd `/bin/busybox echo hi`, made with umoci and archived with
/// tar; imported under `docker.io/septem/busybox:1`.
fn busybox_archive(dir: &Path) -> PathBuf {
    let rootfs = dir.join("bb-rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir rootfs/bin");
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
    for link in ["sh", "echo", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(link)).expect("symlink");
    }
    let layout = dir.join("bb.oci");
    let image = format!("{}:1", layout.display());
    let umoci = |args: &[&str]| {
        run_with_timeout(Path::new("umoci"), args, CTR_TIMEOUT).expect_status(0);
    };
    umoci(&["init", "--layout", s(&layout)]);
    umoci(&["new", "--image", &image]);
    umoci(&["insert", "--image", &image, s(&rootfs), "/"]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.cmd",
        "/bin/busybox",
        "--config.cmd",
        "echo",
        "--config.cmd",
        "hi",
    ]);
    let archive = dir.join("bb.tar");
    run_with_timeout(
        Path::new("tar"),
        &["-C", s(&layout), "-cf", s(&archive), "."],
        CTR_TIMEOUT,
    )
    .expect_status(0);
    archive
}

/// What runnc recorded for container `id` (`<runtime root>/<id>/state.json`).
fn runnc_state(c: &Containerd, id: &str) -> serde_json::Value {
    let path = c.runtime_root().join(id).join("state.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (is runnc running {id}?)", path.display()));
    serde_json::from_str(&text).expect("state.json is JSON")
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// Waits until process `pid` has exited (gone or a zombie); returns how long it took.
fn wait_dead(pid: i32, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state is the first field after the parenthesized command name.
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        if state.is_none_or(|s| s.starts_with('Z') || s.starts_with('X')) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "process {pid} still alive after {timeout:?}: {stat}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Mounts (of this mount namespace) whose mount point mentions `needle`.
fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// What a running runnc container holds, read from its state.json before delete.
struct Held {
    state_dir: PathBuf,
    rootfs: String,
    cgroups: Vec<PathBuf>,
    netns: Option<String>,
    taps: Vec<String>,
}

impl Held {
    fn of(c: &Containerd, id: &str) -> Held {
        let st = runnc_state(c, id);
        let cgroups: Vec<PathBuf> = st["cgroup"]["dirs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(PathBuf::from))
                    .collect()
            })
            .unwrap_or_default();
        assert!(!cgroups.is_empty(), "runnc made no cgroup for {id}: {st}");
        for dir in &cgroups {
            assert!(dir.is_dir(), "{} is missing while {id} runs", dir.display());
        }
        let taps = st["wiring"]["nics"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n["tap"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Held {
            state_dir: c.runtime_root().join(id),
            rootfs: st["rootfs"].as_str().expect("rootfs").to_string(),
            cgroups,
            netns: st["wiring"]["netns"].as_str().map(str::to_string),
            taps,
        }
    }

    /// Asserts that nothing of it is left (after `ctr task delete`).
    fn assert_gone(&self) {
        assert!(
            !self.state_dir.exists(),
            "runnc state dir {} left",
            self.state_dir.display()
        );
        let procs = processes_mentioning(&self.rootfs);
        assert!(procs.is_empty(), "processes left: {procs:?}");
        for dir in &self.cgroups {
            assert!(!dir.exists(), "cgroup {} left", dir.display());
        }
        let mounts = mounts_mentioning(s(&self.state_dir));
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        if let Some(ns) = &self.netns {
            if Path::new(ns).exists() {
                // A namespace runnc did not make (ours): the taps must be gone from it.
                let links = netns_links(ns);
                for tap in &self.taps {
                    assert!(!links.contains(tap), "tap {tap} left in {ns}: {links}");
                }
            }
        }
    }
}

/// `ip -o link` inside the namespace at `path`.
fn netns_links(path: &str) -> String {
    let o = run_with_timeout(
        Path::new("nsenter"),
        &[&format!("--net={path}"), "ip", "-o", "link"],
        CTR_TIMEOUT,
    );
    o.expect_status(0);
    o.stdout
}

fn ip(args: &[&str]) {
    run_with_timeout(Path::new("ip"), args, CTR_TIMEOUT).expect_status(0);
}

/// A network namespace `/var/run/netns/sctr-…` with `eth0` (one end of a veth pair)
/// at 10.98.N.2/24, the host end at 10.98.N.1, default route via the host: what a CNI
/// plugin would give a pod, without CNI. Deleted (with the pair) on drop.
struct PodNet {
    name: String,
    host_if: String,
    addr: String,
}

impl PodNet {
    fn new() -> PodNet {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("sctr-{}-{n}", std::process::id());
        let host_if = format!("sctr{}h{n}", std::process::id() % 100_000);
        let net = format!("10.98.{}", 10 + n);
        ip(&["netns", "add", &name]);
        let pod = PodNet {
            name,
            host_if,
            addr: format!("{net}.2"),
        };
        ip(&[
            "link",
            "add",
            &pod.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pod.name,
        ]);
        ip(&["addr", "add", &format!("{net}.1/24"), "dev", &pod.host_if]);
        ip(&["link", "set", &pod.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", pod.name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/24", pod.addr), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", &format!("{net}.1")]);
        pod
    }

    fn path(&self) -> String {
        format!("{NETNS_DIR}/{}", self.name)
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        for args in [
            vec!["link", "del", self.host_if.as_str()],
            vec!["netns", "del", self.name.as_str()],
        ] {
            let _ = Command::new("ip")
                .args(&args)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `curl` until it answers 200 (the guest needs a moment to boot); panics after
/// `timeout`.
fn curl_200(url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let o = run_with_timeout(
            Path::new("curl"),
            &[
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                "-w",
                "%{http_code}",
                url,
            ],
            Duration::from_secs(10),
        );
        if o.stdout == "200" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no 200 from {url} within {timeout:?} (last: {o:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `file` contains `text`; panics with its content after `timeout`.
fn wait_for_text(file: &Path, text: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let got = std::fs::read_to_string(file).unwrap_or_default();
        if got.contains(text) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} lacks {text:?} after {timeout:?}:\n{got}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctr_run_hello_output_and_exit_status() {
    if skip(&[]) {
        return;
    }
    let image = example("hello");
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = package(&image, "septem/hello:1", tmp.path());
    let c = Containerd::start();
    c.import(&archive, None);
    let listed = c.ctr_ok(&["images", "ls", "-q"]);
    assert!(
        listed.stdout.contains("docker.io/septem/hello:1"),
        "{listed:?}"
    );
    let runnc = bin("runnc");
    let runnc = s(&runnc);
    let img = "docker.io/septem/hello:1";
    let id = |tag: &str| format!("hello-{tag}-{}", unique());

    // The image's own command: output on ctr's stdout, status 0.
    c.ctr(&["run", "--runc-binary", runnc, "--rm", img, &id("plain")])
        .expect_status(0)
        .stdout_has("Hello, unikernel!")
        .stdout_has("Heap: 1000 squares");

    // Arguments, environment and a non-zero status, on each backend (annotation).
    let mut backends = vec!["seccomp"];
    match kvm_usable() {
        Ok(()) => backends.push("kvm"),
        Err(why) => eprintln!("SKIPPED (kvm case): {why}"),
    }
    let entry = in_rootfs(&image);
    for backend in backends {
        let annotation = format!("org.septem.runnc.backend={backend}");
        let o = c.ctr(&[
            "run",
            "--runc-binary",
            runnc,
            "--rm",
            "--annotation",
            &annotation,
            "--env",
            "GREETING=from ctr",
            img,
            &id(backend),
            &entry,
            "containerd",
            "--exit",
            "3",
        ]);
        o.expect_status(3)
            .stdout_has("Hello, containerd!")
            .stdout_has("GREETING/USER: from ctr")
            .stdout_has("Exiting with status 3.");
        eprintln!("{backend}: ctr run exit status 3, output on ctr's stdout");
    }

    // The runc options' Root (`--runc-root`): the shim passes <Root>/<namespace>.
    let own_root = tmp.path().join("runtime-root");
    c.ctr(&[
        "run",
        "--runc-binary",
        runnc,
        "--runc-root",
        s(&own_root),
        "--rm",
        img,
        &id("root"),
    ])
    .expect_status(0)
    .stdout_has("Hello, unikernel!");
    let ns_root = own_root.join(c.namespace());
    assert!(ns_root.is_dir(), "no {} made by runnc", ns_root.display());
    let left: Vec<_> = std::fs::read_dir(&ns_root)
        .expect("read runtime root")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".runc")
        .collect();
    assert!(left.is_empty(), "state left under {ns_root:?}: {left:?}");

    // Nothing left under the default runtime root for this namespace.
    if let Ok(entries) = std::fs::read_dir(c.runtime_root()) {
        let left: Vec<_> = entries
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != ".runc")
            .collect();
        assert!(left.is_empty(), "state left: {left:?}");
    }
}

/// ctr 1.6 reads `--runtime-config-path` only for runtimes other than
/// io.containerd.runc.v2 (for runc v2 it builds the options from `--runc-binary`,
/// `--runc-root` and `--runc-systemd-cgroup`): a TOML file of runc options naming
/// runnc is not used, plain runc runs the bundle and executes the unikernel's ELF as a
/// Linux program, which dies (docs/containerd.md explains what to use instead).
#[test]
fn ctr_runtime_config_path_is_not_read_for_runc_v2() {
    if skip(&[]) {
        return;
    }
    let image = example("hello");
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = package(&image, "septem/hello:1", tmp.path());
    let c = Containerd::start();
    c.import(&archive, None);
    let options = tmp.path().join("runnc-options.toml");
    std::fs::write(
        &options,
        format!("BinaryName = \"{}\"\n", bin("runnc").display()),
    )
    .expect("write options");
    let o = c.ctr(&[
        "run",
        "--runtime",
        "io.containerd.runc.v2",
        "--runtime-config-path",
        s(&options),
        "--rm",
        "docker.io/septem/hello:1",
        &format!("cfgpath-{}", unique()),
    ]);
    assert!(
        !o.stdout.contains("Hello") && o.status != Some(0),
        "runnc ran the unikernel: ctr now reads --runtime-config-path for runc v2; \
         update docs/containerd.md\n{o:?}"
    );
    eprintln!(
        "--runtime-config-path ignored for runc v2: runc ran the ELF directly, status {:?}",
        o.status
    );
}

/// httpd as a long-running task in a pod-like namespace (veth `eth0` with an address,
/// as CNI would make): answers curl, task ls/ps, pause/resume, `ctr task kill`
/// (SIGTERM) drains and exits 0, delete leaves nothing.
#[test]
fn ctr_httpd_task_lifecycle_graceful_stop() {
    if skip(&["curl", "ip", "nsenter"]) {
        return;
    }
    let image = example("httpd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = package(&image, "septem/httpd:1", tmp.path());
    let c = Containerd::start();
    c.import(&archive, None);
    let pod = PodNet::new();
    let runnc = bin("runnc");
    let id = format!("httpd-{}", unique());
    let log = tmp.path().join("httpd.log");
    let log_uri = format!("file://{}", log.display());
    let with_ns = format!("network:{}", pod.path());
    c.ctr_ok(&[
        "run",
        "-d",
        "--runc-binary",
        s(&runnc),
        "--log-uri",
        &log_uri,
        "--with-ns",
        &with_ns,
        "docker.io/septem/httpd:1",
        &id,
        &in_rootfs(&image),
        "--log",
    ]);
    wait_for_text(&log, "httpd: listening on", Duration::from_secs(30));
    let url = format!("http://{}/", pod.addr);
    curl_200(&url, Duration::from_secs(20));

    let (pid, status) = c.task(&id).expect("task listed");
    assert_eq!(status, "RUNNING");
    assert!(pid > 0);
    let ps = c.ctr_ok(&["task", "ps", &id]);
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "task ps lacks {pid}: {ps:?}"
    );
    // Nothing runs inside a unikernel: exec is refused with the reason.
    let exec = c.ctr(&["task", "exec", "--exec-id", "x", &id, "/bin/sh"]);
    assert_ne!(exec.status, Some(0));
    assert!(
        exec.stderr.contains("not supported by unikernels"),
        "{exec:?}"
    );
    let held = Held::of(&c, &id);
    assert_eq!(held.netns.as_deref(), Some(pod.path().as_str()));
    assert_eq!(held.taps, vec!["stap0".to_string()]);

    // Pause freezes the cgroup; resume thaws it and the server answers again.
    c.ctr_ok(&["task", "pause", &id]);
    assert_eq!(c.task(&id).map(|t| t.1).as_deref(), Some("PAUSED"));
    if let Some(freezer) = held
        .cgroups
        .iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/freezer"))
    {
        let state = std::fs::read_to_string(freezer.join("freezer.state")).expect("freezer");
        assert_eq!(state.trim(), "FROZEN");
    }
    c.ctr_ok(&["task", "resume", &id]);
    assert_eq!(c.task(&id).map(|t| t.1).as_deref(), Some("RUNNING"));
    curl_200(&url, Duration::from_secs(10));

    // SIGTERM (ctr's default) is a graceful shutdown request: drain, exit 0.
    c.ctr_ok(&["task", "kill", &id]);
    let took = c.wait_stopped(&id, Duration::from_secs(30));
    let out = wait_for_text(&log, "shutdown requested: draining", Duration::from_secs(5));
    eprintln!("SIGTERM → STOPPED in {took:?}; guest log:\n{out}");
    let deleted = c.delete(&id);
    assert!(
        !deleted.stderr.contains("non-zero exit code"),
        "httpd did not exit 0 after SIGTERM: {deleted:?}"
    );
    held.assert_gone();
    assert!(c.task(&id).is_none());
    // The namespace we made survives runnc (it is the pod's), without runnc's qdiscs.
    let qdiscs = run_with_timeout(
        Path::new("tc"),
        &["-n", &pod.name, "qdisc", "show", "dev", "eth0"],
        CTR_TIMEOUT,
    );
    assert!(
        !qdiscs.stdout.contains("ingress"),
        "runnc's ingress qdisc left on eth0: {qdiscs:?}"
    );
}

/// httpd without a network namespace path (ctr without --cni/--net-host): runnc makes
/// the namespace (bind-mounted under its state dir) and attaches an unconnected tap, so
/// httpd keeps waiting for a DHCP answer and has not taken over shutdown requests yet:
/// SIGTERM ends it with 143 (128 + 15), SIGKILL with 137, both at once. Delete unmounts
/// the namespace and removes the cgroup and the state.
#[test]
fn ctr_httpd_own_netns_term_and_kill() {
    if skip(&[]) {
        return;
    }
    let image = example("httpd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = package(&image, "septem/httpd:1", tmp.path());
    let c = Containerd::start();
    c.import(&archive, None);
    let runnc = bin("runnc");
    for (signal, status) in [("SIGTERM", 143), ("SIGKILL", 137)] {
        let id = format!("httpd-{}-{}", signal.to_lowercase(), unique());
        c.ctr_ok(&[
            "run",
            "-d",
            "--null-io",
            "--runc-binary",
            s(&runnc),
            "docker.io/septem/httpd:1",
            &id,
        ]);
        let (pid, state) = c.task(&id).expect("task listed");
        assert_eq!(state, "RUNNING");
        let held = Held::of(&c, &id);
        let st = runnc_state(&c, &id);
        assert_eq!(st["own_netns"], true, "{st}");
        assert_eq!(st["pid"], pid, "{st}");
        let netns = held.netns.clone().expect("wiring netns");
        assert_eq!(Path::new(&netns), held.state_dir.join("netns"));
        assert_eq!(mounts_mentioning(&netns).len(), 1, "netns bind mount");
        assert!(netns_links(&netns).contains("stap0"));

        c.ctr_ok(&["task", "kill", "-s", signal, &id]);
        // Measured from the moment ctr's kill returned (runnc has sent the signal),
        // so a slow ctr on a loaded machine does not count.
        let took = wait_dead(pid, Duration::from_secs(10));
        c.wait_stopped(&id, Duration::from_secs(30));
        eprintln!("{signal}: septem-run gone {took:?} after ctr task kill returned");
        assert!(took < Duration::from_secs(2), "{signal} took {took:?}");
        c.delete(&id)
            .stderr_has(&format!("exit with non-zero exit code {status}"));
        held.assert_gone();
    }
}

/// An ordinary (non-Septem) image through the same runnc: handed to runc with
/// `--root <root>/.runc`; output and exit status come back through ctr.
#[test]
fn ctr_busybox_falls_back_to_runc() {
    if skip(&["umoci", "tar"]) {
        return;
    }
    if !Path::new(BUSYBOX).is_file() {
        eprintln!("SKIPPED: {BUSYBOX} is missing (apt-get install busybox-static)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = busybox_archive(tmp.path());
    let c = Containerd::start();
    c.import(&archive, Some("docker.io/septem/busybox"));
    let runnc = bin("runnc");
    let runnc = s(&runnc);
    let img = "docker.io/septem/busybox:1";

    let o = c.ctr(&[
        "run",
        "--runc-binary",
        runnc,
        "--rm",
        img,
        &format!("bb-cmd-{}", unique()),
    ]);
    o.expect_status(0);
    assert_eq!(o.stdout.trim(), "hi", "{o:?}");
    let o = c.ctr(&[
        "run",
        "--runc-binary",
        runnc,
        "--rm",
        img,
        &format!("bb-echo-{}", unique()),
        "/bin/busybox",
        "echo",
        "hi",
    ]);
    o.expect_status(0);
    assert_eq!(o.stdout.trim(), "hi", "{o:?}");
    c.ctr(&[
        "run",
        "--runc-binary",
        runnc,
        "--rm",
        img,
        &format!("bb-exit-{}", unique()),
        "/bin/sh",
        "-c",
        "exit 3",
    ])
    .expect_status(3);

    // runc kept its state under runnc's root, in .runc; nothing is left there, and
    // runnc itself recorded nothing.
    let root = c.runtime_root();
    let runc_root = root.join(".runc");
    assert!(runc_root.is_dir(), "runc's root {runc_root:?} was not used");
    let left: Vec<_> = std::fs::read_dir(&runc_root)
        .expect("read .runc")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "runc state left: {left:?}");
    let own: Vec<_> = std::fs::read_dir(&root)
        .expect("read root")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".runc")
        .collect();
    assert!(own.is_empty(), "runnc state for a runc bundle: {own:?}");
}
