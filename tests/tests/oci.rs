//! OCI images end to end, with real tools and a real registry, no mocks:
//! `septem-build package` output checked by skopeo, umoci and containerd's `ctr`;
//! push/pull against Debian's `docker-registry` started here on a loopback port
//! (round trip then run, tampered blob, non-Septem image, auth, errors).
//!
//! Each test skips with a printed reason when a tool it needs is missing;
//! `scripts/test.sh` installs them (skopeo, umoci, containerd, docker-registry).

use base64::Engine as _;
use septem_tests::containerd::{Containerd, NO_CRI};
use septem_tests::{bin, example, guest, run_guest, septem_build, Backend, Outcome};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// bcrypt of "s3cret" (htpasswd for the auth test's registry).
const ALICE_HTPASSWD: &str = "alice:$2b$12$v57SIdCIL5RidLnrPd4o8Oigd6Lfto1liNGltXuC8b/m3zihTVTPa";

/// Exit statuses of `septem-build` (builder/src/main.rs, docs/oci.md).
const EXIT_INVALID_IMAGE: i32 = 3;
const EXIT_BAD_REFERENCE: i32 = 4;
const EXIT_UNREACHABLE: i32 = 5;
const EXIT_AUTH: i32 = 6;
const EXIT_INTEGRITY: i32 = 7;
const EXIT_NOT_SEPTEM: i32 = 8;
const EXIT_NOT_FOUND: i32 = 9;

fn have(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
    if !found {
        eprintln!("SKIPPED: {tool} is not installed (scripts/test.sh installs it)");
    }
    found
}

fn have_registry() -> bool {
    let found = Path::new(REGISTRY_BIN).is_file();
    if !found {
        eprintln!("SKIPPED: {REGISTRY_BIN} is not installed (apt-get install docker-registry)");
    }
    found
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, capturing everything.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Outcome {
    run_env(program, args, &[], None)
}

fn run_env(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Outcome {
    use std::os::unix::process::ExitStatusExt as _;
    let program = program.as_ref().to_owned();
    let mut cmd = Command::new(&program);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    Outcome {
        status: out.status.code(),
        signal: out.status.signal(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sb(args: &[&str]) -> Outcome {
    septem_build(args)
}

fn sb_env(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Outcome {
    run_env(bin("septem-build"), args, env, stdin)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn manifest_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    index["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest digest")
        .to_owned()
}

/// Nothing named like a staging directory was left in `dir`.
fn assert_no_leftovers(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".septem-oci-"))
        .collect();
    assert!(
        left.is_empty(),
        "staging leftovers in {}: {left:?}",
        dir.display()
    );
}

/// Debian's docker-registry on a free loopback port, filesystem storage in a temporary
/// directory; killed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some(entry) = htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, format!("{entry}\n")).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: septem-test\n    path: {}\n",
                path.display()
            ));
        }
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
        let mut reg = Registry { child, dir, addr };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "docker-registry exited ({status}):\n{}",
                    std::fs::read_to_string(self.dir.path().join("registry.log"))
                        .unwrap_or_default()
                );
            }
            if let Ok(mut c) = TcpStream::connect(&self.addr) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let req = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
                let mut head = [0u8; 12];
                if c.write_all(req.as_bytes()).is_ok() && c.read_exact(&mut head).is_ok() {
                    let line = String::from_utf8_lossy(&head);
                    if line.starts_with("HTTP/1.")
                        && (line.ends_with("200") || line.ends_with("401"))
                    {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer GET /v2/ within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// The registry's file for blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `septem-build package IMAGE --tag TAG --out|--archive OUT`, which must succeed.
fn package(image: &Path, tag: &str, out_flag: &str, out: &Path) {
    sb(&["package", s(image), "--tag", tag, out_flag, s(out)]).expect_status(0);
}

#[test]
fn package_is_reproducible() {
    let image = example("hello");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    package(&image, "hello:1.0", "--out", &a);
    package(&image, "hello:1.0", "--out", &b);
    assert_eq!(manifest_digest(&a), manifest_digest(&b));
    package(&image, "hello:1.0", "--archive", &tmp.path().join("a.tar"));
    package(&image, "hello:1.0", "--archive", &tmp.path().join("b.tar"));
    assert_eq!(
        std::fs::read(tmp.path().join("a.tar")).expect("a.tar"),
        std::fs::read(tmp.path().join("b.tar")).expect("b.tar"),
        "two archives of the same image differ"
    );
    // SOURCE_DATE_EPOCH fixes `created`; a new build time would change only that.
    let c = tmp.path().join("c");
    sb_env(
        &[
            "package",
            s(&image),
            "--tag",
            "hello:1.0",
            "--out",
            s(&c),
            "--json",
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
        None,
    )
    .expect_status(0);
    let config_digest = {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                c.join("blobs/sha256")
                    .join(manifest_digest(&c).trim_start_matches("sha256:")),
            )
            .expect("manifest blob"),
        )
        .expect("manifest JSON");
        m["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_owned()
    };
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            c.join("blobs/sha256")
                .join(config_digest.trim_start_matches("sha256:")),
        )
        .expect("config blob"),
    )
    .expect("config JSON");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        config["config"]["Entrypoint"][0],
        "/unikernel/example-hello.septem"
    );
    assert_eq!(config["config"]["Labels"]["org.septem.unikernel"], "true");
}

