//! septem-cri's API surface beyond the pod flow, through real gRPC (k8s-cri's tonic
//! clients on the unix socket), a real registry (Debian's `docker-registry` on
//! loopback, with htpasswd auth where needed) and real CNI:
//!
//! - `every_method_answers`: each RuntimeService and ImageService method of k8s-cri 0.11
//!   answers a bare server; the unsupported ones with their code and a message.
//! - `pinned_images_and_registry_credentials`: `pinned-images` in the config file →
//!   ListImages/ImageStatus `pinned`, RemoveImage refused (`FailedPrecondition`); a
//!   registry with htpasswd auth refuses a pull without or with wrong credentials or a
//!   bearer token it does not know (`Unauthenticated`), and accepts username/password
//!   and `auth` (base64 `user:password`).
//! - `identity_token_through_a_token_service`: docker-registry with token auth and the
//!   test's token service: `identity_token` is exchanged (OAuth2 refresh-token grant)
//!   for the pull's bearer token; a wrong one is `Unauthenticated`.
//! - `block_devices_reach_the_guest`: CRI `devices` (`/septem/block/<name>`, files on
//!   the host) become the `block_rw` guest's block devices (its writes land in the file,
//!   the read-only one refuses writes); other container paths are `InvalidArgument`.
//! - `ordinary_images_handlers_devices_and_metrics`: `septem-seccomp`/`septem-kvm` refuse
//!   an ordinary image (`InvalidArgument`), `septem` runs it; an ordinary container's
//!   device node reaches it through runc; ListPodSandboxMetrics reports its CPU, memory
//!   and the pod's eth0 counters.
//!
//! Each test prints `SKIPPED: <reason>` when what it needs is missing.

use k8s_cri::v1 as cri;
use septem_tests::call;
use septem_tests::cri::{
    container_config, expect_code, free_port, have_registry, image_spec, on_path, pod_config,
    push_example, push_file, run, skip_lifecycle, Bridge, Clients, Registry, Server, BUSYBOX,
    REGISTRY_BIN,
};
use septem_tests::guest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Code;

const USER: &str = "kubelet";
const PASSWORD: &str = "s3cret:with-colon";

/// Debian's docker-registry with an `auth:` section of its configuration, on a free
/// loopback port, storing under `storage`; killed on drop.
struct AuthRegistry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl AuthRegistry {
    /// htpasswd auth (bcrypt, made by apache2-utils' `htpasswd`) for USER/PASSWORD.
    fn htpasswd() -> AuthRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        let out = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .expect("run htpasswd");
        assert!(out.status.success(), "htpasswd: {out:?}");
        std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: septem-test\n    path: {}\n",
            htpasswd.display()
        );
        let storage = dir.path().join("storage");
        AuthRegistry::start(dir, &auth, &storage)
    }

    fn start(dir: tempfile::TempDir, auth: &str, storage: &Path) -> AuthRegistry {
        let addr = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             {auth}http:\n  addr: {addr}\n",
            storage.display(),
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
        let reg = AuthRegistry { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pull(c: &Clients, image: &str, auth: Option<cri::AuthConfig>) -> Result<String, tonic::Status> {
    call!(
        c,
        images.pull_image(cri::PullImageRequest {
            image: image_spec(image),
            auth,
            sandbox_config: None,
        })
    )
    .map(|r| r.image_ref)
}

fn image_status(c: &Clients, image: &str) -> Option<cri::Image> {
    call!(
        c,
        images.image_status(cri::ImageStatusRequest {
            image: image_spec(image),
            verbose: false,
        })
    )
    .expect("ImageStatus")
    .image
}

/// [`container_config`] running `command` (the image's own when empty).
fn config_with_command(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        command: command.iter().map(|s| (*s).to_string()).collect(),
        ..container_config(name, image)
    }
}

/// A septem-cri on a bridge network of its own (`sptap<N><tag>`, `subnet`), started.
fn server_with_network(dir: &Path, tag: char, subnet: &str) -> (Server, Bridge) {
    let server = Server::new(dir);
    let bridge = Bridge(format!("sptap{}{tag}", std::process::id() % 10_000));
    septem_tests::cri::write_bridge_conflist(
        &server.cni_conf,
        "septem-cri-api-test",
        &bridge.0,
        subnet,
        &dir.join("ipam"),
    );
    (server, bridge)
}

fn create(
    c: &Clients,
    pod: &str,
    sandbox: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    call!(
        c,
        runtime.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        })
    )
    .map(|r| r.container_id)
}

fn status(c: &Clients, id: &str) -> cri::ContainerStatus {
    call!(
        c,
        runtime.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
    )
    .expect("ContainerStatus")
    .status
    .expect("status")
}

