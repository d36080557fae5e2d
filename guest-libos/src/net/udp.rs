//! UDP: [`UdpSocket`].

use super::stack::{endpoint_v4, SourceId};
use super::{block_on, with, Error, Result};
use core::net::SocketAddrV4;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;

/// Payload bytes buffered in each direction (up to 64 datagrams each way).
const UDP_BUFFER: usize = 64 * 1024;

/// A UDP socket bound to a local port.
#[derive(Debug)]
pub struct UdpSocket {
    handle: SocketHandle,
    port: u16,
    nonblocking: bool,
}

impl UdpSocket {
    /// Binds `port` (0: an ephemeral port).
    pub fn bind(port: u16) -> Result<UdpSocket> {
        let handle = with(|st| st.udp_bind(port, UDP_BUFFER))?;
        let port = with(|st| Ok(st.udp(handle).endpoint().port))?;
        Ok(UdpSocket {
            handle,
            port,
            nonblocking: false,
        })
    }

    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Queues one datagram to `to` (it leaves on the stack's next round). Blocks while
    /// the send buffer is full unless non-blocking.
    pub fn send_to(&self, data: &[u8], to: SocketAddrV4) -> Result<usize> {
        let h = self.handle;
        block_on(self.nonblocking, None, |st| {
            if st.ipv4().is_none() {
                return Err(Error::NotConfigured);
            }
            let s = st.udp(h);
            if data.len() > s.payload_send_capacity() {
                return Err(Error::MessageTooLong);
            }
            match s.send_slice(data, IpEndpoint::from(to)) {
                Ok(()) => Ok(data.len()),
                Err(udp::SendError::BufferFull) => Err(Error::WouldBlock),
                Err(udp::SendError::Unaddressable) => Err(Error::InvalidInput),
            }
        })
    }

    /// Receives one datagram into `buf` (a longer one is truncated) and its sender.
    /// Blocks until one arrives unless non-blocking.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV4)> {
        let h = self.handle;
        block_on(self.nonblocking, None, |st| match st.udp(h).recv() {
            Ok((data, meta)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok((n, endpoint_v4(meta.endpoint)))
            }
            Err(udp::RecvError::Exhausted) => Err(Error::WouldBlock),
            Err(udp::RecvError::Truncated) => Err(Error::MessageTooLong),
        })
    }

    /// Makes `send_to` and `recv_from` return [`Error::WouldBlock`] instead of waiting.
    pub fn set_nonblocking(&mut self, nonblocking: bool) -> Result<()> {
        self.nonblocking = nonblocking;
        Ok(())
    }

    pub(crate) fn source_id(&self) -> SourceId {
        SourceId::Udp(self.handle)
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let h = self.handle;
        let _ = with(|st| {
            st.close_udp(h);
            Ok(())
        });
    }
}
