//! The fork model: teardown off the critical path.
//!
//! Destroying a VM costs ~13 ms on this kind of host, and KVM binds a VM to the
//! process (mm) that created it. So the monitor forks *before* touching KVM:
//!
//! - the **child** creates the VM and vCPU, loads the guest, seals itself, runs the
//!   guest, and when the guest is done writes a [`Message`] on the control pipe and
//!   calls `exit_group`: the VM is destroyed while the child exits, unobserved;
//! - the **parent** never touches KVM: it reads one message from the pipe and returns
//!   the status at once. If the pipe closes without a message (the child was killed, or
//!   its SIGSYS reporter ended it), it `waitpid`s and reports how the child ended.
//!
//! The parent forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the child (which resets
//! them to their defaults); the child asks for SIGKILL when the parent dies, so nothing
//! outlives the command. After the parent returns, the exiting child is reparented and
//! reaped by init (or the nearest subreaper). A throwaway process that must not linger
//! as a zombie of a caller that goes on running is [`Mode::Detached`] instead.

use crate::host::{exit_group, write_all};
use std::convert::Infallible;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// Tag: the guest ran; the status follows.
const TAG_DONE: u8 = 0;
/// Tag: set-up failed; status, errno (i32 LE) and a message follow.
const TAG_SETUP: u8 = 1;
/// Longest message (one atomic pipe write).
const MAX_MESSAGE: usize = 1024;

/// What the child tells the parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The guest ran to its end (reports already printed): exit with this status.
    Done(u8),
    /// Set-up failed before the guest ran.
    Setup {
        /// Exit status.
        status: u8,
        /// OS error number, or 0.
        errno: i32,
        /// What failed.
        what: String,
    },
}

impl Message {
    /// Encodes `Setup` (allocates: only before sealing).
    #[must_use]
    pub fn encode_setup(status: u8, errno: i32, what: &str) -> Vec<u8> {
        let mut v = vec![TAG_SETUP, status];
        v.extend_from_slice(&errno.to_le_bytes());
        let room = MAX_MESSAGE - v.len();
        let mut cut = what.len().min(room);
        while !what.is_char_boundary(cut) {
            cut -= 1;
        }
        v.extend_from_slice(&what.as_bytes()[..cut]);
        v
    }

    /// Encodes `Done` (no allocation: usable sealed).
    #[must_use]
    pub fn encode_done(status: u8) -> [u8; 2] {
        [TAG_DONE, status]
    }

    /// Decodes one message.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Message> {
        match bytes {
            [TAG_DONE, status] => Some(Message::Done(*status)),
            [TAG_SETUP, status, e0, e1, e2, e3, rest @ ..] => Some(Message::Setup {
                status: *status,
                errno: i32::from_le_bytes([*e0, *e1, *e2, *e3]),
                what: String::from_utf8_lossy(rest).into_owned(),
            }),
            _ => None,
        }
    }
}

/// How the parent's wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The child sent a message.
    Message(Message),
    /// The child exited with this code without a message.
    Exited(i32),
    /// The child was killed by this signal without a message.
    Signaled(i32),
    /// A detached child ended without a message (how is unknown).
    Vanished,
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; `pid` is our child.
        unsafe { libc::kill(pid, sig) };
    }
}

const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

fn install_forwarding() {
    for sig in FORWARDED {
        // SAFETY: zero is a valid sigaction (empty mask, no flags) before we fill it.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = forward as extern "C" fn(libc::c_int) as usize;
        // No SA_RESTART: the parent's blocking read sees EINTR and retries.
        sa.sa_flags = 0;
        // SAFETY: `sa` is initialized; `forward` only calls kill (async-signal-safe).
        unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
    }
}

/// Writes `bytes` on the control pipe (one write: messages fit in `PIPE_BUF`).
pub fn send(control: RawFd, bytes: &[u8]) {
    let _ = write_all(control, bytes);
}

