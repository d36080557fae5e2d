//! Reading resolv.conf.

use std::net::Ipv4Addr;

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
