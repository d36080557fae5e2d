//! The network module against real namespaces, veth pairs, taps and tc. Needs root,
//! `/dev/net/tun`, iproute2; prints `SKIPPED: <reason>` and passes otherwise.

use runnc::network::{self, Wiring};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (network namespaces, taps)");
        return true;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED: /dev/net/tun is missing");
        return true;
    }
    if Command::new("tc").arg("-V").output().is_err() {
        eprintln!("SKIPPED: tc (iproute2) is missing");
        return true;
    }
    false
}

fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace `runnc-nt-<pid>-<n>` deleted on drop (its veth peers go with it).
struct Netns {
    name: String,
    n: u32,
}

impl Netns {
    fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("runnc-nt-{}-{n}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name, n };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    fn exec(&self, argv: &[&str]) -> String {
        let mut a = vec!["ip", "netns", "exec", &self.name];
        a.extend_from_slice(argv);
        run(&a)
    }

    fn json(&self, argv: &[&str]) -> serde_json::Value {
        let text = self.exec(argv);
        if text.trim().is_empty() {
            return serde_json::json!([]);
        }
        serde_json::from_str(&text).unwrap()
    }

    /// The host-side name of veth `idx` of this namespace.
    fn host_if(&self, idx: u32) -> String {
        format!("rnt{}x{}x{idx}", std::process::id() % 10_000, self.n)
    }

