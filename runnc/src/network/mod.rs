//! The container's network: in the bundle's network namespace, one tap per net device
//! of the image, wired to the namespace's interface (`eth0`, …) by tc (ingress qdisc +
//! mirred redirect both ways); the guest gets that interface's MAC, IPv4 address,
//! prefix and default gateway. No bridge, no address rewriting.
//!
//! INTERFACE (owned by the network work; the lifecycle code relies on exactly this).

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Errors of network wiring.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command (`ip`, `tc`) or a netlink/ioctl step failed.
    #[error("network set-up: {what}")]
    Setup {
        /// What was being done, with the command's stderr when there is one.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
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
    /// Not wired yet (skeleton only; must not remain).
    #[error("networking is not wired yet")]
    Unwired,
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
pub fn wire(netns: &Path, devices: &[String]) -> Result<Wiring, Error> {
    let _ = (netns, devices);
    Err(Error::Unwired)
}

/// Removes the taps and tc rules of `wiring`. Idempotent; a namespace that is gone
/// already is fine.
pub fn unwire(wiring: &Wiring) -> Result<(), Error> {
    let _ = wiring;
    Err(Error::Unwired)
}

/// The first IPv4 `nameserver` line of a resolv.conf (the bundle's
/// `rootfs/etc/resolv.conf`, or a bind mount onto `/etc/resolv.conf`).
#[must_use]
pub fn nameserver(resolv_conf: &Path) -> Option<Ipv4Addr> {
    let _ = resolv_conf;
    None
}
