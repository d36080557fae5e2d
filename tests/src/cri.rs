//! The CRI client side of the tests, shared by `tests/tests/cri*.rs`: a tonic client
//! (k8s-cri's runtime and image services) over a unix socket, a septem-cri started by
//! the test, Debian's docker-registry on loopback, request builders and curl/netns
//! helpers.
//!
//! `call!(c, runtime.version(req))` runs one call on a [`Clients`]' runtime.

use crate::bin;
use crate::containerd::Containerd;
use crate::net::skip_unless_net;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

pub const CNI_PATH: &str = "/usr/lib/cni";
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn have_registry() -> bool {
    Path::new(REGISTRY_BIN).is_file()
}

/// Runs `argv`; its stdout, whatever its exit status.
pub fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `argv`; its stdout, panicking (with its stderr) unless it exits 0.
pub fn run_ok(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Debian's docker-registry on a free loopback port; killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config.yml");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            child,
            _dir: dir,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = TcpStream::connect(&reg.addr) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let req = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", reg.addr);
                let mut head = [0u8; 12];
                if c.write_all(req.as_bytes()).is_ok() && c.read_exact(&mut head).is_ok() {
                    return reg;
                }
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A septem-cri of the test's own (socket, state dir, CNI conf dir under `dir`).
#[derive(Debug)]
pub struct Server {
    /// The running septem-cri, if any.
    pub child: Option<Child>,
    dir: PathBuf,
    pub socket: PathBuf,
    pub cni_conf: PathBuf,
    starts: u32,
}

impl Server {
    pub fn new(dir: &Path) -> Server {
        let cni_conf = dir.join("net.d");
        std::fs::create_dir_all(&cni_conf).expect("mkdir net.d");
        // The config file; flags override it.
        std::fs::write(
            dir.join("cri.toml"),
            "default-backend = \"seccomp\"\nlisten = \"/nonexistent/overridden.sock\"\n",
        )
        .expect("write cri.toml");
        Server {
            child: None,
            dir: dir.to_path_buf(),
            socket: dir.join("run/cri.sock"),
            cni_conf,
            starts: 0,
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Clients of its socket whose helpers' panics print its logs.
    #[must_use]
    pub fn clients(&self) -> Clients {
        Clients::with_logs(&self.socket, &self.dir, "cri-")
    }

    pub fn log(&self) -> String {
        let mut all = String::new();
        for n in 0..self.starts {
            all +=
                &std::fs::read_to_string(self.dir.join(format!("cri-{n}.log"))).unwrap_or_default();
        }
        all
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join(format!("cri-{}.log", self.starts)))
            .expect("log file");
        self.starts += 1;
        let child = Command::new(bin("septem-cri"))
            .arg("--config")
            .arg(self.dir.join("cri.toml"))
            .arg("--listen")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.state())
            .arg("--cni-conf-dir")
            .arg(&self.cni_conf)
            .arg("--cni-bin-dir")
            .arg(CNI_PATH)
            .arg("--runnc")
            .arg(bin("runnc"))
            .env("SEPTEM_CRI_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn septem-cri");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("septem-cri exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no socket after 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("septem-cri did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // After a failure: no guest, no namespace left behind.
        let state = self.state();
        if let Ok(entries) = std::fs::read_dir(state.join("containers")) {
            for e in entries.flatten() {
                let _ = Command::new(bin("runnc"))
                    .arg("--root")
                    .arg(state.join("runnc"))
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Ok(entries) = std::fs::read_dir(state.join("pods")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".json") {
                    let _ = Command::new("ip")
                        .args(["netns", "del", &format!("septem-{id}")])
                        .stderr(Stdio::null())
                        .status();
                    remove_portmap_rules(id);
                }
            }
        }
    }
}

pub fn channel(rt: &tokio::runtime::Runtime, socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    rt.block_on(async move {
        Endpoint::try_from("http://[::]:50051")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .expect("connect to septem-cri")
    })
}

/// The runtime and image clients of one CRI endpoint, with the server's log files (for
/// panic messages of the request helpers below).
#[derive(Debug)]
pub struct Clients {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    /// `(dir, prefix)`: the server's logs are `dir/prefix*.log`.
    logs: Option<(PathBuf, String)>,
    // Last: dropped after the clients.
    pub rt: tokio::runtime::Runtime,
}

impl Clients {
    pub fn new(socket: &Path) -> Clients {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio");
        let ch = channel(&rt, socket);
        Clients {
            runtime: RuntimeServiceClient::new(ch.clone()),
            images: ImageServiceClient::new(ch),
            logs: None,
            rt,
        }
    }

    /// Like [`Clients::new`]; panics of the helpers print `dir/prefix*.log`.
    #[must_use]
    pub fn with_logs(socket: &Path, dir: &Path, prefix: &str) -> Clients {
        Clients {
            logs: Some((dir.to_path_buf(), prefix.to_string())),
            ..Clients::new(socket)
        }
    }

    /// The server's log files, oldest first.
    #[must_use]
    pub fn server_log(&self) -> String {
        let Some((dir, prefix)) = &self.logs else {
            return String::new();
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix.as_str()) && n.ends_with(".log"))
        });
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect()
    }

    fn ok<T>(&self, what: &str, r: Result<T, tonic::Status>) -> T {
        r.unwrap_or_else(|e| panic!("{what}: {e:?}\n{}", self.server_log()))
    }

    /// Asserts the conditions `RuntimeReady` and `NetworkReady` are true.
    pub fn expect_ready(&self) {
        let st = self.ok(
            "Status",
            crate::call!(self, runtime.status(cri::StatusRequest::default())),
        );
        let conds = st.status.expect("status").conditions;
        for t in ["RuntimeReady", "NetworkReady"] {
            assert!(
                conds.iter().any(|c| c.r#type == t && c.status),
                "{t} not true: {conds:?}"
            );
        }
    }

    /// PullImage without credentials; the image id (`image_ref`).
    pub fn pull(&self, image: &str) -> String {
        let r = crate::call!(
            self,
            images.pull_image(cri::PullImageRequest {
                image: image_spec(image),
                ..Default::default()
            })
        );
        self.ok(&format!("PullImage {image}"), r).image_ref
    }

    /// RunPodSandbox; the pod id.
    pub fn run_pod(&self, config: &cri::PodSandboxConfig, handler: &str) -> String {
        let r = crate::call!(
            self,
            runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            })
        );
        self.ok("RunPodSandbox", r).pod_sandbox_id
    }

    /// The pod's IP (PodSandboxStatus).
    pub fn pod_ip(&self, pod_id: &str) -> String {
        let r = crate::call!(
            self,
            runtime.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.into(),
                verbose: false,
            })
        );
        self.ok("PodSandboxStatus", r)
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    /// CreateContainer; the container id.
    pub fn create(
        &self,
        pod_id: &str,
        sandbox: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> String {
        let r = crate::call!(
            self,
            runtime.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
        );
        self.ok("CreateContainer", r).container_id
    }

    /// StopPodSandbox, then RemovePodSandbox.
    pub fn remove_pod(&self, pod_id: &str) {
        let r = crate::call!(
            self,
            runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
        );
        self.ok("StopPodSandbox", r);
        let r = crate::call!(
            self,
            runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
        );
        self.ok("RemovePodSandbox", r);
    }

    /// StartContainer.
    pub fn start(&self, container_id: &str) {
        let r = crate::call!(
            self,
            runtime.start_container(cri::StartContainerRequest {
                container_id: container_id.into(),
            })
        );
        self.ok("StartContainer", r);
    }
}

