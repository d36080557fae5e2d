//! Links, IPv4 addresses and default routes: what `ip -j -d link show`,
//! `ip -j -4 addr show` and `ip -j -4 route show default` used to tell, and
//! `ip link set`/`ip link del`.

use super::message::{self, c_str, u16_at, u32_at, Message};
use super::{change_flags, dump_flags, get_flags, Error, Socket};
use std::net::Ipv4Addr;

/// The size of `struct ifinfomsg` (family, pad, type, index, flags, change).
const IFINFOMSG_LEN: usize = 16;
/// The size of `struct ifaddrmsg` (family, prefixlen, flags, scope, index).
const IFADDRMSG_LEN: usize = 8;
/// The size of `struct rtmsg` (family, dst_len, src_len, tos, table, protocol, scope,
/// type, flags).
const RTMSG_LEN: usize = 12;
/// `IFLA_INFO_KIND` inside `IFLA_LINKINFO`.
const IFLA_INFO_KIND: u16 = 1;

/// A namespace interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    /// `aa:bb:cc:dd:ee:ff`, as `ip` prints it.
    pub mac: Option<String>,
    /// `ifi_type` (`ARPHRD_ETHER`, `ARPHRD_LOOPBACK`, …).
    pub arphrd: u16,
    /// `IFLA_LINKINFO`/`IFLA_INFO_KIND` (`veth`, `tun`, …), when there is one.
    pub kind: Option<String>,
}

impl Link {
    /// Whether a guest NIC can be wired to it: an Ethernet interface that is not a
    /// tap (ours or another's) nor an `ifb`.
    pub(crate) fn wireable(&self) -> bool {
        self.name != "lo"
            && self.arphrd == libc::ARPHRD_ETHER
            && !matches!(self.kind.as_deref(), Some("tun" | "ifb"))
    }
}

/// The `ifinfomsg` header: AF_UNSPEC, `index`, and `flags` within `change`.
fn ifinfomsg(m: &mut Message, index: u32, flags: u32, change: u32) {
    m.u8(libc::AF_UNSPEC as u8)
        .u8(0)
        .u16(0)
        .u32(index)
        .u32(flags)
        .u32(change);
}

