//! The CRI client suite's pod flow against Debian's containerd 1.6 (with its CRI
//! plugin) and runnc as the runtime handler `septem` (the runc v2 shim with
//! `BinaryName` = runnc): the same tonic client as `tests/tests/cri.rs`, through
//! containerd's socket.
//!
//! `containerd_cri_runs_a_unikernel_pod`: Version, PullImage of the `httpd` unikernel
//! (pushed by `septem-build push` to Debian's docker-registry on loopback),
//! RunPodSandbox with handler `septem` (the pause image, a busybox made here with umoci,
//! goes to runc through runnc's fallback), CreateContainer + StartContainer of httpd →
//! `curl http://<pod ip>/` answers 200, the log has CRI-format lines, StopContainer →
//! exit code 0 (graceful), Stop/Remove of container and pod, and afterwards no runnc
//! state, no network namespace and no cgroup left.
//!
//! Needs root, containerd, ctr, the runc v2 shim, runc, umoci, skopeo, busybox-static,
//! `/usr/lib/cni`, curl and docker-registry; prints `SKIPPED: <reason>` otherwise.

use k8s_cri::v1 as cri;
use septem_tests::bin;
use septem_tests::call;
use septem_tests::cri::{
    container_config, curl_until_200, expect_unknown_ids, image_spec, on_path, pod_config,
    push_example, push_pause_image, run, skip_lifecycle, write_bridge_conflist, Bridge, Clients,
    ContainerdCri, Registry, BUSYBOX,
};
use septem_tests::runnc::cgroup_dirs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn skip() -> bool {
    if skip_lifecycle() {
        return true;
    }
    for tool in [
        "containerd",
        "ctr",
        "containerd-shim-runc-v2",
        "runc",
        "umoci",
        "skopeo",
    ] {
        if !on_path(tool) {
            eprintln!("SKIPPED: {tool} is not installed (scripts/test.sh installs it)");
            return true;
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        eprintln!("SKIPPED: {BUSYBOX} is missing (apt-get install busybox-static)");
        return true;
    }
    false
}

/// Removes the pods' cgroup parent (every hierarchy) on drop.
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for dir in cgroup_dirs(&self.0) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn containerd_cri_runs_a_unikernel_pod() {
    if skip() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let reference = push_example(&reg, "httpd");
    let pause = push_pause_image(&reg, tmp.path());

    let mut ctrd = ContainerdCri::new(tmp.path());
    let bridge = Bridge(format!("sptctd{}", std::process::id() % 10_000));
    write_bridge_conflist(
        &ctrd.cni_conf,
        "septem-crictr-test",
        &bridge.0,
        "10.97.0.0/24",
        &tmp.path().join("ipam"),
    );
    let started = Instant::now();
    ctrd.start(&reg.addr, &pause, &bin("runnc"));
    eprintln!("containerd: CRI up in {:?}", started.elapsed());
    let c = ctrd.clients();

    let v = call!(c, runtime.version(cri::VersionRequest::default())).expect("Version");
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");
    c.expect_ready();
    // The client suite's unknown-id checks, as against septem-cri.
    expect_unknown_ids(&c);

    let image_id = c.pull(&reference);
    // containerd's image id is the config's digest.
    assert!(image_id.starts_with("sha256:"), "{image_id:?}");
    let img = call!(
        c,
        images.image_status(cri::ImageStatusRequest {
            image: image_spec(&reference),
            verbose: false,
        })
    )
    .expect("ImageStatus")
    .image
    .expect("image");
    assert_eq!(img.id, image_id);
    assert!(img.repo_tags.contains(&reference), "{img:?}");

    // The pod: handler septem, its pause container through runnc → runc.
    let cgroup_parent = CgroupParent(format!("/septem-crictr-{}", std::process::id()));
    let log_dir = tmp.path().join("logs/pod");
    let mut sandbox = pod_config("web", &log_dir);
    sandbox.dns_config = None;
    sandbox.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: cgroup_parent.0.clone(),
        ..Default::default()
    });
    sandbox.annotations = [(
        "org.septem.runnc.backend".to_string(),
        "seccomp".to_string(),
    )]
    .into();
    let t0 = Instant::now();
    let pod_id = c.run_pod(&sandbox, "septem");
    eprintln!("containerd: RunPodSandbox in {:?}", t0.elapsed());
    let pod_status = |c: &Clients, verbose: bool| {
        call!(
            c,
            runtime.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.clone(),
                verbose,
            })
        )
    };
    let ps = pod_status(&c, true).expect("PodSandboxStatus");
    let info: serde_json::Value = serde_json::from_str(&ps.info["info"]).expect("pod info JSON");
    let ps = ps.status.expect("status");
    assert_eq!(ps.state, cri::PodSandboxState::SandboxReady as i32);
    let ip = ps.network.as_ref().expect("network").ip.clone();
    assert!(ip.starts_with("10.97.0."), "pod IP {ip:?}");
    // containerd names the pod's netns by path in the pause container's spec.
    let netns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .unwrap_or_else(|| panic!("no netns path in {info}"))
        .to_string();
    assert!(Path::new(&netns).exists(), "{netns}");
    // runc ran the pause container, with its state under runnc's root (.runc).
    let runc_state = ctrd.runnc_root.join("k8s.io/.runc").join(&pod_id);
    assert!(
        runc_state.is_dir(),
        "no runc state at {}",
        runc_state.display()
    );
    assert!(ctrd.runnc_left().is_empty(), "{:?}", ctrd.runnc_left());

    // The container.
    let cid = c.create(&pod_id, &sandbox, container_config("httpd", &reference));
    c.start(&cid);
    let cstatus = |c: &Clients, verbose: bool| {
        call!(
            c,
            runtime.container_status(cri::ContainerStatusRequest {
                container_id: cid.clone(),
                verbose,
            })
        )
    };
    let cs = cstatus(&c, true).expect("ContainerStatus");
    let cinfo: serde_json::Value = serde_json::from_str(&cs.info["info"]).expect("info JSON");
    let s = cs.status.expect("status");
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    // runnc recorded it (a Septem bundle), in the pod's namespace.
    assert_eq!(ctrd.runnc_left(), vec![cid.clone()]);
    let spec = &cinfo["runtimeSpec"];
    let arg0 = spec["process"]["args"][0].as_str().unwrap_or_default();
    assert!(arg0.starts_with("/unikernel/"), "{arg0}");
    let cgroups_path = spec["linux"]["cgroupsPath"]
        .as_str()
        .expect("cgroupsPath")
        .to_string();
    // containerd names the pod's netns to the container by the pause process
    // (`/proc/<pid>/ns/net`), not by its /var/run/netns path: the same namespace.
    let cnet = spec["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .unwrap_or_else(|| panic!("no netns path in {spec}"))
        .to_string();
    let ino = |p: &str| {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        (m.dev(), m.ino())
    };
    assert_eq!(ino(&cnet), ino(&netns), "{cnet} is not the pod's {netns}");
    eprintln!("containerd: container netns path {cnet} (pod's {netns})");
    assert!(!cgroup_dirs(&cgroups_path).is_empty(), "{cgroups_path}");

    let page = curl_until_200(&format!("http://{ip}/"), Duration::from_secs(30));
    eprintln!(
        "containerd + runnc: curl http://{ip}/ → {} bytes, 200 ({:?} after RunPodSandbox)",
        page.len(),
        t0.elapsed()
    );

    // The log, in the CRI format (containerd's shim copies the guest's stdout).
    let log_file = log_dir.join("httpd/0.log");
    assert_eq!(s.log_path, log_file.display().to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let text = std::fs::read_to_string(&log_file).unwrap_or_default();
        if text.contains(" stdout F httpd: listening") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let line = log
        .lines()
        .find(|l| l.contains("httpd: listening"))
        .unwrap_or_else(|| panic!("no listening line in {}:\n{log}", log_file.display()));
    let (ts, rest) = line.split_once(' ').expect("timestamp");
    assert!(
        ts.as_bytes().get(10) == Some(&b'T') && rest.starts_with("stdout F "),
        "{line}"
    );

    // Graceful stop: SIGTERM reaches the guest, exit code 0.
    let t = Instant::now();
    call!(
        c,
        runtime.stop_container(cri::StopContainerRequest {
            container_id: cid.clone(),
            timeout: 10,
        })
    )
    .unwrap_or_else(|e| panic!("StopContainer: {e:?}\n{}", ctrd.log()));
    let stop_took = t.elapsed();
    let s = cstatus(&c, false).expect("status").status.expect("status");
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 0, "exit code after a graceful stop: {s:?}");
    assert!(
        stop_took < Duration::from_secs(5),
        "stop took {stop_took:?}"
    );
    eprintln!(
        "containerd + runnc: StopContainer → exit 0, reason {:?}, in {stop_took:?}",
        s.reason
    );
    for _ in 0..2 {
        call!(
            c,
            runtime.remove_container(cri::RemoveContainerRequest {
                container_id: cid.clone(),
            })
        )
        .unwrap_or_else(|e| panic!("RemoveContainer: {e:?}\n{}", ctrd.log()));
    }
    assert!(ctrd.runnc_left().is_empty(), "{:?}", ctrd.runnc_left());
    assert!(
        cgroup_dirs(&cgroups_path).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(&cgroups_path)
    );

    for _ in 0..2 {
        call!(
            c,
            runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
        )
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e:?}\n{}", ctrd.log()));
    }
    for _ in 0..2 {
        call!(
            c,
            runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
        )
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e:?}\n{}", ctrd.log()));
    }
    assert!(pod_status(&c, false).is_err(), "pod still there");
    assert!(!Path::new(&netns).exists(), "netns {netns} left");
    let netns_name = Path::new(&netns)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(!run(&["ip", "netns", "list"]).contains(&netns_name));
    assert!(!runc_state.exists(), "runc state left");
    assert!(ctrd.runnc_left().is_empty(), "{:?}", ctrd.runnc_left());
    let pod_cgroups: Vec<PathBuf> = cgroup_dirs(&cgroup_parent.0)
        .into_iter()
        .flat_map(|d| {
            std::fs::read_dir(d)
                .map(|r| {
                    r.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.path())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    assert!(pod_cgroups.is_empty(), "cgroups left: {pod_cgroups:?}");
    assert!(
        ctrd.ctr_quiet(&["task", "ls", "-q"]).trim().is_empty(),
        "tasks left"
    );
    let leases: Vec<String> = std::fs::read_dir(tmp.path().join("ipam/septem-crictr-test"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "IP lease left: {leases:?}");
    drop(c);
    drop(ctrd);
}
