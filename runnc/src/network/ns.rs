//! Working inside a network namespace: a short-lived thread joins the namespace with
//! `setns(CLONE_NEWNET)` and opens a NETLINK_ROUTE socket there; the taps it makes
//! (`/dev/net/tun`) land in that namespace too. No `nsenter`, no `ip`/`tc` processes,
//! and the process's other threads keep their namespace.

use super::netlink::{self, route, route::Link, tc};
use super::tap;
use super::Error;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The namespace's kernel tables, from the thread that joined it.
#[derive(Debug)]
pub(super) struct Ns {
    sock: netlink::Socket,
}

/// Runs `f` on a new thread inside the namespace at `path`. `Ok(None)` when the
/// namespace does not exist (any more).
pub(super) fn enter<T: Send>(
    path: &Path,
    missing_ok: bool,
    f: impl FnOnce(&mut Ns) -> Result<T, Error> + Send,
) -> Result<Option<T>, Error> {
    let netns_err = |source: std::io::Error| Error::Netns {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e)
            if missing_ok
                && (e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ESRCH)) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(netns_err(e)),
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: `file` is an open descriptor for the duration of the call;
            // joining a network namespace changes only this thread's view of the
            // network, and the thread ends with `f`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(netns_err(std::io::Error::last_os_error()));
            }
            drop(file);
            let sock = netlink::Socket::open().map_err(|source| Error::Netlink {
                what: format!("opening a netlink socket in {}", path.display()),
                source,
            })?;
            f(&mut Ns { sock }).map(Some)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// An error of `what` (an operation naming its interface).
fn failed(what: impl Into<String>) -> impl FnOnce(netlink::Error) -> Error {
    let what = what.into();
    move |source| Error::Netlink { what, source }
}

impl Ns {
    /// Every link (`ip -d link show`).
    pub(super) fn links(&mut self) -> Result<Vec<Link>, Error> {
        route::links(&mut self.sock).map_err(failed("listing the links"))
    }

    /// The link `name`, if there is one.
    pub(super) fn link(&mut self, name: &str) -> Result<Option<Link>, Error> {
        route::link(&mut self.sock, name).map_err(failed(format!("looking up link {name}")))
    }

    /// The main table's IPv4 default routes: gateway and output link
    /// (`ip -4 route show default`).
    pub(super) fn default_routes(&mut self) -> Result<Vec<route::DefaultRoute>, Error> {
        route::default_routes(&mut self.sock).map_err(failed("listing the default routes"))
    }

    /// The first IPv4 address and prefix of `link`.
    pub(super) fn first_ipv4(&mut self, link: &Link) -> Result<Option<(Ipv4Addr, u8)>, Error> {
        route::first_ipv4(&mut self.sock, link.index).map_err(failed(format!(
            "listing the IPv4 addresses of {}",
            link.name
        )))
    }

    /// Makes the persistent tap `name` (`ip tuntap add dev NAME mode tap`).
    pub(super) fn add_tap(&mut self, name: &str) -> Result<Link, Error> {
        tracing::debug!(tap = name, "creating tap");
        tap::create_persistent(name)?;
        self.link(name)?.ok_or_else(|| Error::Unusable {
            what: format!("tap {name} was created but is not listed"),
        })
    }

    /// Sets `link` up, with `mtu` when given (`ip link set dev X [mtu M] up`).
    pub(super) fn set_up(&mut self, link: &Link, mtu: Option<u32>) -> Result<(), Error> {
        tracing::debug!(link = %link.name, ?mtu, "setting link up");
        let what = match mtu {
            Some(m) => format!("setting {} up with MTU {m}", link.name),
            None => format!("setting {} up", link.name),
        };
        route::set_up(&mut self.sock, link.index, mtu).map_err(failed(what))
    }

    /// Deletes `link` (`ip link del dev X`).
    pub(super) fn delete_link(&mut self, link: &Link) -> Result<(), Error> {
        tracing::debug!(link = %link.name, "deleting link");
        route::delete(&mut self.sock, link.index).map_err(failed(format!("deleting {}", link.name)))
    }

    /// Adds an ingress qdisc to `link` (`tc qdisc add dev X ingress`).
    pub(super) fn add_ingress(&mut self, link: &Link) -> Result<(), Error> {
        tracing::debug!(link = %link.name, "adding ingress qdisc");
        tc::add_ingress(&mut self.sock, link.index)
            .map_err(failed(format!("adding an ingress qdisc to {}", link.name)))
    }

    /// Deletes `link`'s ingress qdisc (`tc qdisc del dev X ingress`).
    pub(super) fn delete_ingress(&mut self, link: &Link) -> Result<(), Error> {
        tracing::debug!(link = %link.name, "deleting ingress qdisc");
        tc::delete_ingress(&mut self.sock, link.index).map_err(failed(format!(
            "deleting the ingress qdisc of {}",
            link.name
        )))
    }

    /// Whether `link` has an ingress qdisc.
    pub(super) fn has_ingress(&mut self, link: &Link) -> Result<bool, Error> {
        tc::has_ingress(&mut self.sock, link.index)
            .map_err(failed(format!("listing the qdiscs of {}", link.name)))
    }

    /// Redirects every frame arriving on `from` out of `to` (u32 match-all + mirred).
    pub(super) fn redirect(&mut self, from: &Link, to: &Link) -> Result<(), Error> {
        tracing::debug!(from = %from.name, to = %to.name, "adding redirect filter");
        tc::add_redirect(&mut self.sock, from.index, to.index).map_err(failed(format!(
            "adding a filter redirecting {} to {}",
            from.name, to.name
        )))
    }
}