fn reset_forwarding() {
    for sig in FORWARDED {
        // SAFETY: restoring a signal's default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// How the child relates to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A direct child: killed when the caller dies, and `waitpid`ed when it ends
    /// without a message (to say how it died). Reaped by init once the caller exits.
    Child,
    /// A grandchild, detached at once (an intermediate process forks it and exits), so
    /// it never lingers as a zombie of a caller that goes on running. Its death without a
    /// message is reported as [`Outcome::Vanished`].
    Detached,
}

/// Forks; runs `child(control_fd)` in the new process, which must never return (hence
/// `Infallible`: it ends with [`exit_group`] after [`send`]ing its message), and waits
/// in the caller for that message.
///
/// With `reap_after_message`, the caller also waits for a [`Mode::Child`] to exit after
/// its message: used when the child holds taps, so they are free again when the caller
/// returns (at the cost of the VM's teardown time, which only long-running networked
/// guests pay).
pub fn fork_and_wait(
    mode: Mode,
    reap_after_message: bool,
    child: impl FnOnce(RawFd) -> Infallible,
) -> io::Result<Outcome> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two pipe ends.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    use std::io::Write;
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the caller's pid, queried before forking (getpid cannot fail).
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork has no memory-safety preconditions; the new process only runs
    // `child` (which, single-threaded, may allocate: glibc resets its allocator locks
    // in a forked child) and then exits without returning into the caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: closing the pipe fds we own.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
        return Err(e);
    }
    if pid == 0 {
        reset_forwarding();
        // SAFETY: closing our copy of the read end.
        unsafe { libc::close(read_end) };
        match mode {
            Mode::Child => {
                // SAFETY: asking for SIGKILL when the caller dies, then checking it
                // did not die already.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() != parent {
                        exit_group(crate::exit_status::INTERNAL);
                    }
                }
            }
            Mode::Detached => {
                // SAFETY: as above; the intermediate process exits at once, leaving the
                // grandchild to init.
                let grandchild = unsafe { libc::fork() };
                if grandchild != 0 {
                    exit_group(u8::from(grandchild < 0));
                }
            }
        }
        child(write_end);
    }
    // SAFETY: closing the caller's copy of the write end, so EOF means the child is gone.
    unsafe { libc::close(write_end) };
    if mode == Mode::Detached {
        let mut status = 0;
        // SAFETY: reaping the intermediate process, which exits at once.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    } else {
        CHILD.store(pid, Ordering::Relaxed);
        install_forwarding();
    }
    let mut buf = [0u8; MAX_MESSAGE];
    let n = loop {
        // SAFETY: reading into a buffer of `buf.len()` bytes from a pipe fd we own.
        let n = unsafe { libc::read(read_end, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            break 0;
        }
    };
    // SAFETY: closing the read end we own.
    unsafe { libc::close(read_end) };
    if mode == Mode::Child {
        CHILD.store(0, Ordering::Relaxed);
    }
    if let Some(m) = Message::decode(&buf[..n]) {
        if reap_after_message && mode == Mode::Child {
            reap(pid)?;
        }
        return Ok(Outcome::Message(m));
    }
    if mode == Mode::Detached {
        return Ok(Outcome::Vanished);
    }
    // No message: the child is dead or dying; collect it.
    let status = reap(pid)?;
    if libc::WIFSIGNALED(status) {
        Ok(Outcome::Signaled(libc::WTERMSIG(status)))
    } else {
        Ok(Outcome::Exited(libc::WEXITSTATUS(status)))
    }
}

/// Waits for our child `pid` to exit (EINTR retried); returns its wait status.
fn reap(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        assert_eq!(
            Message::decode(&Message::encode_done(7)),
            Some(Message::Done(7))
        );
        let long = "é".repeat(2000);
        let enc = Message::encode_setup(123, 13, &long);
        assert!(enc.len() <= MAX_MESSAGE);
        match Message::decode(&enc) {
            Some(Message::Setup {
                status: 123,
                errno: 13,
                what,
            }) => assert!(long.starts_with(&what) && !what.is_empty()),
            other => panic!("{other:?}"),
        }
        assert_eq!(Message::decode(&[]), None);
        assert_eq!(Message::decode(&[9, 9]), None);
    }

    #[test]
    fn parent_gets_the_message_or_the_death() {
        for mode in [Mode::Child, Mode::Detached] {
            let got = fork_and_wait(mode, false, |fd| {
                send(fd, &Message::encode_done(42));
                exit_group(0)
            })
            .unwrap();
            assert_eq!(got, Outcome::Message(Message::Done(42)));
        }
        let got = fork_and_wait(Mode::Detached, false, |_| exit_group(9)).unwrap();
        assert_eq!(got, Outcome::Vanished);
        let got = fork_and_wait(Mode::Child, false, |_| exit_group(9)).unwrap();
        assert_eq!(got, Outcome::Exited(9));
        let got = fork_and_wait(Mode::Child, false, |_| {
            // SAFETY: raising SIGKILL on ourselves (the test child).
            unsafe { libc::raise(libc::SIGKILL) };
            exit_group(0)
        })
        .unwrap();
        assert_eq!(got, Outcome::Signaled(libc::SIGKILL));
    }
}
