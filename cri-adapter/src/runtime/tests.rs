use super::*;
use serde_json::json;
use std::path::Path;

fn runtime(dir: &Path) -> Arc<Runtime> {
    Runtime::open(Config {
        listen: dir.join("sock"),
        state_dir: dir.join("state"),
        cni_conf_dir: dir.join("net.d"),
        cni_bin_dir: "/nonexistent".into(),
        runnc: "/nonexistent/runnc".into(),
        runc: None,
        default_backend: "auto".into(),
        pinned_images: vec![],
    })
    .unwrap()
}

fn pod(backend: &str, parent: &str) -> Pod {
    Pod {
        id: "p1".into(),
        config: cri::PodSandboxConfig {
            hostname: "h".into(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: parent.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        runtime_handler: String::new(),
        backend: backend.into(),
        created_at: 1,
        state: PodState::Ready,
        netns_name: "septem-p1".into(),
        netns: "/var/run/netns/septem-p1".into(),
        cni_network: None,
        cni_result: None,
        ip: String::new(),
    }
}

fn image() -> images::ImageConfig {
    images::ImageConfig {
        entrypoint: vec!["/unikernel/app.septem".into()],
        cmd: vec!["--port".into(), "80".into()],
        env: vec!["A=1".into(), "B=2".into()],
        labels: [
            (
                "org.septem.unikernel.binary".to_string(),
                "/unikernel/app.septem".to_string(),
            ),
            ("other".to_string(), "x".to_string()),
        ]
        .into(),
        layers: vec![],
        ..images::ImageConfig::default()
    }
}

#[test]
fn handlers_map_to_backends() {
    assert_eq!(backend_of("", "auto").unwrap(), "auto");
    assert_eq!(backend_of("septem", "seccomp").unwrap(), "seccomp");
    assert_eq!(backend_of("septem-kvm", "auto").unwrap(), "kvm");
    assert_eq!(backend_of("septem-seccomp", "auto").unwrap(), "seccomp");
    assert!(matches!(
        backend_of("runc", "auto"),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn ordinary_spec_is_a_plain_runc_container() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), "app:x:10:20::/:/bin/sh\n").unwrap();
    let ic = images::ImageConfig {
        entrypoint: vec!["/bin/sh".into()],
        cmd: vec!["-c".into(), "sleep 1".into()],
        env: vec!["A=1".into()],
        user: "app".into(),
        working_dir: "/work".into(),
        ..images::ImageConfig::default()
    };
    let mut p = pod("seccomp", "/kubepods");
    p.ip = "10.0.0.5".into();
    p.config.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.0.0.1".into()],
        ..Default::default()
    });
    let config = cri::ContainerConfig::default();
    let mut s = rt.spec("c1", &p, &config, &ic);
    crate::ordinary::adapt(&mut s, dir.path(), &rootfs, &p, &config, &ic).unwrap();
    assert_eq!(
        s["annotations"],
        json!({"io.kubernetes.cri.sandbox-id": "p1"})
    );
    assert_eq!(s["root"]["readonly"], false);
    assert_eq!(s["process"]["user"], json!({"uid": 10, "gid": 20}));
    assert_eq!(s["process"]["cwd"], "/work");
    assert_eq!(s["process"]["args"], json!(["/bin/sh", "-c", "sleep 1"]));
    assert!(s["process"]["env"][0]
        .as_str()
        .unwrap()
        .starts_with("PATH="));
    assert_eq!(s["linux"]["cgroupsPath"], "/kubepods/c1");
    assert_eq!(
        s["linux"]["namespaces"][0]["path"],
        "/var/run/netns/septem-p1"
    );
    assert_eq!(s["hostname"], "h");
    let dests: Vec<&str> = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    for d in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
    ] {
        assert!(dests.contains(&d), "{d} in {dests:?}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hosts"))
            .unwrap()
            .lines()
            .last(),
        Some("10.0.0.5\th")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hostname")).unwrap(),
        "h\n"
    );
    // Nothing to run.
    let empty = images::ImageConfig::default();
    let mut s = rt.spec("c2", &p, &config, &empty);
    assert!(matches!(
        crate::ordinary::adapt(&mut s, dir.path(), &rootfs, &p, &config, &empty),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn spec_args_env_annotations_cgroup_and_resources() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut config = cri::ContainerConfig::default();
    // Image defaults.
    let s = rt.spec("c1", &pod("kvm", ""), &config, &image());
    assert_eq!(
        s["process"]["args"],
        json!(["/unikernel/app.septem", "--port", "80"])
    );
    assert_eq!(s["process"]["env"], json!(["A=1", "B=2"]));
    assert_eq!(s["annotations"]["org.septem.unikernel"], "true");
    assert_eq!(s["annotations"]["org.septem.runnc.backend"], "kvm");
    assert_eq!(
        s["annotations"]["org.septem.unikernel.binary"],
        "/unikernel/app.septem"
    );
    assert!(s["annotations"].get("other").is_none());
    assert!(s["linux"].get("cgroupsPath").is_none());
    assert_eq!(
        s["linux"]["namespaces"][0]["path"],
        "/var/run/netns/septem-p1"
    );
    assert_eq!(s["hostname"], "h");
    // args replace Cmd; env overrides by key.
    config.args = vec!["--log".into()];
    config.envs = vec![cri::KeyValue {
        key: "A".into(),
        value: "9".into(),
    }];
    let s = rt.spec("c1", &pod("kvm", ""), &config, &image());
    assert_eq!(
        s["process"]["args"],
        json!(["/unikernel/app.septem", "--log"])
    );
    assert_eq!(s["process"]["env"], json!(["B=2", "A=9"]));
    // command replaces Entrypoint and drops Cmd.
    config.args = vec![];
    config.command = vec!["/unikernel/other.septem".into()];
    let s = rt.spec("c1", &pod("kvm", ""), &config, &image());
    assert_eq!(s["process"]["args"], json!(["/unikernel/other.septem"]));
    // cgroup parent and resources.
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 256,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    let s = rt.spec("c1", &pod("seccomp", "/kubepods/pod-u/"), &config, &image());
    assert_eq!(s["linux"]["cgroupsPath"], "/kubepods/pod-u/c1");
    assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(
        s["linux"]["resources"]["cpu"],
        json!({"shares": 256, "quota": 50_000, "period": 100_000})
    );
}

#[test]
fn dns_and_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pod("kvm", "");
    let config = cri::ContainerConfig {
        mounts: vec![cri::Mount {
            container_path: "/septem/block/data".into(),
            host_path: "/srv/data.img".into(),
            readonly: false,
            ..Default::default()
        }],
        ..Default::default()
    };
    let m = mounts(dir.path(), &p, &config).unwrap();
    assert_eq!(m.len(), 1, "no DNS config, no resolv.conf");
    assert_eq!(m[0]["options"], json!(["rbind", "rw"]));
    p.config.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.0.0.10".into()],
        searches: vec!["a.b".into(), "b".into()],
        options: vec!["ndots:5".into()],
    });
    let m = mounts(dir.path(), &p, &config).unwrap();
    assert_eq!(m[1]["destination"], "/etc/resolv.conf");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
        "nameserver 10.0.0.10\nsearch a.b b\noptions ndots:5\n"
    );
}

