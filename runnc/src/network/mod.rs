//! The container's network: in the bundle's network namespace, one tap per net device
//! of the image, wired to the namespace's interface (`eth0`, …) by tc (ingress qdisc +
//! mirred redirect both ways); the guest gets that interface's MAC, IPv4 address,
//! prefix and default gateway. No bridge, no address rewriting.
//!
//! INTERFACE (owned by the network work; the lifecycle code relies on exactly this).

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

mod netlink;
mod ns;
mod parse;
mod tap;
#[cfg(test)]
mod tests;

use netlink::route::Link;
use ns::Ns;

/// The tap made for the image's `index`-th net device.
#[must_use]
pub fn tap_name(index: usize) -> String {
    format!("stap{index}")
}

/// Errors of network wiring.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An ioctl step (making a tap) failed.
    #[error("network set-up: {what}")]
    Setup {
        /// What was being done, naming the interface.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("network set-up: {what}")]
    Netlink {
        /// What was being done, naming the interface.
        what: String,
        /// The kernel's refusal, or a socket error.
        #[source]
        source: netlink::Error,
    },
    /// The network namespace cannot be entered.
    #[error("cannot enter network namespace {path}")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// What was found in the namespace cannot be used.
    #[error("network set-up: {what}")]
    Unusable {
        /// What is wrong.
        what: String,
    },
}

/// What one guest net device gets: the tap septem-run attaches (`--net:DEVICE=TAP`)
/// and the settings of the interface it is wired to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNic {
    /// The image's net device name.
    pub device: String,
    /// The tap created in the namespace for it.
    pub tap: String,
    /// The namespace interface it is wired to (None: no interface left for it; the tap
    /// is attached unconnected).
    pub iface: Option<String>,
    /// The interface's MAC, which the guest uses (`--net-mac:`), as `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// The interface's IPv4 address and prefix (`--net-ip:`).
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// The namespace's default gateway (`--net-gw:`).
    pub gateway: Option<Ipv4Addr>,
}

/// Everything [`wire`] made, recorded in the container state so [`unwire`] can undo it
/// after a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wiring {
    /// The namespace (`linux.namespaces[type=network].path`).
    pub netns: PathBuf,
    /// One entry per net device, in the image's order.
    pub nics: Vec<GuestNic>,
}

/// Creates a tap per entry of `devices` (the image's net device names) in the namespace
/// at `netns` and wires each to the namespace's interfaces in name order (`lo` and taps
/// excluded). More interfaces than devices: the extra ones are left alone (logged);
/// fewer: the extra devices get unconnected taps.
///
/// Per wired pair (`eth0` ↔ `stap0`), inside the namespace, through netlink and the tun
/// ioctls (no `ip`/`tc` processes; the equivalent commands):
///
/// ```text
/// ip tuntap add dev stap0 mode tap
/// ip link set dev stap0 mtu <eth0's MTU> up
/// tc qdisc add dev eth0 ingress
/// tc qdisc add dev stap0 ingress
/// tc filter add dev eth0 parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev stap0
/// tc filter add dev stap0 parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev eth0
/// ```
///
/// `eth0` keeps its address: every frame it receives is redirected to the tap before
/// the namespace's IP stack sees it, so the stack never answers ARP or anything else
/// for it; the guest, using the same MAC and address, does. On a failure part-way
/// everything made so far is removed again.
pub fn wire(netns: &Path, devices: &[String]) -> Result<Wiring, Error> {
    let nics = ns::enter(netns, false, |ns| {
        let mut made = Vec::new();
        match wire_in(ns, devices, &mut made) {
            Ok(nics) => Ok(nics),
            Err(e) => {
                tracing::warn!(error = %e, "wiring failed; undoing what was made");
                for step in made.iter().rev() {
                    if let Err(u) = undo(ns, step) {
                        tracing::warn!(error = %u, "undo failed");
                    }
                }
                Err(e)
            }
        }
    })?
    .unwrap_or_default();
    tracing::info!(netns = %netns.display(), ?nics, "network wired");
    Ok(Wiring {
        netns: netns.to_path_buf(),
        nics,
    })
}