/// Reads an `RTM_NEWLINK` payload.
fn parse_link(payload: &[u8]) -> Option<Link> {
    let arphrd = u16_at(payload, 2)?;
    let index = u32_at(payload, 4)?;
    let attrs = payload.get(IFINFOMSG_LEN..)?;
    Some(Link {
        name: c_str(message::attr(attrs, libc::IFLA_IFNAME)?)?,
        index,
        mtu: message::attr(attrs, libc::IFLA_MTU)
            .and_then(|p| u32_at(p, 0))
            .unwrap_or(1500),
        mac: message::attr(attrs, libc::IFLA_ADDRESS)
            .filter(|a| !a.is_empty())
            .map(format_mac),
        arphrd,
        kind: message::attr(attrs, libc::IFLA_LINKINFO)
            .and_then(|info| message::attr(info, IFLA_INFO_KIND))
            .and_then(c_str),
    })
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Every link of the namespace (`RTM_GETLINK` dump).
pub(crate) fn links(sock: &mut Socket) -> Result<Vec<Link>, Error> {
    let mut out = Vec::new();
    sock.dump(
        || {
            let mut m = Message::new(libc::RTM_GETLINK, dump_flags());
            ifinfomsg(&mut m, 0, 0, 0);
            m
        },
        |kind, payload| {
            if kind == libc::RTM_NEWLINK {
                out.extend(parse_link(payload));
            }
        },
    )?;
    Ok(out)
}

/// The link called `name`, `None` when there is none (`RTM_GETLINK` by name).
pub(crate) fn link(sock: &mut Socket, name: &str) -> Result<Option<Link>, Error> {
    let mut m = Message::new(libc::RTM_GETLINK, get_flags());
    ifinfomsg(&mut m, 0, 0, 0);
    m.attr_str(libc::IFLA_IFNAME, name);
    match sock.get(m)? {
        Some(p) => parse_link(&p)
            .map(Some)
            .ok_or(Error::Malformed("link reply without a name")),
        None => Ok(None),
    }
}

/// Sets link `index` up, and its MTU when given (`ip link set dev X [mtu M] up`).
pub(crate) fn set_up(sock: &mut Socket, index: u32, mtu: Option<u32>) -> Result<(), Error> {
    let up = libc::IFF_UP as u32;
    let mut m = Message::new(libc::RTM_SETLINK, change_flags(0));
    ifinfomsg(&mut m, index, up, up);
    if let Some(mtu) = mtu {
        m.attr_u32(libc::IFLA_MTU, mtu);
    }
    sock.change(m)
}

/// Deletes link `index` (`ip link del`), with its qdiscs and filters.
pub(crate) fn delete(sock: &mut Socket, index: u32) -> Result<(), Error> {
    let mut m = Message::new(libc::RTM_DELLINK, change_flags(0));
    ifinfomsg(&mut m, index, 0, 0);
    sock.change(m)
}

/// The first IPv4 address and prefix of link `index`, in the kernel's order
/// (`RTM_GETADDR` dump, AF_INET).
pub(crate) fn first_ipv4(sock: &mut Socket, index: u32) -> Result<Option<(Ipv4Addr, u8)>, Error> {
    let mut found = None;
    sock.dump(
        || {
            let mut m = Message::new(libc::RTM_GETADDR, dump_flags());
            m.u8(libc::AF_INET as u8).u8(0).u8(0).u8(0).u32(0);
            m
        },
        |kind, payload| {
            if kind == libc::RTM_NEWADDR && found.is_none() {
                found = parse_ipv4_addr(payload, index);
            }
        },
    )?;
    Ok(found)
}

/// An `RTM_NEWADDR` payload's address when it is IPv4 on link `index`: `IFA_LOCAL`
/// (the address itself; `IFA_ADDRESS` is the peer's on point-to-point links), else
/// `IFA_ADDRESS`.
fn parse_ipv4_addr(payload: &[u8], index: u32) -> Option<(Ipv4Addr, u8)> {
    if *payload.first()? != libc::AF_INET as u8 || u32_at(payload, 4)? != index {
        return None;
    }
    let prefix = *payload.get(1)?;
    let attrs = payload.get(IFADDRMSG_LEN..)?;
    let addr = message::attr(attrs, libc::IFA_LOCAL)
        .or_else(|| message::attr(attrs, libc::IFA_ADDRESS))?;
    let octets: [u8; 4] = addr.try_into().ok()?;
    Some((Ipv4Addr::from(octets), prefix))
}

/// A default route of the main table: its gateway and output link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DefaultRoute {
    pub gateway: Ipv4Addr,
    pub oif: u32,
}

/// The IPv4 default routes with a gateway in the main table (`RTM_GETROUTE` dump),
/// what `ip -4 route show default` lists. Multipath routes are not followed.
pub(crate) fn default_routes(sock: &mut Socket) -> Result<Vec<DefaultRoute>, Error> {
    let mut out = Vec::new();
    sock.dump(
        || {
            let mut m = Message::new(libc::RTM_GETROUTE, dump_flags());
            m.u8(libc::AF_INET as u8).bytes(&[0; RTMSG_LEN - 1]);
            m
        },
        |kind, payload| {
            if kind == libc::RTM_NEWROUTE {
                out.extend(parse_default_route(payload));
            }
        },
    )?;
    Ok(out)
}

