//! septem-cri end to end, through real gRPC (k8s-cri's tonic clients over the unix
//! socket), real CNI (Debian's `bridge` + `host-local` plugins with a conflist in a
//! temporary conf dir, bridge `sptcri<N>`, subnet 10.98.0.0/24) and a real registry
//! (Debian's `docker-registry` on loopback, the `httpd` image pushed by septem-build).
//!
//! `pod_lifecycle_through_cri`: Version, Status, PullImage, ListImages/ImageStatus,
//! RunPodSandbox → pod IP, a septem-cri restart (the pod stays listable),
//! CreateContainer + StartContainer → `curl http://<pod ip>/` answers 200, the log
//! file has CRI-format lines, StopContainer → exit code 0 (graceful), every Stop/Remove
//! twice, and afterwards no netns, no state, no IP lease left.
//! `errors_and_unsupported_calls`: the gRPC codes for unknown ids, a missing image, an
//! unknown runtime handler, what a unikernel cannot do and what is not built yet; no
//! CNI config → NetworkReady false; SIGTERM removes the socket.
//!
//! Needs root, network namespaces, `/usr/lib/cni`, curl and docker-registry for the
//! lifecycle; each test prints `SKIPPED: <reason>` otherwise.

use k8s_cri::v1 as cri;
use septem_tests::call;
use septem_tests::cri::{
    bridge_conflist, container_config, curl_until_200, expect_code, expect_unknown_ids, image_spec,
    pod_config, push_example, run, skip_lifecycle, write_bridge_conflist, write_conflist,
    zombies_of, Bridge, Clients, Registry, Server, CNI_PATH,
};
use septem_tests::{bin, kvm_usable};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

