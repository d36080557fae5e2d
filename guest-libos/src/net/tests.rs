//! The guest's stack (through the fake monitor's net device) against a second smoltcp
//! stack on the other end of the fake wire: TCP with many concurrent connections, the
//! Poller, UDP, ping, ARP, and the batching of hypercalls.

use super::config::{Addressing, NetSettings};
use super::device::FrameIo;
use super::stack::Stack;
use super::*;
use crate::testing::{self, WIRE, WIRE_CHANGED};
use septem_abi::NetFrame;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, IpEndpoint};
use std::time::{Duration as StdDuration, Instant as StdInstant};
use std::vec::Vec;

const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// The peer's end of the wire: reads what the guest sent, writes what it receives.
struct PeerIo;

impl FrameIo for PeerIo {
    unsafe fn read(&mut self, frames: &mut [NetFrame]) -> core::result::Result<usize, HcError> {
        let mut w = WIRE.lock().unwrap();
        let mut n = 0;
        while n < frames.len() {
            let Some(f) = w.from_guest.pop_front() else {
                break;
            };
            let e = &mut frames[n];
            // SAFETY: the device hands buffers writable for `len` bytes.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(e.data.raw() as *mut u8, e.len as usize) };
            dst[..f.len()].copy_from_slice(&f);
            e.len = f.len() as u32;
            n += 1;
        }
        Ok(n)
    }

    unsafe fn write(&mut self, frames: &[NetFrame]) -> core::result::Result<usize, HcError> {
        let mut w = WIRE.lock().unwrap();
        for e in frames {
            // SAFETY: the device hands frames readable for `len` bytes.
            let src =
                unsafe { std::slice::from_raw_parts(e.data.raw() as *const u8, e.len as usize) };
            w.to_guest.push_back(src.to_vec());
        }
        WIRE_CHANGED.notify_all();
        Ok(frames.len())
    }
}

fn now() -> smoltcp::time::Instant {
    smol_now()
}

fn peer() -> Stack<PeerIo> {
    let settings = NetSettings {
        index: 0,
        mac: [0x02, 0, 0, 0, 0, 0x01],
        mtu: 1500,
        addressing: Addressing::Static {
            address: PEER,
            prefix_len: 24,
        },
        gateway: None,
        dns: None,
    };
    Stack::new(PeerIo, settings, now(), 7)
}

/// Runs the peer until `done` says so (or panics after `limit`).
fn drive(
    p: &mut Stack<PeerIo>,
    limit: StdDuration,
    mut done: impl FnMut(&mut Stack<PeerIo>) -> bool,
) {
    let start = StdInstant::now();
    loop {
        p.run(now());
        if done(p) {
            return;
        }
        assert!(start.elapsed() < limit, "peer timed out");
        let w = WIRE.lock().unwrap();
        if w.from_guest.is_empty() {
            let _ = WIRE_CHANGED
                .wait_timeout(w, StdDuration::from_millis(2))
                .unwrap();
        }
    }
}