#[test]
fn state_survives_reopen_and_a_vanished_netns_makes_the_pod_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut p = pod("kvm", "");
    p.netns = dir.path().join("no-such-netns");
    rt.save_pod(p).unwrap();
    rt.set_pod_cidr("10.1.0.0/16").unwrap();
    let unfinished = dir.path().join("state/containers/c9/bundle");
    std::fs::create_dir_all(&unfinished).unwrap();
    drop(rt);
    let rt = runtime(dir.path());
    let pods = rt.list_pods(None);
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxNotready as i32);
    assert_eq!(rt.pod_cidr(), "10.1.0.0/16");
    assert!(
        !dir.path().join("state/containers/c9").exists(),
        "unfinished create left"
    );
    let ready = rt.list_pods(Some(cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    }));
    assert!(ready.is_empty());
}

fn container(id: &str, pid: i32, pid_start: u64) -> Container {
    Container {
        id: id.into(),
        pod_id: "p1".into(),
        config: cri::ContainerConfig::default(),
        image_id: "sha256:x".into(),
        image: "x".into(),
        septem: true,
        created_at: 1,
        started_at: 2,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        pid,
        pid_start,
        shim_pid: 0,
        shim_start: 0,
        log_file: PathBuf::from("/dev/null"),
        log_path: String::new(),
    }
}