#[test]
fn pod_lifecycle_through_cri() {
    if skip_lifecycle() {
        return;
    }
    let reg = Registry::start();
    let reference = push_example(&reg, "httpd");

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::new(tmp.path());
    let bridge = Bridge(format!("sptcri{}", std::process::id() % 10_000));
    let mut conflist = bridge_conflist(
        "septem-cri-test",
        &bridge.0,
        "10.98.0.0/24",
        &tmp.path().join("ipam"),
    );
    // hostPort through the portmap plugin, where iptables works.
    let host_port = 20_000 + (std::process::id() % 10_000) as i32;
    let portmap = Path::new(CNI_PATH).join("portmap").is_file()
        && Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .is_ok_and(|o| o.status.success());
    if portmap {
        conflist["plugins"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    } else {
        eprintln!("SKIPPED (hostPort part): no portmap plugin or no working iptables");
    }
    write_conflist(&server.cni_conf, &conflist);
    server.start();
    let c = server.clients();

    // Version, Status.
    let v = call!(c, runtime.version(cri::VersionRequest::default())).expect("Version");
    assert_eq!(v.runtime_name, "septem");
    assert_eq!(v.runtime_api_version, "v1");
    c.expect_ready();

    // Images.
    let image_id = c.pull(&reference);
    assert!(image_id.starts_with("sha256:"), "{image_id:?}");
    let list = call!(c, images.list_images(cri::ListImagesRequest::default())).expect("List");
    assert_eq!(list.images.len(), 1);
    assert_eq!(list.images[0].id, image_id);
    assert_eq!(list.images[0].repo_tags, vec![reference.clone()]);
    assert!(list.images[0].size > 0);
    let status = |image: &str| {
        call!(
            c,
            images.image_status(cri::ImageStatusRequest {
                image: image_spec(image),
                verbose: false,
            })
        )
        .expect("ImageStatus")
        .image
    };
    let img = status(&reference).expect("image by tag");
    assert_eq!(img.id, image_id);
    assert!(!img.pinned);
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/septem/httpd@{image_id}", reg.addr)]
    );
    assert!(status(&image_id).is_some(), "image by id");
    assert!(status(&format!("{}/septem/absent:1", reg.addr)).is_none());
    let fs = call!(c, images.image_fs_info(cri::ImageFsInfoRequest {})).expect("ImageFsInfo");
    assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);
    // A missing image in the registry: NotFound.
    expect_code(
        call!(
            c,
            images.pull_image(cri::PullImageRequest {
                image: image_spec(&format!("{}/septem/absent:1", reg.addr)),
                ..Default::default()
            })
        ),
        Code::NotFound,
        "pull of a missing image",
    );

    // Ordinary (non-Septem) images are pulled and run through runc: cri_sidecar.rs.

    // The pod.
    let log_dir = tmp.path().join("logs/pod");
    let mut sandbox = pod_config("web", &log_dir);
    sandbox.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 80,
        host_port,
        host_ip: String::new(),
    }];
    let pod_id = c.run_pod(&sandbox, "septem-seccomp");
    let pod_status = |c: &Clients| {
        call!(
            c,
            runtime.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.clone(),
                verbose: false,
            })
        )
    };
    let ps = pod_status(&c).expect("PodSandboxStatus").status.unwrap();
    let ip = ps.network.as_ref().unwrap().ip.clone();
    assert!(ip.starts_with("10.98.0."), "pod IP {ip:?}");
    assert_eq!(ps.state, cri::PodSandboxState::SandboxReady as i32);
    assert!(ps.created_at > 0);
    let netns = format!("septem-{pod_id}");
    assert!(run(&["ip", "netns", "list"]).contains(&netns));

    // Restart: the pod is still there.
    assert_eq!(server.stop(), Some(0), "septem-cri exit status on SIGTERM");
    assert!(!server.socket.exists(), "socket left after SIGTERM");
    server.start();
    let c = server.clients();
    let pods = call!(
        c,
        runtime.list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
        })
    )
    .expect("ListPodSandbox")
    .items;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].id, pod_id);
    let none = call!(
        c,
        runtime.list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxNotready as i32,
                }),
                ..Default::default()
            }),
        })
    )
    .expect("ListPodSandbox")
    .items;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(c.pod_ip(&pod_id), ip);

    // Container events, from now on.
    let (ev_tx, ev_rx) = std::sync::mpsc::channel::<cri::ContainerEventResponse>();
    {
        let mut client = c.runtime.clone();
        let mut stream = c
            .rt
            .block_on(async move { client.get_container_events(cri::GetEventsRequest {}).await })
            .expect("GetContainerEvents")
            .into_inner();
        c.rt.spawn(async move {
            while let Ok(Some(ev)) = stream.message().await {
                if ev_tx.send(ev).is_err() {
                    break;
                }
            }
        });
    }

    // Bad CreateContainer requests.
    let bad = |config: cri::ContainerConfig| {
        call!(
            c,
            runtime.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
        )
    };
    let good = container_config("bad", &reference);
    let m = expect_code(
        bad(cri::ContainerConfig {
            image: image_spec(&format!("{}/septem/absent:1", reg.addr)),
            ..good.clone()
        }),
        Code::NotFound,
        "CreateContainer with an image not pulled",
    );
    assert!(m.contains("PullImage"), "{m}");
    expect_code(
        bad(cri::ContainerConfig {
            metadata: None,
            ..good.clone()
        }),
        Code::InvalidArgument,
        "CreateContainer without metadata",
    );
    let m = expect_code(
        bad(cri::ContainerConfig {
            tty: true,
            ..good.clone()
        }),
        Code::InvalidArgument,
        "CreateContainer with a tty",
    );
    assert!(m.contains("no terminal"), "{m}");
    // Refused by runnc's create (in the shim, through runnc's library): its reason
    // reaches the caller, and nothing of the container is left.
    let m = expect_code(
        bad(cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: 16 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..good.clone()
        }),
        Code::Internal,
        "CreateContainer below runnc's memory floor",
    );
    assert!(m.contains("below runnc's floor of 32 MiB"), "{m}");
    let runnc_root = server.state().join("runnc");
    let left: Vec<_> = std::fs::read_dir(&runnc_root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n != ".runc")
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "runnc state left: {left:?}");
    let none = call!(
        c,
        runtime.list_containers(cri::ListContainersRequest::default())
    )
    .expect("ListContainers")
    .containers;
    assert!(none.is_empty(), "failed creates left containers: {none:?}");

    // The container.
    let cid = c.create(
        &pod_id,
        &sandbox,
        cri::ContainerConfig {
            labels: [("role".to_string(), "server".to_string())].into(),
            // As the kubelet adds: ignored by runnc for a unikernel, but accepted.
            mounts: vec![cri::Mount {
                container_path: "/etc/hosts".into(),
                host_path: "/etc/hosts".into(),
                readonly: true,
                ..Default::default()
            }],
            ..container_config("httpd", &reference)
        },
    );
    let cstatus = |c: &Clients| {
        call!(
            c,
            runtime.container_status(cri::ContainerStatusRequest {
                container_id: cid.clone(),
                verbose: false,
            })
        )
        .map(|r| r.status.unwrap())
    };
    let s = cstatus(&c).expect("ContainerStatus");
    assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
    // The pod's DNS config reaches the bundle as /etc/resolv.conf (runnc → the guest).
    let cdir = server.state().join("containers").join(&cid);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cdir.join("bundle/config.json")).expect("config"))
            .expect("JSON");
    let mounts = spec["mounts"].as_array().expect("mounts");
    let resolv = mounts
        .iter()
        .find(|m| m["destination"] == "/etc/resolv.conf")
        .unwrap_or_else(|| panic!("no resolv.conf mount: {mounts:?}"));
    let text = std::fs::read_to_string(resolv["source"].as_str().unwrap()).expect("resolv.conf");
    assert!(
        text.contains("nameserver 10.98.0.1\n")
            && text.contains("search default.svc.cluster.local"),
        "{text}"
    );
    assert!(mounts.iter().any(|m| m["destination"] == "/etc/hosts"));
    assert_eq!(spec["annotations"]["org.septem.runnc.backend"], "seccomp");
    let arg0 = spec["process"]["args"][0].as_str().unwrap_or_default();
    assert!(
        arg0.starts_with("/unikernel/") && arg0.ends_with(".septem"),
        "{arg0}"
    );
    assert_eq!(s.log_path, "httpd/0.log");
    c.start(&cid);
    let s = cstatus(&c).expect("ContainerStatus");
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    assert!(s.started_at >= s.created_at);
    let listed = call!(
        c,
        runtime.list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                label_selector: [("role".to_string(), "server".to_string())].into(),
                ..Default::default()
            }),
        })
    )
    .expect("ListContainers")
    .containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, cid);

    let page = curl_until_200(&format!("http://{ip}/"), Duration::from_secs(30));
    eprintln!("septem-cri: curl http://{ip}/ → {} bytes, 200", page.len());
    if portmap {
        let url = format!("http://10.98.0.1:{host_port}/");
        curl_until_200(&url, Duration::from_secs(10));
        eprintln!("septem-cri: curl {url} (hostPort via portmap) → 200");
    }

    // Stats move.
    let stats = |c: &Clients| {
        call!(
            c,
            runtime.container_stats(cri::ContainerStatsRequest {
                container_id: cid.clone(),
            })
        )
        .expect("ContainerStats")
        .stats
        .expect("stats")
    };
    let first = stats(&c);
    let cpu0 = first
        .cpu
        .as_ref()
        .expect("cpu")
        .usage_core_nano_seconds
        .expect("cpu ns")
        .value;
    assert!(cpu0 > 0, "{first:?}");
    let mem = first
        .memory
        .as_ref()
        .expect("memory")
        .working_set_bytes
        .expect("ws")
        .value;
    assert!(mem > 0, "{first:?}");
    for _ in 0..20 {
        curl_until_200(&format!("http://{ip}/"), Duration::from_secs(5));
    }
    let second = stats(&c);
    let cpu = second.cpu.as_ref().expect("cpu");
    assert!(
        cpu.usage_core_nano_seconds.as_ref().unwrap().value > cpu0,
        "cpu did not move: {cpu:?}"
    );
    assert!(cpu.usage_nano_cores.is_some(), "{cpu:?}");
    let all = call!(
        c,
        runtime.list_container_stats(cri::ListContainerStatsRequest::default())
    )
    .expect("ListContainerStats")
    .stats;
    assert_eq!(all.len(), 1);
    let pod_stats = call!(
        c,
        runtime.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
    )
    .expect("PodSandboxStats")
    .stats
    .expect("stats");
    let linux = pod_stats.linux.expect("linux");
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.is_some());
    let eth0 = linux
        .network
        .and_then(|n| n.default_interface)
        .expect("pod network stats");
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.rx_bytes.unwrap().value > 0 && eth0.tx_bytes.unwrap().value > 0);
    // Verbose statuses carry the records (crictl inspect / inspectp).
    let info = call!(
        c,
        runtime.container_status(cri::ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: true,
        })
    )
    .expect("verbose ContainerStatus")
    .info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).expect("info JSON");
    assert_eq!(
        v["runtimeSpec"]["annotations"]["org.septem.runnc.backend"],
        "seccomp"
    );
    let info = call!(
        c,
        runtime.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: true,
        })
    )
    .expect("verbose PodSandboxStatus")
    .info;
    assert!(
        info["info"].contains(&format!("septem-{pod_id}")),
        "{info:?}"
    );
    // CPU limits change; memory cannot (fixed at boot).
    call!(
        c,
        runtime.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: cid.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
    )
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e:?}\n{}", server.log()));
    expect_code(
        call!(
            c,
            runtime.update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: cid.clone(),
                linux: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: 256 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            })
        ),
        Code::FailedPrecondition,
        "memory update",
    );

    // The log, in the CRI format.
    let log_file = log_dir.join("httpd/0.log");
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
    let (ts, rest) = line.split_once(' ').unwrap();
    assert!(
        ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "timestamp {ts:?}"
    );
    assert!(rest.starts_with("stdout F httpd: listening"), "{line}");
    call!(
        c,
        runtime.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: cid.clone(),
        })
    )
    .expect("ReopenContainerLog");

    // What a unikernel cannot do.
    let m = expect_code(
        call!(
            c,
            runtime.exec_sync(cri::ExecSyncRequest {
                container_id: cid.clone(),
                cmd: vec!["sh".into()],
                timeout: 1,
            })
        ),
        Code::FailedPrecondition,
        "ExecSync",
    );
    assert!(m.contains("no shell"), "{m}");

    // Graceful stop: exit code 0; twice is fine.
    for _ in 0..2 {
        call!(
            c,
            runtime.stop_container(cri::StopContainerRequest {
                container_id: cid.clone(),
                timeout: 10,
            })
        )
        .unwrap_or_else(|e| panic!("StopContainer: {e:?}\n{}", server.log()));
    }
    let s = cstatus(&c).expect("ContainerStatus");
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 0, "exit code after a graceful stop: {s:?}");
    assert_eq!(s.reason, "Completed");
    assert!(s.finished_at >= s.started_at);
    for _ in 0..2 {
        call!(
            c,
            runtime.remove_container(cri::RemoveContainerRequest {
                container_id: cid.clone(),
            })
        )
        .unwrap_or_else(|e| panic!("RemoveContainer: {e:?}\n{}", server.log()));
    }
    expect_code(cstatus(&c), Code::NotFound, "status of a removed container");
    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while kinds.last() != Some(&(cri::ContainerEventType::ContainerDeletedEvent as i32)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = ev_rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("events so far for {cid}: {kinds:?}"));
        if ev.container_id == cid {
            assert_eq!(
                ev.pod_sandbox_status.as_ref().map(|p| p.id.as_str()),
                Some(pod_id.as_str())
            );
            kinds.push(ev.container_event_type);
        }
    }
    assert_eq!(
        kinds,
        [
            cri::ContainerEventType::ContainerCreatedEvent as i32,
            cri::ContainerEventType::ContainerStartedEvent as i32,
            cri::ContainerEventType::ContainerStoppedEvent as i32,
            cri::ContainerEventType::ContainerDeletedEvent as i32,
        ]
    );

    // A second container (the tap is free again), logging requests; septem-cri restarts
    // while it runs: the guest keeps serving, its output reaches the log again, it
    // stays listed and stoppable, with its real exit code (its shim waited for it).
    let cid2 = c.create(
        &pod_id,
        &sandbox,
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "httpd".into(),
                attempt: 1,
            }),
            args: vec!["--log".into()],
            log_path: "httpd/1.log".into(),
            ..container_config("httpd", &reference)
        },
    );
    c.start(&cid2);
    curl_until_200(&format!("http://{ip}/"), Duration::from_secs(30));
    drop(c);
    assert_eq!(server.stop(), Some(0));
    curl_until_200(&format!("http://{ip}/"), Duration::from_secs(5));
    server.start();
    let c = server.clients();
    let status2 = |c: &Clients| {
        call!(
            c,
            runtime.container_status(cri::ContainerStatusRequest {
                container_id: cid2.clone(),
                verbose: false,
            })
        )
        .expect("ContainerStatus")
        .status
        .unwrap()
    };
    assert_eq!(
        status2(&c).state,
        cri::ContainerState::ContainerRunning as i32
    );
    curl_until_200(&format!("http://{ip}/health"), Duration::from_secs(5));
    let log2 = log_dir.join("httpd/1.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log2).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains(" stdout F ") && l.contains("/health"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no /health request line after the restart in {}:\n{text}",
            log2.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    call!(
        c,
        runtime.stop_container(cri::StopContainerRequest {
            container_id: cid2.clone(),
            timeout: 10,
        })
    )
    .unwrap_or_else(|e| panic!("StopContainer: {e:?}\n{}", server.log()));
    let s2 = status2(&c);
    assert_eq!(s2.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(
        (s2.exit_code, s2.reason.as_str()),
        (0, "Completed"),
        "{s2:?}"
    );
    call!(
        c,
        runtime.remove_container(cri::RemoveContainerRequest {
            container_id: cid2.clone(),
        })
    )
    .unwrap_or_else(|e| panic!("RemoveContainer: {e:?}\n{}", server.log()));

    // Stop and remove the pod, twice each.
    for _ in 0..2 {
        call!(
            c,
            runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
        )
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e:?}\n{}", server.log()));
        let ps = pod_status(&c).expect("status").status.unwrap();
        assert_eq!(ps.state, cri::PodSandboxState::SandboxNotready as i32);
    }
    for _ in 0..2 {
        call!(
            c,
            runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
        )
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e:?}\n{}", server.log()));
    }
    expect_code(pod_status(&c), Code::NotFound, "status of a removed pod");
    assert!(
        !run(&["ip", "netns", "list"]).contains(&netns),
        "netns left"
    );
    let left = |d: &str| -> Vec<String> {
        std::fs::read_dir(server.state().join(d))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        left("pods").is_empty(),
        "pod state left: {:?}",
        left("pods")
    );
    assert!(
        left("containers").is_empty(),
        "container state left: {:?}",
        left("containers")
    );
    assert!(
        left("runnc").iter().all(|n| n.starts_with('.')),
        "runnc state left: {:?}",
        left("runnc")
    );
    let leases: Vec<String> = std::fs::read_dir(tmp.path().join("ipam/septem-cri-test"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "IP lease left: {leases:?}");
    let nat = run(&["iptables", "-t", "nat", "-S"]);
    assert!(
        !nat.contains(&format!("--dport {host_port}")),
        "portmap rule left: {nat}"
    );

    // The image goes, twice.
    for _ in 0..2 {
        call!(
            c,
            images.remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
            })
        )
        .expect("RemoveImage");
    }
    assert!(status(&reference).is_none());
    drop(c);
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn errors_and_unsupported_calls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::new(tmp.path());
    server.start();
    let c = server.clients();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&server.socket)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
    }
    // A second septem-cri on the same state dir is refused.
    let second = Command::new(bin("septem-cri"))
        .arg("--listen")
        .arg(tmp.path().join("second.sock"))
        .arg("--state-dir")
        .arg(server.state())
        .arg("--config")
        .arg(tmp.path().join("cri.toml"))
        .output()
        .expect("run a second septem-cri");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another septem-cri"), "{err}");

    // No CNI config: the network is not ready, and says why.
    let st = call!(c, runtime.status(cri::StatusRequest::default())).expect("Status");
    let conds = st.status.expect("status").conditions;
    let net = conds
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(
        net.message.contains("no CNI network configuration"),
        "{net:?}"
    );
    assert!(conds.iter().any(|c| c.r#type == "RuntimeReady" && c.status));

    // Unknown ids (the checks the containerd suite runs too).
    expect_unknown_ids(&c);
    call!(
        c,
        runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: "nope".into(),
        })
    )
    .expect("StopPodSandbox of an unknown id: OK (idempotent)");

    // Bad requests.
    let m = expect_code(
        call!(
            c,
            runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_config("x", tmp.path())),
                runtime_handler: "runc".into(),
            })
        ),
        Code::InvalidArgument,
        "unknown runtime handler",
    );
    assert!(m.contains("septem-kvm"), "{m}");
    expect_code(
        call!(
            c,
            runtime.run_pod_sandbox(cri::RunPodSandboxRequest::default())
        ),
        Code::InvalidArgument,
        "RunPodSandbox without a config",
    );
    let mut host_net = pod_config("hostnet", tmp.path());
    host_net.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let m = expect_code(
        call!(
            c,
            runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(host_net),
                runtime_handler: String::new(),
            })
        ),
        Code::InvalidArgument,
        "hostNetwork pod",
    );
    assert!(m.contains("hostNetwork"), "{m}");
    expect_code(
        call!(
            c,
            images.pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: "Bad Reference!".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        ),
        Code::InvalidArgument,
        "PullImage of a bad reference",
    );

    // Not built yet: Unimplemented, saying so.
    let m = expect_code(
        call!(
            c,
            runtime.checkpoint_container(cri::CheckpointContainerRequest {
                container_id: "nope".into(),
                ..Default::default()
            })
        ),
        Code::Unimplemented,
        "CheckpointContainer",
    );
    assert!(m.contains("not implemented yet in septem-cri"), "{m}");

    // RuntimeConfig, UpdateRuntimeConfig.
    let rc = call!(c, runtime.runtime_config(cri::RuntimeConfigRequest {})).expect("RuntimeConfig");
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
    call!(
        c,
        runtime.update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: "10.244.0.0/24".into(),
                }),
            }),
        })
    )
    .expect("UpdateRuntimeConfig");
    let st = call!(c, runtime.status(cri::StatusRequest::default())).expect("Status");
    assert_eq!(
        st.info.get("podCIDR").map(String::as_str),
        Some("10.244.0.0/24")
    );

    // An open event stream does not hold up the shutdown: it ends.
    let mut client = c.runtime.clone();
    let mut stream =
        c.rt.block_on(async move { client.get_container_events(cri::GetEventsRequest {}).await })
            .expect("GetContainerEvents")
            .into_inner();
    assert_eq!(server.stop(), Some(0), "exit status on SIGTERM");
    let end = c
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), stream.message()).await });
    assert!(
        matches!(end, Ok(Ok(None) | Err(_))),
        "the event stream did not end: {end:?}"
    );
    drop(c);
    assert!(!server.socket.exists(), "socket left after SIGTERM");
    // A stale socket file is replaced on start.
    std::fs::write(&server.socket, b"").expect("stale socket");
    server.start();
    let c = server.clients();
    call!(c, runtime.version(cri::VersionRequest::default())).expect("Version after restart");
    drop(c);
    assert_eq!(server.stop(), Some(0));
}