/// The guest side: an echo server over the Poller for `conns` connections, then a
/// UDP echo of one datagram. Runs in its own thread (the guest's one thread).
fn guest_server(conns: usize) -> Result<DeviceStats> {
    let mut listener = TcpListener::bind(7)?;
    assert_eq!(TcpListener::bind(7).unwrap_err(), Error::AddrInUse);
    listener.set_nonblocking(true)?;
    let poller = Poller::new()?;
    poller.register(&listener, Token(usize::MAX), Interest::READABLE)?;
    let mut streams: Vec<Option<TcpStream>> = Vec::new();
    let mut finished = 0;
    let mut events = Vec::new();
    let mut buf = [0u8; 4096];
    while finished < conns {
        poller.wait(&mut events, Some(core::time::Duration::from_secs(20)))?;
        assert!(!events.is_empty(), "guest poller timed out");
        for ev in events.clone() {
            if ev.token.0 == usize::MAX {
                loop {
                    match listener.accept() {
                        Ok((mut s, peer)) => {
                            assert_eq!(*peer.ip(), PEER);
                            s.set_nonblocking(true)?;
                            s.set_nodelay(true)?;
                            poller.register(&s, Token(streams.len()), Interest::READABLE)?;
                            streams.push(Some(s));
                        }
                        Err(Error::WouldBlock) => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let Some(s) = streams[ev.token.0].as_mut() else {
                continue;
            };
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        streams[ev.token.0] = None;
                        finished += 1;
                        break;
                    }
                    Ok(n) => s.write_all(&buf[..n])?,
                    Err(Error::WouldBlock) => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let udp = UdpSocket::bind(9)?;
    let (n, from) = udp.recv_from(&mut buf)?;
    udp.send_to(&buf[..n], from)?;
    // Let the last segments and the datagram leave.
    for _ in 0..20 {
        poll(Some(core::time::Duration::from_millis(5)))?;
    }
    stats()
}

#[test]
fn back_to_back_tcp_udp_ping() {
    let _serial = testing::lock();
    const CONNS: usize = 40;
    let info = interface().unwrap();
    assert_eq!(info.ipv4, Some((GUEST, 24)));
    assert_eq!(info.name, "service");
    assert_eq!(dns_server(), Some(Ipv4Addr::new(10, 0, 0, 53)));
    assert_eq!(info.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(wait_for_address(None), Ok(GUEST));

    let guest = std::thread::spawn(|| guest_server(CONNS));
    let mut p = peer();

    // Ping first (ARP resolution included).
    let icmp_rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
    let icmp_tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
    let ih = p.sockets.add(icmp::Socket::new(icmp_rx, icmp_tx));
    p.sockets
        .get_mut::<icmp::Socket>(ih)
        .bind(icmp::Endpoint::Ident(0x1234))
        .unwrap();
    let mut sent_ping = false;
    drive(&mut p, StdDuration::from_secs(10), |p| {
        let s = p.sockets.get_mut::<icmp::Socket>(ih);
        if !sent_ping && s.can_send() {
            let repr = Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: b"ping",
            };
            let buf = s.send(repr.buffer_len(), IpAddress::Ipv4(GUEST)).unwrap();
            let mut pkt = Icmpv4Packet::new_unchecked(buf);
            repr.emit(&mut pkt, &smoltcp::phy::ChecksumCapabilities::default());
            sent_ping = true;
        }
        match s.recv() {
            Ok((data, from)) => {
                assert_eq!(from, IpAddress::Ipv4(GUEST));
                let pkt = Icmpv4Packet::new_checked(data).unwrap();
                assert_eq!(pkt.echo_seq_no(), 1);
                true
            }
            Err(_) => false,
        }
    });

    // Many concurrent TCP connections, each echoing 10 KiB.
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let handles: Vec<SocketHandle> = (0..CONNS)
        .map(|i| {
            let s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 16384]),
                tcp::SocketBuffer::new(vec![0; 16384]),
            );
            let h = p.sockets.add(s);
            let cx = p.iface.context();
            p.sockets
                .get_mut::<tcp::Socket>(h)
                .connect(
                    cx,
                    IpEndpoint::new(IpAddress::Ipv4(GUEST), 7),
                    40000 + i as u16,
                )
                .unwrap();
            h
        })
        .collect();
    let mut sent = vec![0usize; CONNS];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); CONNS];
    drive(&mut p, StdDuration::from_secs(30), |p| {
        let mut all = true;
        for (i, &h) in handles.iter().enumerate() {
            let s = p.sockets.get_mut::<tcp::Socket>(h);
            if s.can_send() && sent[i] < payload.len() {
                sent[i] += s.send_slice(&payload[sent[i]..]).unwrap();
            }
            while s.can_recv() {
                s.recv(|d| {
                    got[i].extend_from_slice(d);
                    (d.len(), ())
                })
                .unwrap();
            }
            if got[i].len() == payload.len() {
                if s.may_send() {
                    s.close();
                }
            } else {
                all = false;
            }
        }
        all
    });
    for g in &got {
        assert!(g == &payload, "echo differs");
    }

    // UDP echo.
    let uh = p.sockets.add(udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 2048]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 2048]),
    ));
    p.sockets.get_mut::<udp::Socket>(uh).bind(5353).unwrap();
    let mut next_send = StdInstant::now();
    drive(&mut p, StdDuration::from_secs(10), |p| {
        let s = p.sockets.get_mut::<udp::Socket>(uh);
        // The guest binds port 9 once its TCP part is done: resend until it answers.
        if StdInstant::now() >= next_send {
            let _ = s.send_slice(b"datagram", IpEndpoint::new(IpAddress::Ipv4(GUEST), 9));
            next_send = StdInstant::now() + StdDuration::from_millis(50);
        }
        match s.recv() {
            Ok((d, meta)) => {
                assert_eq!(d, b"datagram");
                assert_eq!(meta.endpoint.port, 9);
                true
            }
            Err(_) => false,
        }
    });
    // Keep the peer answering while the guest drains.
    let mut stats = None;
    drive(&mut p, StdDuration::from_secs(10), |_| {
        if guest.is_finished() {
            return true;
        }
        false
    });
    if let Ok(r) = guest.join() {
        stats = Some(r.expect("guest server"));
    }
    let stats = stats.expect("guest thread panicked");
    // Batching: far fewer hypercalls than frames in each direction.
    assert!(stats.rx_frames > 200 && stats.tx_frames > 200, "{stats:?}");
    assert!(stats.tx_calls * 2 < stats.tx_frames, "{stats:?}");
}