#[test]
fn package_refuses_bad_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let r = sb(&["package", "/bin/true", "--tag", "x:1", "--out", s(&out)]);
    r.expect_status(EXIT_INVALID_IMAGE)
        .stderr_has("is not a runnable Septem image");
    assert!(!out.exists());
    let image = example("hello");
    let r = sb(&[
        "package",
        s(&image),
        "--tag",
        "Not A Tag!",
        "--out",
        s(&out),
    ]);
    r.expect_status(EXIT_BAD_REFERENCE)
        .stderr_has("invalid image reference");
    // A disk for a block device the image does not declare.
    let disk = tmp.path().join("d.img");
    std::fs::write(&disk, vec![0u8; 4096]).expect("disk");
    let r = sb(&[
        "package",
        s(&image),
        "--tag",
        "x:1",
        "--disk",
        &format!("data={}", disk.display()),
        "--out",
        s(&out),
    ]);
    r.expect_status(1)
        .stderr_has("declares no block device \"data\"");
    assert!(!out.exists());
    assert_no_leftovers(tmp.path());
}

#[test]
fn skopeo_reads_layout_and_archive() {
    if !have("skopeo") {
        return;
    }
    let image = example("hello");
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path().join("hello.oci");
    package(&image, "hello:1.0", "--out", &layout);
    let r = run(
        "skopeo",
        &["inspect", &format!("oci:{}:1.0", layout.display())],
    );
    r.expect_status(0)
        .stdout_has("\"org.septem.unikernel\": \"true\"")
        .stdout_has(&format!(
            "\"org.septem.unikernel.abi\": \"{}\"",
            septem_abi::ABI_VERSION
        ))
        .stdout_has("\"org.septem.unikernel.binary\": \"/unikernel/example-hello.septem\"")
        .stdout_has("\"org.septem.unikernel.memory\": \"32M\"")
        .stdout_has(&manifest_digest(&layout));
    let raw = run(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:1.0", layout.display())],
    );
    raw.expect_status(0)
        .stdout_has("application/vnd.oci.image.layer.v1.tar+gzip")
        .stdout_has("\"org.septem.unikernel.devices\":\"\"");
    // skopeo copies it into an oci-archive it can read back, with the same digest.
    let archive = tmp.path().join("copy.tar");
    run(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:1.0", layout.display()),
            &format!("oci-archive:{}:1.0", archive.display()),
        ],
    )
    .expect_status(0);
    run(
        "skopeo",
        &["inspect", &format!("oci-archive:{}:1.0", archive.display())],
    )
    .expect_status(0)
    .stdout_has(&manifest_digest(&layout));
    // And reads ours.
    let ours = tmp.path().join("ours.tar");
    package(&image, "hello:1.0", "--archive", &ours);
    run(
        "skopeo",
        &["inspect", &format!("oci-archive:{}:1.0", ours.display())],
    )
    .expect_status(0)
    .stdout_has("\"org.septem.unikernel\": \"true\"");
}

