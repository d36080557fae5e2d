//! The container process: forked by `create` (raw `fork`), it enters the namespaces,
//! sets up stdio, waits until `create` has placed it in its cgroup and run the create
//! hooks ([`Prepared::release`]), then executes `septem-run` with
//! `--start-fifo <root>/<id>/exec.fifo`: septem-run sets the guest up and waits there
//! until `start` opens the fifo (runc's exec fifo protocol, with the monitor's set-up
//! done at `create` the way `runc init` does the container's).
//!
//! Between `fork` and `execve` the child runs only async-signal-safe system calls on
//! memory prepared before the fork ([`Prepared`]).

pub mod console;

use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// Errors starting the container process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A string holds a NUL byte.
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    /// `fork` failed.
    #[error("cannot fork the container process")]
    Fork(#[source] std::io::Error),
    /// The release pipe cannot be made or written.
    #[error("cannot {what} the container process's release pipe")]
    Release {
        /// What failed.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The exec fifo cannot be made.
    #[error("cannot create the exec fifo {path}")]
    Fifo {
        /// The fifo.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the child needs, allocated before the fork.
#[derive(Debug)]
pub struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// The child reads one byte here before it executes septem-run
    /// ([`Prepared::release`]); end of file (the creator gave up) makes it exit.
    release_r: Option<OwnedFd>,
    release_w: Option<OwnedFd>,
    /// Namespace to join with `setns(CLONE_NEWNET)`.
    pub netns: Option<OwnedFd>,
    /// Flags for `unshare` (CLONE_NEWNET when the container gets a fresh, empty one).
    pub unshare_flags: i32,
    /// The pty slave for stdio (process.terminal).
    pub console: Option<OwnedFd>,
    /// Descriptors 3..3+N stay open.
    pub preserve_fds: u32,
    /// A descriptor to close first (the state directory's lock).
    pub close_first: i32,
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd as _;
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstring(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Nul(s.to_string()))
}

/// The environment `septem-run` itself gets (the guest's comes as `--env`).
#[must_use]
pub fn monitor_env() -> Vec<String> {
    ["PATH", "RUST_LOG", "SEPTEM_LOG"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
        .collect()
}

impl Prepared {
    /// Prepares the exec of `argv` (argv[0] is the program), and makes the exec fifo
    /// at `fifo` (mode 0622) that `argv` names as septem-run's start gate.
    pub fn new(argv: &[String], env: &[String], fifo: &Path) -> Result<Prepared, Error> {
        let fifo_c = CString::new(fifo.as_os_str().as_bytes())
            .map_err(|_| Error::Nul(fifo.display().to_string()))?;
        // SAFETY: fifo_c is a valid NUL-terminated path.
        if unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o622) } != 0 {
            return Err(Error::Fifo {
                path: fifo.display().to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        let (release_r, release_w) = pipe().map_err(|source| Error::Release {
            what: "create",
            source,
        })?;
        Ok(Prepared {
            program: cstring(&argv[0])?,
            argv: argv.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?,
            envp: env.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?,
            release_r: Some(release_r),
            release_w: Some(release_w),
            netns: None,
            unshare_flags: 0,
            console: None,
            preserve_fds: 0,
            close_first: -1,
        })
    }

    /// Forks the child; returns its pid in the parent. The child waits for
    /// [`Prepared::release`] (or exits when this is dropped without it).
    pub fn spawn(&mut self) -> Result<i32, Error> {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        let netns = self.netns.as_ref().map_or(-1, |f| f.as_raw_fd());
        let console = self.console.as_ref().map_or(-1, |f| f.as_raw_fd());
        let release = (
            self.release_r.as_ref().map_or(-1, |f| f.as_raw_fd()),
            self.release_w.as_ref().map_or(-1, |f| f.as_raw_fd()),
        );
        // SAFETY: fork has no memory preconditions; the child only calls
        // async-signal-safe functions on memory prepared above, then execs or exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::Fork(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: in the child, on the prepared pointers (valid until exec).
            unsafe { self.child(netns, console, release, &argv, &envp) }
        }
        // Only the child reads it.
        self.release_r = None;
        Ok(pid)
    }

    /// Lets the child execute septem-run (after it was placed in its cgroup: what the
    /// monitor allocates is charged there).
    pub fn release(&mut self) -> Result<(), Error> {
        let w = self.release_w.take().ok_or(Error::Release {
            what: "write",
            source: std::io::Error::other("already released"),
        })?;
        std::fs::File::from(w)
            .write_all(b"1")
            .map_err(|source| Error::Release {
                what: "write",
                source,
            })
    }

    /// The child's side. Never returns.
    ///
    /// # Safety
    /// Only in the child right after `fork`; `argv`/`envp` are NULL-terminated arrays of
    /// pointers into `self`.
    unsafe fn child(
        &self,
        netns: i32,
        console: i32,
        release: (i32, i32),
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
    ) -> ! {
        // SAFETY: plain system calls on descriptors and NUL-terminated
        // strings prepared before the fork; no allocation happens here.
        unsafe {
            if self.close_first >= 0 {
                libc::close(self.close_first);
            }
            // The write end is the creator's: end of file must mean it is gone.
            libc::close(release.1);
            // A clean signal state for septem-run: nothing blocked or ignored that the
            // caller (a shim, a shell) had blocked or ignored.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for sig in 1..libc::SIGRTMIN() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            if netns >= 0 && libc::setns(netns, libc::CLONE_NEWNET) != 0 {
                die(b"cannot join the network namespace");
            }
            if self.unshare_flags != 0 && libc::unshare(self.unshare_flags) != 0 {
                die(b"cannot unshare namespaces");
            }
            libc::setsid();
            if console >= 0 {
                for fd in 0..3 {
                    if libc::dup2(console, fd) < 0 {
                        die(b"cannot set up the console");
                    }
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    die(b"cannot make the pty the controlling terminal");
                }
            }
            let mut byte = 0u8;
            loop {
                let n = libc::read(release.0, (&raw mut byte).cast(), 1);
                if n == 1 {
                    break;
                }
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                die(b"the create was abandoned before the container process was released");
            }
            libc::close(release.0);
            let first = 3 + self.preserve_fds;
            if libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) != 0 {
                for fd in first..1024 {
                    libc::close(fd as i32);
                }
            }
            libc::execve(self.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            die(b"cannot execute septem-run");
        }
    }
}

/// Writes `runnc: MSG: errno N` to stderr and exits with 127 (async-signal-safe).
fn die(msg: &[u8]) -> ! {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut buf = [0u8; 160];
    let mut n = 0;
    for part in [b"runnc: ".as_slice(), msg, b": errno "] {
        for &b in part {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    }
    let mut digits = [0u8; 12];
    let mut k = 0;
    let mut e = errno.unsigned_abs();
    loop {
        digits[k] = b'0' + (e % 10) as u8;
        k += 1;
        e /= 10;
        if e == 0 {
            break;
        }
    }
    while k > 0 && n < buf.len() - 1 {
        k -= 1;
        buf[n] = digits[k];
        n += 1;
    }
    buf[n] = b'\n';
    n += 1;
    // SAFETY: write and _exit are async-signal-safe; buf is a live stack buffer.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::_exit(127)
    }
}
