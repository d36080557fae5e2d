//! TCP: [`TcpListener`] and [`TcpStream`].

use super::stack::{endpoint_v4, SourceId, TcpOptions};
use super::{block_on, with, Error, Result};
use crate::time;
use core::net::SocketAddrV4;
use core::time::Duration;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

/// A TCP port accepting connections.
///
/// The stack keeps a few sockets listening on the port at all times and queues up to
/// `backlog` connections that completed their handshake before the app accepted them,
/// so a burst of clients is not refused. Dropping the listener resets connections
/// that were never accepted.
#[derive(Debug)]
pub struct TcpListener {
    id: usize,
    port: u16,
    nonblocking: bool,
}

impl TcpListener {
    /// Listens on `port` (all addresses of the interface) with the default options:
    /// 64 KiB receive and send buffers per connection, a backlog of 128.
    pub fn bind(port: u16) -> Result<TcpListener> {
        TcpListener::bind_with(port, TcpOptions::default())
    }

    /// Listens on `port` with explicit buffer sizes and backlog.
    pub fn bind_with(port: u16, opts: TcpOptions) -> Result<TcpListener> {
        let id = with(|st| st.listen(port, opts))?;
        Ok(TcpListener {
            id,
            port,
            nonblocking: false,
        })
    }

    /// The next connection and its peer's address. Blocks unless non-blocking, then
    /// [`Error::WouldBlock`] when none is waiting.
    pub fn accept(&self) -> Result<(TcpStream, SocketAddrV4)> {
        let (handle, peer) = block_on(self.nonblocking, None, |st| st.accept(self.id))?;
        Ok((
            TcpStream {
                handle,
                nonblocking: false,
            },
            peer,
        ))
    }

    /// The port listened on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The local address (the interface's address, once it has one).
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        let ip = with(|st| st.ipv4().map(|(a, _)| a).ok_or(Error::NotConfigured))?;
        Ok(SocketAddrV4::new(ip, self.port))
    }

    /// Makes [`accept`](Self::accept) return [`Error::WouldBlock`] instead of waiting.
    pub fn set_nonblocking(&mut self, nonblocking: bool) -> Result<()> {
        self.nonblocking = nonblocking;
        Ok(())
    }

    pub(crate) fn source_id(&self) -> SourceId {
        SourceId::Listener(self.id)
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let _ = with(|st| {
            st.close_listener(self.id);
            Ok(())
        });
    }
}

/// Which halves [`TcpStream::shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop reading. smoltcp has no read-side shutdown: this changes nothing on the
    /// wire (accepted so code written for std compiles unchanged).
    Read,
    /// Send FIN after the queued data; reading goes on.
    Write,
    /// Both.
    Both,
}

/// A TCP connection. Dropping it closes it gracefully: FIN after the queued data
/// (unread input is discarded), and the stack finishes the goodbye in the background.
#[derive(Debug)]
pub struct TcpStream {
    handle: SocketHandle,
    nonblocking: bool,
}

impl TcpStream {
    /// Connects to `addr`, waiting for the handshake (up to 75 seconds).
    pub fn connect(addr: SocketAddrV4) -> Result<TcpStream> {
        TcpStream::connect_with(addr, TcpOptions::default(), Some(Duration::from_secs(75)))
    }

    /// Connects with explicit buffer sizes and a handshake timeout (None: no limit).
    pub fn connect_with(
        addr: SocketAddrV4,
        opts: TcpOptions,
        timeout: Option<Duration>,
    ) -> Result<TcpStream> {
        let handle = with(|st| st.connect(addr, opts))?;
        let stream = TcpStream {
            handle,
            nonblocking: false,
        };
        let deadline = timeout.and_then(|t| time::Instant::now().checked_add(t));
        block_on(false, deadline, |st| match st.tcp(handle).state() {
            State::SynSent | State::SynReceived => Err(Error::WouldBlock),
            State::Closed => Err(Error::ConnectionRefused),
            _ => Ok(()),
        })?;
        Ok(stream)
    }