/// Something [`wire`] made.
#[derive(Debug)]
enum Made {
    Tap(Link),
    Ingress(Link),
}

fn undo(ns: &mut Ns, step: &Made) -> Result<(), Error> {
    match step {
        Made::Tap(tap) => ns.delete_link(tap),
        Made::Ingress(dev) => ns.delete_ingress(dev),
    }
}

fn wire_in(ns: &mut Ns, devices: &[String], made: &mut Vec<Made>) -> Result<Vec<GuestNic>, Error> {
    let all = ns.links()?;
    let mut ifaces: Vec<&Link> = all.iter().filter(|l| l.wireable()).collect();
    ifaces.sort_by(|a, b| a.name.cmp(&b.name));
    for extra in ifaces.iter().skip(devices.len()) {
        tracing::info!(iface = %extra.name, "no guest net device left for this interface; left alone");
    }
    let routes = ns.default_routes()?;
    let mut nics = Vec::with_capacity(devices.len());
    for (i, device) in devices.iter().enumerate() {
        let name = tap_name(i);
        if all.iter().any(|l| l.name == name) {
            return Err(Error::Unusable {
                what: format!(
                    "{name} exists already in the namespace (one networked unikernel per namespace)"
                ),
            });
        }
        let tap = ns.add_tap(&name)?;
        made.push(Made::Tap(tap.clone()));
        let Some(iface) = ifaces.get(i) else {
            tracing::info!(device, tap = %name, "no interface left for this device; its tap is unconnected");
            ns.set_up(&tap, None)?;
            nics.push(GuestNic {
                device: device.clone(),
                tap: name,
                iface: None,
                mac: None,
                ipv4: None,
                gateway: None,
            });
            continue;
        };
        ns.set_up(&tap, Some(iface.mtu))?;
        ns.add_ingress(iface)?;
        made.push(Made::Ingress((*iface).clone()));
        ns.add_ingress(&tap)?;
        ns.redirect(iface, &tap)?;
        ns.redirect(&tap, iface)?;
        let ipv4 = ns.first_ipv4(iface)?;
        let gateway = routes
            .iter()
            .find(|r| r.oif == iface.index)
            .map(|r| r.gateway);
        if ipv4.is_none() {
            tracing::warn!(
                iface = %iface.name,
                "interface has no IPv4 address; the guest gets none"
            );
        }
        nics.push(GuestNic {
            device: device.clone(),
            tap: name,
            iface: Some(iface.name.clone()),
            mac: iface.mac.clone(),
            ipv4,
            gateway,
        });
    }
    Ok(nics)
}

/// Removes the taps and tc rules of `wiring`. Idempotent; a namespace that is gone
/// already is fine.
///
/// Inside the namespace: delete `stapN` (which takes the tap's qdisc and filters with
/// it) and `eth0`'s ingress qdisc, each only when still there.
pub fn unwire(wiring: &Wiring) -> Result<(), Error> {
    let done = ns::enter(&wiring.netns, true, |ns| {
        for nic in &wiring.nics {
            if let Some(tap) = ns.link(&nic.tap)? {
                ns.delete_link(&tap)?;
            }
            let Some(name) = nic.iface.as_deref() else {
                continue;
            };
            if let Some(iface) = ns.link(name)? {
                if ns.has_ingress(&iface)? {
                    ns.delete_ingress(&iface)?;
                }
            }
        }
        Ok(())
    })?;
    match done {
        Some(()) => tracing::info!(netns = %wiring.netns.display(), "network unwired"),
        None => {
            tracing::info!(netns = %wiring.netns.display(), "namespace gone; nothing to unwire")
        }
    }
    Ok(())
}

/// The first IPv4 `nameserver` line of a resolv.conf (the bundle's
/// `rootfs/etc/resolv.conf`, or a bind mount onto `/etc/resolv.conf`).
#[must_use]
pub fn nameserver(resolv_conf: &Path) -> Option<Ipv4Addr> {
    let bytes = std::fs::read(resolv_conf).ok()?;
    parse::nameserver(&String::from_utf8_lossy(&bytes))
}