#[test]
fn exits_recorded_by_a_shim_while_down_are_taken_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    drop(rt);
    let cdir = dir.path().join("state/containers");
    // c1: its shim (gone) recorded exit 7. c2: no record, process gone: unknown.
    for id in ["c1", "c2"] {
        std::fs::create_dir_all(cdir.join(id)).unwrap();
        let mut c = container(id, i32::MAX, 1);
        c.shim_pid = i32::MAX;
        c.shim_start = 1;
        util::write_json_atomic(&cdir.join(id).join("state.json"), &c).unwrap();
    }
    let exit = crate::shim::Exit {
        exit_code: 7,
        reason: "Error".into(),
        message: String::new(),
        finished_at: 1_000,
    };
    util::write_json_atomic(&cdir.join("c1").join(crate::shim::EXIT_FILE), &exit).unwrap();
    let rt = runtime(dir.path());
    let s = rt.container_status("c1").unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(
        (s.exit_code, s.reason.as_str(), s.finished_at),
        (7, "Error", 1_000)
    );
    let s = rt.container_status("c2").unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((s.exit_code, s.reason.as_str()), (255, "Unknown"));
    assert!(
        s.message.contains("without an exit record"),
        "{}",
        s.message
    );
    assert!(s.finished_at > 0);
}

#[test]
fn pending_pod_intents_are_settled_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    // A pod saved whose intent was not yet removed: the pod stays.
    let mut saved = pod("seccomp", "");
    saved.netns = dir.path().join("no-such-netns");
    rt.save_pod(saved.clone()).unwrap();
    rt.write_intent(&saved).unwrap();
    // An interrupted RunPodSandbox (its namespace never made): the intent goes.
    let mut lost = pod("seccomp", "");
    lost.id = "p2".into();
    lost.netns_name = "septem-p2-never-made".into();
    lost.netns = dir.path().join("no-such-netns-either");
    rt.write_intent(&lost).unwrap();
    drop(rt);
    let rt = runtime(dir.path());
    let pods = dir.path().join("state/pods");
    assert!(!pods.join("p1.pending").exists());
    assert!(!pods.join("p2.pending").exists());
    assert!(pods.join("p1.json").exists());
    assert!(rt.pod_status("p1").is_ok());
    assert!(rt.pod_status("p2").is_err());
}

/// An exit recorded while StartContainer records the start (a guest that finishes at
/// once) survives: both changes land, whichever comes first (CI once saw block_rw stay
/// RUNNING forever when the start's stale copy overwrote the exit).
#[test]
fn start_and_exit_recorded_at_once_both_land() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    for round in 0..200 {
        let id = format!("r{round}");
        std::fs::create_dir_all(rt.container_dir(&id)).unwrap();
        let mut c = container(&id, i32::MAX, 1);
        c.started_at = 0;
        rt.save_container(c).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                rt.modify_container(&id, |c| c.started_at = 5).unwrap();
            });
            s.spawn(|| {
                rt.record_exit(
                    &id,
                    crate::shim::Exit {
                        exit_code: 3,
                        reason: "Error".into(),
                        message: String::new(),
                        finished_at: 9,
                    },
                );
            });
        });
        let st = rt.container_status(&id).unwrap();
        assert_eq!(
            (st.started_at, st.finished_at, st.exit_code),
            (5, 9, 3),
            "round {round}"
        );
        assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
        let on_disk: Container = util::read_json(&rt.container_dir(&id).join("state.json"))
            .unwrap()
            .unwrap();
        assert_eq!((on_disk.started_at, on_disk.finished_at), (5, 9));
    }
}
