//! runnc's networking with a real CNI set-up, on both backends: a network namespace
//! wired by the CNI `bridge` + `host-local` plugins (as containerd's CRI does for a
//! pod), then `runnc::network::wire` puts a tap next to the pod's `eth0`, the `httpd`
//! unikernel runs on that tap inside the namespace with eth0's MAC, address and
//! gateway, and `curl` from the host's root namespace gets a 200 at the pod IP.
//! Afterwards everything is taken down (guest, wiring, CNI DEL, namespace, bridge) and
//! nothing may be left. `runnc_runs_httpd_in_cni_pod` does the same through the real
//! `runnc` binary: a bundle (`rootfs/unikernel/httpd.septem`, config.json naming the
//! pod's namespace and `org.septem.runnc.backend`), `runnc create` (which wires),
//! `start`, curl, `kill KILL`, `delete` (which unwires and removes the cgroup). Needs root, taps, `/usr/lib/cni` (containernetworking-plugins)
//! and curl; skips with a printed reason otherwise.

use septem_tests::cri::{curl_until_200, run_ok, skip_unless_cni, CNI_PATH};
use septem_tests::net::Running;
use septem_tests::{backend_tests, bin, example, Backend};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A pod network made by CNI: the namespace, the bridge and the plugins' state. Drop
/// undoes it all (in reverse), also when the test fails.
struct Pod {
    netns: String,
    bridge: String,
    conf: String,
    dir: tempfile::TempDir,
    added: bool,
}

impl Pod {
    fn new(subnet_octet: u8) -> Pod {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let netns = format!("runnc-cni-{pid}-{n}");
        let bridge = format!("sptcni{}x{n}", pid % 10_000);
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": format!("runnc-test-{pid}-{n}"),
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": format!("10.99.{subnet_octet}.0/24"),
                "dataDir": dir.path().join("ipam"),
                // As containerd's example conflist: a default route via the bridge.
                "routes": [{ "dst": "0.0.0.0/0" }],
            },
        })
        .to_string();
        run_ok(&["ip", "netns", "add", &netns]);
        Pod {
            netns,
            bridge,
            conf,
            dir,
            added: false,
        }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.netns))
    }

    /// Runs the bridge plugin with `command` (ADD/DEL); returns its stdout.
    fn cni(&self, command: &str) -> Result<String, String> {
        let mut child = Command::new(Path::new(CNI_PATH).join("bridge"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.netns)
            .env("CNI_NETNS", self.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn the bridge plugin: {e}"))?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(self.conf.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "CNI {command} failed: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// CNI ADD; returns the pod's address, prefix and gateway from the plugin result.
    fn add(&mut self) -> (Ipv4Addr, u8, Ipv4Addr) {
        let out = self.cni("ADD").unwrap_or_else(|e| panic!("{e}"));
        self.added = true;
        let v: serde_json::Value = serde_json::from_str(&out).expect("CNI result JSON");
        let ip = &v["ips"][0];
        let (addr, prefix) = ip["address"]
            .as_str()
            .and_then(|a| a.split_once('/'))
            .unwrap_or_else(|| panic!("no address in {v}"));
        (
            addr.parse().unwrap(),
            prefix.parse().unwrap(),
            ip["gateway"].as_str().unwrap().parse().unwrap(),
        )
    }

    /// CNI DEL, namespace and bridge removal; errors are returned, not panicked.
    fn teardown(&mut self) -> Result<(), String> {
        if self.added {
            self.cni("DEL")?;
            self.added = false;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        Ok(())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("pod teardown: {e}");
        }
    }
}

backend_tests!(httpd_in_cni_pod_answers_curl_from_the_host, |b| {
    if skip_unless_cni() {
        return;
    }
    let image = example("httpd");
    let subnet_octet = match b {
        Backend::Seccomp => 0,
        Backend::Kvm => 1,
    };
    let mut pod = Pod::new(subnet_octet);
    let (ip, prefix, gw) = pod.add();
    eprintln!("pod {} at {ip}/{prefix} via {gw}", pod.netns);

    let wiring = runnc::network::wire(&pod.path(), &["service".to_string()]).expect("wire");
    let nic = &wiring.nics[0];
    assert_eq!(nic.iface.as_deref(), Some("eth0"));
    assert_eq!(nic.ipv4, Some((ip, prefix)));
    assert_eq!(nic.gateway, Some(gw));
    let mac = nic.mac.clone().expect("eth0 has a MAC");

    let guest = {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &pod.netns])
            .arg(bin("septem-run"))
            .args(["--backend", b.name()])
            .arg(format!("--net:service={}", nic.tap))
            .arg(format!("--net-mac:service={mac}"))
            .arg(format!("--net-ip:service={ip}/{prefix}"))
            .arg(format!("--net-gw:service={gw}"))
            .arg(&image);
        Running::spawn(cmd)
    };
    let page = curl_until_200(&format!("http://{ip}/"), Duration::from_secs(30));
    eprintln!("curl http://{ip}/ → {} bytes, 200", page.len());
    let health = curl_until_200(&format!("http://{ip}/health"), Duration::from_secs(5));
    assert!(health.ends_with("\n200"));

    let finished = {
        guest.signal(libc::SIGKILL);
        guest.finish(Duration::from_secs(10))
    };
    assert_eq!(finished.status, None, "killed by a signal");
    runnc::network::unwire(&wiring).expect("unwire");
    runnc::network::unwire(&wiring).expect("second unwire");
    let links = run_ok(&[
        "ip", "netns", "exec", &pod.netns, "ip", "-o", "link", "show",
    ]);
    assert!(!links.contains(&nic.tap), "tap left after unwire: {links}");

    pod.teardown().expect("CNI DEL and teardown");
    runnc::network::unwire(&wiring).expect("unwire after the namespace is gone");
    let netns = run_ok(&["ip", "netns", "list"]);
    assert!(!netns.contains(&pod.netns), "namespace left: {netns}");
    let links = run_ok(&["ip", "-o", "link", "show"]);
    assert!(!links.contains(&pod.bridge), "bridge left: {links}");
    let routes = run_ok(&["ip", "-4", "route", "show"]);
    assert!(
        !routes.contains(&format!("10.99.{subnet_octet}.0/24")),
        "route left: {routes}"
    );
});