    /// A veth pair: `inner` in the namespace with `10.98.<n*4+idx>.2/24`, the host side
    /// up with `.1`; with `gw`, the namespace's default route goes via `.1`.
    fn veth(&self, idx: u32, inner: &str, mtu: u32, gw: bool) -> (String, Ipv4Addr) {
        let host = self.host_if(idx);
        let net = self.n * 4 + idx + 1;
        run(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", inner, "netns", &self.name,
        ]);
        let mtu = mtu.to_string();
        run(&["ip", "link", "set", &host, "mtu", &mtu, "up"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.98.{net}.1/24"),
            "dev",
            &host,
        ]);
        self.exec(&["ip", "link", "set", inner, "mtu", &mtu, "up"]);
        self.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.98.{net}.2/24"),
            "dev",
            inner,
        ]);
        if gw {
            self.exec(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.98.{net}.1"),
            ]);
        }
        (host, Ipv4Addr::new(10, 98, u8::try_from(net).unwrap(), 2))
    }

    fn mac(&self, dev: &str) -> String {
        self.json(&["ip", "-j", "link", "show", "dev", dev])[0]["address"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn link(&self, dev: &str) -> Option<serde_json::Value> {
        let all = self.json(&["ip", "-j", "link", "show"]);
        all.as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == dev)
            .cloned()
    }

    fn has_ingress(&self, dev: &str) -> bool {
        let q = self.json(&["tc", "-j", "qdisc", "show", "dev", dev]);
        q.as_array().unwrap().iter().any(|q| q["kind"] == "ingress")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Opens tap `name` inside the namespace at `path` (from a thread that joins it).
fn open_tap(path: PathBuf, name: &str) -> OwnedFd {
    let name = name.to_string();
    std::thread::spawn(move || {
        let ns = File::open(&path).unwrap();
        // SAFETY: joins a network namespace on this short-lived thread only.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap();
        #[repr(C)]
        struct IfReq {
            name: [u8; 16],
            flags: libc::c_short,
            _pad: [u8; 22],
        }
        let mut req = IfReq {
            name: [0; 16],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads a struct ifreq, which `req` is laid out as.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        OwnedFd::from(tun)
    })
    .join()
    .unwrap()
}

/// Reads frames from `tap` until `pick` accepts one or `timeout` passes.
fn read_frame(tap: &OwnedFd, timeout: Duration, pick: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
        if rc <= 0 {
            continue;
        }
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let frame = &buf[..usize::try_from(n).unwrap()];
            if pick(frame) {
                return Some(frame.to_vec());
            }
        }
    }
    None
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn filters(ns: &Netns, dev: &str) -> String {
    ns.exec(&["tc", "-j", "filter", "show", "dev", dev, "ingress"])
}

#[test]
fn wire_one_interface_frames_flow_and_unwire() {
    if skip() {
        return;
    }
    let ns = Netns::new();
    let (host, ip) = ns.veth(0, "eth0", 1450, true);
    let mac = ns.mac("eth0");
    let devices = vec!["service".to_string()];
    let w = network::wire(&ns.path(), &devices).expect("wire");
    eprintln!("{w:?}");
    assert_eq!(w.nics.len(), 1);
    let nic = &w.nics[0];
    assert_eq!(nic.device, "service");
    assert_eq!(nic.tap, "stap0");
    assert_eq!(nic.iface.as_deref(), Some("eth0"));
    assert_eq!(nic.mac.as_deref(), Some(mac.as_str()));
    assert_eq!(nic.ipv4, Some((ip, 24)));
    let gw = Ipv4Addr::new(ip.octets()[0], ip.octets()[1], ip.octets()[2], 1);
    assert_eq!(nic.gateway, Some(gw));

    let tap = ns.link("stap0").expect("stap0 exists");
    assert_eq!(tap["mtu"], 1450);
    assert!(
        tap["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{tap}"
    );
    let f = filters(&ns, "eth0");
    assert!(f.contains("mirred") && f.contains("stap0"), "{f}");
    let f = filters(&ns, "stap0");
    assert!(f.contains("mirred") && f.contains("eth0"), "{f}");
    // eth0 keeps its address.
    assert!(ns
        .exec(&["ip", "-4", "addr", "show", "dev", "eth0"])
        .contains(&ip.to_string()));

    // Frames flow both ways: a UDP datagram from the host to the pod address makes the
    // host ARP for it; the request comes out of the tap (not answered by eth0's
    // stack), our reply goes in through the tap and out of eth0, and then the datagram
    // itself arrives on the tap.
    let fd = open_tap(ns.path(), "stap0");
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.send_to(b"hello-tap", (ip, 9999)).unwrap();
    let target = ip.octets();
    let arp = read_frame(&fd, Duration::from_secs(5), |f| {
        f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1] && f[38..42] == target
    })
    .expect("the host's ARP request reached the tap");
    let our_mac = parse_mac(&mac);
    let mut reply = Vec::with_capacity(42);
    reply.extend_from_slice(&arp[6..12]); // to the requester
    reply.extend_from_slice(&our_mac);
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&our_mac);
    reply.extend_from_slice(&target);
    reply.extend_from_slice(&arp[22..28]);
    reply.extend_from_slice(&arp[28..32]);
    // SAFETY: writes `reply.len()` initialised bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), reply.as_ptr().cast(), reply.len()) };
    assert_eq!(usize::try_from(n).unwrap(), reply.len());
    let udp = read_frame(&fd, Duration::from_secs(5), |f| {
        f.len() > 42 && f[12..14] == [0x08, 0x00] && f[23] == 17 && f.ends_with(b"hello-tap")
    });
    assert!(
        udp.is_some(),
        "the datagram did not reach the tap after the ARP reply"
    );
    let neigh = run(&["ip", "neigh", "show", &ip.to_string(), "dev", &host]);
    assert!(neigh.contains(&mac), "host neighbour entry: {neigh}");
    drop(fd);

    network::unwire(&w).expect("unwire");
    assert!(ns.link("stap0").is_none(), "stap0 left behind");
    assert!(!ns.has_ingress("eth0"), "eth0 ingress qdisc left behind");
    assert!(ns.link("eth0").is_some());
    network::unwire(&w).expect("second unwire");
    drop(ns);
    network::unwire(&w).expect("unwire after the namespace is gone");
}

#[test]
fn no_interface_gives_an_unconnected_tap() {
    if skip() {
        return;
    }
    let ns = Netns::new();
    let w = network::wire(&ns.path(), &["net0".to_string(), "net1".to_string()]).expect("wire");
    assert_eq!(w.nics.len(), 2);
    for (i, nic) in w.nics.iter().enumerate() {
        assert_eq!(nic.tap, format!("stap{i}"));
        assert_eq!(nic.iface, None);
        assert_eq!(
            (nic.mac.as_ref(), nic.ipv4, nic.gateway),
            (None, None, None)
        );
        assert!(ns.link(&nic.tap).is_some());
    }
    network::unwire(&w).expect("unwire");
    assert!(ns.link("stap0").is_none() && ns.link("stap1").is_none());
}

#[test]
fn extra_interface_is_left_alone() {
    if skip() {
        return;
    }
    let ns = Netns::new();
    // eth1 is created first: pairing goes by name, not creation order.
    ns.veth(1, "eth1", 1500, false);
    let (_, ip0) = ns.veth(0, "eth0", 1400, true);
    let w = network::wire(&ns.path(), &["service".to_string()]).expect("wire");
    assert_eq!(w.nics.len(), 1);
    assert_eq!(w.nics[0].iface.as_deref(), Some("eth0"));
    assert_eq!(w.nics[0].ipv4, Some((ip0, 24)));
    assert_eq!(ns.link("stap0").unwrap()["mtu"], 1400);
    assert!(!ns.has_ingress("eth1"), "eth1 was touched");
    assert!(ns.has_ingress("eth0"));
    network::unwire(&w).expect("unwire");
    assert!(!ns.has_ingress("eth0"));
}

#[test]
fn two_interfaces_two_devices_without_gateway_on_the_second() {
    if skip() {
        return;
    }
    let ns = Netns::new();
    ns.veth(0, "eth0", 1500, true);
    let (_, ip1) = ns.veth(1, "eth1", 1500, false);
    let w = network::wire(&ns.path(), &["a".to_string(), "b".to_string()]).expect("wire");
    assert_eq!(w.nics[1].iface.as_deref(), Some("eth1"));
    assert_eq!(w.nics[1].tap, "stap1");
    assert_eq!(w.nics[1].ipv4, Some((ip1, 24)));
    assert_eq!(w.nics[1].gateway, None);
    assert!(w.nics[0].gateway.is_some());
    network::unwire(&w).expect("unwire");
    assert!(!ns.has_ingress("eth0") && !ns.has_ingress("eth1"));
}

#[test]
fn failure_part_way_undoes_everything() {
    if skip() {
        return;
    }
    let ns = Netns::new();
    ns.veth(0, "eth0", 1500, true);
    ns.veth(1, "eth1", 1500, false);
    // eth1 already has an ingress qdisc: adding ours fails after stap0 and its rules
    // and stap1 were made.
    ns.exec(&["tc", "qdisc", "add", "dev", "eth1", "ingress"]);
    let e =
        network::wire(&ns.path(), &["a".to_string(), "b".to_string()]).expect_err("wire must fail");
    eprintln!(
        "expected failure: {e} ({:?})",
        std::error::Error::source(&e)
    );
    assert!(
        ns.link("stap0").is_none() && ns.link("stap1").is_none(),
        "taps left"
    );
    assert!(!ns.has_ingress("eth0"), "eth0 qdisc left");
    assert!(ns.has_ingress("eth1"), "the pre-existing qdisc must stay");
}

#[test]
fn missing_namespace_is_an_error_for_wire_and_fine_for_unwire() {
    if skip() {
        return;
    }
    let path = PathBuf::from("/run/netns/runnc-does-not-exist");
    let e = network::wire(&path, &["a".to_string()]).expect_err("wire");
    assert!(matches!(e, network::Error::Netns { .. }), "{e}");
    let w = Wiring {
        netns: path,
        nics: Vec::new(),
    };
    network::unwire(&w).expect("unwire");
}

#[test]
fn nameserver_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("resolv.conf");
    std::fs::write(&p, "# x\nnameserver 2001:db8::1\nnameserver 10.96.0.10\n").unwrap();
    assert_eq!(network::nameserver(&p), Some(Ipv4Addr::new(10, 96, 0, 10)));
    assert_eq!(network::nameserver(&dir.path().join("absent")), None);
}
