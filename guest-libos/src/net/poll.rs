//! [`Poller`]: which of many sockets are ready, for event-loop servers.
//!
//! Register non-blocking sockets with a [`Token`] and an [`Interest`]; [`Poller::wait`]
//! runs the stack and returns the ready ones (level-triggered, like `poll(2)`: a
//! socket stays ready until read, written or accepted from). Dropping a socket
//! removes its registrations, so a token never outlives its socket.
//!
//! ```ignore
//! let mut poller = Poller::new()?;
//! let mut listener = TcpListener::bind(80)?;
//! listener.set_nonblocking(true)?;
//! poller.register(&listener, Token(0), Interest::READABLE)?;
//! let mut events = Vec::new();
//! loop {
//!     poller.wait(&mut events, None)?;
//!     for ev in &events { /* accept / read / write until WouldBlock */ }
//! }
//! ```

use super::stack::{Registration, SourceId};
use super::{smol_now, wait, with, Result};
use super::{TcpListener, TcpStream, UdpSocket};
use crate::time;
use alloc::vec::Vec;
use core::time::Duration;

/// The app's name for a registered socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub usize);

/// What a registration waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    readable: bool,
    writable: bool,
}

impl Interest {
    /// Data to read, a connection to accept, end of stream or an error.
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Room in the send buffer.
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };
    /// Both.
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
    };

    /// Whether readability is of interest.
    #[must_use]
    pub const fn is_readable(self) -> bool {
        self.readable
    }

    /// Whether writability is of interest.
    #[must_use]
    pub const fn is_writable(self) -> bool {
        self.writable
    }
}

/// A ready socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The token it was registered with.
    pub token: Token,
    /// Readable (data, a connection, end of stream or an error: a read returns at once).
    pub readable: bool,
    /// Writable (room in the send buffer, or an error).
    pub writable: bool,
}

/// Something a [`Poller`] can watch: [`TcpListener`], [`TcpStream`], [`UdpSocket`].
pub trait Source: sealed::Sealed {}

mod sealed {
    use super::SourceId;

    pub trait Sealed {
        fn source_id(&self) -> SourceId;
    }

    impl Sealed for super::TcpListener {
        fn source_id(&self) -> SourceId {
            super::TcpListener::source_id(self)
        }
    }

    impl Sealed for super::TcpStream {
        fn source_id(&self) -> SourceId {
            super::TcpStream::source_id(self)
        }
    }

    impl Sealed for super::UdpSocket {
        fn source_id(&self) -> SourceId {
            super::UdpSocket::source_id(self)
        }
    }
}

impl Source for TcpListener {}
impl Source for TcpStream {}
impl Source for UdpSocket {}

/// Waits for readiness of registered sockets.
#[derive(Debug)]
pub struct Poller {
    id: u32,
}

impl Poller {
    /// A poller with no registrations.
    pub fn new() -> Result<Poller> {
        Ok(Poller {
            id: with(|st| Ok(st.new_poller()))?,
        })
    }

    /// Watches `source` for `interest`, reported with `token`. Registering a source
    /// again replaces its registration.
    pub fn register(&self, source: &impl Source, token: Token, interest: Interest) -> Result<()> {
        let (poller, src) = (self.id, sealed::Sealed::source_id(source));
        with(|st| {
            let reg = Registration {
                poller,
                source: src,
                token: token.0,
                readable: interest.readable,
                writable: interest.writable,
            };
            match st
                .regs
                .iter_mut()
                .find(|r| r.poller == poller && r.source == src)
            {
                Some(r) => *r = reg,
                None => st.regs.push(reg),
            }
            Ok(())
        })
    }

    /// Same as [`register`](Self::register).
    pub fn reregister(&self, source: &impl Source, token: Token, interest: Interest) -> Result<()> {
        self.register(source, token, interest)
    }

    /// Stops watching `source`.
    pub fn deregister(&self, source: &impl Source) -> Result<()> {
        let (poller, src) = (self.id, sealed::Sealed::source_id(source));
        with(|st| {
            st.regs.retain(|r| !(r.poller == poller && r.source == src));
            Ok(())
        })
    }

    /// Runs the stack (sending what the app queued since the last call) and fills
    /// `events` with the ready sockets. When none is ready, sleeps until input, a stack
    /// timer or `timeout` (None: no limit) and tries again. Returns the number of events
    /// (0 on timeout).
    pub fn wait(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> Result<usize> {
        events.clear();
        let deadline = timeout.and_then(|t| time::Instant::now().checked_add(t));
        let poller = self.id;
        // A shutdown request seen during this wait ends it (the app has to react).
        let shutdown_before = crate::lifecycle::shutdown_requested();
        loop {
            let done = with(|st| {
                let now = smol_now();
                st.run(now);
                for r in st.regs.iter().filter(|r| r.poller == poller) {
                    let (rd, wr) = st.readiness(r.source);
                    let (rd, wr) = (rd && r.readable, wr && r.writable);
                    if rd || wr {
                        events.push(Event {
                            token: Token(r.token),
                            readable: rd,
                            writable: wr,
                        });
                    }
                }
                if !events.is_empty() {
                    return Ok(true);
                }
                let now_ns = now.total_micros() as u64 * 1000;
                if deadline.is_some_and(|d| now_ns >= d.as_nanos())
                    || timeout == Some(Duration::ZERO)
                {
                    return Ok(true);
                }
                wait(st, now, deadline)?;
                Ok(!shutdown_before && crate::lifecycle::shutdown_requested())
            })?;
            if done {
                return Ok(events.len());
            }
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let poller = self.id;
        let _ = with(|st| {
            st.regs.retain(|r| r.poller != poller);
            Ok(())
        });
    }
}