#[test]
fn umoci_unpacks_the_unikernel() {
    if !have("umoci") {
        return;
    }
    let image = example("hello");
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path().join("hello.oci");
    package(&image, "hello:1.0", "--out", &layout);
    let bundle = tmp.path().join("bundle");
    let mut args = vec!["unpack"];
    if !is_root() {
        args.push("--rootless");
    }
    let img = format!("{}:1.0", layout.display());
    args.extend(["--image", &img, s(&bundle)]);
    run("umoci", &args).expect_status(0);
    let unpacked = bundle.join("rootfs/unikernel/example-hello.septem");
    assert_eq!(
        std::fs::read(&unpacked).expect("unikernel in the rootfs"),
        std::fs::read(&image).expect("original image"),
        "the unpacked unikernel differs from the .septem"
    );
    let facts: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("rootfs/unikernel/septem.json")).expect("septem.json"),
    )
    .expect("septem.json is JSON");
    assert_eq!(facts["unikernel"], true);
    assert_eq!(facts["binary"], "/unikernel/example-hello.septem");
    // The runtime bundle umoci makes names the unikernel as args[0] and carries the labels.
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config.json"))
            .expect("config.json is JSON");
    assert_eq!(
        spec["process"]["args"][0],
        "/unikernel/example-hello.septem"
    );
    assert_eq!(spec["annotations"]["org.septem.unikernel"], "true");
}

#[test]
fn ctr_imports_the_archive() {
    if !have("containerd") || !have("ctr") {
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: containerd needs root");
        return;
    }
    let image = example("hello");
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("hello.tar");
    package(&image, "septem/hello:1.0", "--archive", &archive);
    let ctd = Containerd::start(NO_CRI);
    ctd.ctr(&["images", "import", s(&archive)]).expect_status(0);
    let ls = ctd.ctr(&["images", "ls"]);
    ls.expect_status(0)
        .stdout_has("docker.io/septem/hello:1.0")
        .stdout_has("linux/amd64");
    let layout = tmp.path().join("layout");
    package(&image, "septem/hello:1.0", "--out", &layout);
    ls.stdout_has(&manifest_digest(&layout));
    ctd.ctr(&["images", "check"])
        .expect_status(0)
        .stdout_has("complete (2/2)");
}

#[test]
fn push_pull_round_trip_runs() {
    if !have_registry() {
        return;
    }
    let image = guest("hello");
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path().join("hello.oci");
    package(&image, "hello:1.0", "--out", &layout);
    let reference = reg.reference("septem/hello:1.0");
    let push = sb(&["push", s(&layout), &reference]);
    push.expect_status(0)
        .stdout_has(&manifest_digest(&layout))
        .stderr_has("pushing layer sha256:");
    // Pushing again uploads nothing.
    sb(&["push", s(&layout), &reference])
        .expect_status(0)
        .stdout_has("0 blobs uploaded")
        .stderr_has("exists layer");

    let out = tmp.path().join("pulled.oci");
    let extract = tmp.path().join("pulled");
    let pull = sb(&[
        "pull",
        &reference,
        "--out",
        s(&out),
        "--extract",
        s(&extract),
    ]);
    pull.expect_status(0)
        .stdout_has(&manifest_digest(&layout))
        .stderr_has("pulling layer sha256:");
    assert_eq!(manifest_digest(&out), manifest_digest(&layout));
    let pulled = extract.join("hello.septem");
    assert_eq!(
        std::fs::read(&pulled).expect("pulled unikernel"),
        std::fs::read(&image).expect("original"),
    );
    let original = run_guest(Backend::Seccomp, &image, &[], &[]);
    let again = run_guest(Backend::Seccomp, &pulled, &[], &[]);
    original
        .expect_status(0)
        .stdout_has("Hello from a Septem guest!");
    again.expect_status(0);
    assert_eq!(original.stdout, again.stdout);

    // The pulled layout is a layout skopeo reads; the archive form too.
    if have("skopeo") {
        run(
            "skopeo",
            &["inspect", &format!("oci:{}:1.0", out.display())],
        )
        .expect_status(0);
        // Our pushed image through the registry API, as skopeo sees it.
        run(
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                &format!("docker://{reference}"),
            ],
        )
        .expect_status(0)
        .stdout_has("\"org.septem.unikernel\": \"true\"");
        // skopeo's push of our layout is pullable by us (same digest).
        let other = reg.reference("skopeo/hello:1.0");
        run(
            "skopeo",
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{}:1.0", layout.display()),
                &format!("docker://{other}"),
            ],
        )
        .expect_status(0);
        let out2 = tmp.path().join("from-skopeo.tar");
        sb(&["pull", "-q", &other, "--out", s(&out2), "--archive"]).expect_status(0);
        run(
            "skopeo",
            &["inspect", &format!("oci-archive:{}:1.0", out2.display())],
        )
        .expect_status(0)
        .stdout_has(&manifest_digest(&layout));
    }

    // A .septem pushed directly is packaged on the fly.
    let direct = reg.reference("septem/direct:2");
    sb(&["push", s(&image), &direct]).expect_status(0);
    let out3 = tmp.path().join("direct.oci");
    sb(&["pull", &direct, "--out", s(&out3)]).expect_status(0);
    let index = std::fs::read_to_string(out3.join("index.json")).expect("index.json");
    assert!(
        index.contains("\"org.opencontainers.image.ref.name\":\"2\""),
        "{index}"
    );
    assert_no_leftovers(tmp.path());
}

