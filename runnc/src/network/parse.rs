//! Reading `ip -j` output and resolv.conf.

use serde_json::Value;
use std::net::Ipv4Addr;

/// A namespace interface as `ip -j -d link show` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub name: String,
    pub mtu: u32,
    pub mac: Option<String>,
    /// `link_type` (`ether`, `loopback`, `sit`, …).
    pub link_type: String,
    /// `linkinfo.info_kind` (`veth`, `tun`, …), when there is one.
    pub kind: Option<String>,
}

impl Link {
    /// Whether a guest NIC can be wired to it: an Ethernet interface that is not a
    /// tap (ours or another's) nor an `ifb`.
    pub fn wireable(&self) -> bool {
        self.name != "lo"
            && self.link_type == "ether"
            && !matches!(self.kind.as_deref(), Some("tun" | "ifb"))
    }
}

pub(super) fn links(v: &Value) -> Vec<Link> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| {
                    Some(Link {
                        name: l.get("ifname")?.as_str()?.to_string(),
                        mtu: l
                            .get("mtu")
                            .and_then(Value::as_u64)
                            .and_then(|m| u32::try_from(m).ok())
                            .unwrap_or(1500),
                        mac: l.get("address").and_then(Value::as_str).map(str::to_string),
                        link_type: l
                            .get("link_type")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        kind: l
                            .get("linkinfo")
                            .and_then(|i| i.get("info_kind"))
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first IPv4 address and prefix in `ip -j -4 addr show dev X` output.
pub(super) fn first_ipv4(v: &Value) -> Option<(Ipv4Addr, u8)> {
    v.as_array()?.iter().find_map(|l| {
        l.get("addr_info")?.as_array()?.iter().find_map(|a| {
            if a.get("family").and_then(Value::as_str) != Some("inet") {
                return None;
            }
            let ip = a.get("local")?.as_str()?.parse().ok()?;
            let prefix = u8::try_from(a.get("prefixlen")?.as_u64()?).ok()?;
            Some((ip, prefix))
        })
    })
}

/// The gateway of the default route through `dev` in `ip -j -4 route show default`
/// output (a default route on another device does not count).
pub(super) fn default_gateway(v: &Value, dev: &str) -> Option<Ipv4Addr> {
    v.as_array()?.iter().find_map(|r| {
        if r.get("dev").and_then(Value::as_str) != Some(dev) {
            return None;
        }
        r.get("gateway")?.as_str()?.parse().ok()
    })
}

/// Whether `tc -j qdisc show dev X` output lists an ingress qdisc.
pub(super) fn has_ingress(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter()
            .any(|q| q.get("kind").and_then(Value::as_str) == Some("ingress"))
    })
}

/// The first IPv4 `nameserver` of resolv.conf text.
pub(super) fn nameserver(text: &str) -> Option<Ipv4Addr> {
    text.lines().find_map(|line| {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            return None;
        }
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            return None;
        }
        words.next()?.parse::<Ipv4Addr>().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links_are_read_and_filtered() {
        let v = json!([
            {"ifname":"lo","mtu":65536,"link_type":"loopback","address":"00:00:00:00:00:00"},
            {"ifname":"eth0","mtu":1450,"link_type":"ether","address":"0a:58:0a:f4:00:05",
             "linkinfo":{"info_kind":"veth"}},
            {"ifname":"stap0","mtu":1450,"link_type":"ether","address":"aa:aa:aa:aa:aa:aa",
             "linkinfo":{"info_kind":"tun","info_data":{"type":"tap"}}},
            {"ifname":"tunl0","mtu":1480,"link_type":"ipip","linkinfo":{"info_kind":"ipip"}},
            {"ifname":"eth1","mtu":1500,"link_type":"ether","address":"02:00:00:00:00:02"}
        ]);
        let l = links(&v);
        assert_eq!(l.len(), 5);
        assert_eq!(l[1].mtu, 1450);
        assert_eq!(l[1].mac.as_deref(), Some("0a:58:0a:f4:00:05"));
        let names: Vec<_> = l
            .iter()
            .filter(|l| l.wireable())
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["eth0", "eth1"]);
    }

    #[test]
    fn addresses_and_routes() {
        let v = json!([{"ifname":"eth0","addr_info":[
            {"family":"inet6","local":"fe80::1","prefixlen":64},
            {"family":"inet","local":"10.99.0.5","prefixlen":24},
            {"family":"inet","local":"10.99.0.6","prefixlen":24}]}]);
        assert_eq!(first_ipv4(&v), Some((Ipv4Addr::new(10, 99, 0, 5), 24)));
        assert_eq!(first_ipv4(&json!([])), None);
        assert_eq!(first_ipv4(&json!([{"ifname":"eth0","addr_info":[]}])), None);
        let r = json!([
            {"dst":"default","gateway":"10.1.0.1","dev":"eth1"},
            {"dst":"default","gateway":"10.99.0.1","dev":"eth0","flags":[]}
        ]);
        assert_eq!(
            default_gateway(&r, "eth0"),
            Some(Ipv4Addr::new(10, 99, 0, 1))
        );
        assert_eq!(default_gateway(&r, "eth2"), None);
        assert_eq!(
            default_gateway(&json!([{"dst":"default","dev":"eth0"}]), "eth0"),
            None
        );
    }

    #[test]
    fn ingress_qdisc_detected() {
        assert!(has_ingress(&json!([
            {"kind":"noqueue","handle":"0:"},
            {"kind":"ingress","handle":"ffff:","parent":"ffff:fff1"}
        ])));
        assert!(!has_ingress(&json!([{"kind":"noqueue","handle":"0:"}])));
    }

    #[test]
    fn nameserver_lines() {
        let text = "# generated\n; also a comment\nsearch example.com\nnameserver fe80::1%eth0\n\
                    nameserver not-an-ip\n  nameserver   10.96.0.10  # kube-dns\nnameserver 8.8.8.8\n";
        assert_eq!(nameserver(text), Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(nameserver("nameserver ::1\n"), None);
        assert_eq!(nameserver(""), None);
        assert_eq!(nameserver("\u{0}\u{1}garbage\nnameserver\n"), None);
        assert_eq!(
            nameserver("#nameserver 1.1.1.1\nnameserver 9.9.9.9"),
            Some(Ipv4Addr::new(9, 9, 9, 9))
        );
    }
}
