//! The two-site lab: a topology file applied under a unique prefix and
//! destroyed when the lab is dropped (unless `--keep`), the addresses the
//! files use, and the checks that nothing was left behind.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use netctl::Topology;

use crate::labs::LabGuard;
use crate::peers::{Userspace, UserspacePeer};

/// Where the topology files live.
pub fn topology_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("topologies")
}

/// Every namespace this harness makes starts with this.
pub const NETNS_TAG: &str = "e2e-";

/// Applies `xtask/topologies/FILE` under `e2e-PID-TAG-`; destroyed when
/// the guard is dropped, unless `keep`.
pub fn apply(file: &str, tag: &str, keep: bool) -> Result<LabGuard> {
    let path = topology_dir().join(file);
    let mut lab = LabGuard::new(Topology::from_file(&path)?, NETNS_TAG, tag);
    if keep {
        lab.keep(keep_note(&path, lab.prefix()));
    }
    lab.apply()
        .with_context(|| format!("applying {} under prefix {}", path.display(), lab.prefix()))?;
    Ok(lab)
}

/// How to look inside a kept lab, and how to remove it.
fn keep_note(file: &Path, prefix: &str) -> String {
    format!(
        "e2e: --keep: {} is up under prefix {p}. Enter with `ip netns exec {p}gw-a bash` \
         (or `netctl -n {p}lan-a ping ...`);\n\
         e2e: remove it with `netctl destroy {} --prefix {p}` (the next e2e run removes it too)",
        file.display(),
        file.display(),
        p = prefix
    )
}

/// The four namespaces of a two-site lab.
pub struct Sites {
    /// LAN host of site A.
    pub lan_a: String,
    /// Gateway A.
    pub gw_a: String,
    /// Gateway B.
    pub gw_b: String,
    /// LAN host of site B.
    pub lan_b: String,
}

impl Sites {
    /// The namespaces of `lab`.
    pub fn of(lab: &LabGuard) -> Sites {
        Sites {
            lan_a: lab.ns("lan-a"),
            gw_a: lab.ns("gw-a"),
            gw_b: lab.ns("gw-b"),
            lan_b: lab.ns("lan-b"),
        }
    }
}

/// Gateway A's tunnel device (ringtun's interface, as its config names it).
pub const TUN_A: &str = "rt-a";
/// Gateway B's tunnel device.
pub const TUN_B: &str = "rt-b";
/// The kernel's vxlan device on gateway B, in the kernel interop rows.
pub const KERNEL_VXLAN: &str = "vx-b";
/// The tunnel devices of ha-sites.toml's gateways gw-a1, gw-a2, gw-b1, gw-b2.
pub const HA_TUNNELS: [&str; 4] = ["rt-a1", "rt-a2", "rt-b1", "rt-b2"];

/// Every link name this harness gives a device: the links and veth peers
/// of the topology files, the tunnel devices, the userspace peers'. A link
/// of one of these names appearing in the harness's own namespace is one
/// it leaked; any other is someone else's (the host is shared).
pub fn harness_link_names() -> Result<BTreeSet<String>> {
    let mut names: BTreeSet<String> = [TUN_A, TUN_B, KERNEL_VXLAN]
        .into_iter()
        .chain(HA_TUNNELS)
        .map(String::from)
        .collect();
    names.extend(Userspace::ALL.map(UserspacePeer::iface_name));
    let dir = topology_dir();
    let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let topology = Topology::from_file(&path)?;
        for link in &topology.links {
            names.insert(link.name.clone());
            names.extend(link.peer.as_ref().map(|p| p.name.clone()));
        }
    }
    Ok(names)
}

/// Links of the harness's own namespace, by name (to compare before/after).
pub fn host_links() -> Result<Vec<String>> {
    let mut names: Vec<String> = netctl::Netlink::current()?
        .links()?
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Child processes of this process still alive (not zombies), by command name.
pub fn live_children() -> Vec<String> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = tail.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) && state != "Z" {
            let comm = head.split_once(" (").map(|(_, c)| c).unwrap_or("?");
            out.push(format!("{comm} (pid {pid})"));
        }
    }
    out
}

// ---------------------------------------------------------------- addresses

/// Addresses of the WAN (both topology files).
pub mod wan {
    use super::*;
    /// gw-a's WAN address.
    pub const A4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    /// gw-b's WAN address.
    pub const B4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    /// gw-a's WAN address, IPv6.
    pub const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 1));
    /// gw-b's WAN address, IPv6.
    pub const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 2));
    /// An address the harness adds on gw-a's WAN port to send hostile
    /// input from (no tunnel knows it).
    pub const ATTACKER: &str = "192.0.2.66/24";
    /// The same, as an address.
    pub const ATTACKER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66));
    /// Ports the relay listens on in gw-b (A side, B side).
    pub const RELAY_PORTS: (u16, u16) = (40_001, 40_002);

    /// `ip:port` on the WAN.
    pub fn at(ip: IpAddr, port: u16) -> SocketAddr {
        SocketAddr::new(ip, port)
    }
}

