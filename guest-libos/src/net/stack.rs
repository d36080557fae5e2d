//! The network stack: one smoltcp interface over a [`BatchDevice`], its sockets, the
//! listen backlogs, and the poll-round / wait logic every blocking call and poller uses.

use super::config::{Addressing, NetSettings};
use super::device::{BatchDevice, DeviceStats, FrameIo};
use super::Error;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::{Device as _, TxToken as _};
use smoltcp::socket::{dhcpv4, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Cidr,
};

/// Listening sockets a listener keeps ready beyond those with a connection. They are
/// replaced after every received frame, so a burst of SYNs never finds none.
const SPARE_LISTENERS: usize = 2;
/// How long a closed socket may take to finish its goodbye before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(30);
/// Longest single sleep when no timer is due (an idle guest wakes this rarely).
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Sleep while the host refused frames (there is no "writable" wake-up).
const TX_RETRY: Duration = Duration::from_micros(500);

/// Socket buffer sizes and backlog of a TCP listener or stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    /// Receive buffer per connection, in bytes.
    pub rx_buffer: usize,
    /// Send buffer per connection, in bytes.
    pub tx_buffer: usize,
    /// Connections accepted by the stack but not yet by the app.
    pub backlog: usize,
    /// Disable Nagle's algorithm on accepted connections.
    pub nodelay: bool,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            rx_buffer: 64 * 1024,
            tx_buffer: 64 * 1024,
            backlog: 128,
            nodelay: false,
        }
    }
}

/// One listening port: spare sockets in `Listen`, and connections waiting for `accept`.
#[derive(Debug)]
pub(crate) struct Listener {
    port: u16,
    idle: Vec<SocketHandle>,
    pending: VecDeque<SocketHandle>,
    opts: TcpOptions,
}

/// What a poller watches (an implementation detail of [`super::Source`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum SourceId {
    Listener(usize),
    Tcp(SocketHandle),
    Udp(SocketHandle),
}

/// A poller's registration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Registration {
    pub poller: u32,
    pub source: SourceId,
    pub token: usize,
    pub readable: bool,
    pub writable: bool,
}

/// The whole stack, generic over how frames reach the host (hypercalls in a guest,
/// memory in host tests).
pub(crate) struct Stack<I: FrameIo> {
    pub iface: Interface,
    pub dev: BatchDevice<I>,
    pub sockets: SocketSet<'static>,
    pub settings: NetSettings,
    dhcp: Option<SocketHandle>,
    dns: Option<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
    listeners: Vec<Option<Listener>>,
    closing: Vec<(SocketHandle, Instant)>,
    pub regs: Vec<Registration>,
    next_poller: u32,
    next_port: u16,
    last_now: Instant,
}

impl<I: FrameIo> core::fmt::Debug for Stack<I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stack")
            .field("settings", &self.settings)
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

pub(crate) fn endpoint_v4(ep: IpEndpoint) -> SocketAddrV4 {
    let IpAddress::Ipv4(a) = ep.addr;
    SocketAddrV4::new(a, ep.port)
}

