//! Net devices on the host side: the option values (MAC, IPv4 address/prefix), tap
//! attachment, and the device table handed to the boot area, the dispatcher, the
//! [`SysHost`](crate::host::SysHost) and the seccomp policy.
//!
//! A tap is attached, never created: `TUNSETIFF` on a name that does not exist would
//! silently create a fresh, unconfigured tap when the monitor has `CAP_NET_ADMIN`, so
//! the name is looked up first (`if_nametoindex`) and checked again afterwards.
//! Everything here runs before sealing (it allocates, opens files, calls `ioctl`).

use crate::host::{TapTable, NO_TAPS};
use crate::RunError;
use septem_abi::manifest::MAX_DEVICES;
use septem_abi::{BootDevice, DeviceKind, NetConfig, NET_FRAME_MAX};
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// MTU given to the guest when the tap's cannot be read.
pub const DEFAULT_MTU: u32 = 1500;

/// Largest MTU a guest frame can carry ([`NET_FRAME_MAX`] minus the Ethernet header).
pub const MAX_MTU: u32 = NET_FRAME_MAX - 14;

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

/// Parses a MAC address `aa:bb:cc:dd:ee:ff` (or with `-`); refuses multicast (which
/// includes broadcast) and all-zero addresses, which no NIC may use as its own.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || format!("'{s}' is not a MAC address; write six hex bytes, e.g. 02:00:0a:00:07:02");
    let sep = if s.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = s.split(sep);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.is_empty() || part.len() > 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac == [0; 6] {
        return Err(format!("MAC address {s} is all zeros; a NIC cannot use it"));
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "MAC address {s} is a multicast (or broadcast) address; a NIC's own address must be unicast (even first byte, e.g. 02:…)"
        ));
    }
    Ok(mac)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a unicast IPv4 address; `what` names it in errors.
pub fn parse_ipv4(s: &str, what: &str) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{what} '{s}' is not an IPv4 address (e.g. 10.0.7.1)"))?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(format!(
            "{what} {ip} is not a unicast address (not 0.0.0.0, broadcast or multicast)"
        ));
    }
    Ok(ip)
}

/// Parses `ADDR/PREFIX`, e.g. `10.0.7.2/24`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let Some((addr, prefix)) = s.split_once('/') else {
        return Err(format!(
            "'{s}' needs a prefix length: write ADDR/PREFIX, e.g. 10.0.7.2/24"
        ));
    };
    let ip = parse_ipv4(addr, "address")?;
    let prefix: u8 = match prefix.parse() {
        Ok(p) if p <= 32 => p,
        _ => {
            return Err(format!(
                "prefix length '{prefix}' in '{s}' is not a number from 0 to 32"
            ))
        }
    };
    Ok((ip, prefix))
}

/// A random locally administered unicast MAC address (`getrandom`, before sealing).
pub fn random_mac() -> io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut filled = 0;
    while filled < mac.len() {
        let rest = &mut mac[filled..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    // Locally administered (bit 1), unicast (bit 0 clear).
    mac[0] = (mac[0] | 0x02) & !0x01;
    Ok(mac)
}

/// `struct ifreq`: the name and, for the calls used here, a `short` (flags) or an `int`
/// (MTU) at the start of the union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut req = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        let n = name.len().min(IFNAME_MAX);
        req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        req
    }
}

/// `if_nametoindex`: `None` when no interface has that name (in this network
/// namespace).
fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// A tap attached for the guest.
#[derive(Debug)]
pub struct Tap {
    /// The non-blocking, close-on-exec tap fd.
    pub fd: OwnedFd,
    /// The tap's MTU.
    pub mtu: u32,
    /// Whether the interface is administratively up.
    pub up: bool,
}

fn missing(tap: &str) -> RunError {
    RunError::Config(format!(
        "tap '{tap}' does not exist; create it with: ip tuntap add dev {tap} mode tap && ip link set {tap} up"
    ))
}

fn host_setup(what: String, source: io::Error) -> RunError {
    RunError::HostSetup { what, source }
}

/// Reads the tap's MTU and flags through a throwaway datagram socket.
fn mtu_and_flags(tap: &str) -> io::Result<(u32, i16)> {
    // SAFETY: plain socket creation; the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq::new(tap);
    // SAFETY: `req` is a valid `struct ifreq` the kernel fills.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mtu = i32::from_ne_bytes([req.data[0], req.data[1], req.data[2], req.data[3]]);
    let mut req = IfReq::new(tap);
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = i16::from_ne_bytes([req.data[0], req.data[1]]);
    Ok((u32::try_from(mtu).unwrap_or(DEFAULT_MTU), flags))
}