#[test]
fn pull_of_tampered_blob_fails_and_writes_nothing() {
    if !have_registry() {
        return;
    }
    let image = guest("hello");
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path().join("hello.oci");
    package(&image, "hello:1.0", "--out", &layout);
    let reference = reg.reference("septem/hello:1.0");
    sb(&["push", "-q", s(&layout), &reference]).expect_status(0);

    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(manifest_digest(&layout).trim_start_matches("sha256:")),
        )
        .expect("manifest"),
    )
    .expect("manifest JSON");
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest");
    let data = reg.blob_file(layer);
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).expect("tamper");

    let pulls = tmp.path().join("pulls");
    std::fs::create_dir(&pulls).expect("mkdir");
    let out = pulls.join("pulled.oci");
    let extract = pulls.join("x");
    let r = sb(&[
        "pull",
        &reference,
        "--out",
        s(&out),
        "--extract",
        s(&extract),
    ]);
    r.expect_status(EXIT_INTEGRITY)
        .stderr_has("integrity check failed");
    assert!(
        !out.exists(),
        "pull wrote {} despite the bad digest",
        out.display()
    );
    assert!(!extract.exists(), "pull extracted despite the bad digest");
    assert_eq!(
        std::fs::read_dir(&pulls).expect("read_dir").count(),
        0,
        "pull left files behind"
    );
    let archive = pulls.join("pulled.tar");
    sb(&["pull", &reference, "--out", s(&archive), "--archive"]).expect_status(EXIT_INTEGRITY);
    assert_eq!(std::fs::read_dir(&pulls).expect("read_dir").count(), 0);
}

#[test]
fn non_septem_images_are_refused() {
    if !have_registry() || !have("umoci") || !have("skopeo") {
        return;
    }
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().expect("tempdir");
    // A plain image with one ordinary layer, made by umoci.
    let plain = tmp.path().join("plain");
    run("umoci", &["init", "--layout", s(&plain)]).expect_status(0);
    let img = format!("{}:1", plain.display());
    run("umoci", &["new", "--image", &img]).expect_status(0);
    let file = tmp.path().join("hello.txt");
    std::fs::write(&file, "not a unikernel\n").expect("write");
    let mut args = vec!["insert"];
    if !is_root() {
        args.push("--rootless");
    }
    args.extend(["--image", &img, s(&file), "/hello.txt"]);
    run("umoci", &args).expect_status(0);
    let reference = reg.reference("other/plain:1");
    run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{img}"),
            &format!("docker://{reference}"),
        ],
    )
    .expect_status(0);

    let out = tmp.path().join("pulled.oci");
    sb(&["pull", &reference, "--out", s(&out)])
        .expect_status(EXIT_NOT_SEPTEM)
        .stderr_has("is not a Septem unikernel image")
        .stderr_has("org.septem.unikernel");
    assert!(!out.exists());
    assert_no_leftovers(tmp.path());
    // push refuses it too.
    sb(&["push", &img, &reg.reference("other/plain:2")])
        .expect_status(EXIT_NOT_SEPTEM)
        .stderr_has("is not a Septem unikernel image");
}