/// The same pod on the `septem-kvm` handler: serves, stops gracefully (exit 0), and the
/// process septem-run detaches to close the VM (reparented to septem-cri, a subreaper)
/// is reaped, leaving no zombie.
#[test]
fn kvm_pod_serves_and_stops_gracefully() {
    if skip_lifecycle() {
        return;
    }
    if let Err(why) = kvm_usable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let reg = Registry::start();
    let reference = push_example(&reg, "httpd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::new(tmp.path());
    let bridge = Bridge(format!("sptcrk{}", std::process::id() % 10_000));
    write_bridge_conflist(
        &server.cni_conf,
        "septem-cri-kvm",
        &bridge.0,
        "10.98.1.0/24",
        &tmp.path().join("ipam"),
    );
    server.start();
    let c = server.clients();
    c.pull(&reference);
    let sandbox = pod_config("kvm", &tmp.path().join("logs"));
    let t0 = Instant::now();
    let pod_id = c.run_pod(&sandbox, "septem-kvm");
    let ip = c.pod_ip(&pod_id);
    let cid = c.create(&pod_id, &sandbox, container_config("httpd", &reference));
    let bundle: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            server
                .state()
                .join("containers")
                .join(&cid)
                .join("bundle/config.json"),
        )
        .expect("config.json"),
    )
    .expect("JSON");
    assert_eq!(bundle["annotations"]["org.septem.runnc.backend"], "kvm");
    c.start(&cid);
    let page = curl_until_200(&format!("http://{ip}/"), Duration::from_secs(30));
    eprintln!(
        "septem-cri (kvm): curl http://{ip}/ → {} bytes, 200; pod start latency \
         (RunPodSandbox → CreateContainer → StartContainer → first 200): {:?}",
        page.len(),
        t0.elapsed()
    );
    call!(
        c,
        runtime.stop_container(cri::StopContainerRequest {
            container_id: cid.clone(),
            timeout: 10,
        })
    )
    .unwrap_or_else(|e| panic!("StopContainer: {e:?}\n{}", server.log()));
    let s = call!(
        c,
        runtime.container_status(cri::ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: false,
        })
    )
    .expect("ContainerStatus")
    .status
    .unwrap();
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
    let server_pid = server.child.as_ref().expect("running").id();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let z = zombies_of(server_pid);
        if z.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "zombies under septem-cri: {z:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    call!(
        c,
        runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
    )
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e:?}\n{}", server.log()));
    assert!(!run(&["ip", "netns", "list"]).contains(&pod_id));
    eprintln!(
        "septem-cri reaped {} orphan(s)",
        server.log().matches("reaped an orphan").count()
    );
    drop(c);
    assert_eq!(server.stop(), Some(0));
}
