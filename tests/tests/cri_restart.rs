//! septem-cri is restart-safe: real septem-cri, real registry (Debian's
//! `docker-registry` on loopback), real CNI (`bridge` + `host-local` in a temporary conf
//! dir), real runnc.
//!
//! - `exit_codes_survive_a_septem_cri_restart`: the `sleeper` guest (argument `handle`:
//!   exits 7 on a shutdown request) is SIGTERMed while septem-cri is SIGKILLed; after
//!   the restart its ContainerStatus is EXITED, exit 7, reason `Error`, finished while
//!   septem-cri was down (its shim recorded it). An `httpd` running across the restart
//!   is stopped afterwards: exit 0, `Completed`. The shim holds neither output FIFO.
//! - `interrupted_run_pod_sandbox_is_undone_at_start`: septem-cri is SIGKILLed while
//!   CNI ADD runs (a test plugin chained after `bridge` stalls); the restarted
//!   septem-cri deletes the pod's `septem-<id>` namespace and releases its host-local
//!   address (CNI DEL), and leaves alone a `septem-*` namespace it did not make.
//! - `stray_runnc_container_is_deleted_at_start`: a runnc container under septem-cri's
//!   runnc root that septem-cri has no record of is `runnc delete --force`d at start.
//!
//! Needs root, network namespaces, `/usr/lib/cni`, curl and docker-registry; each test
//! prints `SKIPPED: <reason>` otherwise.

use k8s_cri::v1 as cri;
use septem_tests::bin;
use septem_tests::call;
use septem_tests::cri::{
    bridge_conflist, container_config, curl_until_200, pod_config, push_example, push_guest, run,
    skip_lifecycle, write_conflist, Bridge, Clients, Registry, Server, CNI_PATH,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The host-local leases (files named by address) of network `name` under `ipam`.
fn leases(ipam: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(ipam.join(name))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

/// SIGKILLs the septem-cri of `server` (a crash: nothing is cleaned up).
fn crash(server: &mut Server) {
    let mut child = server.child.take().expect("septem-cri running");
    child.kill().expect("SIGKILL septem-cri");
    child.wait().expect("wait for septem-cri");
}

/// `(pid, shim_pid)` of a container, from its verbose status.
fn pids_of(c: &Clients, id: &str) -> (i32, i32) {
    let info = call!(
        c,
        runtime.container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        })
    )
    .expect("verbose ContainerStatus")
    .info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).expect("info JSON");
    let pid = v["container"]["pid"].as_i64().expect("pid");
    let shim = v["container"]["shim_pid"].as_i64().expect("shim_pid");
    (pid as i32, shim as i32)
}

/// True while `pid` runs (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pod on handler `septem-seccomp` whose config is [`pod_config`]`(name, log_dir)`.
fn run_pod(c: &Clients, name: &str, log_dir: &Path) -> String {
    c.run_pod(&pod_config(name, log_dir), "septem-seccomp")
}

/// Container `name` of `image` with `args`, in the pod made by [`run_pod`].
fn create(
    c: &Clients,
    pod_id: &str,
    name: &str,
    image: &str,
    args: &[&str],
    log_dir: &Path,
) -> String {
    c.create(
        pod_id,
        &pod_config(name, log_dir),
        cri::ContainerConfig {
            args: args.iter().map(|a| (*a).to_string()).collect(),
            ..container_config(name, image)
        },
    )
}

fn status(c: &Clients, id: &str) -> cri::ContainerStatus {
    call!(
        c,
        runtime.container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
    )
    .expect("ContainerStatus")
    .status
    .expect("status")
}

/// Stops and removes every pod (and so its containers) of `server`.
fn remove_all_pods(c: &Clients, server: &Server) {
    let pods = call!(
        c,
        runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default())
    )
    .expect("ListPodSandbox")
    .items;
    for pod in pods {
        call!(
            c,
            runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
        )
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e:?}\n{}", server.log()));
        call!(
            c,
            runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
        )
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e:?}\n{}", server.log()));
        assert!(!netns_exists(&format!("septem-{}", pod.id)), "netns left");
    }
}