/// two-sites-l3.toml and the tunnel addresses of the wireguard configs.
pub mod l3 {
    use super::*;
    /// lan-a's host.
    pub const LAN_A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 10, 1, 2));
    /// lan-b's host.
    pub const LAN_B4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 10, 2, 2));
    /// lan-a's host, IPv6.
    pub const LAN_A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 2));
    /// lan-b's host, IPv6.
    pub const LAN_B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, 0, 2));
    /// Site A's LAN prefixes (AllowedIPs at B).
    pub const LAN_A_NETS: [&str; 2] = ["10.10.1.0/24", "fd00:10:1::/64"];
    /// Site B's LAN prefixes (AllowedIPs at A).
    pub const LAN_B_NETS: [&str; 2] = ["10.10.2.0/24", "fd00:10:2::/64"];
    /// Tunnel addresses of gateway A (device prefixes).
    pub const TUN_A: [&str; 2] = ["10.99.0.1/24", "fd99::1/64"];
    /// Tunnel addresses of gateway B.
    pub const TUN_B: [&str; 2] = ["10.99.0.2/24", "fd99::2/64"];
    /// Gateway A's tunnel address as a host route (AllowedIPs at B).
    pub const TUN_A_HOST: [&str; 2] = ["10.99.0.1/32", "fd99::1/128"];
    /// Gateway B's tunnel address as a host route.
    pub const TUN_B_HOST: [&str; 2] = ["10.99.0.2/32", "fd99::2/128"];
    /// Gateway A's tunnel addresses.
    pub const TUN_A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1));
    /// Gateway B's tunnel addresses.
    pub const TUN_B4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2));
    /// Gateway A's tunnel address, IPv6.
    pub const TUN_A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1));
    /// Gateway B's tunnel address, IPv6.
    pub const TUN_B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2));
    /// The tunnel MTU (1500 minus IPv6, UDP and WireGuard's 32 bytes).
    pub const MTU: u32 = 1420;
    /// Every ringtun / wireguard-go / boringtun listens here.
    pub const PORT: u16 = 51820;
}

/// What three-sites-l3.toml adds to two-sites-l3.toml: gateway C on a
/// WAN of its own to gateway A, site C's prefix, the address gateways B
/// and C share, and the endpoint of gateway B that gateway A reaches only
/// through a default route.
pub mod l3c {
    use super::*;
    /// gw-a's address on the WAN to gw-c.
    pub const WAN_A4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    /// gw-c's WAN address.
    pub const WAN_C4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3));
    /// Tunnel addresses of gateway C (device prefixes).
    pub const TUN_C: [&str; 2] = ["10.99.0.3/24", "fd99::3/64"];
    /// Gateway C's tunnel address as a host route (AllowedIPs at A).
    pub const TUN_C_HOST: [&str; 2] = ["10.99.0.3/32", "fd99::3/128"];
    /// Gateway C's tunnel address.
    pub const TUN_C4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 3));
    /// Gateway C's tunnel address, IPv6.
    pub const TUN_C6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 3));
    /// Site C's own prefixes (on a veth pair inside gw-c; AllowedIPs at A).
    pub const SITE_C_NETS: [&str; 2] = ["10.10.3.0/24", "fd00:10:3::/64"];
    /// Site C's gateway address in them.
    pub const SITE_C4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 10, 3, 1));
    /// The prefixes of the address gw-b and gw-c both hold (AllowedIPs of
    /// B at A, until a row moves them to C).
    pub const SHARED_NETS: [&str; 2] = ["10.10.9.0/24", "fd00:10:9::/64"];
    /// The address gw-b and gw-c both hold.
    pub const SHARED4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 10, 9, 1));
    /// The same, IPv6.
    pub const SHARED6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 9, 0, 0, 0, 0, 1));
    /// gw-b's address that gw-a reaches only through a default route.
    pub const FAR_B4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
}

/// two-sites-l2.toml.
pub mod l2 {
    use super::*;
    /// lan-a's host.
    pub const LAN_A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 30, 0, 11));
    /// lan-b's host.
    pub const LAN_B4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 30, 0, 12));
    /// lan-a's host, IPv6.
    pub const LAN_A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0x11));
    /// lan-b's host, IPv6.
    pub const LAN_B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0x12));
    /// gw-a's bridge, inside the overlay.
    pub const GW_A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 30, 0, 1));
    /// gw-b's bridge, inside the overlay.
    pub const GW_B4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 30, 0, 2));
    /// gw-a's bridge, IPv6.
    pub const GW_A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 1));
    /// gw-b's bridge, IPv6.
    pub const GW_B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 2));
    /// The LAN MTU, the kernel VXLAN's.
    pub const MTU: u32 = 1450;
    /// The VNI both ends use.
    pub const VNI: u32 = 4242;
    /// The IANA VXLAN port.
    pub const PORT: u16 = 4789;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_link_names_cover_topologies_tunnels_and_peers() {
        let names = harness_link_names().unwrap();
        for name in [
            "eth0",
            "lan0",
            "br-lan",
            "wan0",
            "br-wan",
            TUN_A,
            TUN_B,
            KERNEL_VXLAN,
        ]
        .into_iter()
        .chain(HA_TUNNELS)
        {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        for kind in Userspace::ALL {
            let iface = UserspacePeer::iface_name(kind);
            assert!(names.contains(&iface), "{iface} missing from {names:?}");
        }
        assert!(!names.contains("ifb0"), "{names:?}");
    }
}