/// The container's status once it has exited, or its last state after `timeout`.
fn wait_exited(c: &Clients, id: &str, timeout: Duration) -> Result<cri::ContainerStatus, i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(c, id);
        if s.state == cri::ContainerState::ContainerExited as i32 {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            return Err(s.state);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every method of both services answers a bare septem-cri (no CNI config, no pods):
/// what works answers OK, what cannot or is not built answers its code and says why.
#[test]
fn every_method_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::new(tmp.path());
    server.start();
    let c = Clients::new(&server.socket);
    let nope = || "nope".to_string();

    // Answers OK.
    call!(c, runtime.version(cri::VersionRequest::default())).expect("Version");
    call!(c, runtime.status(cri::StatusRequest::default())).expect("Status");
    call!(c, runtime.runtime_config(cri::RuntimeConfigRequest {})).expect("RuntimeConfig");
    call!(
        c,
        runtime.update_runtime_config(cri::UpdateRuntimeConfigRequest::default())
    )
    .expect("UpdateRuntimeConfig");
    call!(
        c,
        runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default())
    )
    .expect("ListPodSandbox");
    call!(
        c,
        runtime.list_containers(cri::ListContainersRequest::default())
    )
    .expect("ListContainers");
    call!(
        c,
        runtime.list_container_stats(cri::ListContainerStatsRequest::default())
    )
    .expect("ListContainerStats");
    call!(
        c,
        runtime.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
    )
    .expect("ListPodSandboxStats");
    let d = call!(
        c,
        runtime.list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
    )
    .expect("ListMetricDescriptors")
    .descriptors;
    for want in [
        "container_cpu_usage_seconds_total",
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    ] {
        let m = d.iter().find(|m| m.name == want).expect(want);
        assert!(!m.help.is_empty() && !m.label_keys.is_empty(), "{m:?}");
    }
    let pm = call!(
        c,
        runtime.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
    )
    .expect("ListPodSandboxMetrics");
    assert!(pm.pod_metrics.is_empty(), "{pm:?}");
    call!(
        c,
        runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: nope()
        })
    )
    .expect("StopPodSandbox of an unknown id (idempotent)");
    call!(
        c,
        runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: nope()
        })
    )
    .expect("RemovePodSandbox of an unknown id (idempotent)");
    call!(
        c,
        runtime.remove_container(cri::RemoveContainerRequest {
            container_id: nope()
        })
    )
    .expect("RemoveContainer of an unknown id (idempotent)");
    call!(c, images.list_images(cri::ListImagesRequest::default())).expect("ListImages");
    call!(
        c,
        images.image_status(cri::ImageStatusRequest {
            image: image_spec("example.com/none:1"),
            verbose: false
        })
    )
    .expect("ImageStatus of a missing image (empty)");
    call!(
        c,
        images.remove_image(cri::RemoveImageRequest {
            image: image_spec("example.com/none:1")
        })
    )
    .expect("RemoveImage of a missing image (idempotent)");
    call!(c, images.image_fs_info(cri::ImageFsInfoRequest {})).expect("ImageFsInfo");
    {
        let mut client = c.runtime.clone();
        let stream = c.rt.block_on(async move {
            client
                .get_container_events(cri::GetEventsRequest {})
                .await
                .map(tonic::Response::into_inner)
        });
        stream.expect("GetContainerEvents opens a stream");
    }

    // Answers a status that says why.
    let mut refused: Vec<(&str, Code, String)> = Vec::new();
    let mut check = |what: &'static str, r: Result<(), tonic::Status>, code: Code| {
        let m = expect_code(r, code, what);
        assert!(!m.is_empty(), "{what}: empty message");
        refused.push((what, code, m));
    };
    let pod = || cri::PodSandboxStatusRequest {
        pod_sandbox_id: nope(),
        verbose: false,
    };
    check(
        "PodSandboxStatus",
        call!(c, runtime.pod_sandbox_status(pod())).map(drop),
        Code::NotFound,
    );
    check(
        "RunPodSandbox without a config",
        call!(
            c,
            runtime.run_pod_sandbox(cri::RunPodSandboxRequest::default())
        )
        .map(drop),
        Code::InvalidArgument,
    );
    check(
        "CreateContainer",
        call!(
            c,
            runtime.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: nope(),
                ..Default::default()
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "StartContainer",
        call!(
            c,
            runtime.start_container(cri::StartContainerRequest {
                container_id: nope()
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "StopContainer",
        call!(
            c,
            runtime.stop_container(cri::StopContainerRequest {
                container_id: nope(),
                timeout: 0
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "ContainerStatus",
        call!(
            c,
            runtime.container_status(cri::ContainerStatusRequest {
                container_id: nope(),
                verbose: false
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "UpdateContainerResources",
        call!(
            c,
            runtime.update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: nope(),
                ..Default::default()
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "ReopenContainerLog",
        call!(
            c,
            runtime.reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: nope()
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "ExecSync",
        call!(
            c,
            runtime.exec_sync(cri::ExecSyncRequest {
                container_id: nope(),
                cmd: vec!["true".into()],
                timeout: 1
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "Exec",
        call!(
            c,
            runtime.exec(cri::ExecRequest {
                container_id: nope(),
                cmd: vec!["sh".into()],
                stdout: true,
                ..Default::default()
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "Attach",
        call!(
            c,
            runtime.attach(cri::AttachRequest {
                container_id: nope(),
                stdout: true,
                ..Default::default()
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "PortForward",
        call!(
            c,
            runtime.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: nope(),
                port: vec![80]
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "ContainerStats",
        call!(
            c,
            runtime.container_stats(cri::ContainerStatsRequest {
                container_id: nope()
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "PodSandboxStats",
        call!(
            c,
            runtime.pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: nope()
            })
        )
        .map(drop),
        Code::NotFound,
    );
    check(
        "CheckpointContainer",
        call!(
            c,
            runtime.checkpoint_container(cri::CheckpointContainerRequest {
                container_id: nope(),
                ..Default::default()
            })
        )
        .map(drop),
        Code::Unimplemented,
    );
    check(
        "PullImage without an image",
        call!(c, images.pull_image(cri::PullImageRequest::default())).map(drop),
        Code::InvalidArgument,
    );
    let (_, _, checkpoint) = refused
        .iter()
        .find(|(w, _, _)| *w == "CheckpointContainer")
        .expect("checkpoint");
    assert!(
        checkpoint.contains("unikernel") && checkpoint.contains("ordinary"),
        "{checkpoint}"
    );
    for (what, code, m) in &refused {
        eprintln!("{what}: {code:?}: {m}");
    }
    assert_eq!(server.stop(), Some(0));
}

/// The registry tests need docker-registry and apache2-utils' htpasswd.
fn skip_auth_registry() -> bool {
    if !have_registry() {
        eprintln!("SKIPPED: {REGISTRY_BIN} is not installed (apt-get install docker-registry)");
        return true;
    }
    if !on_path("htpasswd") {
        eprintln!("SKIPPED: htpasswd is missing (apt-get install apache2-utils)");
        return true;
    }
    false
}

#[test]
fn pinned_images_and_registry_credentials() {
    if skip_auth_registry() {
        return;
    }
    let reg = AuthRegistry::htpasswd();
    let pinned = push_file(
        &septem_tests::example("httpd"),
        &format!("{}/septem/httpd:1", reg.addr),
        Some((USER, PASSWORD)),
    );
    let other = push_file(
        &guest("hello"),
        &format!("{}/septem/hello:1", reg.addr),
        Some((USER, PASSWORD)),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::new(tmp.path());
    // Server::start passes --config <dir>/cri.toml: the pin goes there.
    std::fs::write(
        tmp.path().join("cri.toml"),
        format!("default-backend = \"seccomp\"\npinned-images = [\"{pinned}\"]\n"),
    )
    .expect("write cri.toml");
    server.start();
    let c = Clients::new(&server.socket);

    // Credentials: none, wrong ones, and a bearer token htpasswd does not know are
    // refused with Unauthenticated, saying so.
    let m = expect_code(pull(&c, &pinned, None), Code::Unauthenticated, "no creds");
    assert!(m.contains(&reg.addr) && m.contains("credentials"), "{m}");
    let wrong = cri::AuthConfig {
        username: USER.into(),
        password: "wrong".into(),
        ..Default::default()
    };
    expect_code(
        pull(&c, &pinned, Some(wrong)),
        Code::Unauthenticated,
        "wrong password",
    );
    let token = cri::AuthConfig {
        registry_token: "not-a-token-this-registry-knows".into(),
        ..Default::default()
    };
    let m = expect_code(
        pull(&c, &pinned, Some(token)),
        Code::Unauthenticated,
        "registry token",
    );
    assert!(m.contains("Bearer"), "{m}");
    let bad_auth = cri::AuthConfig {
        auth: "!!".into(),
        ..Default::default()
    };
    expect_code(
        pull(&c, &pinned, Some(bad_auth)),
        Code::InvalidArgument,
        "auth not base64",
    );
    assert!(image_status(&c, &pinned).is_none(), "nothing stored yet");

    // username/password, and auth = base64(user:password).
    let pinned_id = pull(
        &c,
        &pinned,
        Some(cri::AuthConfig {
            username: USER.into(),
            password: PASSWORD.into(),
            ..Default::default()
        }),
    )
    .unwrap_or_else(|e| panic!("pull with username/password: {e:?}\n{}", reg.log()));
    let other_id = {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        pull(
            &c,
            &other,
            Some(cri::AuthConfig {
                auth,
                ..Default::default()
            }),
        )
        .expect("pull with auth")
    };
    assert_ne!(pinned_id, other_id);

    // Pinned: reported, and not removed.
    let st = image_status(&c, &pinned).expect("pinned image stored");
    assert!(st.pinned, "{st:?}");
    assert!(!image_status(&c, &other).expect("other stored").pinned);
    let listed = call!(c, images.list_images(cri::ListImagesRequest::default()))
        .expect("ListImages")
        .images;
    assert_eq!(listed.len(), 2);
    for i in &listed {
        assert_eq!(i.pinned, i.id == pinned_id, "{i:?}");
    }
    for name in [pinned.clone(), pinned_id.clone()] {
        let m = expect_code(
            call!(
                c,
                images.remove_image(cri::RemoveImageRequest {
                    image: image_spec(&name)
                })
            ),
            Code::FailedPrecondition,
            "RemoveImage of a pinned image",
        );
        assert!(m.contains("pinned") && m.contains(&pinned), "{m}");
    }
    assert!(image_status(&c, &pinned).is_some(), "still there");
    call!(
        c,
        images.remove_image(cri::RemoveImageRequest {
            image: image_spec(&other)
        })
    )
    .expect("RemoveImage of an unpinned image");
    assert!(image_status(&c, &other).is_none());
    assert_eq!(server.stop(), Some(0));
}

const IDENTITY_TOKEN: &str = "refresh-token-of-kubelet";
const TOKEN_SERVICE: &str = "septem-test-registry";
const TOKEN_ISSUER: &str = "septem-test-issuer";

/// A token service of the distribution token spec for the test's registry (docker-
/// registry has none of its own): it answers the OAuth2 refresh-token grant for
/// IDENTITY_TOKEN with an RS256 JWT (signed by `openssl dgst` with a self-signed key
/// whose certificate is in the JWT's `x5c` and the registry's `rootcertbundle`) giving
/// the scope's access; anything else is 401. Records the grants it saw.
struct TokenService {
    addr: String,
    cert: PathBuf,
    key: PathBuf,
    x5c: String,
    grants: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn form_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenService {
    fn start(dir: &Path) -> TokenService {
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=septem-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl req");
        assert!(out.status.success(), "openssl req: {out:?}");
        // x5c is the certificate's DER in standard base64: the PEM's body.
        let x5c: String = std::fs::read_to_string(&cert)
            .expect("read cert")
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let grants = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&grants);
        let (signing_key, chain) = (key.clone(), x5c.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = Self::answer(conn, &signing_key, &chain, &seen);
            }
        });
        TokenService {
            addr,
            cert,
            key,
            x5c,
            grants,
        }
    }

    fn answer(
        mut conn: std::net::TcpStream,
        key: &Path,
        x5c: &str,
        seen: &std::sync::Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        use std::io::{BufRead as _, Read as _, Write as _};
        let mut reader = std::io::BufReader::new(conn.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let form: std::collections::HashMap<String, String> = String::from_utf8_lossy(&body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (form_decode(k), form_decode(v)))
            .collect();
        let grant = form.get("grant_type").cloned().unwrap_or_default();
        let scope = form.get("scope").cloned().unwrap_or_default();
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{} {grant} {scope}", request_line.trim()));
        let ok = request_line.starts_with("POST ")
            && grant == "refresh_token"
            && form.get("refresh_token").map(String::as_str) == Some(IDENTITY_TOKEN)
            && form.get("service").map(String::as_str) == Some(TOKEN_SERVICE);
        let (status, json) = if ok {
            let jwt = Self::jwt(key, x5c, &scope);
            (
                "200 OK",
                serde_json::json!({ "access_token": jwt, "expires_in": 300 }).to_string(),
            )
        } else {
            (
                "401 Unauthorized",
                r#"{"error":"invalid_grant"}"#.to_string(),
            )
        };
        write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{json}",
            json.len()
        )
    }

    /// An RS256 JWT granting `scope` (`repository:NAME:ACTIONS`).
    fn jwt(key: &Path, x5c: &str, scope: &str) -> String {
        use base64::Engine as _;
        use std::io::Write as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let mut parts = scope.splitn(3, ':');
        let (kind, name, actions) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5c": [x5c] });
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER, "sub": USER, "aud": TOKEN_SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}"),
            "access": [{ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }],
        });
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run openssl dgst");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(signed.as_bytes())
            .expect("write to openssl");
        let out = child.wait_with_output().expect("openssl dgst");
        format!("{signed}.{}", b64(&out.stdout))
    }

    fn grants(&self) -> Vec<String> {
        self.grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// An identity token (CRI `AuthConfig.identity_token`) is exchanged at the registry's
/// token service (OAuth2 refresh-token grant) for the pull's bearer token.
#[test]
fn identity_token_through_a_token_service() {
    if !have_registry() {
        eprintln!("SKIPPED: {REGISTRY_BIN} is not installed (apt-get install docker-registry)");
        return;
    }
    if !on_path("openssl") {
        eprintln!("SKIPPED: openssl is missing (apt-get install openssl)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let storage = tmp.path().join("storage");
    // The image goes in through the same storage with no auth, then the registry is
    // served with token auth.
    {
        let open = AuthRegistry::start(tempfile::tempdir().expect("tempdir"), "", &storage);
        push_file(
            &guest("hello"),
            &format!("{}/septem/hello:1", open.addr),
            None,
        );
    }
    let tokens = TokenService::start(tmp.path());
    let auth = format!(
        "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    \
         issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
        tokens.addr,
        tokens.cert.display()
    );
    let reg = AuthRegistry::start(tempfile::tempdir().expect("tempdir"), &auth, &storage);
    let image = format!("{}/septem/hello:1", reg.addr);
    let mut server = Server::new(&tmp.path().join("cri"));
    server.start();
    let c = Clients::new(&server.socket);

    let m = expect_code(pull(&c, &image, None), Code::Unauthenticated, "anonymous");
    assert!(m.contains(&reg.addr), "{m}");
    let identity = |token: &str| {
        Some(cri::AuthConfig {
            identity_token: token.into(),
            ..Default::default()
        })
    };
    let m = expect_code(
        pull(&c, &image, identity("not-the-token")),
        Code::Unauthenticated,
        "a wrong identity token",
    );
    assert!(
        m.contains("token service") && m.contains("invalid_grant"),
        "{m}"
    );
    let id = pull(&c, &image, identity(IDENTITY_TOKEN))
        .unwrap_or_else(|e| panic!("pull with the identity token: {e:?}\n{}", reg.log()));
    assert!(id.starts_with("sha256:"), "{id}");
    // A registry token is sent as the bearer as it is: one the service issued pulls.
    let registry_token =
        TokenService::jwt(&tokens.key, &tokens.x5c, "repository:septem/hello:pull");
    let granted = tokens.grants().len();
    let again = pull(
        &c,
        &image,
        Some(cri::AuthConfig {
            registry_token,
            ..Default::default()
        }),
    )
    .expect("pull with a registry token");
    assert_eq!(again, id);
    assert_eq!(
        tokens.grants().len(),
        granted,
        "no exchange for a registry token"
    );
    let grants = tokens.grants();
    assert!(
        grants.iter().any(|g| g.starts_with("POST /token")
            && g.ends_with("refresh_token repository:septem/hello:pull")),
        "{grants:?}"
    );
    assert_eq!(server.stop(), Some(0));
}

/// A file of `sectors` 512-byte sectors whose byte at offset `o` is `f(o)`.
fn disk_file(path: &Path, len: u64, f: impl Fn(u64) -> u8) -> PathBuf {
    let bytes: Vec<u8> = (0..len).map(f).collect();
    std::fs::write(path, bytes).expect("write disk file");
    path.to_path_buf()
}

#[test]
fn block_devices_reach_the_guest() {
    if skip_lifecycle() {
        return;
    }
    let reg = Registry::start();
    let image = push_file(
        &guest("block_rw"),
        &format!("{}/septem/block_rw:1", reg.addr),
        None,
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut server, _bridge) = server_with_network(tmp.path(), 'b', "10.93.1.0/24");
    server.start();
    let c = Clients::new(&server.socket);
    pull(&c, &image, None).expect("pull block_rw");

    // The files the guest gets: `disk` read-write (block_rw's pattern), `ro` read-only.
    let disk = disk_file(&tmp.path().join("disk.img"), 8192 * 512, |o| {
        (o * 7 % 251) as u8
    });
    let ro = disk_file(&tmp.path().join("ro.img"), 4096, |o| (o * 3 % 256) as u8);
    let log_dir = tmp.path().join("logs");
    let sandbox = pod_config("block", &log_dir);
    let pod = c.run_pod(&sandbox, "septem-seccomp");
    let device = |container: &str, host: &Path, permissions: &str| cri::Device {
        container_path: container.into(),
        host_path: host.display().to_string(),
        permissions: permissions.into(),
    };

    // A device elsewhere than /septem/block/<name>, or a character device: refused, saying
    // why.
    let mut bad = config_with_command("bad", &image, &[]);
    bad.devices = vec![device("/dev/xvdb", &disk, "rw")];
    let m = expect_code(
        create(&c, &pod, &sandbox, bad.clone()),
        Code::InvalidArgument,
        "device outside /septem/block",
    );
    assert!(
        m.contains("/dev/xvdb") && m.contains("/septem/block/<name>"),
        "{m}"
    );
    bad.devices = vec![device("/septem/block/disk", Path::new("/dev/null"), "rw")];
    let m = expect_code(
        create(&c, &pod, &sandbox, bad),
        Code::InvalidArgument,
        "a character device",
    );
    assert!(
        m.contains("neither a regular file nor a block device"),
        "{m}"
    );

    run_block_rw(&c, &server, &pod, &sandbox, &image, &disk, &disk, &ro);
    // The disk as a host block device node (a loop device over a fresh file): what the
    // kubelet hands over for a volumeMode: Block volume.
    let fresh = disk_file(&tmp.path().join("loop.img"), 8192 * 512, |o| {
        (o * 7 % 251) as u8
    });
    match LoopDevice::attach(&fresh) {
        Some(dev) => run_block_rw(&c, &server, &pod, &sandbox, &image, &dev.0, &fresh, &ro),
        None => eprintln!("SKIPPED (loop device part): losetup found no free loop device"),
    }
    c.remove_pod(&pod);
    assert_eq!(server.stop(), Some(0));
}

/// A loop device over a file (`losetup --find --show`); detached on drop.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(file: &Path) -> Option<LoopDevice> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(LoopDevice(PathBuf::from(dev)))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// Runs the `block_rw` guest with `disk_host` (whose contents are in `disk_file`) as
/// its `disk` and `ro` read-only; checks its verdict, its write in `disk_file` and the
/// bundle's mounts, then removes the container.
#[allow(clippy::too_many_arguments)]
fn run_block_rw(
    c: &Clients,
    server: &Server,
    pod: &str,
    sandbox: &cri::PodSandboxConfig,
    image: &str,
    disk_host: &Path,
    disk_file: &Path,
    ro: &Path,
) {
    let device = |container: &str, host: &Path, permissions: &str| cri::Device {
        container_path: container.into(),
        host_path: host.display().to_string(),
        permissions: permissions.into(),
    };
    let disk = disk_host;
    eprintln!("block_rw with disk {}", disk.display());
    let log_dir = PathBuf::from(&sandbox.log_directory);
    let mut config = config_with_command("block", image, &[]);
    config.devices = vec![
        device("/septem/block/disk", disk, "mrw"),
        device("/septem/block/ro", ro, "r"),
    ];
    let id = create(c, pod, sandbox, config)
        .unwrap_or_else(|e| panic!("CreateContainer: {e:?}\n{}", server.log()));
    // The bundle's mounts are runnc's block device convention.
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            server
                .state()
                .join(format!("containers/{id}/bundle/config.json")),
        )
        .expect("config.json"),
    )
    .expect("config.json parses");
    let mounts = spec["mounts"].as_array().expect("mounts");
    let mount = |dest: &str| {
        mounts
            .iter()
            .find(|m| m["destination"] == dest)
            .unwrap_or_else(|| panic!("no {dest} in {mounts:?}"))
    };
    assert_eq!(
        mount("/septem/block/disk")["source"],
        disk.display().to_string()
    );
    assert!(mount("/septem/block/disk")["options"]
        .as_array()
        .unwrap()
        .contains(&"rw".into()));
    assert!(mount("/septem/block/ro")["options"]
        .as_array()
        .unwrap()
        .contains(&"ro".into()));

    c.start(&id);
    let st = wait_exited(c, &id, Duration::from_secs(60)).unwrap_or_else(|state| {
        let dir = server.state().join("containers").join(&id);
        let file = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
        let procs = run(&["ps", "-eo", "pid,ppid,stat,etime,args"]);
        panic!(
            "{id} still in state {state} after 60 s\nguest log:\n{}\nrunnc.log:\n{}\nshim.log:\n{}\nprocesses:\n{procs}\nseptem-cri:\n{}",
            std::fs::read_to_string(PathBuf::from(&sandbox.log_directory).join("block/0.log"))
                .unwrap_or_default(),
            file("runnc.log"),
            file("shim.log"),
            server.log()
        )
    });
    let log = std::fs::read_to_string(log_dir.join("block/0.log")).unwrap_or_default();
    assert_eq!(st.exit_code, 0, "block_rw failed:\n{log}\n{}", server.log());
    assert!(log.contains("block_rw: OK"), "{log}");
    assert!(
        log.contains("block_rw: ro index=1 sectors=8 sector_size=512 read_only=true"),
        "{log}"
    );
    // The guest's writes are in the host file: the last sector is 0xc0s.
    let bytes = std::fs::read(disk_file).expect("read disk");
    assert!(
        bytes[bytes.len() - 512..].iter().all(|b| *b == 0xc0),
        "the guest's write did not reach {} (through {})",
        disk_file.display(),
        disk.display()
    );
    call!(
        c,
        runtime.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone()
        })
    )
    .expect("RemoveContainer");
    std::fs::remove_file(log_dir.join("block/0.log")).expect("remove the log");
}

/// A one-layer busybox image whose command is `sleep 1000`, pushed to `reg`. Made with
/// `umoci unpack`/`repack` (umoci 0.4.7's `insert` writes a tar without its end blocks,
/// which septem-cri's pull refuses), copied by skopeo.
fn push_sleeper(reg: &Registry, dir: &Path) -> String {
    let layout = dir.join("sleeper.oci");
    let bundle = dir.join("sleeper-bundle");
    let image = format!("{}:1", layout.display());
    let reference = format!("{}/other/sleeper:1", reg.addr);
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
    tool(&["umoci", "init", "--layout", &layout.display().to_string()]);
    tool(&["umoci", "new", "--image", &image]);
    tool(&[
        "umoci",
        "unpack",
        "--image",
        &image,
        &bundle.display().to_string(),
    ]);
    let bin_dir = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir rootfs/bin");
    std::fs::copy(BUSYBOX, bin_dir.join("busybox")).expect("copy busybox");
    for link in ["sh", "sleep", "ls"] {
        std::os::unix::fs::symlink("busybox", bin_dir.join(link)).expect("symlink");
    }
    tool(&[
        "umoci",
        "repack",
        "--image",
        &image,
        &bundle.display().to_string(),
    ]);
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
        "/bin/sleep",
        "--config.cmd",
        "1000",
    ]);
    tool(&[
        "skopeo",
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{image}"),
        &format!("docker://{reference}"),
    ]);
    reference
}

#[test]
fn ordinary_images_handlers_devices_and_metrics() {
    if skip_lifecycle() {
        return;
    }
    for tool in ["umoci", "skopeo"] {
        if !on_path(tool) {
            eprintln!("SKIPPED: {tool} is missing (apt-get install {tool})");
            return;
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        eprintln!("SKIPPED: {BUSYBOX} is missing (apt-get install busybox-static)");
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let busybox = push_sleeper(&reg, tmp.path());
    let httpd = push_example(&reg, "httpd");
    let (mut server, _bridge) = server_with_network(tmp.path(), 'o', "10.93.2.0/24");
    server.start();
    let c = Clients::new(&server.socket);
    pull(&c, &busybox, None).expect("pull busybox");
    pull(&c, &httpd, None).expect("pull httpd");
    let log_dir = tmp.path().join("logs");

    // Explicit unikernel handlers refuse the ordinary image, saying what to use.
    for handler in ["septem-seccomp", "septem-kvm"] {
        let sandbox = pod_config(&format!("strict-{}", &handler[7..]), &log_dir);
        let pod = c.run_pod(&sandbox, handler);
        let m = expect_code(
            create(
                &c,
                &pod,
                &sandbox,
                config_with_command("side", &busybox, &[]),
            ),
            Code::InvalidArgument,
            handler,
        );
        assert!(
            m.contains("ordinary") && m.contains(handler) && m.contains("\"septem\""),
            "{m}"
        );
        c.remove_pod(&pod);
    }

    // `septem` runs it; a device node reaches it through runc, with the cgroup rule.
    let sandbox = pod_config("mixed", &log_dir);
    let pod = c.run_pod(&sandbox, "septem");
    let mut side = config_with_command("side", &busybox, &[]);
    side.devices = vec![cri::Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    let side = create(&c, &pod, &sandbox, side)
        .unwrap_or_else(|e| panic!("CreateContainer (busybox): {e:?}\n{}", server.log()));
    c.start(&side);
    let out = call!(
        c,
        runtime.exec_sync(cri::ExecSyncRequest {
            container_id: side.clone(),
            cmd: [
                "/bin/busybox",
                "sh",
                "-c",
                "echo x > /dev/mynull && /bin/busybox ls -l /dev/mynull"
            ]
            .iter()
            .map(|s| (*s).to_string())
            .collect(),
            timeout: 10,
        })
    )
    .expect("ExecSync");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with('c') && text.contains("1,   3"), "{text}");

    // A unikernel in the same pod, and the pod's metrics.
    let web = create(&c, &pod, &sandbox, config_with_command("web", &httpd, &[]))
        .unwrap_or_else(|e| panic!("CreateContainer (httpd): {e:?}\n{}", server.log()));
    c.start(&web);
    let metrics = call!(
        c,
        runtime.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
    )
    .expect("ListPodSandboxMetrics")
    .pod_metrics;
    let pm = metrics
        .iter()
        .find(|m| m.pod_sandbox_id == pod)
        .unwrap_or_else(|| panic!("pod {pod} not in {metrics:?}"));
    let value = |ms: &[cri::Metric], name: &str| -> (u64, Vec<String>) {
        let m = ms
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name} in {ms:?}"));
        (
            m.value.as_ref().expect("value").value,
            m.label_values.clone(),
        )
    };
    let (rx, labels) = value(&pm.metrics, "container_network_receive_bytes_total");
    assert_eq!(labels, [pod.clone(), "mixed".into(), "eth0".into()]);
    let _ = rx;
    value(&pm.metrics, "container_network_transmit_bytes_total");
    assert_eq!(pm.container_metrics.len(), 2, "{pm:?}");
    for (id, name, image) in [(&side, "side", &busybox), (&web, "web", &httpd)] {
        let cm = pm
            .container_metrics
            .iter()
            .find(|m| m.container_id == **id)
            .unwrap_or_else(|| panic!("{name} not in {pm:?}"));
        let (mem, labels) = value(&cm.metrics, "container_memory_usage_bytes");
        assert!(mem > 0, "{name}: memory {mem}");
        assert_eq!(labels, [(*id).clone(), name.to_string(), (*image).clone()]);
        value(&cm.metrics, "container_memory_working_set_bytes");
        value(&cm.metrics, "container_cpu_usage_seconds_total");
    }
    let descriptors = call!(
        c,
        runtime.list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
    )
    .expect("ListMetricDescriptors")
    .descriptors;
    for m in pm
        .metrics
        .iter()
        .chain(pm.container_metrics.iter().flat_map(|c| c.metrics.iter()))
    {
        let d = descriptors
            .iter()
            .find(|d| d.name == m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
    }

    // The streaming calls: not built for ordinary containers, impossible in unikernels.
    let exec = |id: &str| {
        call!(
            c,
            runtime.exec(cri::ExecRequest {
                container_id: id.into(),
                cmd: vec!["sh".into()],
                stdout: true,
                ..Default::default()
            })
        )
    };
    let m = expect_code(exec(&side), Code::Unimplemented, "Exec (ordinary)");
    assert!(m.contains("not implemented yet"), "{m}");
    let m = expect_code(exec(&web), Code::FailedPrecondition, "Exec (unikernel)");
    assert!(m.contains("unikernel"), "{m}");
    let attach = |id: &str| {
        call!(
            c,
            runtime.attach(cri::AttachRequest {
                container_id: id.into(),
                stdout: true,
                ..Default::default()
            })
        )
    };
    expect_code(attach(&side), Code::Unimplemented, "Attach (ordinary)");
    expect_code(attach(&web), Code::FailedPrecondition, "Attach (unikernel)");
    let m = expect_code(
        call!(
            c,
            runtime.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![80],
            })
        ),
        Code::FailedPrecondition,
        "PortForward",
    );
    assert!(m.contains("pod IP"), "{m}");

    // CheckpointContainer says why for each kind.
    for (id, says) in [(&web, "septem-run"), (&side, "runc")] {
        let m = expect_code(
            call!(
                c,
                runtime.checkpoint_container(cri::CheckpointContainerRequest {
                    container_id: id.clone(),
                    ..Default::default()
                })
            ),
            Code::Unimplemented,
            "CheckpointContainer",
        );
        assert!(m.contains(says), "{m}");
    }
    for id in [&side, &web] {
        call!(
            c,
            runtime.stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 0
            })
        )
        .expect("StopContainer");
        call!(
            c,
            runtime.remove_container(cri::RemoveContainerRequest {
                container_id: id.clone()
            })
        )
        .expect("RemoveContainer");
    }
    c.remove_pod(&pod);
    assert_eq!(server.stop(), Some(0));
}