#[test]
fn exit_codes_survive_a_septem_cri_restart() {
    if skip_lifecycle() {
        return;
    }
    let t0 = Instant::now();
    let reg = Registry::start();
    let httpd = push_example(&reg, "httpd");
    let sleeper = push_guest(&reg, "sleeper");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::new(tmp.path());
    let bridge = Bridge(format!("sptrs1{}", std::process::id() % 10_000));
    let ipam = tmp.path().join("ipam");
    write_conflist(
        &server.cni_conf,
        &bridge_conflist("septem-restart-1", &bridge.0, "10.93.1.0/24", &ipam),
    );
    server.start();
    let c = server.clients();
    c.pull(&httpd);
    c.pull(&sleeper);
    let log_dir = tmp.path().join("logs");

    // httpd first (it runs across the restart), then the sleeper (it sleeps 30 s at
    // most, so it goes last).
    let web_pod = run_pod(&c, "web", &log_dir);
    let web = create(&c, &web_pod, "web", &httpd, &[], &log_dir);
    c.start(&web);
    let ip = c.pod_ip(&web_pod);
    curl_until_200(&format!("http://{ip}/"), Duration::from_secs(30));

    let sleep_pod = run_pod(&c, "sleep", &log_dir);
    let sleepy = create(&c, &sleep_pod, "sleep", &sleeper, &["handle"], &log_dir);
    c.start(&sleepy);
    let sleep_log = log_dir.join("sleep/0.log");
    wait_until(
        "the sleeper's `sleeping` line",
        Duration::from_secs(10),
        || std::fs::read_to_string(&sleep_log).is_ok_and(|t| t.contains(" stdout F sleeping")),
    );
    let (pid, shim_pid) = pids_of(&c, &sleepy);
    assert!(
        pid > 0 && shim_pid > 0 && pid != shim_pid,
        "{pid} {shim_pid}"
    );
    // Only the container holds the output FIFOs, so the log copier sees end of file
    // when it is gone.
    let shim_fds: Vec<String> = std::fs::read_dir(format!("/proc/{shim_pid}/fd"))
        .expect("the shim's fds")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(
        !shim_fds
            .iter()
            .any(|l| l.contains(".fifo") || l.starts_with("pipe:")),
        "the shim holds a FIFO or a pipe: {shim_fds:?}"
    );

    // septem-cri crashes; the guest is asked to shut down while it is away.
    crash(&mut server);
    let down_at = septem_now_ns();
    // SAFETY: kill on the container's pid, read from its status just now.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_until("the sleeper to exit", Duration::from_secs(10), || {
        !alive(pid)
    });
    wait_until("its shim to exit", Duration::from_secs(10), || {
        !alive(shim_pid)
    });
    // httpd is not affected.
    curl_until_200(&format!("http://{ip}/"), Duration::from_secs(5));
    let up_at = septem_now_ns();
    server.start();
    let c = server.clients();

    let s = status(&c, &sleepy);
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerExited as i32,
        "{s:?}\n{}",
        server.log()
    );
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"), "{s:?}");
    assert!(
        s.finished_at > down_at && s.finished_at < up_at,
        "finished_at {} not between the crash ({down_at}) and the restart ({up_at})",
        s.finished_at
    );
    assert!(s.finished_at > s.started_at);

    // httpd ran across the restart: still running, stopped now with its real code.
    let s = status(&c, &web);
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerRunning as i32,
        "{s:?}"
    );
    curl_until_200(&format!("http://{ip}/"), Duration::from_secs(5));
    let (web_pid, web_shim) = pids_of(&c, &web);
    call!(
        c,
        runtime.stop_container(cri::StopContainerRequest {
            container_id: web.clone(),
            timeout: 10,
        })
    )
    .unwrap_or_else(|e| panic!("StopContainer: {e:?}\n{}", server.log()));
    let s = status(&c, &web);
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerExited as i32,
        "{s:?}"
    );
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
    assert!(s.finished_at > up_at);
    assert!(!alive(web_pid) && !alive(web_shim));

    remove_all_pods(&c, &server);
    assert!(
        leases(&ipam, "septem-restart-1").is_empty(),
        "IP lease left"
    );
    drop(c);
    assert_eq!(server.stop(), Some(0));
    eprintln!(
        "exit_codes_survive_a_septem_cri_restart: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

fn septem_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A CNI plugin for the test: on ADD it writes its pid to `marker` and sleeps (so the
/// test can kill septem-cri while ADD runs); on DEL it does nothing.
fn stalling_plugin(dir: &Path, marker: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).expect("mkdir cni-bin");
    let script = dir.join("septem-test-stall");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  \
             echo $$ > {marker}.tmp && mv {marker}.tmp {marker}\n  exec sleep 120\nfi\nexit 0\n",
            marker = marker.display()
        ),
    )
    .expect("write plugin");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// septem-cri with CNI plugins from `bin_dirs` (the shared `Server` uses `/usr/lib/cni`
