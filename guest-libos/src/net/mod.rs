//! Networking: a smoltcp TCP/IP stack over the monitor's batched net hypercalls, with
//! a small socket API.
//!
//! The stack drives the first net device of the image's manifest (usually called
//! `service`). It configures itself from `BootInfo` (MAC, MTU, static IPv4 and default
//! route, or DHCP when the monitor gave no address), answers ARP and ping, and offers:
//!
//! - [`TcpListener`] / [`TcpStream`]: `bind`, `accept`, `connect`, `read`, `write`,
//!   `write_all`, `flush`, `shutdown`, `set_nodelay`, `set_nonblocking`;
//! - [`UdpSocket`]: `bind`, `send_to`, `recv_from`;
//! - [`Poller`]: readiness of many sockets at once, for event-loop servers over
//!   non-blocking sockets; [`poll`] for a simple "run the stack, wait for anything".
//!
//! Blocking calls never spin: they run the stack, then give the CPU to the monitor with
//! `Yield`, waking when the device has input or when smoltcp's next timer is due. The
//! stack is started on first use (or by [`init`]).
//!
//! Everything runs on the guest's one thread; the stack lives in a global.

mod config;
mod device;
mod poll;
pub mod server;
mod stack;
mod tcp;
mod udp;

pub use config::{Addressing, ConfigError, NetSettings};
pub use core::net::{Ipv4Addr, SocketAddrV4};
pub use device::DeviceStats;
pub use poll::{Event, Interest, Poller, Source, Token};
pub use server::{Conn, Flow, Handler, Server, ServerError, ServerOptions};
pub use stack::TcpOptions;
pub use tcp::{Shutdown, TcpListener, TcpStream};
pub use udp::UdpSocket;

use crate::sync::Locked;
use crate::{boot, hypercall, time};
use core::fmt;
use core::time::Duration;
use device::HypercallIo;
use septem_abi::{BootDevice, HcError};
use stack::Stack;

/// Errors of the network API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The image declares no net device, or the monitor attached none.
    NoDevice,
    /// The monitor's settings for the device are unusable.
    Config(ConfigError),
    /// The interface has no IPv4 address (yet: DHCP is still asking).
    NotConfigured,
    /// The network stack was re-entered (from inside one of its own calls).
    Busy,
    /// The port is already bound.
    AddrInUse,
    /// An argument is not acceptable (port 0, empty buffers, closed listener…).
    InvalidInput,
    /// A non-blocking call would have had to wait.
    WouldBlock,
    /// The deadline passed.
    TimedOut,
    /// The socket is not connected (or no longer).
    NotConnected,
    /// The peer refused the connection.
    ConnectionRefused,
    /// The connection was reset or closed before the data could be sent.
    ConnectionReset,
    /// The datagram does not fit the socket's buffer.
    MessageTooLong,
    /// The net hypercall failed.
    Device(HcError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDevice => f.write_str("no network device"),
            Error::Config(e) => write!(f, "bad network device settings: {e:?}"),
            Error::NotConfigured => f.write_str("network interface has no address"),
            Error::Busy => f.write_str("network stack re-entered"),
            Error::AddrInUse => f.write_str("address in use"),
            Error::InvalidInput => f.write_str("invalid argument"),
            Error::WouldBlock => f.write_str("operation would block"),
            Error::TimedOut => f.write_str("timed out"),
            Error::NotConnected => f.write_str("not connected"),
            Error::ConnectionRefused => f.write_str("connection refused"),
            Error::ConnectionReset => f.write_str("connection reset"),
            Error::MessageTooLong => f.write_str("message too long"),
            Error::Device(e) => write!(f, "network device: {e}"),
        }
    }
}

impl core::error::Error for Error {}

/// Result of the network API.
pub type Result<T> = core::result::Result<T, Error>;

type GuestStack = Stack<HypercallIo>;

static STACK: Locked<Option<GuestStack>> = Locked::new(None);

fn smol_now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros((time::Instant::now().as_nanos() / 1000) as i64)
}

fn boot_devices() -> &'static [BootDevice] {
    let Some(b) = boot::boot_info() else {
        return &[];
    };
    if b.devices.is_null() || b.device_count == 0 {
        return &[];
    }
    // SAFETY: the monitor's contract (abi/src/boot.rs) is that `devices` points at
    // `device_count` BootDevice entries in the boot area, live and unchanged for the
    // guest's whole life.
    unsafe {
        core::slice::from_raw_parts(
            b.devices.raw() as *const BootDevice,
            b.device_count as usize,
        )
    }
}

fn create() -> Result<GuestStack> {
    let settings = NetSettings::first_net(boot_devices())
        .ok_or(Error::NoDevice)?
        .map_err(Error::Config)?;
    let mono = time::Instant::now().as_nanos();
    let wall = time::wall_clock().as_nanos() as u64;
    let seed = wall
        ^ mono.rotate_left(32)
        ^ u64::from_le_bytes([
            settings.mac[0],
            settings.mac[1],
            settings.mac[2],
            settings.mac[3],
            settings.mac[4],
            settings.mac[5],
            0,
            0,
        ]);
    let io = HypercallIo {
        device: settings.index,
    };
    Ok(Stack::new(io, settings, smol_now(), seed))
}

