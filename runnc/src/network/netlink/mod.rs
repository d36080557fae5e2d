//! A small synchronous NETLINK_ROUTE client: exactly the requests the wiring needs
//! (links, IPv4 addresses, default routes, link set/delete, ingress qdiscs, u32 +
//! mirred filters), built by hand in [`message`].
//!
//! Why not `netlink-packet-route`/`rtnetlink`: the whole of what runnc sends is a dozen
//! fixed-shape messages; the crates bring an async runtime (rtnetlink) or a large,
//! often-changing typed API (their u32/mirred types changed shape between releases) for
//! that, and every request here is checked against what iproute2 reports in the tests.
//!
//! The socket is opened by the thread that joined the namespace, so it talks to that
//! namespace's kernel tables for its whole life, whatever thread uses it later.

mod message;
pub(super) mod route;
pub(super) mod tc;

use message::{i32_at, Message};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Errors of netlink requests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be made or used.
    #[error("netlink socket: {op}")]
    Socket {
        /// The system call.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request (with its extended-ack text when it gave one).
    #[error("the kernel refused{}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kernel {
        /// The kernel's explanation (`NLMSGERR_ATTR_MSG`).
        message: Option<String>,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A reply could not be read.
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
}

impl Error {
    /// The errno of a refused request.
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `struct nlmsgerr`'s extended-ack attribute carrying a text message.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Receive buffer: dumps are sent in datagrams of at most this much (the kernel sizes
/// them to the reader's buffer, up to 32 KiB).
const RECV_BUF: usize = 64 * 1024;
/// How often a dump the kernel marks inconsistent (`NLM_F_DUMP_INTR`: the table changed
/// meanwhile) is retried.
const DUMP_TRIES: usize = 3;

const REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const ACK: u16 = libc::NLM_F_ACK as u16;
const DUMP: u16 = libc::NLM_F_DUMP as u16;
const CREATE_EXCL: u16 = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
const DUMP_INTR: u16 = libc::NLM_F_DUMP_INTR as u16;

/// A NETLINK_ROUTE socket of the namespace it was opened in.
#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn check(op: &'static str, rc: libc::c_int) -> Result<libc::c_int, Error> {
    if rc < 0 {
        Err(Error::Socket {
            op,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(rc)
    }
}

impl Socket {
    /// Opens a socket in the calling thread's network namespace, asking for
    /// extended acks (the kernel's error text) without the request echoed back.
    pub(crate) fn open() -> Result<Socket, Error> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = check("socket", unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `raw` is a descriptor socket(2) just returned, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            let on: libc::c_int = 1;
            // SAFETY: `on` is a live c_int and its size is passed; an option the
            // kernel lacks fails harmlessly (errors just lose their text).
            let _ = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    std::ptr::from_ref(&on).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Sends a request that changes something and waits for the kernel's ack.
    pub(crate) fn change(&mut self, msg: Message) -> Result<(), Error> {
        self.exchange(msg, |_, _, _| Ok(()))
    }

    /// Sends a dump request; `each` gets every reply's type and payload. Retried when
    /// the kernel reports the dump was interrupted by a change.
    pub(crate) fn dump(
        &mut self,
        build: impl Fn() -> Message,
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<(), Error> {
        for _ in 0..DUMP_TRIES {
            let mut replies: Vec<(u16, Vec<u8>)> = Vec::new();
            let mut interrupted = false;
            self.exchange(build(), |kind, flags, payload| {
                interrupted |= flags & DUMP_INTR != 0;
                replies.push((kind, payload.to_vec()));
                Ok(())
            })?;
            if !interrupted {
                for (kind, payload) in &replies {
                    each(*kind, payload);
                }
                return Ok(());
            }
            tracing::debug!("netlink dump interrupted by a change; retrying");
        }
        Err(Error::Malformed("dump interrupted by changes on every try"))
    }

    /// Sends a request for one object; its reply's payload, `None` when the kernel
    /// says it does not exist (`ENODEV`, `ENOENT`).
    pub(crate) fn get(&mut self, msg: Message) -> Result<Option<Vec<u8>>, Error> {
        let mut reply = None;
        match self.exchange(msg, |_, _, payload| {
            reply.get_or_insert_with(|| payload.to_vec());
            Ok(())
        }) {
            Ok(()) => Ok(reply),
            Err(e) if matches!(e.errno(), Some(libc::ENODEV | libc::ENOENT)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `msg` with a new sequence number and an ack request, hands every reply
    /// of that sequence to `each`, and returns at the ack (`NLMSG_ERROR` 0), an error,
    /// or the end of a dump (`NLMSG_DONE`).
    fn exchange(
        &mut self,
        msg: Message,
        mut each: impl FnMut(u16, u16, &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&msg.finish(seq))?;
        loop {
            let n = self.recv()?;
            let buf = &self.buf[..n];
            let msgs = message::messages(buf).ok_or(Error::Malformed("bad message length"))?;
            for m in msgs.into_iter().filter(|m| m.seq == seq) {
                match m.kind {
                    NLMSG_DONE => return done_status(m.payload),
                    NLMSG_ERROR => return ack_status(m.flags, m.payload),
                    kind => each(kind, m.flags, m.payload)?,
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        // SAFETY: an all-zero sockaddr_nl is valid; nl_pid 0 addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `bytes` and `kernel` are live for the call and their sizes passed.
        let n = check("sendto", unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                std::ptr::from_ref(&kernel).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ) as libc::c_int
        })?;
        if usize::try_from(n).ok() != Some(bytes.len()) {
            return Err(Error::Malformed("short send"));
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<usize, Error> {
        loop {
            // SAFETY: the buffer is live and writable for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Socket {
                    op: "recv",
                    source: e,
                });
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n > self.buf.len() {
                return Err(Error::Malformed("reply larger than the receive buffer"));
            }
            return Ok(n);
        }
    }
}

/// An `NLMSG_ERROR` payload: `int error` (0 is the ack), the request's header (only
/// the header: NETLINK_CAP_ACK), then extended-ack attributes when `NLM_F_ACK_TLVS`.
fn ack_status(flags: u16, payload: &[u8]) -> Result<(), Error> {
    let errno = i32_at(payload, 0).ok_or(Error::Malformed("short error message"))?;
    if errno == 0 {
        return Ok(());
    }
    let capped = flags & libc::NLM_F_CAPPED as u16 != 0;
    let tlvs = flags & libc::NLM_F_ACK_TLVS as u16 != 0;
    let message = if tlvs {
        let echoed = if capped {
            message::NLMSG_HDRLEN
        } else {
            message::u32_at(payload, 4).map_or(0, |l| l as usize)
        };
        payload
            .get(4 + echoed..)
            .and_then(|a| message::attr(a, NLMSGERR_ATTR_MSG))
            .and_then(message::c_str)
            .filter(|s| !s.is_empty())
    } else {
        None
    };
    Err(Error::Kernel {
        message,
        source: io::Error::from_raw_os_error(-errno),
    })
}

/// An `NLMSG_DONE` payload: `int error` (non-zero when the dump failed).
fn done_status(payload: &[u8]) -> Result<(), Error> {
    match i32_at(payload, 0) {
        Some(e) if e < 0 => Err(Error::Kernel {
            message: None,
            source: io::Error::from_raw_os_error(-e),
        }),
        _ => Ok(()),
    }
}

/// A request header for a change: request, ack, and `extra` flags.
fn change_flags(extra: u16) -> u16 {
    REQUEST | ACK | extra
}

/// A request header for a dump.
fn dump_flags() -> u16 {
    REQUEST | ACK | DUMP
}

/// A request header for one object.
fn get_flags() -> u16 {
    REQUEST | ACK
}
