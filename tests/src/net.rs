//! Real network plumbing for end-to-end tests: a throwaway network namespace with tap
//! devices, `septem-run` started inside it, and raw Ethernet I/O on a tap from a test
//! thread that joins the namespace.
//!
//! Everything is torn down by `Drop` (the guest process is killed, the namespace and
//! with it its taps deleted), also when a test fails. Tests call [`skip_unless_net`]
//! first: these need root, `/dev/net/tun` and the `ip` tool.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// `Err(reason)` when taps and network namespaces cannot be used here.
pub fn net_usable() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (tap devices and network namespaces)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("the `ip` tool (iproute2) is missing".into()),
    }
}

/// Prints why and returns true when taps and namespaces cannot be used here.
#[must_use]
pub fn skip_unless_net() -> bool {
    match net_usable() {
        Ok(()) => false,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
    }
}

fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace `septem-test-<pid>-<n>`, deleted (with its taps) on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace with `lo` up.
    #[must_use]
    pub fn new() -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "septem-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `argv` inside the namespace and asserts it succeeds.
    pub fn exec_ok(&self, argv: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(argv);
        ip(&args);
    }

    /// Creates tap `tap` (MTU `mtu`), up when `up`.
    pub fn add_tap(&self, tap: &str, mtu: u32, up: bool) {
        self.exec_ok(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"]);
        self.exec_ok(&["ip", "link", "set", tap, "mtu", &mtu.to_string()]);
        if up {
            self.exec_ok(&["ip", "link", "set", tap, "up"]);
        }
    }

    /// A command running `program args` inside the namespace.
    #[must_use]
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .args(args);
        cmd
    }

    /// Runs `f` on a new thread that has joined the namespace (its sockets and
    /// interface look-ups are the namespace's), and returns its result.
    pub fn on_thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: joining a network namespace changes only this thread's view of
            // the network; the thread ends with `f`.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
}

/// What a [`Running`] process printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit status (`None`: killed by a signal).
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Running {
    /// Spawns `cmd` with stdout and stderr captured.
    #[must_use]
    pub fn spawn(mut cmd: Command) -> Running {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        Running { child: Some(child) }
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid (not reaped yet, so not reused).
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill");
    }

    /// True while the process has not ended.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("wait").is_none())
    }

    /// Waits up to `timeout` for the process to end (killing it after that).
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("collect output");
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let f = Finished {
            status: if timed_out { None } else { out.status.code() },
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
        };
        assert!(
            !timed_out,
            "did not finish within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
            f.stdout, f.stderr
        );
        f
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw `AF_PACKET` socket bound to one interface and EtherType (create it on a
/// [`NetNs::on_thread`] thread).
#[derive(Debug)]
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
}

impl PacketSocket {
    /// Opens a socket for `ethertype` frames on `iface`, with a 100 ms receive timeout.
    pub fn open(iface: &str, ethertype: u16) -> std::io::Result<PacketSocket> {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(iface).expect("no NUL");
        // SAFETY: `name` is a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let proto = ethertype.to_be();
        // SAFETY: plain socket creation; the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: zero is a valid sockaddr_ll before we fill it.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: setting SO_RCVTIMEO with a valid timeval.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        Ok(PacketSocket { fd })
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: `frame` is a valid buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next frame coming *in* on the interface (frames this host sends out are
    /// skipped), or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            // SAFETY: zero is a valid sockaddr_ll for the kernel to fill.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `buf` and `from` are valid for the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                continue;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Some(buf[..n as usize].to_vec());
        }
        None
    }
}