    /// Reads into `buf`; `Ok(0)` at end of stream (or for an empty `buf`). Blocks until
    /// data arrives unless non-blocking.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let h = self.handle;
        block_on(self.nonblocking, None, |st| {
            let s = st.tcp(h);
            if s.can_recv() {
                return s.recv_slice(buf).map_err(|_| Error::NotConnected);
            }
            if buf.is_empty()
                || !s.may_recv() && !matches!(s.state(), State::SynSent | State::SynReceived)
            {
                return Ok(0);
            }
            Err(Error::WouldBlock)
        })
    }

    /// Lets `f` consume received bytes in place (no copy); `f` returns how many it
    /// used and a result. Blocks like [`read`](Self::read); at end of stream `f` sees an
    /// empty slice.
    pub fn read_with<R>(&mut self, mut f: impl FnMut(&[u8]) -> (usize, R)) -> Result<R> {
        let h = self.handle;
        let mut f = Some(&mut f);
        block_on(self.nonblocking, None, |st| {
            let s = st.tcp(h);
            if s.can_recv() {
                let Some(f) = f.take() else {
                    return Err(Error::InvalidInput);
                };
                return s.recv(|data| f(data)).map_err(|_| Error::NotConnected);
            }
            if !s.may_recv() && !matches!(s.state(), State::SynSent | State::SynReceived) {
                let Some(f) = f.take() else {
                    return Err(Error::InvalidInput);
                };
                return Ok(f(&[]).1);
            }
            Err(Error::WouldBlock)
        })
    }

    /// Queues as much of `buf` as fits in the send buffer and returns how much. Blocks
    /// while the buffer is full unless non-blocking. The data leaves on the next round
    /// of the stack (any blocking call, [`super::poll`], a [`super::Poller`] wait, or
    /// [`flush`](Self::flush)).
    pub fn write(&mut self, buf: &[u8]) -> Result<usize> {
        let h = self.handle;
        block_on(self.nonblocking, None, |st| {
            let s = st.tcp(h);
            if !s.may_send() {
                return Err(match s.state() {
                    State::SynSent | State::SynReceived => Error::WouldBlock,
                    _ => Error::ConnectionReset,
                });
            }
            if buf.is_empty() {
                return Ok(0);
            }
            match s.send_slice(buf) {
                Ok(0) => Err(Error::WouldBlock),
                Ok(n) => Ok(n),
                Err(_) => Err(Error::NotConnected),
            }
        })
    }

    /// Writes all of `buf`, waiting for room as needed (in non-blocking mode it may
    /// return [`Error::WouldBlock`] after writing part of it: use `write` then).
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Sends what is queued. Blocking: waits until the peer acknowledged all of it.
    /// Non-blocking: runs the stack once.
    pub fn flush(&mut self) -> Result<()> {
        let h = self.handle;
        if self.nonblocking {
            return super::poll(Some(Duration::ZERO)).map(|_| ());
        }
        block_on(false, None, |st| {
            let s = st.tcp(h);
            if s.send_queue() == 0 || !s.is_active() {
                Ok(())
            } else {
                Err(Error::WouldBlock)
            }
        })
    }

    /// Closes one or both halves.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        let h = self.handle;
        with(|st| {
            let s = st.tcp(h);
            match how {
                Shutdown::Write => s.close(),
                Shutdown::Read => {}
                Shutdown::Both => s.close(),
            }
            Ok(())
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddrV4> {
        let h = self.handle;
        with(|st| {
            st.tcp(h)
                .remote_endpoint()
                .map(endpoint_v4)
                .ok_or(Error::NotConnected)
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        let h = self.handle;
        with(|st| {
            st.tcp(h)
                .local_endpoint()
                .map(endpoint_v4)
                .ok_or(Error::NotConnected)
        })
    }

    /// Disables (true) or enables Nagle's algorithm.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<()> {
        let h = self.handle;
        with(|st| {
            st.tcp(h).set_nagle_enabled(!nodelay);
            Ok(())
        })
    }

    /// Makes reads, writes and flush return [`Error::WouldBlock`] instead of waiting.
    pub fn set_nonblocking(&mut self, nonblocking: bool) -> Result<()> {
        self.nonblocking = nonblocking;
        Ok(())
    }

    /// Closes the connection if no packet arrives for `timeout` while data is
    /// outstanding (None: never; the default).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        let h = self.handle;
        with(|st| {
            st.tcp(h).set_timeout(timeout.map(smol_duration));
            Ok(())
        })
    }

    /// Sends keep-alive probes after `interval` of silence (None: off; the default).
    pub fn set_keepalive(&self, interval: Option<Duration>) -> Result<()> {
        let h = self.handle;
        with(|st| {
            st.tcp(h).set_keep_alive(interval.map(smol_duration));
            Ok(())
        })
    }

    /// Bytes received and not read yet.
    pub fn recv_queue(&self) -> Result<usize> {
        let h = self.handle;
        with(|st| Ok(st.tcp(h).recv_queue()))
    }

    /// Bytes queued for sending (including sent but not acknowledged).
    pub fn send_queue(&self) -> Result<usize> {
        let h = self.handle;
        with(|st| Ok(st.tcp(h).send_queue()))
    }

    /// True while the connection can still carry data in at least one direction.
    pub fn is_open(&self) -> bool {
        let h = self.handle;
        with(|st| Ok(st.tcp(h).is_active())).unwrap_or(false)
    }

    pub(crate) fn source_id(&self) -> SourceId {
        SourceId::Tcp(self.handle)
    }
}

fn smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let h = self.handle;
        let _ = with(|st| {
            st.close_tcp(h);
            Ok(())
        });
    }
}
