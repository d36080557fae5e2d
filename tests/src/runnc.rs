//! Helpers for the `runnc` tests: a per-test state root and bundle directory, bundles
//! made from `runnc spec` plus a copied image, and runnc invocations whose output goes
//! to files (a created container inherits runnc's stdio, so pipes would stay open).
//!
//! [`Rt`]'s `Drop` force-deletes every container left under its root, then removes
//! the directory, also when a test fails.

use crate::{bin, Outcome};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long one runnc command may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// True when running as root.
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Prints why and returns true unless root (runnc makes cgroups and namespaces).
#[must_use]
pub fn skip_unless_root() -> bool {
    if is_root() {
        false
    } else {
        eprintln!("SKIPPED: runnc tests need root (cgroups, namespaces)");
        true
    }
}

/// One test's runnc world: `<dir>/root` is `--root`, bundles go in `<dir>/<name>`.
#[derive(Debug)]
pub struct Rt {
    /// The scratch directory.
    pub dir: PathBuf,
    /// runnc's `--root`.
    pub root: PathBuf,
}

impl Rt {
    /// A fresh scratch directory under /tmp.
    #[must_use]
    pub fn new(tag: &str) -> Rt {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "runnc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        let root = dir.join("root");
        Rt { dir, root }
    }

    fn argv<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--root", self.root.to_str().expect("utf-8 root")];
        v.extend_from_slice(args);
        v
    }

    /// Runs `runnc --root ROOT ARGS…` with stdout and stderr sent to files (read back
    /// into the outcome), so a container that inherits them cannot block the test.
    pub fn runnc(&self, args: &[&str]) -> Outcome {
        self.runnc_env(args, &[])
    }

    /// [`Rt::runnc`] with extra environment variables.
    pub fn runnc_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        use std::os::unix::process::ExitStatusExt as _;
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.join(format!("cmd-{n}.out"));
        let err_path = self.dir.join(format!("cmd-{n}.err"));
        let mut child = Command::new(bin("runnc"))
            .args(self.argv(args))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("spawn runnc");
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait runnc") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("runnc {args:?} did not finish within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Outcome {
            status: status.code(),
            signal: status.signal(),
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }

    /// `create --bundle B --pid-file <dir>/ID.pid ID` with the container's stdio going
    /// to `<dir>/ID.out`; panics unless it succeeds. Returns the pid.
    pub fn create(&self, bundle: &Path, id: &str) -> i32 {
        let pid_file = self.dir.join(format!("{id}.pid"));
        let out = self.dir.join(format!("{id}.out"));
        let status = Command::new(bin("runnc"))
            .args(self.argv(&[
                "create",
                "--bundle",
                bundle.to_str().expect("utf-8"),
                "--pid-file",
                pid_file.to_str().expect("utf-8"),
                id,
            ]))
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("out file"))
            .stderr(File::create(self.dir.join(format!("{id}.create.err"))).expect("err file"))
            .status()
            .expect("run runnc create");
        assert!(
            status.success(),
            "runnc create {id} failed: {status}\n{}",
            std::fs::read_to_string(self.dir.join(format!("{id}.create.err"))).unwrap_or_default()
        );
        std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .parse()
            .expect("pid file holds a pid")
    }

    /// What the container `id` printed so far (after [`Rt::create`]).
    #[must_use]
    pub fn output(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{id}.out"))).unwrap_or_default()
    }

    /// `runnc state ID` as JSON (panics on failure).
    #[must_use]
    pub fn state(&self, id: &str) -> Value {
        let o = self.runnc(&["state", id]);
        o.expect_status(0);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("state JSON: {e}\n{}", o.stdout))
    }

    /// The container's status string.
    #[must_use]
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls until the status is `want` (panics after `timeout`).
    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(id);
            if s == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} is {s}, not {want}, after {timeout:?}; output:\n{}",
                self.output(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Makes bundle `<dir>/<name>`: `rootfs/unikernel/app.septem` (a copy of `image`),
    /// config.json from `runnc spec` with `args` after the image, backend seccomp.
    #[must_use]
    pub fn bundle(&self, name: &str, image: &Path, args: &[&str]) -> PathBuf {
        let b = self.dir.join(name);
        std::fs::create_dir_all(b.join("rootfs/unikernel")).expect("mkdir bundle");
        std::fs::copy(image, b.join("rootfs/unikernel/app.septem")).expect("copy image");
        self.runnc(&["spec", "--bundle", b.to_str().expect("utf-8")])
            .expect_status(0);
        edit_config(&b, |c| {
            c["annotations"]["org.septem.runnc.backend"] = "seccomp".into();
            let mut a = vec![Value::from("/unikernel/app.septem")];
            a.extend(args.iter().map(|s| Value::from(*s)));
            c["process"]["args"] = Value::Array(a);
        });
        b
    }
}

/// Reads, changes and writes back `<bundle>/config.json`.
pub fn edit_config(bundle: &Path, f: impl FnOnce(&mut Value)) {
    let path = bundle.join("config.json");
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read config.json"))
            .expect("config.json is JSON");
    f(&mut c);
    std::fs::write(&path, serde_json::to_string_pretty(&c).expect("JSON")).expect("write config");
}

/// True when `pid` exists and is not a zombie.
#[must_use]
pub fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X")
    })
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !id.starts_with('.') {
                    let _ = self.runnc(&["delete", "--force", &id]);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.root.join(".runc")) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.runnc(&["delete", "--force", &id]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every existing cgroup directory named `rel` (relative to a hierarchy's root): the v2
/// one and one per v1 controller hierarchy.
#[must_use]
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let mut out = vec![Path::new("/sys/fs/cgroup").join(rel)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            out.push(e.path().join(rel));
        }
    }
    out.into_iter().filter(|p| p.is_dir()).collect()
}
