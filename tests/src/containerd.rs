//! A containerd owned by one test: its own root, state and socket under a temporary
//! directory, one namespace, a config the test chooses (CRI plugin off by default).
//! [`Containerd::stop`] (also run on drop) kills and deletes every task and container
//! of the namespace, then stops containerd (SIGTERM, so it unmounts its snapshots, then
//! SIGKILL after 10 s).

use crate::{run_with_timeout, Outcome};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Longest any `ctr` call may take.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// The config body that turns the CRI plugin off (what tests without Kubernetes use).
pub const NO_CRI: &str = "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n";

/// A running containerd of the test's own.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    /// Removed on drop.
    dir: PathBuf,
    socket: PathBuf,
    ns: String,
}

/// True when `containerd` and `ctr` can be run (else prints why the test skips).
#[must_use]
pub fn available() -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs("containerd") && runs("ctr") {
        return true;
    }
    eprintln!("SKIPPED: containerd and ctr are not installed (scripts/test.sh installs them)");
    false
}

impl Containerd {
    /// Starts containerd with `config` (TOML, `version = 2` and the socket address are
    /// added; e.g. [`NO_CRI`]) in a temporary directory of its own, with a namespace of
    /// its own, and waits (at most 30 s) until `ctr version` answers.
    #[must_use]
    pub fn start(config: &str) -> Containerd {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "septem-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("{name}.containerd"));
        let _ = std::fs::remove_dir_all(&dir);
        Containerd::start_in(&dir, config, &name)
    }

    /// Like [`Containerd::start`], with root, state, socket (`c.sock`) and log under
    /// `dir` (removed by [`Containerd::stop`]) and `ctr` calls in `namespace`.
    #[must_use]
    pub fn start_in(dir: &Path, config: &str, namespace: &str) -> Containerd {
        std::fs::create_dir_all(dir).expect("containerd's directory");
        let socket = Containerd::socket_in(dir);
        let config_path = dir.join("config.toml");
        std::fs::write(
            &config_path,
            format!(
                "version = 2\n{config}\n[grpc]\n  address = \"{}\"\n",
                socket.display()
            ),
        )
        .expect("write config.toml");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let mut c = Containerd {
            child: Some(child),
            dir: dir.to_path_buf(),
            socket,
            ns: namespace.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten()) {
                panic!("containerd exited ({status}):\n{}", c.log());
            }
            if c.socket.exists() && c.ctr(&["version"]).status == Some(0) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up within 30 s:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The socket a containerd started in `dir` listens on.
    #[must_use]
    pub fn socket_in(dir: &Path) -> PathBuf {
        dir.join("c.sock")
    }

    /// Its socket.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The namespace every `ctr` call uses.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The temporary directory holding its root, state, socket and log.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What containerd logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let socket = self.socket.to_str().expect("utf-8 socket path");
        let mut all = vec!["--address", socket, "--namespace", &self.ns];
        all.extend_from_slice(args);
        all
    }

    /// `ctr --address SOCK --namespace NS ARGS…`, killed after [`CTR_TIMEOUT`].
    #[must_use]
    pub fn ctr(&self, args: &[&str]) -> Outcome {
        run_with_timeout(Path::new("ctr"), &self.args(args), CTR_TIMEOUT)
    }

    /// Like [`Containerd::ctr`], panicking unless it exits 0.
    pub fn ctr_ok(&self, args: &[&str]) -> Outcome {
        let o = self.ctr(args);
        o.expect_status(0);
        o
    }

    /// `ctr images import ARCHIVE` (with `--base-name` when the archive's index does
    /// not name the image).
    pub fn import(&self, archive: &Path, base_name: Option<&str>) {
        let mut args = vec!["images", "import"];
        if let Some(name) = base_name {
            args.extend(["--base-name", name]);
        }
        args.push(archive.to_str().expect("utf-8 path"));
        self.ctr_ok(&args);
    }

    /// Kills and deletes the namespace's tasks and containers, then stops containerd.
    /// Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let quiet = |args: &[&str]| {
            Command::new("ctr")
                .args(self.args(args))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for id in quiet(&["task", "ls", "-q"]).lines() {
            quiet(&["task", "kill", "-s", "SIGKILL", id]);
        }
        for id in quiet(&["task", "ls", "-q"]).lines() {
            quiet(&["task", "delete", "-f", id]);
        }
        for id in quiet(&["container", "ls", "-q"]).lines() {
            quiet(&["container", "delete", id]);
        }
        // SAFETY: kill on our own child's pid (not reaped yet, so not reused).
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Its snapshots are unmounted now; if a killed containerd left a mount under
        // the directory, the directory stays (never delete through a mount).
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let dir = self.dir.to_string_lossy();
        if !mounts.lines().any(|m| m.contains(dir.as_ref())) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}