/// A line protocol over [`Server`]: a line is answered in upper case; `big` streams
/// `BIG` bytes in pieces; `bye` answers and closes; `stop` shuts the server down.
#[derive(Default)]
struct Lines {
    rounds: usize,
    commits: usize,
    /// Answers produced since the last `before_send` (must be 0 when sending).
    uncommitted: usize,
}

#[derive(Default)]
struct LineState {
    left: usize,
}

const BIG: usize = 300_000;

fn big_byte(i: usize) -> u8 {
    (i * 13 % 251) as u8
}

impl server::Handler for Lines {
    type State = LineState;

    fn input(&mut self, c: &mut server::Conn<LineState>) -> server::Flow {
        let mut used = 0;
        let mut flow = server::Flow::Continue;
        while !c.streaming {
            let Some(nl) = c.input[used..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = c.input[used..used + nl].to_vec();
            used += nl + 1;
            self.uncommitted += 1;
            match line.as_slice() {
                b"big" => {
                    c.state.left = BIG;
                    c.streaming = true;
                }
                b"bye" => {
                    c.output.extend_from_slice(b"bye\n");
                    flow = server::Flow::Close;
                    break;
                }
                b"stop" => {
                    flow = server::Flow::Shutdown;
                    break;
                }
                l => {
                    c.output.extend(l.iter().map(u8::to_ascii_uppercase));
                    c.output.push(b'\n');
                }
            }
        }
        if flow == server::Flow::Continue {
            c.input.drain(..used);
        }
        flow
    }

    fn more_output(&mut self, c: &mut server::Conn<LineState>) -> server::Flow {
        let n = c.state.left.min(10_000);
        let start = BIG - c.state.left;
        c.output.extend((start..start + n).map(big_byte));
        c.state.left -= n;
        c.streaming = c.state.left > 0;
        server::Flow::Continue
    }

    fn before_send(&mut self) -> core::result::Result<(), String> {
        self.commits += 1;
        self.uncommitted = 0;
        Ok(())
    }

    fn tick(&mut self) {
        assert_eq!(self.uncommitted, 0, "input handled outside a round");
        self.rounds += 1;
    }
}

#[test]
fn server_serves_pipelined_streamed_and_closing_clients() {
    let _serial = testing::lock();
    const CLIENTS: usize = 12;
    let guest = std::thread::spawn(|| {
        let listener = TcpListener::bind(8080).map_err(|e| e.to_string())?;
        let mut srv = Server::new(
            listener,
            ServerOptions {
                max_pending_output: 64 * 1024,
                tick: Some(core::time::Duration::from_millis(100)),
                log: false,
                name: "lines",
                ..ServerOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let mut h = Lines::default();
        srv.run(&mut h).map_err(|e| e.to_string())?;
        Ok::<_, String>((h.rounds, h.commits))
    });
    let mut p = peer();
    let connect = |p: &mut Stack<PeerIo>, port: u16| {
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 16384]),
        );
        let h = p.sockets.add(s);
        let cx = p.iface.context();
        p.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, IpEndpoint::new(IpAddress::Ipv4(GUEST), 8080), port)
            .unwrap();
        h
    };
    // Pipelined lines around a streamed answer, on many connections at once.
    let request = b"one\ntwo\nbig\nthree\npartial";
    let mut want = b"ONE\nTWO\n".to_vec();
    want.extend((0..BIG).map(big_byte));
    want.extend_from_slice(b"THREE\nPARTIAL\n");
    let handles: Vec<SocketHandle> = (0..CLIENTS)
        .map(|i| connect(&mut p, 41000 + i as u16))
        .collect();
    let mut sent = [0usize; CLIENTS];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); CLIENTS];
    drive(&mut p, StdDuration::from_secs(60), |p| {
        let mut all = true;
        for (i, &h) in handles.iter().enumerate() {
            let s = p.sockets.get_mut::<tcp::Socket>(h);
            if s.can_send() && sent[i] < request.len() {
                sent[i] += s.send_slice(&request[sent[i]..]).unwrap();
            }
            // The end of the last line comes once the streamed answer is in.
            if s.can_send() && sent[i] == request.len() && got[i].len() >= want.len() - 14 {
                s.send_slice(b"\n").unwrap();
                sent[i] += 1;
            }
            while s.can_recv() {
                s.recv(|d| {
                    got[i].extend_from_slice(d);
                    (d.len(), ())
                })
                .unwrap();
            }
            all &= got[i].len() >= want.len();
        }
        all
    });
    for g in &got {
        assert!(g == &want, "answer differs ({} bytes)", g.len());
    }
    // `bye` is answered, then the server closes that connection.
    let h = handles[0];
    p.sockets
        .get_mut::<tcp::Socket>(h)
        .send_slice(b"bye\nlost\n")
        .unwrap();
    let mut tail = Vec::new();
    drive(&mut p, StdDuration::from_secs(20), |p| {
        let s = p.sockets.get_mut::<tcp::Socket>(h);
        while s.can_recv() {
            s.recv(|d| {
                tail.extend_from_slice(d);
                (d.len(), ())
            })
            .unwrap();
        }
        !s.may_recv()
            && matches!(
                s.state(),
                tcp::State::CloseWait
                    | tcp::State::Closed
                    | tcp::State::TimeWait
                    | tcp::State::LastAck
            )
    });
    assert_eq!(tail, b"bye\n");
    // `stop` ends the server; every other connection sees FIN.
    p.sockets
        .get_mut::<tcp::Socket>(handles[1])
        .send_slice(b"stop\n")
        .unwrap();
    drive(&mut p, StdDuration::from_secs(20), |p| {
        handles[2..]
            .iter()
            .all(|&h| !p.sockets.get_mut::<tcp::Socket>(h).may_recv())
            && guest.is_finished()
    });
    let (rounds, commits) = guest.join().expect("guest thread").expect("server");
    assert_eq!(rounds, commits, "one before_send per round");
}