/// Runs `f` on the global stack, starting it on first use.
pub(crate) fn with<R>(f: impl FnOnce(&mut GuestStack) -> Result<R>) -> Result<R> {
    STACK
        .try_with(|slot| {
            if slot.is_none() {
                *slot = Some(create()?);
            }
            match slot.as_mut() {
                Some(s) => f(s),
                None => Err(Error::NoDevice),
            }
        })
        .unwrap_or(Err(Error::Busy))
}

/// Sleeps until the device has input, smoltcp's next timer, or `deadline`.
fn wait(
    st: &mut GuestStack,
    now: smoltcp::time::Instant,
    deadline: Option<time::Instant>,
) -> Result<()> {
    let budget = st
        .sleep_budget(now)
        .map_or(stack::MAX_SLEEP, |b| b.min(stack::MAX_SLEEP));
    if budget == smoltcp::time::Duration::ZERO {
        return Ok(());
    }
    let now_ns = (now.total_micros() as u64).saturating_mul(1000);
    let mut until = now_ns.saturating_add(budget.total_micros().saturating_mul(1000));
    if let Some(d) = deadline {
        until = until.min(d.as_nanos());
    }
    if until <= now_ns {
        return Ok(());
    }
    let bit = 1u64 << (st.settings.index & 63);
    let ready = hypercall::yield_until(until, bit).map_err(Error::Device)?;
    if ready & bit != 0 {
        st.dev.note_input();
    }
    Ok(())
}

/// Runs `op` on the stack. Non-blocking: once. Blocking: until it stops answering
/// [`Error::WouldBlock`] (running the stack and sleeping in between), or `deadline`.
pub(crate) fn block_on<R>(
    nonblocking: bool,
    deadline: Option<time::Instant>,
    mut op: impl FnMut(&mut GuestStack) -> Result<R>,
) -> Result<R> {
    loop {
        let done = with(|st| {
            match op(st) {
                Err(Error::WouldBlock) => {}
                r => return Ok(Some(r)),
            }
            if nonblocking {
                return Ok(Some(Err(Error::WouldBlock)));
            }
            let now = smol_now();
            if st.run(now) {
                match op(st) {
                    Err(Error::WouldBlock) => {}
                    r => return Ok(Some(r)),
                }
            }
            if deadline
                .is_some_and(|d| time::Instant::from_nanos(now.total_micros() as u64 * 1000) >= d)
            {
                return Ok(Some(Err(Error::TimedOut)));
            }
            wait(st, now, deadline)?;
            Ok(None)
        })?;
        if let Some(r) = done {
            return r;
        }
    }
}

/// Starts the network stack now (it also starts on first use). Fails with
/// [`Error::NoDevice`] when the image has no net device attached.
pub fn init() -> Result<()> {
    with(|_| Ok(()))
}

/// What the interface looks like now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Device index in `BootInfo::devices`.
    pub index: u32,
    /// The device's name from the manifest.
    pub name: &'static str,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: usize,
    /// IPv4 address and prefix length, once configured.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Name server.
    pub dns: Option<Ipv4Addr>,
    /// True when the address comes (or will come) from DHCP.
    pub dhcp: bool,
}

/// The interface's current settings.
pub fn interface() -> Result<InterfaceInfo> {
    with(|st| {
        let s = st.settings;
        let name = boot_devices()
            .get(s.index as usize)
            .map_or("?", BootDevice::name_str);
        Ok(InterfaceInfo {
            index: s.index,
            name,
            mac: s.mac,
            mtu: s.mtu,
            ipv4: st.ipv4(),
            gateway: st.gateway(),
            dns: st.dns(),
            dhcp: s.addressing == Addressing::Dhcp,
        })
    })
}

/// The interface's IPv4 address, if it has one.
#[must_use]
pub fn ipv4_addr() -> Option<Ipv4Addr> {
    with(|st| Ok(st.ipv4().map(|(a, _)| a))).ok().flatten()
}

/// The name server the monitor (or DHCP) gave, if any.
#[must_use]
pub fn dns_server() -> Option<Ipv4Addr> {
    with(|st| Ok(st.dns())).ok().flatten()
}

/// Runs the stack until the interface has an address (at once with a static one;
/// DHCP otherwise), or `timeout` passes.
pub fn wait_for_address(timeout: Option<Duration>) -> Result<Ipv4Addr> {
    let deadline = timeout.and_then(|t| time::Instant::now().checked_add(t));
    block_on(false, deadline, |st| {
        st.ipv4().map(|(a, _)| a).ok_or(Error::WouldBlock)
    })
}

/// Runs the stack once (sending what sockets queued, taking in what arrived). If that
/// changed no socket's state, sleeps until input, a stack timer or `timeout` (None:
/// no limit), then runs it again. Returns whether a socket's state may have changed.
///
/// For many sockets, [`Poller`] says which ones are ready.
pub fn poll(timeout: Option<Duration>) -> Result<bool> {
    let deadline = timeout.and_then(|t| time::Instant::now().checked_add(t));
    with(|st| {
        let now = smol_now();
        if st.run(now) {
            return Ok(true);
        }
        if timeout == Some(Duration::ZERO) {
            return Ok(false);
        }
        wait(st, now, deadline)?;
        Ok(st.run(smol_now()))
    })
}

/// The device's counters (frames and hypercalls in each direction).
pub fn stats() -> Result<DeviceStats> {
    with(|st| Ok(st.stats()))
}

#[cfg(test)]
mod tests;