impl<I: FrameIo> Stack<I> {
    pub fn new(io: I, settings: NetSettings, now: Instant, seed: u64) -> Self {
        let mut dev = BatchDevice::new(io, settings.frame_len());
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(settings.mac)));
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut dev, now);
        let mut sockets = SocketSet::new(vec![]);
        let mut dhcp = None;
        match settings.addressing {
            Addressing::Static {
                address,
                prefix_len,
            } => {
                iface.update_ip_addrs(|a| {
                    let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(address, prefix_len)));
                });
                if let Some(gw) = settings.gateway {
                    let _ = iface.routes_mut().add_default_ipv4_route(gw);
                }
            }
            Addressing::Dhcp => dhcp = Some(sockets.add(dhcpv4::Socket::new())),
        }
        let mut stack = Stack {
            iface,
            dev,
            sockets,
            settings,
            dhcp,
            dns: settings.dns,
            gateway: settings.gateway,
            listeners: Vec::new(),
            closing: Vec::new(),
            regs: Vec::new(),
            next_poller: 1,
            next_port: 49152 + (seed % 16384) as u16,
            last_now: now,
        };
        stack.announce(now);
        stack
    }

    /// Sends a gratuitous ARP request for the interface's address (none without one).
    ///
    /// A peer may have tried to reach the address before the guest was up (a client
    /// polling a just-started pod): its ARP request went unanswered and its neighbour
    /// entry waits for the next retry, a second later on Linux. The announcement
    /// resolves that entry at once (and refreshes stale ones after a restart with the
    /// same address and another MAC).
    fn announce(&mut self, now: Instant) {
        let Some((address, _)) = self.ipv4() else {
            return;
        };
        let mac = EthernetAddress(self.settings.mac);
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: mac,
            source_protocol_addr: address,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: address,
        };
        let eth = EthernetRepr {
            src_addr: mac,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        let Some(token) = self.dev.transmit(now) else {
            return;
        };
        token.consume(eth.buffer_len() + arp.buffer_len(), |buf| {
            let mut frame = EthernetFrame::new_unchecked(buf);
            eth.emit(&mut frame);
            arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        });
        self.dev.flush();
    }

    // ---- configuration -------------------------------------------------------------

    pub fn ipv4(&self) -> Option<(Ipv4Addr, u8)> {
        self.iface
            .ip_addrs()
            .iter()
            .map(|c| match c {
                IpCidr::Ipv4(c) => (c.address(), c.prefix_len()),
            })
            .next()
    }

    pub fn dns(&self) -> Option<Ipv4Addr> {
        self.dns
    }

    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gateway
    }

    pub fn stats(&self) -> DeviceStats {
        self.dev.stats()
    }

    fn poll_dhcp(&mut self) -> bool {
        let Some(h) = self.dhcp else { return false };
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            None => return false,
            Some(dhcpv4::Event::Configured(c)) => {
                Some((c.address, c.router, c.dns_servers.first().copied()))
            }
            Some(dhcpv4::Event::Deconfigured) => None,
        };
        self.iface.update_ip_addrs(|a| a.clear());
        self.iface.routes_mut().remove_default_ipv4_route();
        match event {
            Some((cidr, router, dns)) => {
                self.iface.update_ip_addrs(|a| {
                    let _ = a.push(IpCidr::Ipv4(cidr));
                });
                if let Some(gw) = router {
                    let _ = self.iface.routes_mut().add_default_ipv4_route(gw);
                }
                self.gateway = router.or(self.settings.gateway);
                self.dns = dns.or(self.settings.dns);
                self.announce(self.last_now);
            }
            None => {
                self.gateway = self.settings.gateway;
                self.dns = self.settings.dns;
            }
        }
        true
    }

    // ---- running -------------------------------------------------------------------

    /// One poll round: housekeeping, input (bounded), output, one flush. Returns true
    /// when a socket's state may have changed.
    pub fn run(&mut self, now: Instant) -> bool {
        self.dev.begin_round();
        self.iface.poll_maintenance(now);
        let mut changed = false;
        loop {
            match self
                .iface
                .poll_ingress_single(now, &mut self.dev, &mut self.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => {
                    changed = true;
                    self.refill_listeners();
                }
            }
        }
        changed |= self.poll_dhcp();
        loop {
            match self
                .iface
                .poll_egress(now, &mut self.dev, &mut self.sockets)
            {
                PollResult::None => break,
                PollResult::SocketStateChanged => changed = true,
            }
        }
        self.dev.flush();
        self.reap(now);
        changed
    }

    /// How long the stack may sleep from `now` (None: until input arrives).
    pub fn sleep_budget(&mut self, now: Instant) -> Option<Duration> {
        if self.dev.rx_pending() {
            return Some(Duration::ZERO);
        }
        let mut d = self.iface.poll_delay(now, &self.sockets);
        if self.dev.tx_queued() > 0 {
            d = Some(d.map_or(TX_RETRY, |d| d.min(TX_RETRY)));
        }
        d
    }

    // ---- TCP listeners -------------------------------------------------------------

    fn new_tcp(&mut self, opts: &TcpOptions) -> SocketHandle {
        let rx = tcp::SocketBuffer::new(vec![0u8; opts.rx_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0u8; opts.tx_buffer]);
        let mut s = tcp::Socket::new(rx, tx);
        s.set_nagle_enabled(!opts.nodelay);
        self.sockets.add(s)
    }

    fn port_in_use(&self, port: u16) -> bool {
        self.listeners.iter().flatten().any(|l| l.port == port)
    }

    pub fn listen(&mut self, port: u16, opts: TcpOptions) -> Result<usize, Error> {
        if port == 0 || opts.backlog == 0 || opts.rx_buffer == 0 || opts.tx_buffer == 0 {
            return Err(Error::InvalidInput);
        }
        if self.port_in_use(port) {
            return Err(Error::AddrInUse);
        }
        let l = Listener {
            port,
            idle: Vec::new(),
            pending: VecDeque::new(),
            opts,
        };
        let id = match self.listeners.iter().position(Option::is_none) {
            Some(i) => {
                self.listeners[i] = Some(l);
                i
            }
            None => {
                self.listeners.push(Some(l));
                self.listeners.len() - 1
            }
        };
        self.refill_listeners();
        Ok(id)
    }

    /// Moves listening sockets that got a SYN to the pending queue and tops the spares
    /// up, within the backlog.
    fn refill_listeners(&mut self) {
        for i in 0..self.listeners.len() {
            let Some(l) = self.listeners[i].as_mut() else {
                continue;
            };
            let sockets = &self.sockets;
            let pending = &mut l.pending;
            l.idle.retain(|&h| {
                let listening = sockets.get::<tcp::Socket>(h).state() == tcp::State::Listen;
                if !listening {
                    pending.push_back(h);
                }
                listening
            });
            let (port, opts) = (l.port, l.opts);
            let room = (opts.backlog + SPARE_LISTENERS).saturating_sub(l.pending.len());
            let want = SPARE_LISTENERS.min(room);
            let have = l.idle.len();
            for _ in have..want {
                let h = self.new_tcp(&opts);
                let s = self.sockets.get_mut::<tcp::Socket>(h);
                if s.listen(port).is_err() {
                    self.sockets.remove(h);
                    break;
                }
                if let Some(l) = self.listeners[i].as_mut() {
                    l.idle.push(h);
                }
            }
        }
    }

    pub fn accept(&mut self, id: usize) -> Result<(SocketHandle, SocketAddrV4), Error> {
        let l = self
            .listeners
            .get_mut(id)
            .and_then(Option::as_mut)
            .ok_or(Error::InvalidInput)?;
        let mut found = None;
        let mut dead = Vec::new();
        for (i, &h) in l.pending.iter().enumerate() {
            let s = self.sockets.get::<tcp::Socket>(h);
            match s.state() {
                tcp::State::SynReceived | tcp::State::Listen => {}
                tcp::State::Closed | tcp::State::TimeWait => dead.push(i),
                _ => {
                    let peer = s.remote_endpoint().map(endpoint_v4);
                    found = Some((i, h, peer));
                    break;
                }
            }
        }
        let result = match found {
            Some((i, h, peer)) => {
                l.pending.remove(i);
                Some((h, peer))
            }
            None => None,
        };
        for &i in dead.iter().rev() {
            if let Some(h) = l.pending.remove(i) {
                self.sockets.remove(h);
            }
        }
        self.refill_listeners();
        match result {
            Some((h, Some(peer))) => Ok((h, peer)),
            // Established without a remote endpoint cannot happen; treat as closed.
            Some((h, None)) => {
                self.sockets.remove(h);
                Err(Error::WouldBlock)
            }
            None => Err(Error::WouldBlock),
        }
    }

    pub fn listener_ready(&self, id: usize) -> bool {
        let Some(Some(l)) = self.listeners.get(id) else {
            return true;
        };
        l.pending.iter().any(|&h| {
            !matches!(
                self.sockets.get::<tcp::Socket>(h).state(),
                tcp::State::SynReceived | tcp::State::Listen | tcp::State::Closed
            )
        })
    }

    pub fn close_listener(&mut self, id: usize) {
        if let Some(l) = self.listeners.get_mut(id).and_then(Option::take) {
            for h in l.idle {
                self.sockets.remove(h);
            }
            for h in l.pending {
                // Connections nobody accepted: reset them, then drop them.
                self.sockets.get_mut::<tcp::Socket>(h).abort();
                self.closing.push((h, self.iface_now()));
            }
        }
        self.regs.retain(|r| r.source != SourceId::Listener(id));
    }

    fn iface_now(&self) -> Instant {
        // The time of the last round is good enough for linger bookkeeping.
        self.last_now
    }

    // ---- TCP streams ---------------------------------------------------------------

    pub fn connect(&mut self, to: SocketAddrV4, opts: TcpOptions) -> Result<SocketHandle, Error> {
        if self.ipv4().is_none() {
            return Err(Error::NotConfigured);
        }
        let h = self.new_tcp(&opts);
        let port = self.ephemeral_port();
        let cx = self.iface.context();
        let r = self
            .sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, IpEndpoint::from(to), port);
        if r.is_err() {
            self.sockets.remove(h);
            return Err(Error::InvalidInput);
        }
        Ok(h)
    }

    fn ephemeral_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p == u16::MAX { 49152 } else { p + 1 };
        p
    }

    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Closes a stream the app dropped: FIN after the queued data (unread input is
    /// discarded), and the socket lingers until the goodbye is done. Unlike Linux, no
    /// RST for unread input: a server that answers `Connection: close` to a pipelined
    /// request would otherwise lose its answer.
    pub fn close_tcp(&mut self, h: SocketHandle) {
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        s.close();
        self.closing.push((h, self.last_now));
        self.regs.retain(|r| r.source != SourceId::Tcp(h));
    }

    fn reap(&mut self, now: Instant) {
        self.last_now = now;
        if self.closing.is_empty() {
            return;
        }
        let sockets = &mut self.sockets;
        self.closing.retain(|&(h, since)| {
            let s = sockets.get::<tcp::Socket>(h);
            let done = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait)
                || now - since > CLOSE_LINGER;
            if done {
                sockets.remove(h);
            }
            !done
        });
    }

    // ---- UDP -----------------------------------------------------------------------

    pub fn udp_bind(&mut self, port: u16, buffer: usize) -> Result<SocketHandle, Error> {
        let port = if port == 0 {
            self.ephemeral_port()
        } else {
            port
        };
        let meta = || vec![udp::PacketMetadata::EMPTY; 64];
        let rx = udp::PacketBuffer::new(meta(), vec![0u8; buffer]);
        let tx = udp::PacketBuffer::new(meta(), vec![0u8; buffer]);
        let mut s = udp::Socket::new(rx, tx);
        s.bind(port).map_err(|_| Error::InvalidInput)?;
        let in_use = self.sockets.iter().any(|(_, s)| match s {
            smoltcp::socket::Socket::Udp(u) => u.endpoint().port == port,
            _ => false,
        });
        if in_use {
            return Err(Error::AddrInUse);
        }
        Ok(self.sockets.add(s))
    }

    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(h)
    }

    pub fn close_udp(&mut self, h: SocketHandle) {
        self.sockets.remove(h);
        self.regs.retain(|r| r.source != SourceId::Udp(h));
    }

    // ---- readiness -----------------------------------------------------------------

    /// (readable, writable) of a source, level-triggered. Readable includes end of
    /// stream and errors (a read then returns at once).
    pub fn readiness(&self, src: SourceId) -> (bool, bool) {
        match src {
            SourceId::Listener(id) => (self.listener_ready(id), false),
            SourceId::Tcp(h) => {
                let s = self.sockets.get::<tcp::Socket>(h);
                let st = s.state();
                let eof = matches!(
                    st,
                    tcp::State::Closed
                        | tcp::State::CloseWait
                        | tcp::State::LastAck
                        | tcp::State::Closing
                        | tcp::State::TimeWait
                );
                let r = s.can_recv() || eof;
                let w = s.can_send() || (st == tcp::State::Closed);
                (r, w)
            }
            SourceId::Udp(h) => {
                let s = self.sockets.get::<udp::Socket>(h);
                (s.can_recv(), s.can_send())
            }
        }
    }

    pub fn new_poller(&mut self) -> u32 {
        let id = self.next_poller;
        self.next_poller = self.next_poller.wrapping_add(1).max(1);
        id
    }
}
