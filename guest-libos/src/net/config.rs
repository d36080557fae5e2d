//! Interface settings from a [`BootDevice`]: pure parsing, host-tested.

use core::net::Ipv4Addr;
use septem_abi::{BootDevice, DeviceKind, NET_HAS_ADDRESS, NET_HAS_DNS, NET_HAS_GATEWAY};

/// Smallest MTU accepted (IPv4's minimum datagram size); below it, the default is used.
pub const MIN_MTU: usize = 576;
/// MTU used when the monitor gives none.
pub const DEFAULT_MTU: usize = 1500;
/// Largest MTU accepted (the ABI's frame limit minus the Ethernet header).
pub const MAX_MTU: usize = septem_abi::NET_FRAME_MAX as usize - ETHERNET_HEADER;
/// Bytes of Ethernet header in front of each IP packet (no VLAN tag, no FCS).
pub const ETHERNET_HEADER: usize = 14;

/// How the interface gets its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// A fixed address and prefix length from the monitor.
    Static {
        /// The guest's address.
        address: Ipv4Addr,
        /// Prefix length (0..=32).
        prefix_len: u8,
    },
    /// Ask a DHCP server.
    Dhcp,
}

/// The settings of one net device, as the monitor passed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetSettings {
    /// Index of the device in `BootInfo::devices` (its hypercall and wait-set number).
    pub index: u32,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// MTU (IP packet size); frames are up to `mtu + 14` bytes.
    pub mtu: usize,
    /// Static address or DHCP.
    pub addressing: Addressing,
    /// Default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Name server, if any.
    pub dns: Option<Ipv4Addr>,
}

/// Why a device's settings were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The device is not a net device.
    NotNet,
    /// The MAC address is not a unicast address.
    BadMac,
    /// The prefix length is over 32.
    BadPrefix,
}

impl NetSettings {
    /// Parses device `index`'s settings.
    pub fn from_boot_device(index: u32, dev: &BootDevice) -> Result<NetSettings, ConfigError> {
        if dev.kind != DeviceKind::Net as u32 {
            return Err(ConfigError::NotNet);
        }
        let n = &dev.net;
        // Unicast: the group bit clear, and not all zero.
        if n.mac[0] & 1 != 0 || n.mac == [0; 6] {
            return Err(ConfigError::BadMac);
        }
        let mtu = match n.mtu as usize {
            0 => DEFAULT_MTU,
            m if m < MIN_MTU => DEFAULT_MTU,
            m => m.min(MAX_MTU),
        };
        let addressing = if n.flags & NET_HAS_ADDRESS != 0 {
            if n.prefix_len > 32 {
                return Err(ConfigError::BadPrefix);
            }
            Addressing::Static {
                address: Ipv4Addr::from(n.ipv4),
                prefix_len: n.prefix_len,
            }
        } else {
            Addressing::Dhcp
        };
        let gateway = (n.flags & NET_HAS_GATEWAY != 0).then(|| Ipv4Addr::from(n.gateway));
        let dns = (n.flags & NET_HAS_DNS != 0).then(|| Ipv4Addr::from(n.dns));
        Ok(NetSettings {
            index,
            mac: n.mac,
            mtu,
            addressing,
            gateway,
            dns,
        })
    }

    /// The first net device of a device table, parsed.
    pub fn first_net(devices: &[BootDevice]) -> Option<Result<NetSettings, ConfigError>> {
        let (i, dev) = devices
            .iter()
            .enumerate()
            .find(|(_, d)| d.kind == DeviceKind::Net as u32)?;
        Some(NetSettings::from_boot_device(i as u32, dev))
    }

    /// Largest frame on this device.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        self.mtu + ETHERNET_HEADER
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use septem_abi::NetConfig;

    fn net(cfg: NetConfig) -> BootDevice {
        let mut d = BootDevice {
            kind: DeviceKind::Net as u32,
            net: cfg,
            ..BootDevice::default()
        };
        d.name[..7].copy_from_slice(b"service");
        d
    }

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

    #[test]
    fn static_address_gateway_dns() {
        let d = net(NetConfig {
            mac: MAC,
            mtu: 9000,
            ipv4: [10, 0, 7, 2],
            prefix_len: 24,
            gateway: [10, 0, 7, 1],
            dns: [10, 0, 7, 53],
            flags: NET_HAS_ADDRESS | NET_HAS_GATEWAY | NET_HAS_DNS,
            ..NetConfig::default()
        });
        let s = NetSettings::from_boot_device(3, &d).unwrap();
        assert_eq!(s.index, 3);
        assert_eq!(s.mac, MAC);
        assert_eq!(s.mtu, 9000);
        assert_eq!(s.frame_len(), 9014);
        assert_eq!(
            s.addressing,
            Addressing::Static {
                address: Ipv4Addr::new(10, 0, 7, 2),
                prefix_len: 24
            }
        );
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 0, 7, 1)));
        assert_eq!(s.dns, Some(Ipv4Addr::new(10, 0, 7, 53)));
    }

    #[test]
    fn no_address_means_dhcp_and_flags_gate_fields() {
        let d = net(NetConfig {
            mac: MAC,
            ipv4: [1, 2, 3, 4],
            gateway: [1, 2, 3, 1],
            dns: [8, 8, 8, 8],
            ..NetConfig::default()
        });
        let s = NetSettings::from_boot_device(0, &d).unwrap();
        assert_eq!(s.addressing, Addressing::Dhcp);
        assert_eq!(s.gateway, None);
        assert_eq!(s.dns, None);
        assert_eq!(s.mtu, DEFAULT_MTU);
    }

    #[test]
    fn mtu_is_clamped() {
        for (given, used) in [(0, 1500), (100, 1500), (576, 576), (65535, MAX_MTU)] {
            let d = net(NetConfig {
                mac: MAC,
                mtu: given,
                ..NetConfig::default()
            });
            assert_eq!(NetSettings::from_boot_device(0, &d).unwrap().mtu, used);
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let multicast = net(NetConfig {
            mac: [0x01, 0, 0x5e, 0, 0, 1],
            ..NetConfig::default()
        });
        assert_eq!(
            NetSettings::from_boot_device(0, &multicast),
            Err(ConfigError::BadMac)
        );
        assert_eq!(
            NetSettings::from_boot_device(0, &net(NetConfig::default())),
            Err(ConfigError::BadMac)
        );
        let prefix = net(NetConfig {
            mac: MAC,
            prefix_len: 33,
            flags: NET_HAS_ADDRESS,
            ..NetConfig::default()
        });
        assert_eq!(
            NetSettings::from_boot_device(0, &prefix),
            Err(ConfigError::BadPrefix)
        );
        let block = BootDevice {
            kind: DeviceKind::Block as u32,
            ..BootDevice::default()
        };
        assert_eq!(
            NetSettings::from_boot_device(0, &block),
            Err(ConfigError::NotNet)
        );
    }

    #[test]
    fn first_net_skips_other_kinds() {
        let block = BootDevice {
            kind: DeviceKind::Block as u32,
            ..BootDevice::default()
        };
        let n = net(NetConfig {
            mac: MAC,
            ..NetConfig::default()
        });
        let s = NetSettings::first_net(&[block, n]).unwrap().unwrap();
        assert_eq!(s.index, 1);
        assert!(NetSettings::first_net(&[block]).is_none());
    }
}