/// The client suite's unknown-id checks, shared by septem-cri's and containerd's runs:
/// Status/Start/Stop/Create/ExecSync/Stats of ids that do not exist → NotFound;
/// RemoveContainer, RemovePodSandbox and RemoveImage of them succeed (idempotent, as
/// the CRI asks), StopPodSandbox succeeds or says NotFound; ImageStatus of an unknown
/// image → no image.
pub fn expect_unknown_ids(c: &Clients) {
    expect_code(
        crate::call!(
            c,
            runtime.container_status(cri::ContainerStatusRequest {
                container_id: "nope".into(),
                verbose: false,
            })
        ),
        Code::NotFound,
        "ContainerStatus",
    );
    expect_code(
        crate::call!(
            c,
            runtime.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: "nope".into(),
                verbose: false,
            })
        ),
        Code::NotFound,
        "PodSandboxStatus",
    );
    expect_code(
        crate::call!(
            c,
            runtime.start_container(cri::StartContainerRequest {
                container_id: "nope".into(),
            })
        ),
        Code::NotFound,
        "StartContainer",
    );
    expect_code(
        crate::call!(
            c,
            runtime.stop_container(cri::StopContainerRequest {
                container_id: "nope".into(),
                timeout: 1,
            })
        ),
        Code::NotFound,
        "StopContainer",
    );
    expect_code(
        crate::call!(
            c,
            runtime.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: "nope".into(),
                ..Default::default()
            })
        ),
        Code::NotFound,
        "CreateContainer in an unknown pod",
    );
    expect_code(
        crate::call!(
            c,
            runtime.exec_sync(cri::ExecSyncRequest {
                container_id: "nope".into(),
                ..Default::default()
            })
        ),
        Code::NotFound,
        "ExecSync",
    );
    // Removing and stopping what is not there is fine (idempotent).
    crate::call!(
        c,
        runtime.remove_container(cri::RemoveContainerRequest {
            container_id: "nope".into(),
        })
    )
    .expect("RemoveContainer of an unknown id");
    // containerd 1.6 answers NotFound here (the kubelet takes it as stopped); septem-cri
    // answers OK (its own test checks that).
    let stop = crate::call!(
        c,
        runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: "nope".into(),
        })
    );
    if let Err(s) = stop {
        assert_eq!(
            s.code(),
            Code::NotFound,
            "StopPodSandbox of an unknown id: {s:?}"
        );
    }
    crate::call!(
        c,
        runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: "nope".into(),
        })
    )
    .expect("RemovePodSandbox of an unknown id");
    crate::call!(
        c,
        images.remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: "example.com/absent:1".into(),
                ..Default::default()
            }),
        })
    )
    .expect("RemoveImage of an unknown image");
    let img = crate::call!(
        c,
        images.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "example.com/absent:1".into(),
                ..Default::default()
            }),
            verbose: false,
        })
    )
    .expect("ImageStatus of an unknown image");
    assert!(img.image.is_none());

    expect_code(
        crate::call!(
            c,
            runtime.container_stats(cri::ContainerStatsRequest {
                container_id: "nope".into(),
            })
        ),
        Code::NotFound,
        "ContainerStats",
    );
}

