//! The netlink requests against the real kernel, with iproute2 as the oracle: what
//! the requests read must be what `ip -j` reports, and what they make must look, to
//! `ip -j -d` and `tc -j`, exactly like what the equivalent `ip`/`tc` commands make
//! (done side by side in two namespaces). Needs root and `/dev/net/tun`; prints
//! `SKIPPED: <reason>` and passes otherwise.

use super::ns::{self, Ns};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

fn skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (network namespaces, taps)");
        return true;
    }
    if !std::path::Path::new("/dev/net/tun").exists()
        || Command::new("tc").arg("-V").output().is_err()
    {
        eprintln!("SKIPPED: needs /dev/net/tun and iproute2");
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

/// A scratch namespace `runnc-nl-<pid>-<n>` with lo up and a veth `eth0` (MTU 1420,
/// `10.97.<n>.2/24`, default route via `.1`); deleted on drop with its veth.
struct Scratch {
    name: String,
    net: u32,
}

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let net = NEXT.fetch_add(1, Ordering::Relaxed) + 200;
        let name = format!("runnc-nl-{}-{net}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let s = Scratch { name, net };
        s.ip(&["link", "set", "lo", "up"]);
        s.ip(&[
            "link", "add", "eth0", "mtu", "1420", "type", "veth", "peer", "name", "peer0",
        ]);
        s.ip(&["link", "set", "eth0", "up"]);
        s.ip(&["link", "set", "peer0", "up"]);
        s.ip(&["addr", "add", &format!("10.97.{net}.2/24"), "dev", "eth0"]);
        s.ip(&["route", "add", "default", "via", &format!("10.97.{net}.1")]);
        s
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "-n", &self.name];
        a.extend_from_slice(args);
        run(&a)
    }

    fn tc(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "netns", "exec", &self.name, "tc"];
        a.extend_from_slice(args);
        run(&a)
    }

    fn json(text: &str) -> Value {
        if text.trim().is_empty() {
            return Value::Array(Vec::new());
        }
        serde_json::from_str(text).unwrap()
    }

    fn in_ns<T: Send>(&self, f: impl FnOnce(&mut Ns) -> Result<T, super::Error> + Send) -> T {
        ns::enter(&self.path(), false, f)
            .expect("netlink in the namespace")
            .expect("the namespace exists")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn links_addresses_and_routes_read_as_ip_reports_them() {
    if skip() {
        return;
    }
    let s = Scratch::new();
    s.ip(&["tuntap", "add", "dev", "tap9", "mode", "tap"]);
    let (links, routes, eth0_ipv4) = s.in_ns(|ns| {
        let links = ns.links()?;
        let eth0 = links.iter().find(|l| l.name == "eth0").unwrap().clone();
        Ok((links, ns.default_routes()?, ns.first_ipv4(&eth0)?))
    });

    let reported = Scratch::json(&s.ip(&["-j", "-d", "link", "show"]));
    let reported = reported.as_array().unwrap();
    assert_eq!(links.len(), reported.len(), "{links:?}");
    for r in reported {
        let l = links
            .iter()
            .find(|l| r["ifname"] == l.name.as_str())
            .unwrap();
        assert_eq!(r["ifindex"], l.index, "{l:?}");
        assert_eq!(r["mtu"], l.mtu, "{l:?}");
        assert_eq!(r["address"].as_str(), l.mac.as_deref(), "{l:?}");
        assert_eq!(
            r["linkinfo"]["info_kind"].as_str(),
            l.kind.as_deref(),
            "{l:?}"
        );
        let ether = r["link_type"] == "ether";
        assert_eq!(ether, l.arphrd == libc::ARPHRD_ETHER, "{l:?}");
    }
    let mut wireable: Vec<_> = links
        .iter()
        .filter(|l| l.wireable())
        .map(|l| l.name.as_str())
        .collect();
    wireable.sort_unstable();
    assert_eq!(wireable, ["eth0", "peer0"], "lo and tap9 are not wireable");

    let ip = Ipv4Addr::new(10, 97, u8::try_from(s.net).unwrap(), 2);
    assert_eq!(eth0_ipv4, Some((ip, 24)));
    let reported = Scratch::json(&s.ip(&["-j", "-4", "route", "show", "default"]));
    let eth0 = links.iter().find(|l| l.name == "eth0").unwrap();
    assert_eq!(reported.as_array().unwrap().len(), routes.len());
    assert_eq!(routes.len(), 1);
    assert_eq!(reported[0]["gateway"], routes[0].gateway.to_string());
    assert_eq!(routes[0].oif, eth0.index);
}

/// The JSON of `tc`/`ip` without what differs between two namespaces by chance
/// (ifindex, random MAC, action index and reference counts, statistics).
fn stable(v: &Value) -> Value {
    const VOLATILE: [&str; 6] = ["ifindex", "address", "index", "ref", "bind", "stats"];
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), stable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(stable).collect()),
        other => other.clone(),
    }
}

