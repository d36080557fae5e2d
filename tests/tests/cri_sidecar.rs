//! septem-cri with an ordinary (non-Septem) image: a busybox sidecar run by runc through
//! runnc, next to (and then together with) the httpd unikernel in one pod.
//!
//! `busybox_sidecar_through_cri`: a two-layer busybox image made here (Debian's
//! busybox-static, umoci, skopeo; layer 2 whites out a file of layer 1) is pushed to a loopback `docker-registry` and pulled through
//! septem-cri (listed as an ordinary image); RunPodSandbox; CreateContainer of
//! `sh -c 'echo hello; sleep 1000'` + StartContainer → `hello` in the CRI log;
//! ExecSync `cat /etc/hostname` → the pod hostname, exit 0; `sh -c 'exit 3'` → 3; a
//! 1 s timeout on `sleep 10` → DeadlineExceeded within a few seconds; loopback in the
//! sidecar, and a connection to the host through eth0 while it is alone; then the httpd
//! unikernel in the same pod (what the sidecar can and cannot reach is checked, see
//! docs/cri.md); StopContainer → 143 or 137; Remove/StopPodSandbox/RemovePodSandbox
//! leave no runc state, no rootfs, no cgroup.
//!
//! Needs root, network namespaces, `/usr/lib/cni`, curl, docker-registry, umoci,
//! skopeo and `/bin/busybox` (busybox-static); prints `SKIPPED: <reason>` otherwise.
//! The CRI client and fixtures are `septem_tests::cri`'s.

use k8s_cri::v1 as cri;
use septem_tests::call;
use septem_tests::cri::{
    container_config, expect_code, pod_config, push_example, run, skip_lifecycle,
    write_bridge_conflist, Bridge, Clients, Registry, Server, BUSYBOX,
};
use septem_tests::runnc::cgroup_dirs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

fn skip_sidecar() -> bool {
    if skip_lifecycle() {
        return true;
    }
    for tool in ["umoci", "skopeo"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIPPED: {tool} is missing");
            return true;
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        eprintln!("SKIPPED: {BUSYBOX} is missing (apt-get install busybox-static)");
        return true;
    }
    false
}

/// A two-layer busybox image pushed to `reg`: layer 1 has `/bin/busybox` (plus links),
/// `/etc/passwd` and `/etc/old`, layer 2 deletes `/etc/old` (a `.wh.old` whiteout).
/// Made with `umoci unpack`/`repack` (umoci 0.4.7's `insert` writes a tar without its
/// end blocks and unpadded data, which a strict reader refuses), copied by skopeo.
fn push_busybox(reg: &Registry, dir: &Path) -> String {
    let layout = dir.join("busybox.oci");
    let bundle = dir.join("busybox-bundle");
    let image = format!("{}:1", layout.display());
    let reference = format!("{}/other/busybox:1", reg.addr);
    let l = layout.display().to_string();
    let b = bundle.display().to_string();
    let src = format!("oci:{image}");
    let dst = format!("docker://{reference}");
    let tool = |argv: &[&str]| {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tool(&["umoci", "init", "--layout", &l]);
    tool(&["umoci", "new", "--image", &image]);
    tool(&["umoci", "unpack", "--image", &image, &b]);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir rootfs/bin");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir rootfs/etc");
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
    for link in ["sh", "cat", "sleep", "echo", "nc", "ls", "true", "printf"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(link)).expect("symlink");
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(rootfs.join("etc/old"), "deleted by layer 2\n").expect("old");
    tool(&["umoci", "repack", "--image", &image, &b]);
    std::fs::remove_file(rootfs.join("etc/old")).expect("rm old");
    tool(&["umoci", "repack", "--image", &image, &b]);
    tool(&[
        "umoci",
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.env",
        "PATH=/bin",
        "--config.cmd",
        "/bin/sh",
    ]);
    tool(&["skopeo", "copy", "--dest-tls-verify=false", &src, &dst]);
    reference
}

/// [`container_config`] running `command`, with a 64 MiB memory limit.
fn sidecar_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        command: command.iter().map(|s| (*s).to_string()).collect(),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..container_config(name, image)
    }
}

fn exec(
    c: &Clients,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    call!(
        c,
        runtime.exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| (*s).to_string()).collect(),
            timeout,
        })
    )
}

fn wait_for_log(path: &Path, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} has no {want:?} after 20 s: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn curl_code(url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "3",
            "-w",
            "%{http_code}",
            url,
        ])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Host pids whose command line is exactly `cmdline` (NUL-separated).