/// `Some(ImageSpec)` naming `image`.
#[must_use]
pub fn image_spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// A container config: metadata `name`, `image`, log path `<name>/0.log`.
#[must_use]
pub fn container_config(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: image_spec(image),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// Runs one call on the client's runtime: `call!(c, runtime.version(req))`.
#[macro_export]
macro_rules! call {
    ($c:expr, $svc:ident . $method:ident ( $req:expr )) => {{
        let mut client = $c.$svc.clone();
        let req = $req;
        $c.rt
            .block_on(async move { client.$method(req).await })
            .map(tonic::Response::into_inner)
    }};
}

pub fn expect_code<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: Code,
    what: &str,
) -> String {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {}", s.message());
            s.message().to_string()
        }
    }
}

pub fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.98.0.1".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec![],
        }),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

pub fn curl_until_200(url: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "2", "-w", "\n%{http_code}", url])
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.ends_with("\n200") {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no 200 from {url} within {timeout:?} (last: {text:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True (with a printed reason) unless network namespaces work and the CNI `bridge` and
/// `host-local` plugins and curl are installed.
#[must_use]
pub fn skip_unless_cni() -> bool {
    if skip_unless_net() {
        return true;
    }
    for plugin in ["bridge", "host-local"] {
        if !Path::new(CNI_PATH).join(plugin).is_file() {
            eprintln!(
                "SKIPPED: {CNI_PATH}/{plugin} is missing (apt-get install containernetworking-plugins)"
            );
            return true;
        }
    }
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED: curl is missing (apt-get install curl)");
        return true;
    }
    false
}

pub fn skip_lifecycle() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: septem-cri's pod lifecycle needs root (netns, CNI, cgroups)");
        return true;
    }
    if skip_unless_cni() {
        return true;
    }
    if !have_registry() {
        eprintln!("SKIPPED: {REGISTRY_BIN} is not installed (apt-get install docker-registry)");
        return true;
    }
    false
}