#[test]
fn tap_qdiscs_and_redirect_filters_equal_what_ip_and_tc_make() {
    if skip() {
        return;
    }
    let by_tools = Scratch::new();
    let ours = Scratch::new();
    by_tools.ip(&["tuntap", "add", "dev", "stap0", "mode", "tap"]);
    by_tools.ip(&["link", "set", "dev", "stap0", "mtu", "1420", "up"]);
    for (from, to) in [("eth0", "stap0"), ("stap0", "eth0")] {
        by_tools.tc(&["qdisc", "add", "dev", from, "ingress"]);
        by_tools.tc(&[
            "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ]);
    }
    ours.in_ns(|ns| {
        let eth0 = ns.link("eth0")?.unwrap();
        let tap = ns.add_tap("stap0")?;
        ns.set_up(&tap, Some(eth0.mtu))?;
        ns.add_ingress(&eth0)?;
        ns.redirect(&eth0, &tap)?;
        ns.add_ingress(&tap)?;
        ns.redirect(&tap, &eth0)?;
        assert!(ns.has_ingress(&eth0)? && ns.has_ingress(&tap)?);
        Ok(())
    });

    let tap = |s: &Scratch| Scratch::json(&s.ip(&["-j", "-d", "link", "show", "dev", "stap0"]));
    let (a, b) = (tap(&by_tools), tap(&ours));
    assert_eq!(stable(&a), stable(&b));
    assert_eq!(b[0]["linkinfo"]["info_data"]["persist"], true, "{b}");
    assert!(
        b[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{b}"
    );
    for dev in ["eth0", "stap0"] {
        let q = |s: &Scratch| Scratch::json(&s.tc(&["-j", "qdisc", "show", "dev", dev]));
        assert_eq!(stable(&q(&by_tools)), stable(&q(&ours)), "qdiscs of {dev}");
        let f =
            |s: &Scratch| Scratch::json(&s.tc(&["-j", "filter", "show", "dev", dev, "ingress"]));
        let (a, b) = (f(&by_tools), f(&ours));
        assert_eq!(stable(&a), stable(&b), "filters of {dev}");
        assert!(
            b.to_string().contains(r#""mirred_action":"redirect""#),
            "{b}"
        );
    }

    // The undo path: deleting eth0's qdisc takes its filter; deleting the tap takes
    // the rest. A second deletion is refused (unwire checks before deleting).
    let (gone, again) = ours.in_ns(|ns| {
        let eth0 = ns.link("eth0")?.unwrap();
        let tap = ns.link("stap0")?.unwrap();
        ns.delete_ingress(&eth0)?;
        ns.delete_link(&tap)?;
        let again = ns.delete_ingress(&eth0).map_err(|e| e.to_string()).err();
        Ok((
            !ns.has_ingress(&eth0)? && ns.link("stap0")?.is_none(),
            again,
        ))
    });
    assert!(gone);
    let again = again.expect("deleting a missing qdisc fails");
    assert!(
        again.contains("deleting the ingress qdisc of eth0"),
        "{again}"
    );
    assert_eq!(
        ours.tc(&["filter", "show", "dev", "eth0", "ingress"])
            .trim(),
        ""
    );
}