/// Frames a stack sent, for [`a_static_address_is_announced_with_a_gratuitous_arp`].
static ANNOUNCED: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

struct CaptureIo;

impl FrameIo for CaptureIo {
    unsafe fn read(&mut self, _frames: &mut [NetFrame]) -> core::result::Result<usize, HcError> {
        Ok(0)
    }

    unsafe fn write(&mut self, frames: &[NetFrame]) -> core::result::Result<usize, HcError> {
        let mut sent = ANNOUNCED.lock().unwrap();
        for e in frames {
            // SAFETY: the device hands frames readable for `len` bytes.
            let src =
                unsafe { std::slice::from_raw_parts(e.data.raw() as *const u8, e.len as usize) };
            sent.push(src.to_vec());
        }
        Ok(frames.len())
    }
}

#[test]
fn a_static_address_is_announced_with_a_gratuitous_arp() {
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    };
    let mac = [0x02, 0, 0, 0, 0, 0x09];
    let address = Ipv4Addr::new(10, 9, 9, 9);
    let settings = NetSettings {
        index: 0,
        mac,
        mtu: 1500,
        addressing: Addressing::Static {
            address,
            prefix_len: 24,
        },
        gateway: None,
        dns: None,
    };
    let _stack = Stack::new(CaptureIo, settings, now(), 3);
    let sent = ANNOUNCED.lock().unwrap();
    assert_eq!(sent.len(), 1, "one frame at start: {sent:?}");
    let frame = EthernetFrame::new_checked(&sent[0][..]).unwrap();
    assert_eq!(frame.dst_addr(), EthernetAddress::BROADCAST);
    assert_eq!(frame.src_addr(), EthernetAddress(mac));
    assert_eq!(frame.ethertype(), EthernetProtocol::Arp);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
    assert_eq!(
        arp,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(mac),
            source_protocol_addr: address,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: address,
        }
    );
}