/// Pushes a plain image (one ordinary layer, made by umoci, copied by skopeo) to
/// `reg`; None (with a printed reason) when the tools are missing.
pub fn push_plain_image(reg: &Registry, tmp: &Path) -> Option<String> {
    for tool in ["umoci", "skopeo"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIPPED (non-Septem image part): {tool} is missing");
            return None;
        }
    }
    let layout = tmp.join("plain");
    let img = format!("{}:1", layout.display());
    let file = tmp.join("hello.txt");
    std::fs::write(&file, "not a unikernel\n").expect("write");
    let reference = format!("{}/other/plain:1", reg.addr);
    for argv in [
        vec!["umoci", "init", "--layout", layout.to_str().unwrap()],
        vec!["umoci", "new", "--image", &img],
        vec![
            "umoci",
            "insert",
            "--image",
            &img,
            file.to_str().unwrap(),
            "/hello.txt",
        ],
        vec![
            "skopeo",
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{img}"),
            &format!("docker://{reference}"),
        ],
    ] {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .expect("run tool");
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(reference)
}

/// `septem-build push FILE REFERENCE` (with `--username`/`--password` when `creds` are
/// given); returns the reference.
pub fn push_file(file: &Path, reference: &str, creds: Option<(&str, &str)>) -> String {
    let mut cmd = Command::new(bin("septem-build"));
    cmd.arg("push").arg(file).arg(reference).arg("-q");
    if let Some((user, password)) = creds {
        cmd.args(["--username", user, "--password", password]);
    }
    let out = cmd.output().expect("septem-build push");
    assert!(
        out.status.success(),
        "push {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    reference.to_string()
}

/// Pushes the example `name` (built once per test process) to `reg` with
/// `septem-build push` as `<reg>/septem/<name>:1`; returns that reference.
pub fn push_example(reg: &Registry, name: &str) -> String {
    push_file(
        &crate::example(name),
        &format!("{}/septem/{name}:1", reg.addr),
        None,
    )
}

/// Pushes the test guest `name` (tests/guests, built once per test process) to `reg`
/// as `<reg>/septem/<name>:1`; returns that reference.
pub fn push_guest(reg: &Registry, name: &str) -> String {
    push_file(
        &crate::guest(name),
        &format!("{}/septem/{name}:1", reg.addr),
        None,
    )
}

/// Removes the portmap plugin's rules for pod `id` (a failed test never ran CNI DEL).
pub fn remove_portmap_rules(id: &str) {
    let rules = run(&["iptables", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"]);
    for rule in rules.lines().filter(|l| l.contains(id)) {
        let Some(chain) = rule.split(" -j ").nth(1).map(str::trim) else {
            continue;
        };
        let Some(spec) = rule.strip_prefix("-A ") else {
            continue;
        };
        // The rule's comment holds quotes: let a shell split it as iptables -S printed it.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("iptables -t nat -D {spec}"))
            .status();
        let _ = Command::new("iptables")
            .args(["-t", "nat", "-F", chain])
            .status();
        let _ = Command::new("iptables")
            .args(["-t", "nat", "-X", chain])
            .status();
    }
}

/// Zombie children of `pid`.
pub fn zombies_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1) == Some(&pid.to_string().as_str()) {
            out.push(stat.clone());
        }
    }
    out
}