/// Runs `runnc --root ROOT args…` with output to `log` (the container process inherits
/// runnc's stdio, so pipes would stay open as long as the guest runs).
fn runnc(root: &Path, log: &Path, args: &[&str]) -> Result<(), String> {
    let log_file = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log")
    };
    let status = Command::new(bin("runnc"))
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file())
        .stderr(log_file())
        .status()
        .map_err(|e| format!("spawn runnc: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "runnc {args:?}: {status}\n--- log\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ))
    }
}

fn runnc_status(root: &Path, id: &str) -> Option<String> {
    let out = Command::new(bin("runnc"))
        .arg("--root")
        .arg(root)
        .args(["state", id])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["status"].as_str().map(str::to_string)
}

/// `runnc delete --force` on drop, so a failing test leaves no container behind.
struct Container<'a> {
    root: &'a Path,
    log: &'a Path,
    id: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = runnc(self.root, self.log, &["delete", "--force", &self.id]);
    }
}

backend_tests!(runnc_runs_httpd_in_cni_pod, |b| {
    if skip_unless_cni() {
        return;
    }
    let image = example("httpd");
    let subnet_octet = match b {
        Backend::Seccomp => 2,
        Backend::Kvm => 3,
    };
    let mut pod = Pod::new(subnet_octet);
    let (ip, _, _) = pod.add();

    // The bundle: the image in the rootfs, the pod's namespace in config.json.
    let work = tempfile::tempdir().expect("tempdir");
    let bundle = work.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs/unikernel")).unwrap();
    std::fs::copy(&image, bundle.join("rootfs/unikernel/httpd.septem")).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/unikernel/httpd.septem"],
            "env": ["PATH=/usr/bin:/bin"],
            "cwd": "/",
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "httpd",
        "annotations": {
            "org.septem.unikernel": "true",
            "org.septem.runnc.backend": b.name(),
        },
        "linux": {
            "namespaces": [
                { "type": "network", "path": pod.path() },
                { "type": "mount" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "pid" },
            ],
        },
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let root = work.path().join("state");
    let log = work.path().join("runnc.log");
    let id = format!("cni-{}-{}", std::process::id(), b.name());
    let bundle_arg = bundle.to_str().unwrap();
    let pid_file = work.path().join("pid");
    runnc(
        &root,
        &log,
        &[
            "create",
            "--bundle",
            bundle_arg,
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let container = Container {
        root: &root,
        log: &log,
        id: id.clone(),
    };
    assert_eq!(runnc_status(&root, &id).as_deref(), Some("created"));
    let links = run_ok(&[
        "ip", "netns", "exec", &pod.netns, "ip", "-o", "link", "show",
    ]);
    assert!(links.contains("stap0"), "no tap after create: {links}");
    runnc(&root, &log, &["start", &id]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runnc_status(&root, &id).as_deref(), Some("running"));

    let page = curl_until_200(&format!("http://{ip}/"), Duration::from_secs(30));
    eprintln!("runnc: curl http://{ip}/ → {} bytes, 200", page.len());

    runnc(&root, &log, &["kill", &id, "KILL"]).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while runnc_status(&root, &id).as_deref() != Some("stopped") {
        assert!(Instant::now() < deadline, "not stopped after kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    runnc(&root, &log, &["delete", &id]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runnc_status(&root, &id), None, "state left after delete");
    let links = run_ok(&[
        "ip", "netns", "exec", &pod.netns, "ip", "-o", "link", "show",
    ]);
    assert!(!links.contains("stap0"), "tap left after delete: {links}");
    let qdiscs = run_ok(&[
        "ip", "netns", "exec", &pod.netns, "tc", "qdisc", "show", "dev", "eth0",
    ]);
    assert!(!qdiscs.contains("ingress"), "eth0 ingress left: {qdiscs}");
    assert!(
        !Path::new("/sys/fs/cgroup/memory/runnc").join(&id).exists()
            && !Path::new("/sys/fs/cgroup/runnc").join(&id).exists(),
        "cgroup left after delete"
    );
    drop(container);

    pod.teardown().expect("CNI DEL and teardown");
    let netns = run_ok(&["ip", "netns", "list"]);
    assert!(!netns.contains(&pod.netns), "namespace left: {netns}");
    let links = run_ok(&["ip", "-o", "link", "show"]);
    assert!(!links.contains(&pod.bridge), "bridge left: {links}");
});