#[test]
fn registry_errors_have_their_own_status() {
    if !have_registry() {
        return;
    }
    let image = guest("hello");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    // Nothing listens on a port we just closed.
    let dead = format!("127.0.0.1:{}/septem/hello:1", free_port());
    sb(&["pull", &dead, "--out", s(&out)])
        .expect_status(EXIT_UNREACHABLE)
        .stderr_has("is unreachable");
    sb(&["push", s(&image), &dead])
        .expect_status(EXIT_UNREACHABLE)
        .stderr_has("is unreachable");
    sb(&["pull", "127.0.0.1:5000/Upper/Case:1", "--out", s(&out)])
        .expect_status(EXIT_BAD_REFERENCE)
        .stderr_has("invalid image reference");
    sb(&["push", s(&image), "127.0.0.1:5000/x:bad tag"]).expect_status(EXIT_BAD_REFERENCE);
    let reg = Registry::start(None);
    sb(&["pull", &reg.reference("septem/absent:1"), "--out", s(&out)])
        .expect_status(EXIT_NOT_FOUND)
        .stderr_has("was not found");
    assert!(!out.exists());
    assert_no_leftovers(tmp.path());
}

#[test]
fn auth_from_flags_and_docker_config() {
    if !have_registry() {
        return;
    }
    let image = guest("hello");
    let reg = Registry::start(Some(ALICE_HTPASSWD));
    let tmp = tempfile::tempdir().expect("tempdir");
    let reference = reg.reference("septem/hello:1");
    // An empty Docker config dir: no stray credentials from the host.
    let empty = tmp.path().join("empty-docker");
    std::fs::create_dir(&empty).expect("mkdir");
    let no_creds = [("DOCKER_CONFIG", s(&empty))];
    sb_env(&["push", s(&image), &reference], &no_creds, None)
        .expect_status(EXIT_AUTH)
        .stderr_has("authentication to");
    sb_env(
        &[
            "push",
            s(&image),
            &reference,
            "--username",
            "alice",
            "--password",
            "wrong",
        ],
        &no_creds,
        None,
    )
    .expect_status(EXIT_AUTH);
    sb_env(
        &[
            "push",
            s(&image),
            &reference,
            "--username",
            "alice",
            "--password-stdin",
        ],
        &no_creds,
        Some("s3cret\n"),
    )
    .expect_status(0);
    let out = tmp.path().join("out");
    sb_env(&["pull", &reference, "--out", s(&out)], &no_creds, None).expect_status(EXIT_AUTH);
    assert!(!out.exists());
    // Docker's config.json: auths.<host>.auth = base64(user:password).
    let docker = tmp.path().join("docker");
    std::fs::create_dir(&docker).expect("mkdir");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .expect("config.json");
    sb_env(
        &["pull", &reference, "--out", s(&out)],
        &[("DOCKER_CONFIG", s(&docker))],
        None,
    )
    .expect_status(0);
    assert!(out.join("index.json").exists());
}

#[test]
fn disks_ship_in_the_layer() {
    if !have_registry() {
        return;
    }
    let image = guest("block_rw"); // declares block devices `disk` and `ro`
    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = tmp.path().join("disk.img");
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&disk, &data).expect("disk");
    let layout = tmp.path().join("block.oci");
    let disk_arg = format!("disk={}", disk.display());
    sb(&[
        "package",
        s(&image),
        "--tag",
        "block:1",
        "--disk",
        &disk_arg,
        "--out",
        s(&layout),
    ])
    .expect_status(0);
    let reg = Registry::start(None);
    let reference = reg.reference("septem/block:1");
    sb(&["push", "-q", s(&layout), &reference]).expect_status(0);
    let out = tmp.path().join("pulled.oci");
    let extract = tmp.path().join("x");
    sb(&[
        "pull",
        "-q",
        &reference,
        "--out",
        s(&out),
        "--extract",
        s(&extract),
    ])
    .expect_status(0);
    assert_eq!(
        std::fs::read(extract.join("disks/disk.img")).expect("disk"),
        data
    );
    let facts = std::fs::read_to_string(extract.join("septem.json")).expect("septem.json");
    assert!(facts.contains("/unikernel/disks/disk.img"), "{facts}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            out.join("blobs/sha256")
                .join(manifest_digest(&out).trim_start_matches("sha256:")),
        )
        .expect("manifest"),
    )
    .expect("manifest JSON");
    assert_eq!(
        manifest["annotations"]["org.septem.unikernel.disks"],
        "disk=/unikernel/disks/disk.img"
    );
    assert_eq!(
        manifest["annotations"]["org.septem.unikernel.devices"],
        "block:disk,block:ro"
    );
}