fn sleepers(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == cmdline.as_bytes()) {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn busybox_sidecar_through_cri() {
    if skip_sidecar() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let busybox = push_busybox(&reg, tmp.path());
    let httpd = push_example(&reg, "httpd");

    let mut server = Server::new(tmp.path());
    let bridge = Bridge(format!("sptsc{}", std::process::id() % 10_000));
    write_bridge_conflist(
        &server.cni_conf,
        "septem-cri-sidecar-test",
        &bridge.0,
        "10.96.0.0/24",
        &tmp.path().join("ipam"),
    );
    server.start();
    let c = server.clients();

    // Pull: the ordinary image is stored and listed next to the unikernel.
    let bb_id = c.pull(&busybox);
    let httpd_id = c.pull(&httpd);
    assert_ne!(bb_id, httpd_id);
    let status = call!(
        c,
        images.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: busybox.clone(),
                ..Default::default()
            }),
            verbose: true,
        })
    )
    .expect("ImageStatus");
    assert!(
        status.info["info"].contains("\"septem\":false"),
        "{:?}",
        status.info
    );
    let img = status.image.expect("busybox is stored");
    assert_eq!(img.id, bb_id);
    assert!(img.repo_tags.contains(&busybox), "{img:?}");
    assert!(img.size > 1_000_000, "{img:?}");
    let listed = call!(c, images.list_images(cri::ListImagesRequest::default()))
        .expect("ListImages")
        .images;
    assert_eq!(listed.len(), 2, "{listed:?}");

    // The pod, with a cgroup parent of its own.
    let log_dir = tmp.path().join("logs/pod");
    let mut sandbox = pod_config("side", &log_dir);
    let parent = format!("/septem-sidecar-{}", std::process::id());
    sandbox.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: parent.clone(),
        ..Default::default()
    });
    // Handler `septem`: unikernels on the default backend, ordinary images under runc
    // (`septem-kvm`/`septem-seccomp` take unikernels only).
    let pod_id = c.run_pod(&sandbox, "septem");
    let pod_ip = c.pod_ip(&pod_id);
    assert!(pod_ip.starts_with("10.96.0."), "pod IP {pod_ip:?}");

    // The sidecar.
    let side = c.create(
        &pod_id,
        &sandbox,
        sidecar_config("sidecar", &busybox, &["sh", "-c", "echo hello; sleep 1000"]),
    );
    let rootfs = server
        .state()
        .join("containers")
        .join(&side)
        .join("bundle/rootfs");
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(rootfs.join("etc/passwd").is_file());
    assert!(
        !rootfs.join("etc/old").exists(),
        "layer 2's whiteout did not delete /etc/old"
    );
    c.start(&side);
    let log = wait_for_log(&log_dir.join("sidecar/0.log"), " stdout F hello\n");
    eprintln!("sidecar log: {log:?}");
    let st = call!(
        c,
        runtime.container_status(cri::ContainerStatusRequest {
            container_id: side.clone(),
            verbose: false,
        })
    )
    .expect("ContainerStatus")
    .status
    .expect("status");
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let runc_state = server.state().join("runnc/.runc").join(&side);
    assert!(
        runc_state.exists(),
        "runc state at {}",
        runc_state.display()
    );
    // The container's cgroup under the pod's parent, in every hierarchy (v1 or v2).
    let cgroup = format!("{parent}/{side}");
    assert!(!cgroup_dirs(&cgroup).is_empty(), "no cgroup {cgroup}");

    // ExecSync.
    let r = exec(&c, &side, &["cat", "/etc/hostname"], 10).expect("ExecSync cat");
    assert_eq!(
        (String::from_utf8_lossy(&r.stdout).as_ref(), r.exit_code),
        ("side\n", 0),
        "stderr {:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = exec(&c, &side, &["sh", "-c", "echo oops >&2; exit 3"], 10).expect("ExecSync exit 3");
    assert_eq!(r.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&r.stderr), "oops\n");
    let t = Instant::now();
    let m = expect_code(
        exec(&c, &side, &["sleep", "10"], 1),
        Code::DeadlineExceeded,
        "ExecSync past its timeout",
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    eprintln!("timeout: {m}");
    // The timed-out command was killed, not left running in the container.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sleepers("sleep\x0010\x00").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the timed-out `sleep 10` still runs: {:?}",
            sleepers("sleep\x0010\x00")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Loopback inside the pod's namespace works for the sidecar's own use.
    let r = exec(
        &c,
        &side,
        &[
            "sh",
            "-c",
            "(echo hi | nc -l -p 9123 &); sleep 0.5; nc -w 2 127.0.0.1 9123 </dev/null",
        ],
        10,
    )
    .expect("ExecSync loopback");
    assert_eq!(
        (String::from_utf8_lossy(&r.stdout).as_ref(), r.exit_code),
        ("hi\n", 0),
        "loopback in the sidecar: {:?}",
        String::from_utf8_lossy(&r.stderr)
    );

    // Stats come from runc (through runnc) like a unikernel's.
    let stats = call!(
        c,
        runtime.container_stats(cri::ContainerStatsRequest {
            container_id: side.clone(),
        })
    )
    .expect("ContainerStats")
    .stats
    .expect("stats");
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value);
    let mem = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value);
    assert!(
        cpu.unwrap_or(0) > 0 && mem.unwrap_or(0) > 0,
        "cpu {cpu:?} memory {mem:?}"
    );

    // Before a unikernel joins the pod, eth0 is the sidecar's: it reaches the host.
    let outside = TcpListener::bind("10.96.0.1:0").expect("listen on the bridge");
    let port = outside.local_addr().expect("addr").port();
    let listener = outside.try_clone().expect("clone listener");
    let server_side = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("the sidecar's connection");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = [0u8; 3];
        std::io::Read::read_exact(&mut conn, &mut got).expect("read");
        got // dropping conn closes it: nc exits
    });
    let r = exec(
        &c,
        &side,
        &["sh", "-c", &format!("echo hi | nc -w 3 10.96.0.1 {port}")],
        20,
    )
    .expect("ExecSync nc host");
    assert_eq!(
        r.exit_code,
        0,
        "sidecar alone → host: {:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(&server_side.join().expect("accept thread"), b"hi\n");
    outside.set_nonblocking(true).expect("nonblocking");

    // The unikernel in the same pod.
    let uk = c.create(&pod_id, &sandbox, sidecar_config("httpd", &httpd, &[]));
    c.start(&uk);
    let url = format!("http://{pod_ip}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl_code(&url) != "200" {
        assert!(Instant::now() < deadline, "httpd does not answer at {url}");
        std::thread::sleep(Duration::from_millis(100));
    }
    expect_code(
        exec(&c, &uk, &["ls"], 10),
        Code::FailedPrecondition,
        "ExecSync in the unikernel",
    );
    // From the sidecar to the unikernel: the pod IP is a local address of the
    // namespace, so the connection stays in the namespace's own stack (nothing listens
    // there), never reaching the tap: refused.
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {pod_ip} 80");
    let r = exec(&c, &side, &["sh", "-c", &get], 20).expect("ExecSync nc pod IP");
    eprintln!(
        "sidecar → unikernel at {pod_ip}:80: exit {} stdout {:?} stderr {:?}",
        r.exit_code,
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    assert_ne!(
        r.exit_code, 0,
        "the sidecar reached the unikernel through the pod IP"
    );
    // From the sidecar out through eth0: the SYN leaves, but the answer arrives on eth0,
    // whose ingress runnc redirects to the unikernel's tap: no connection.
    let r = exec(
        &c,
        &side,
        &["sh", "-c", &format!("echo hi | nc -w 3 10.96.0.1 {port}")],
        20,
    )
    .expect("ExecSync nc gateway");
    let accepted = outside.accept().is_ok();
    eprintln!(
        "sidecar → host 10.96.0.1:{port}: exit {} stderr {:?}, host accepted: {accepted}",
        r.exit_code,
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        r.exit_code != 0 && !accepted,
        "the sidecar reached the host through eth0 while a unikernel owns its ingress"
    );
    // The host still reaches the unikernel.
    assert_eq!(curl_code(&url), "200");

    // Stop: TERM, then KILL after the timeout.
    call!(
        c,
        runtime.stop_container(cri::StopContainerRequest {
            container_id: side.clone(),
            timeout: 2,
        })
    )
    .expect("StopContainer (busybox)");
    let st = call!(
        c,
        runtime.container_status(cri::ContainerStatusRequest {
            container_id: side.clone(),
            verbose: false,
        })
    )
    .expect("ContainerStatus")
    .status
    .expect("status");
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert!(
        st.exit_code == 143 || st.exit_code == 137,
        "exit code {}",
        st.exit_code
    );
    expect_code(
        exec(&c, &side, &["true"], 10),
        Code::FailedPrecondition,
        "ExecSync in a stopped container",
    );
    for id in [&side, &uk] {
        for _ in 0..2 {
            call!(
                c,
                runtime.remove_container(cri::RemoveContainerRequest {
                    container_id: id.to_string(),
                })
            )
            .expect("RemoveContainer");
        }
    }
    for _ in 0..2 {
        call!(
            c,
            runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
        )
        .expect("StopPodSandbox");
    }
    call!(
        c,
        runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
    )
    .expect("RemovePodSandbox");
    assert!(
        !runc_state.exists(),
        "runc state left at {}",
        runc_state.display()
    );
    assert!(!rootfs.exists(), "rootfs left at {}", rootfs.display());
    assert_eq!(cgroup_dirs(&cgroup), Vec::<PathBuf>::new(), "cgroup left");
    let runc_list = run(&[
        "runc",
        "--root",
        server.state().join("runnc/.runc").to_str().unwrap(),
        "list",
        "-q",
    ]);
    assert_eq!(runc_list.trim(), "", "runc still lists {runc_list:?}");
    assert!(!Path::new(&format!("/var/run/netns/septem-{pod_id}")).exists());
    // The pod's parent is the test's (the kubelet's, in a cluster): remove it.
    for dir in cgroup_dirs(&parent) {
        std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
    }
    assert_eq!(server.stop(), Some(0), "{}", server.log());
}
