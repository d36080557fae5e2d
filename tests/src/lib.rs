//! Harness for the end-to-end tests: builds guests with the real `septem-build`
//! library, runs them with the real `septem-run` binary, and tells whether KVM is
//! usable here (tests that need it skip with a printed reason when it is not).

pub mod containerd;
pub mod cri;
pub mod net;
pub mod runnc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root.
#[must_use]
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory holding this build's binaries (`target/<profile>`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path to a workspace binary, built once per test process with `cargo build` (same
/// profile and target dir as the tests themselves).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let release = bin_dir().file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(root()).args([
            "build",
            "--quiet",
            "-p",
            "septem-monitor",
            "-p",
            "septem-build",
            "-p",
            "runnc",
            "-p",
            "septem-cri",
        ]);
        if release {
            cmd.arg("--release");
        }
        let target_dir = bin_dir().parent().expect("target dir").to_path_buf();
        let status = cmd
            .env("CARGO_TARGET_DIR", target_dir)
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of septem-run/septem-build/runnc failed"
        );
    });
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing after cargo build",
        path.display()
    );
    path
}

/// Builds `tests/guests/<name>` (once per test process) and returns the image path.
pub fn guest(name: &str) -> PathBuf {
    build_cached(&root().join("tests/guests").join(name), name)
}

/// Builds `examples/<name>` (once per test process) and returns the image path.
pub fn example(name: &str) -> PathBuf {
    build_cached(
        &root().join("examples").join(name),
        &format!("example-{name}"),
    )
}

fn build_cached(dir: &Path, key: &str) -> PathBuf {
    static CACHE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // One build at a time: cargo would serialize on the guest target dir anyway.
    let mut map = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = map.get(key) {
        return p.clone();
    }
    let out_dir = root().join("target/test-images");
    std::fs::create_dir_all(&out_dir).expect("create target/test-images");
    let opts = septem_build::BuildOptions {
        path: dir.to_path_buf(),
        profile: septem_build::Profile::Release,
        output: Some(out_dir.join(format!("{key}.septem"))),
        target_dir: None,
        cargo: None,
        quiet: true,
    };
    let built = septem_build::build_guest(&opts)
        .unwrap_or_else(|e| panic!("building {}: {e:#}", dir.display()));
    map.insert(key.to_string(), built.path.clone());
    built.path
}

/// The two backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `--backend seccomp`.
    Seccomp,
    /// `--backend kvm`.
    Kvm,
}

impl Backend {
    /// The `--backend` value.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Backend::Seccomp => "seccomp",
            Backend::Kvm => "kvm",
        }
    }

    /// `Err(reason)` when this backend cannot run here.
    pub fn usable(self) -> Result<(), String> {
        match self {
            Backend::Seccomp => Ok(()),
            Backend::Kvm => kvm_usable(),
        }
    }
}

/// Whether `/dev/kvm` can be opened read-write.
pub fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm is not usable here ({e})"))
}

/// Prints why a test is skipped and returns true when `backend` cannot run here.
#[must_use]
pub fn skip_unless_usable(backend: Backend) -> bool {
    match backend.usable() {
        Ok(()) => false,
        Err(why) => {
            eprintln!("SKIPPED: {} backend: {why}", backend.name());
            true
        }
    }
}

/// The outcome of running a program.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status, `None` when killed by a signal.
    pub status: Option<i32>,
    /// Terminating signal, if any.
    pub signal: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Panics with both streams unless the status is `want`.
    #[track_caller]
    pub fn expect_status(&self, want: i32) -> &Self {
        assert_eq!(
            self.status,
            Some(want),
            "unexpected exit (signal {:?})\n--- stdout\n{}\n--- stderr\n{}",
            self.signal,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `program` with `args`, killing it after `timeout`.
pub fn run_with_timeout(program: &Path, args: &[&str], timeout: Duration) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || read_all(&mut stdout));
    let err = std::thread::spawn(move || read_all(&mut stderr));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {:?} did not finish within {timeout:?}",
                program.display(),
                args
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        status: status.code(),
        signal: status.signal(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn read_all(r: &mut impl std::io::Read) -> String {
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs `septem-run --backend B [monitor_opts] IMAGE -- guest_args`.
pub fn run_guest(
    backend: Backend,
    image: &Path,
    monitor_opts: &[&str],
    guest_args: &[&str],
) -> Outcome {
    let image = image.to_str().expect("utf-8 path");
    let mut args = vec!["--backend", backend.name()];
    args.extend_from_slice(monitor_opts);
    args.push(image);
    args.push("--");
    args.extend_from_slice(guest_args);
    run_with_timeout(&bin("septem-run"), &args, Duration::from_secs(60))
}

/// Runs `septem-run` with raw arguments.
pub fn septem_run(args: &[&str]) -> Outcome {
    run_with_timeout(&bin("septem-run"), args, Duration::from_secs(60))
}

/// Runs `septem-build` with raw arguments.
pub fn septem_build(args: &[&str]) -> Outcome {
    run_with_timeout(&bin("septem-build"), args, Duration::from_secs(300))
}

/// Declares one test per backend: `backend_tests!(name, |backend| body);`
#[macro_export]
macro_rules! backend_tests {
    ($name:ident, |$b:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn case($b: $crate::Backend) $body
            #[test]
            fn seccomp() {
                case($crate::Backend::Seccomp);
            }
            #[test]
            fn kvm() {
                if $crate::skip_unless_usable($crate::Backend::Kvm) {
                    return;
                }
                case($crate::Backend::Kvm);
            }
        }
    };
}