/// Removes the test's bridge on drop.
#[derive(Debug)]
pub struct Bridge(pub String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// True when `tool` is an executable file in a `PATH` directory.
#[must_use]
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Debian's static busybox (busybox-static), the base of the plain images below.
pub const BUSYBOX: &str = "/bin/busybox";

/// Pushes a one-layer image with the static busybox as `/bin/busybox` (links `sh`,
/// `sleep`, `httpd`, `true` next to it; `PATH=/bin`), a page at `/www/index.html`, and
/// `cmd` as its command, to `<reg>/septem/<name>:1` (umoci, then skopeo); returns that
/// reference.
pub fn push_busybox_image(reg: &Registry, dir: &Path, name: &str, cmd: &[&str]) -> String {
    let rootfs = dir.join(format!("{name}-rootfs"));
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir rootfs/bin");
    std::fs::create_dir_all(rootfs.join("www")).expect("mkdir rootfs/www");
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
    for link in ["sh", "sleep", "httpd", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(link)).expect("symlink");
    }
    std::fs::write(rootfs.join("www/index.html"), "hello from busybox httpd\n").expect("page");
    let layout = dir.join(format!("{name}.oci"));
    let image = format!("{}:1", layout.display());
    let reference = format!("{}/septem/{name}:1", reg.addr);
    let mut config = vec![
        "umoci".to_string(),
        "config".into(),
        "--image".into(),
        image.clone(),
        "--os".into(),
        "linux".into(),
        "--architecture".into(),
        "amd64".into(),
        "--config.env".into(),
        "PATH=/bin".into(),
    ];
    for arg in cmd {
        config.push("--config.cmd".into());
        config.push((*arg).to_string());
    }
    let argvs: Vec<Vec<String>> = vec![
        vec![
            "umoci".into(),
            "init".into(),
            "--layout".into(),
            layout.display().to_string(),
        ],
        vec![
            "umoci".into(),
            "new".into(),
            "--image".into(),
            image.clone(),
        ],
        vec![
            "umoci".into(),
            "insert".into(),
            "--image".into(),
            image.clone(),
            rootfs.display().to_string(),
            "/".into(),
        ],
        config,
        vec![
            "skopeo".into(),
            "copy".into(),
            "--dest-tls-verify=false".into(),
            format!("oci:{image}"),
            format!("docker://{reference}"),
        ],
    ];
    for argv in argvs {
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    reference
}

/// The pause image for containerd's `sandbox_image`: busybox sleeping until SIGTERM
/// (exit 0) or SIGKILL.
pub fn push_pause_image(reg: &Registry, dir: &Path) -> String {
    push_busybox_image(
        reg,
        dir,
        "pause",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        ],
    )
}

/// A `bridge` (gateway, no masquerade) + `host-local` network named `name` on `subnet`
/// with a default route, leases under `ipam_dir` (conflist shape; add plugins to its
/// `plugins` array).
#[must_use]
pub fn bridge_conflist(
    name: &str,
    bridge: &str,
    subnet: &str,
    ipam_dir: &Path,
) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": name,
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": subnet,
                "dataDir": ipam_dir,
                "routes": [{ "dst": "0.0.0.0/0" }],
            },
        }],
    })
}

/// Writes `conflist` as `<conf_dir>/10-<its name>.conflist`.
pub fn write_conflist(conf_dir: &Path, conflist: &serde_json::Value) {
    std::fs::create_dir_all(conf_dir).expect("mkdir conf dir");
    let name = conflist["name"].as_str().expect("a conflist has a name");
    std::fs::write(
        conf_dir.join(format!("10-{name}.conflist")),
        conflist.to_string(),
    )
    .expect("write conflist");
}

/// Writes [`bridge_conflist`] into `conf_dir`.
pub fn write_bridge_conflist(
    conf_dir: &Path,
    name: &str,
    bridge: &str,
    subnet: &str,
    ipam_dir: &Path,
) {
    write_conflist(conf_dir, &bridge_conflist(name, bridge, subnet, ipam_dir));
}

/// `deploy/containerd/septem-runtime.toml` (the runtime entry users merge into their
/// containerd config) with `BinaryName` = `runnc` and `Root` = `root`.
#[must_use]
pub fn septem_runtime_entry(runnc: &Path, root: &Path) -> String {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/containerd/septem-runtime.toml");
    let entry =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let shipped = "BinaryName = \"/usr/local/bin/runnc\"";
    assert!(
        entry.contains(shipped),
        "{} lost its {shipped}",
        file.display()
    );
    entry.replace(
        shipped,
        &format!(
            "BinaryName = \"{}\"\n  Root = \"{}\"",
            runnc.display(),
            root.display()
        ),
    )
}

/// The namespace containerd's CRI plugin keeps Kubernetes' containers in.
pub const K8S_NS: &str = "k8s.io";