/// only); killed, with what it left, on drop.
struct CriWithPlugins {
    child: Option<Child>,
    dir: PathBuf,
    bin_dirs: String,
    socket: PathBuf,
    starts: u32,
}

impl CriWithPlugins {
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn log(&self) -> String {
        (0..self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("cri-{n}.log"))).unwrap_or_default()
            })
            .collect()
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join(format!("cri-{}.log", self.starts)))
            .expect("log file");
        self.starts += 1;
        let child = Command::new(bin("septem-cri"))
            .arg("--listen")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.state())
            .arg("--cni-conf-dir")
            .arg(self.dir.join("net.d"))
            .arg("--cni-bin-dir")
            .arg(&self.bin_dirs)
            .arg("--runnc")
            .arg(bin("runnc"))
            .arg("--default-backend")
            .arg("seccomp")
            .arg("--config")
            .arg(self.dir.join("cri.toml"))
            .env("SEPTEM_CRI_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn septem-cri");
        self.child = Some(child);
        wait_until("septem-cri's socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
        });
    }

    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for CriWithPlugins {
    fn drop(&mut self) {
        self.crash();
        let Ok(entries) = std::fs::read_dir(self.state().join("pods")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_suffix(".json")
                .or_else(|| name.strip_suffix(".pending"))
            {
                let _ = Command::new("ip")
                    .args(["netns", "del", &format!("septem-{id}")])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Deletes a network namespace on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn interrupted_run_pod_sandbox_is_undone_at_start() {
    if skip_lifecycle() {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugins = tmp.path().join("cni-bin");
    let marker = tmp.path().join("stall.pid");
    stalling_plugin(&plugins, &marker);
    let bridge = Bridge(format!("sptrs2{}", std::process::id() % 10_000));
    let ipam = tmp.path().join("ipam");
    std::fs::write(tmp.path().join("cri.toml"), "").expect("cri.toml");
    let mut conflist = bridge_conflist("septem-restart-2", &bridge.0, "10.93.2.0/24", &ipam);
    conflist["plugins"]
        .as_array_mut()
        .expect("plugins")
        .push(serde_json::json!({ "type": "septem-test-stall" }));
    write_conflist(&tmp.path().join("net.d"), &conflist);
    // A namespace named like septem-cri's that this instance did not make.
    let foreign = Netns(format!("septem-restart-foreign-{}", std::process::id()));
    run(&["ip", "netns", "add", &foreign.0]);
    assert!(netns_exists(&foreign.0));

    let mut server = CriWithPlugins {
        child: None,
        dir: tmp.path().to_path_buf(),
        bin_dirs: format!("{}:{CNI_PATH}", plugins.display()),
        socket: tmp.path().join("run/cri.sock"),
        starts: 0,
    };
    server.start();
    let socket = server.socket.clone();
    let log_dir = tmp.path().join("logs");
    let runpod = std::thread::spawn(move || {
        let c = Clients::new(&socket);
        call!(
            c,
            runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_config("stalled", &log_dir)),
                runtime_handler: "septem-seccomp".into(),
            })
        )
        .map(|r| r.pod_sandbox_id)
    });
    wait_until(
        "CNI ADD to reach the stalling plugin",
        Duration::from_secs(30),
        || marker.exists(),
    );
    server.crash();
    let plugin_pid: i32 = std::fs::read_to_string(&marker)
        .expect("marker")
        .trim()
        .parse()
        .expect("plugin pid");
    // SAFETY: kill on the stalled plugin's pid (its `sleep`), which it wrote itself.
    unsafe { libc::kill(plugin_pid, libc::SIGKILL) };
    let answer = runpod.join().expect("RunPodSandbox thread");
    assert!(answer.is_err(), "RunPodSandbox answered {answer:?}");

    // What the crash left: the intent, the namespace, the address.
    let pending: Vec<String> = std::fs::read_dir(server.state().join("pods"))
        .expect("pods dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pending"))
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let id = pending[0].trim_end_matches(".pending").to_string();
    let netns = format!("septem-{id}");
    assert!(netns_exists(&netns), "no {netns} after the crash");
    assert_eq!(
        leases(&ipam, "septem-restart-2").len(),
        1,
        "no lease after bridge ADD"
    );

    server.start();
    assert!(
        !netns_exists(&netns),
        "{netns} left after the restart\n{}",
        server.log()
    );
    assert!(
        leases(&ipam, "septem-restart-2").is_empty(),
        "IP lease left after the restart\n{}",
        server.log()
    );
    assert!(!server.state().join("pods").join(&pending[0]).exists());
    assert!(
        netns_exists(&foreign.0),
        "a namespace this septem-cri did not make was deleted"
    );
    assert!(
        server
            .log()
            .contains("undoing an interrupted RunPodSandbox"),
        "{}",
        server.log()
    );
    let c = Clients::new(&server.socket);
    let pods = call!(
        c,
        runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default())
    )
    .expect("ListPodSandbox")
    .items;
    assert!(pods.is_empty(), "{pods:?}");
    eprintln!(
        "interrupted_run_pod_sandbox_is_undone_at_start: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn stray_runnc_container_is_deleted_at_start() {
    if skip_lifecycle() {
        return;
    }
    let t0 = Instant::now();
    let reg = Registry::start();
    let httpd = push_example(&reg, "httpd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::new(tmp.path());
    let bridge = Bridge(format!("sptrs3{}", std::process::id() % 10_000));
    let ipam = tmp.path().join("ipam");
    write_conflist(
        &server.cni_conf,
        &bridge_conflist("septem-restart-3", &bridge.0, "10.93.3.0/24", &ipam),
    );
    server.start();
    let c = server.clients();
    c.pull(&httpd);
    let log_dir = tmp.path().join("logs");
    let pod = run_pod(&c, "stray", &log_dir);
    // A bundle as septem-cri makes them, copied before the container goes.
    let made = create(&c, &pod, "made", &httpd, &[], &log_dir);
    let bundle = tmp.path().join("stray-bundle");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(server.state().join("containers").join(&made).join("bundle"))
        .arg(&bundle)
        .status()
        .expect("cp");
    assert!(cp.success());
    call!(
        c,
        runtime.remove_container(cri::RemoveContainerRequest {
            container_id: made.clone(),
        })
    )
    .expect("RemoveContainer");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config.json"))
            .expect("JSON");
    spec["mounts"] = serde_json::json!([]); // they pointed into the removed container
    std::fs::write(bundle.join("config.json"), spec.to_string()).expect("config.json");
    drop(c);
    assert_eq!(server.stop(), Some(0));

    // A runnc container under septem-cri's runnc root that it knows nothing of.
    let stray = format!("stray-{}", std::process::id());
    let runnc_root = server.state().join("runnc");
    // Not a pipe: the container process (waiting for `start`) inherits it.
    let runnc_err = tmp.path().join("stray-runnc.err");
    let created = Command::new(bin("runnc"))
        .arg("--root")
        .arg(&runnc_root)
        .args(["create", "--bundle"])
        .arg(&bundle)
        .arg("--pid-file")
        .arg(tmp.path().join("stray.pid"))
        .arg(&stray)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&runnc_err).expect("stderr file"))
        .status()
        .expect("runnc create");
    assert!(
        created.success(),
        "runnc create: {}",
        std::fs::read_to_string(&runnc_err).unwrap_or_default()
    );
    let stray_pid: i32 = std::fs::read_to_string(tmp.path().join("stray.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(alive(stray_pid));
    let listed = || {
        run(&[
            bin("runnc").to_str().unwrap(),
            "--root",
            runnc_root.to_str().unwrap(),
            "list",
            "-q",
        ])
    };
    assert!(listed().contains(&stray), "{}", listed());

    server.start();
    assert!(
        !listed().contains(&stray),
        "stray container left: {}",
        listed()
    );
    wait_until(
        "the stray container's process to end",
        Duration::from_secs(10),
        || !alive(stray_pid),
    );
    assert!(
        server
            .log()
            .contains("runnc container without a septem-cri record"),
        "{}",
        server.log()
    );
    let c = server.clients();
    remove_all_pods(&c, &server);
    assert!(
        leases(&ipam, "septem-restart-3").is_empty(),
        "IP lease left"
    );
    drop(c);
    assert_eq!(server.stop(), Some(0));
    eprintln!(
        "stray_runnc_container_is_deleted_at_start: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