/// Attaches to the existing tap `tap` (see the module docs). Errors: a missing, busy or
/// non-tap interface is a configuration error; no permission and other failures are
/// host set-up errors carrying the errno.
pub fn attach_tap(tap: &str) -> Result<Tap, RunError> {
    let index = if_index(tap).ok_or_else(|| missing(tap))?;
    let path = c"/dev/net/tun";
    // SAFETY: `path` is a valid NUL-terminated string; the fd is owned below.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        let e = io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENODEV) => " (is the tun module loaded? modprobe tun)",
            Some(libc::EACCES | libc::EPERM) => " (no permission: run as root or grant access)",
            _ => "",
        };
        return Err(host_setup(
            format!("cannot open /dev/net/tun to attach tap '{tap}'{hint}"),
            e,
        ));
    }
    // SAFETY: `raw` is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq::new(tap);
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as i16;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: `req` is a valid `struct ifreq` for TUNSETIFF.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EBUSY) => RunError::Config(format!(
                "tap '{tap}' is busy: another process (another septem-run?) is attached to it"
            )),
            Some(libc::EINVAL) => RunError::Config(format!(
                "'{tap}' exists but is not a single-queue tap device (it is a tun device, a multi-queue tap or another kind of interface); give septem-run a tap made with: ip tuntap add dev NAME mode tap"
            )),
            Some(libc::EPERM | libc::EACCES) => host_setup(
                format!(
                    "no permission to attach tap '{tap}': run as root (CAP_NET_ADMIN) or create the tap for this user (ip tuntap add dev {tap} mode tap user $USER)"
                ),
                e,
            ),
            _ => host_setup(format!("cannot attach tap '{tap}'"), e),
        });
    }
    // Had the tap vanished between the look-up and TUNSETIFF, the kernel made a new
    // one for us: refuse it (closing the fd destroys it, it is not persistent).
    if if_index(tap) != Some(index) {
        return Err(missing(tap));
    }
    let (mtu, up) = match mtu_and_flags(tap) {
        Ok((mtu, flags)) => (mtu, flags & libc::IFF_UP as i16 != 0),
        Err(e) => {
            tracing::debug!(tap, error = %e, "cannot read the tap's MTU; using {DEFAULT_MTU}");
            (DEFAULT_MTU, true)
        }
    };
    if mtu > MAX_MTU {
        return Err(RunError::Config(format!(
            "tap '{tap}' has MTU {mtu}, more than the {MAX_MTU} a Septem guest supports; lower it with: ip link set {tap} mtu {MAX_MTU}"
        )));
    }
    Ok(Tap { fd, mtu, up })
}

/// One device of the guest, in manifest order.
#[derive(Debug)]
pub struct AttachedDevice {
    /// What the guest sees in `BootInfo::devices`.
    pub boot: BootDevice,
    /// The tap of a net device.
    pub tap: Option<OwnedFd>,
    /// The disk image file of a block device.
    pub block: Option<OwnedFd>,
}

/// The guest's devices, index `i` = device `i` of the manifest.
#[derive(Debug, Default)]
pub struct Devices {
    /// The devices, at most [`MAX_DEVICES`].
    pub list: Vec<AttachedDevice>,
}

impl Devices {
    /// The `BootInfo::devices` table.
    #[must_use]
    pub fn boot_table(&self) -> Vec<BootDevice> {
        self.list.iter().map(|d| d.boot).collect()
    }

    /// Bit `i` set: device `i` is a net device (for the dispatcher).
    #[must_use]
    pub fn net_mask(&self) -> u64 {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, d)| d.boot.kind == DeviceKind::Net as u32)
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// The tap fds, for the seccomp policy's `tap` class.
    #[must_use]
    pub fn tap_fds(&self) -> Vec<RawFd> {
        self.list
            .iter()
            .filter_map(|d| d.tap.as_ref().map(AsRawFd::as_raw_fd))
            .collect()
    }

    /// Bit `i` set: device `i` is a block device.
    #[must_use]
    pub fn block_mask(&self) -> u64 {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, d)| d.block.is_some())
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// The block device files' fds, for the seccomp policy's `block` class.
    #[must_use]
    pub fn block_fds(&self) -> Vec<RawFd> {
        self.list
            .iter()
            .filter_map(|d| d.block.as_ref().map(AsRawFd::as_raw_fd))
            .collect()
    }

    /// Per device slot: the capacity and read-only flag of a block device (for the
    /// dispatcher's bounds checks); `sectors == 0` for other devices.
    #[must_use]
    pub fn block_limits(&self) -> [crate::dispatch::BlockLimits; MAX_DEVICES] {
        let mut limits = [crate::dispatch::BlockLimits::NONE; MAX_DEVICES];
        for (i, d) in self.list.iter().enumerate().take(MAX_DEVICES) {
            if d.block.is_some() {
                limits[i] = crate::dispatch::BlockLimits {
                    sectors: d.boot.block.sectors,
                    read_only: d.boot.block.flags & septem_abi::BLOCK_READ_ONLY != 0,
                };
            }
        }
        limits
    }

    /// Per device slot: its block file's fd, or -1.
    #[must_use]
    pub fn host_blocks(&self) -> crate::host::BlockTable {
        let mut blocks = crate::host::NO_BLOCKS;
        for (i, d) in self.list.iter().enumerate().take(MAX_DEVICES) {
            if let Some(fd) = &d.block {
                blocks[i] = fd.as_raw_fd();
            }
        }
        blocks
    }

    /// Per device slot: its tap fd (or -1) and its MTU (for the [`crate::host::SysHost`]).
    #[must_use]
    pub fn host_taps(&self) -> (TapTable, [u32; MAX_DEVICES]) {
        let mut taps = NO_TAPS;
        let mut mtus = [0; MAX_DEVICES];
        for (i, d) in self.list.iter().enumerate().take(MAX_DEVICES) {
            if let Some(fd) = &d.tap {
                taps[i] = fd.as_raw_fd();
                mtus[i] = d.boot.net.mtu;
            }
        }
        (taps, mtus)
    }

    /// The host for the sealed monitor: console, clocks, these taps and block files.
    #[must_use]
    pub fn sys_host(&self) -> crate::host::SysHost {
        let (taps, mtus) = self.host_taps();
        crate::host::SysHost::with_taps(taps, mtus).with_blocks(self.host_blocks())
    }
}