/// A containerd of the test's own WITH its CRI plugin ([`Containerd::start_in`] under
/// `<dir>/containerd`, namespace `k8s.io`); the CNI conf dir and runnc's runtime root
/// under `dir`; `runc` is the default runtime handler and `septem` the runc v2 shim with
/// `BinaryName` = runnc (`Root` = `<dir>/runnc-root`, `org.septem.*` pod and container
/// annotations passed through); images from the loopback registry over plain HTTP (a
/// mirror entry). On drop: pods stopped and removed through the CRI, then containerd
/// stopped (its tasks and containers killed and deleted), then whatever runnc still has
/// under its root force-deleted.
#[derive(Debug)]
pub struct ContainerdCri {
    containerd: Option<Containerd>,
    /// The scratch directory.
    pub dir: PathBuf,
    /// containerd's gRPC socket (CRI and ctr).
    pub socket: PathBuf,
    /// The CNI conf dir the CRI plugin reads.
    pub cni_conf: PathBuf,
    /// The runc v2 shim's `Root` for the `septem` handler; runnc's `--root` is
    /// `<runnc_root>/k8s.io`.
    pub runnc_root: PathBuf,
}

impl ContainerdCri {
    /// Prepares the directories (the CNI conflist must be in [`ContainerdCri::cni_conf`]
    /// before [`ContainerdCri::start`]).
    #[must_use]
    pub fn new(dir: &Path) -> ContainerdCri {
        let cni_conf = dir.join("net.d");
        std::fs::create_dir_all(&cni_conf).expect("mkdir net.d");
        ContainerdCri {
            containerd: None,
            dir: dir.to_path_buf(),
            socket: Containerd::socket_in(&dir.join("containerd")),
            cni_conf,
            runnc_root: dir.join("runnc-root"),
        }
    }

    /// containerd's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.containerd
            .as_ref()
            .map(Containerd::log)
            .unwrap_or_default()
    }

    /// Clients of containerd's CRI whose helpers' panics print its log.
    #[must_use]
    pub fn clients(&self) -> Clients {
        Clients::with_logs(&self.socket, &self.dir.join("containerd"), "containerd")
    }

    /// Starts containerd with `registry` (`127.0.0.1:PORT`) as a plain-HTTP mirror,
    /// `sandbox_image` as the pause image and `runnc` as the `septem` handler's
    /// binary; returns once the CRI answers `Version`.
    pub fn start(&mut self, registry: &str, sandbox_image: &str, runnc: &Path) {
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let ours = format!(
            "[{cri}]\n  sandbox_image = \"{sandbox_image}\"\n  restrict_oom_score_adj = true\n  \
             stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\
             [{cri}.containerd]\n  default_runtime_name = \"runc\"\n\
             [{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
             [{cri}.cni]\n  bin_dir = \"{CNI_PATH}\"\n  conf_dir = \"{conf}\"\n\
             [{cri}.registry.mirrors.\"{registry}\"]\n  endpoint = [\"http://{registry}\"]\n",
            conf = self.cni_conf.display(),
        );
        let config = format!("{ours}\n{}", septem_runtime_entry(runnc, &self.runnc_root));
        let containerd = Containerd::start_in(&self.dir.join("containerd"), &config, K8S_NS);
        self.containerd = Some(containerd);
        let deadline = Instant::now() + Duration::from_secs(30);
        let c = Clients::new(&self.socket);
        while call!(c, runtime.version(cri::VersionRequest::default())).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd's CRI did not answer within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ctr --address SOCK --namespace k8s.io ARGS…`: its stdout (errors ignored).
    #[must_use]
    pub fn ctr_quiet(&self, args: &[&str]) -> String {
        self.containerd
            .as_ref()
            .map(|c| c.ctr(args).stdout)
            .unwrap_or_default()
    }

    /// What runnc keeps under its root for `k8s.io`, runc's `.runc` excepted.
    #[must_use]
    pub fn runnc_left(&self) -> Vec<String> {
        std::fs::read_dir(self.runnc_root.join(K8S_NS))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != ".runc")
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops and removes every pod through the CRI (CNI DEL, netns removed).
    fn remove_pods(&self) {
        let c = Clients::new(&self.socket);
        let pods = call!(
            c,
            runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default())
        )
        .map(|r| r.items)
        .unwrap_or_default();
        for pod in pods {
            let _ = call!(
                c,
                runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
            );
            let _ = call!(
                c,
                runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: pod.id,
                })
            );
        }
    }
}

impl Drop for ContainerdCri {
    fn drop(&mut self) {
        let Some(mut containerd) = self.containerd.take() else {
            return;
        };
        if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
            self.remove_pods();
        }
        containerd.stop();
        let root = self.runnc_root.join(K8S_NS);
        for name in self.runnc_left() {
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