fn parse_default_route(payload: &[u8]) -> Option<DefaultRoute> {
    let (family, dst_len, table, kind) = (
        *payload.first()?,
        *payload.get(1)?,
        *payload.get(4)?,
        *payload.get(7)?,
    );
    let attrs = payload.get(RTMSG_LEN..)?;
    // RTA_TABLE carries tables above 255; rtm_table is RT_TABLE_COMPAT for them.
    let table = message::attr(attrs, libc::RTA_TABLE)
        .and_then(|t| u32_at(t, 0))
        .unwrap_or(u32::from(table));
    if family != libc::AF_INET as u8
        || dst_len != 0
        || kind != libc::RTN_UNICAST
        || table != u32::from(libc::RT_TABLE_MAIN)
    {
        return None;
    }
    let gw: [u8; 4] = message::attr(attrs, libc::RTA_GATEWAY)?.try_into().ok()?;
    Some(DefaultRoute {
        gateway: Ipv4Addr::from(gw),
        oif: u32_at(message::attr(attrs, libc::RTA_OIF)?, 0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_payload(arphrd: u16, index: u32, name: &str, kind: Option<&str>) -> Vec<u8> {
        let mut m = Message::new(libc::RTM_NEWLINK, 0);
        m.u8(0).u8(0).u16(arphrd).u32(index).u32(0).u32(0);
        m.attr_str(libc::IFLA_IFNAME, name);
        m.attr_u32(libc::IFLA_MTU, 1450);
        m.attr(libc::IFLA_ADDRESS, &[0x0a, 0x58, 0x0a, 0xf4, 0, 5]);
        if let Some(k) = kind {
            m.begin_nest(libc::IFLA_LINKINFO)
                .attr_str(IFLA_INFO_KIND, k)
                .end_nest();
        }
        m.finish(1)[16..].to_vec()
    }

    #[test]
    fn links_are_read_and_filtered() {
        let eth0 = parse_link(&link_payload(1, 4, "eth0", Some("veth"))).unwrap();
        assert_eq!(eth0.index, 4);
        assert_eq!(eth0.mtu, 1450);
        assert_eq!(eth0.mac.as_deref(), Some("0a:58:0a:f4:00:05"));
        assert_eq!(eth0.kind.as_deref(), Some("veth"));
        assert!(eth0.wireable());
        let plain = parse_link(&link_payload(1, 5, "eth1", None)).unwrap();
        assert!(plain.wireable());
        for (arphrd, name, kind) in [
            (772, "lo", None),
            (1, "stap0", Some("tun")),
            (1, "ifb0", Some("ifb")),
            (768, "tunl0", Some("ipip")),
        ] {
            let l = parse_link(&link_payload(arphrd, 9, name, kind)).unwrap();
            assert!(!l.wireable(), "{l:?}");
        }
        assert!(parse_link(&[0; 4]).is_none());
    }

    #[test]
    fn addresses_prefer_the_local_address() {
        let mut m = Message::new(libc::RTM_NEWADDR, 0);
        m.u8(libc::AF_INET as u8).u8(24).u8(0).u8(0).u32(3);
        m.attr(libc::IFA_ADDRESS, &[10, 99, 0, 1]);
        m.attr(libc::IFA_LOCAL, &[10, 99, 0, 5]);
        let p = m.finish(1)[16..].to_vec();
        assert_eq!(
            parse_ipv4_addr(&p, 3),
            Some((Ipv4Addr::new(10, 99, 0, 5), 24))
        );
        assert_eq!(parse_ipv4_addr(&p, 4), None);
    }

    #[test]
    fn only_main_table_unicast_default_routes_count() {
        let route = |dst_len: u8, table: u8, kind: u8, gw: bool| {
            let mut m = Message::new(libc::RTM_NEWROUTE, 0);
            m.u8(libc::AF_INET as u8).u8(dst_len).u8(0).u8(0);
            m.u8(table).u8(3).u8(0).u8(kind).u32(0);
            m.attr_u32(libc::RTA_TABLE, u32::from(table));
            if gw {
                m.attr(libc::RTA_GATEWAY, &[10, 99, 0, 1]);
            }
            m.attr_u32(libc::RTA_OIF, 7);
            m.finish(1)[16..].to_vec()
        };
        assert_eq!(
            parse_default_route(&route(0, 254, 1, true)),
            Some(DefaultRoute {
                gateway: Ipv4Addr::new(10, 99, 0, 1),
                oif: 7
            })
        );
        assert_eq!(parse_default_route(&route(24, 254, 1, true)), None);
        assert_eq!(parse_default_route(&route(0, 255, 1, true)), None);
        assert_eq!(parse_default_route(&route(0, 254, 2, true)), None);
        assert_eq!(parse_default_route(&route(0, 254, 1, false)), None);
    }
}