/// A `BootDevice` for a net device named `name` with `config`.
#[must_use]
pub fn net_boot_device(name: &str, config: NetConfig) -> BootDevice {
    let mut boot = BootDevice {
        kind: DeviceKind::Net as u32,
        net: config,
        ..BootDevice::default()
    };
    let n = name.len().min(boot.name.len() - 1);
    boot.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    boot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:0a:00:07:02"), Ok([2, 0, 0x0a, 0, 7, 2]));
        assert_eq!(parse_mac("02-AB-cd-0-7-2"), Ok([2, 0xab, 0xcd, 0, 7, 2]));
        for bad in [
            "",
            "02:00:0a:00:07",
            "02:00:0a:00:07:02:03",
            "02:00:0a:00:07:zz",
            "02:00:0a:00:07:123",
            "02::0a:00:07:02",
            "0200.0a00.0702",
        ] {
            assert!(parse_mac(bad).unwrap_err().contains("not a MAC"), "{bad}");
        }
        assert!(parse_mac("00:00:00:00:00:00")
            .unwrap_err()
            .contains("all zeros"));
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("ff:ff:ff:ff:ff:ff")
            .unwrap_err()
            .contains("multicast"));
        assert_eq!(format_mac(&[2, 0, 0x0a, 0, 7, 0xff]), "02:00:0a:00:07:ff");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_cidr("10.0.7.2/24"),
            Ok((Ipv4Addr::new(10, 0, 7, 2), 24))
        );
        assert_eq!(parse_cidr("10.0.7.2/0").unwrap().1, 0);
        assert_eq!(parse_cidr("10.0.7.2/32").unwrap().1, 32);
        assert!(parse_cidr("10.0.7.2")
            .unwrap_err()
            .contains("prefix length"));
        assert!(parse_cidr("10.0.7.2/33").unwrap_err().contains("0 to 32"));
        assert!(parse_cidr("10.0.7.2/x").unwrap_err().contains("0 to 32"));
        assert!(parse_cidr("10.0.7/24").unwrap_err().contains("not an IPv4"));
        assert!(parse_cidr("0.0.0.0/8").unwrap_err().contains("unicast"));
        assert!(parse_ipv4("224.0.0.1", "gateway")
            .unwrap_err()
            .starts_with("gateway 224.0.0.1"));
        assert!(parse_ipv4("255.255.255.255", "dns").is_err());
        assert_eq!(parse_ipv4("1.1.1.1", "dns"), Ok(Ipv4Addr::new(1, 1, 1, 1)));
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..32 {
            let mac = random_mac().unwrap();
            assert_eq!(mac[0] & 0x03, 0x02, "{mac:?}");
            assert!(parse_mac(&format_mac(&mac)).is_ok());
        }
        assert_ne!(random_mac().unwrap(), random_mac().unwrap());
    }

    #[test]
    fn a_missing_tap_is_a_config_error() {
        let e = attach_tap("septem-nx0").unwrap_err();
        assert_eq!(e.exit_status(), crate::exit_status::BAD_CONFIG);
        assert_eq!(
            e.to_string(),
            "tap 'septem-nx0' does not exist; create it with: ip tuntap add dev septem-nx0 mode tap && ip link set septem-nx0 up"
        );
    }

    #[test]
    fn device_table() {
        let cfg = NetConfig {
            mtu: 1500,
            ..NetConfig::default()
        };
        let d = Devices {
            list: vec![
                AttachedDevice {
                    boot: BootDevice {
                        kind: DeviceKind::Block as u32,
                        ..BootDevice::default()
                    },
                    tap: None,
                    block: None,
                },
                AttachedDevice {
                    boot: net_boot_device("service", cfg),
                    tap: None,
                    block: None,
                },
            ],
        };
        assert_eq!(d.net_mask(), 0b10);
        assert_eq!(d.boot_table()[1].name_str(), "service");
        assert!(d.tap_fds().is_empty());
        assert!(d.block_fds().is_empty());
        assert_eq!(d.block_mask(), 0);
        assert_eq!(d.host_taps().0, NO_TAPS);
    }
}
