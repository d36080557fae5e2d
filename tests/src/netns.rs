//! A network namespace with one tap, made by a test and always removed (Drop), for
//! running a networked guest against real host tools (curl, redis-cli, ping).
//!
//! Traffic only ever goes to addresses inside the namespace the test made.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Why networked tests cannot run here (printed when they skip), or `None`.
#[must_use]
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network tests need root (netns, taps)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

/// Prints why and returns true when networked tests cannot run here.
#[must_use]
pub fn skip() -> bool {
    match unavailable() {
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
        None => false,
    }
}

/// A namespace `septem-t<pid>-<n>` holding `tap0` with the host side at `.1/24` of a
/// /24 picked from `10.213.<n>.0`; the guest is meant to use `.2`.
#[derive(Debug)]
pub struct NetNs {
    /// Namespace name.
    pub name: String,
    /// The tap's name inside it.
    pub tap: String,
    /// Host-side address of the tap (no prefix).
    pub host_ip: String,
    /// The address to give the guest (no prefix).
    pub guest_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// Creates the namespace, its loopback and its tap.
    pub fn new() -> Result<NetNs, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let subnet = (std::process::id() + n) % 250 + 1;
        let ns = NetNs {
            name: format!("septem-t{}-{n}", std::process::id()),
            tap: "tap0".into(),
            host_ip: format!("10.213.{subnet}.1"),
            guest_ip: format!("10.213.{subnet}.2"),
        };
        ip(&["netns", "add", &ns.name])?;
        let host_cidr = format!("{}/24", ns.host_ip);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &ns.name, "tuntap", "add", "dev", &ns.tap, "mode", "tap",
        ])?;
        ip(&["-n", &ns.name, "addr", "add", &host_cidr, "dev", &ns.tap])?;
        ip(&["-n", &ns.name, "link", "set", &ns.tap, "up"])?;
        Ok(ns)
    }

    /// A command that runs `program` inside the namespace.
    #[must_use]
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args…` inside the namespace and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A guest running in the background inside a namespace; killed (with its KVM child)
/// on drop.
#[derive(Debug)]
pub struct Background {
    /// The `septem-run` process (through `ip netns exec`, which execs it).
    pub child: Child,
}

impl Background {
    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            if self
                .wait_timeout(std::time::Duration::from_secs(2))
                .is_none()
            {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}
