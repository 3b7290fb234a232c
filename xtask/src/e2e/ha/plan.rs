//! The ha lab's plan: which namespace holds what address, which AS each
//! router has, who peers with whom, and the FRR and ringtun
//! configurations that follow from it (`xtask/topologies/ha-sites.toml`
//! holds the same addresses on the links).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ringtun_tests::ringtun::{Conf, Keypair, PeerConf};

use crate::e2e::frr::{Neighbor, RouterConf};

/// BFD's transmit and receive interval (multiplier 3).
pub(super) const BFD_INTERVAL_MS: u32 = 100;
/// Where every tunnel end listens.
pub(super) const PORT: u16 = 51820;

/// A site: its LAN host, its router and what they hold.
pub(super) struct Site {
    /// The LAN host's namespace.
    pub(super) host: &'static str,
    /// The site router's namespace (and FRR host name).
    pub(super) router: &'static str,
    /// The site router's AS.
    pub(super) asn: u32,
    /// The router's address on the core segment to its gateways.
    pub(super) core4: Ipv4Addr,
    /// The same, IPv6.
    pub(super) core6: Ipv6Addr,
    /// The site's LAN prefixes (originated by its router).
    pub(super) lan: [&'static str; 2],
    /// The LAN host's address.
    pub(super) host4: Ipv4Addr,
    /// The same, IPv6.
    pub(super) host6: Ipv6Addr,
}

/// Site A, then site B.
pub(super) const SITES: [Site; 2] = [
    Site {
        host: "lan-a",
        router: "rtr-a",
        asn: 65100,
        core4: Ipv4Addr::new(10, 11, 1, 1),
        core6: Ipv6Addr::new(0xfd00, 0x11, 1, 0, 0, 0, 0, 1),
        lan: ["10.10.1.0/24", "fd00:10:1::/64"],
        host4: Ipv4Addr::new(10, 10, 1, 2),
        host6: Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 2),
    },
    Site {
        host: "lan-b",
        router: "rtr-b",
        asn: 65200,
        core4: Ipv4Addr::new(10, 11, 2, 1),
        core6: Ipv6Addr::new(0xfd00, 0x11, 2, 0, 0, 0, 0, 1),
        lan: ["10.10.2.0/24", "fd00:10:2::/64"],
        host4: Ipv4Addr::new(10, 10, 2, 2),
        host6: Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, 0, 2),
    },
];

/// A gateway: its site, its partner across the WAN, its addresses.
pub(super) struct Gateway {
    /// Namespace and FRR host name.
    pub(super) name: &'static str,
    /// Index of its site in [`SITES`].
    pub(super) site: usize,
    /// Index of its partner, across the WAN, in [`GATEWAYS`].
    pub(super) partner: usize,
    /// Its AS.
    pub(super) asn: u32,
    /// Its address on its site's core segment.
    pub(super) core4: Ipv4Addr,
    /// The same, IPv6.
    pub(super) core6: Ipv6Addr,
    /// Its WAN address (its ringtun's endpoint).
    pub(super) wan4: Ipv4Addr,
    /// Its tunnel device's prefixes.
    pub(super) tun: [&'static str; 2],
    /// Its tunnel address (BGP's next hop, BFD's peer).
    pub(super) tun4: Ipv4Addr,
    /// The same, IPv6.
    pub(super) tun6: Ipv6Addr,
}

/// gw-a1's index in [`GATEWAYS`].
pub(super) const A1: usize = 0;
/// gw-a2's.
pub(super) const A2: usize = 1;
/// gw-b1's.
pub(super) const B1: usize = 2;
/// gw-b2's.
pub(super) const B2: usize = 3;

/// gw-a1, gw-a2, gw-b1, gw-b2.
pub(super) const GATEWAYS: [Gateway; 4] = [
    Gateway {
        name: "gw-a1",
        site: 0,
        partner: B1,
        asn: 65101,
        core4: Ipv4Addr::new(10, 11, 1, 11),
        core6: Ipv6Addr::new(0xfd00, 0x11, 1, 0, 0, 0, 0, 0x11),
        wan4: Ipv4Addr::new(192, 0, 2, 11),
        tun: ["10.99.1.1/24", "fd99:1::1/64"],
        tun4: Ipv4Addr::new(10, 99, 1, 1),
        tun6: Ipv6Addr::new(0xfd99, 1, 0, 0, 0, 0, 0, 1),
    },
    Gateway {
        name: "gw-a2",
        site: 0,
        partner: B2,
        asn: 65102,
        core4: Ipv4Addr::new(10, 11, 1, 12),
        core6: Ipv6Addr::new(0xfd00, 0x11, 1, 0, 0, 0, 0, 0x12),
        wan4: Ipv4Addr::new(192, 0, 2, 12),
        tun: ["10.99.2.1/24", "fd99:2::1/64"],
        tun4: Ipv4Addr::new(10, 99, 2, 1),
        tun6: Ipv6Addr::new(0xfd99, 2, 0, 0, 0, 0, 0, 1),
    },
    Gateway {
        name: "gw-b1",
        site: 1,
        partner: A1,
        asn: 65201,
        core4: Ipv4Addr::new(10, 11, 2, 21),
        core6: Ipv6Addr::new(0xfd00, 0x11, 2, 0, 0, 0, 0, 0x21),
        wan4: Ipv4Addr::new(192, 0, 2, 21),
        tun: ["10.99.1.2/24", "fd99:1::2/64"],
        tun4: Ipv4Addr::new(10, 99, 1, 2),
        tun6: Ipv6Addr::new(0xfd99, 1, 0, 0, 0, 0, 0, 2),
    },
    Gateway {
        name: "gw-b2",
        site: 1,
        partner: A2,
        asn: 65202,
        core4: Ipv4Addr::new(10, 11, 2, 22),
        core6: Ipv6Addr::new(0xfd00, 0x11, 2, 0, 0, 0, 0, 0x22),
        wan4: Ipv4Addr::new(192, 0, 2, 22),
        tun: ["10.99.2.2/24", "fd99:2::2/64"],
        tun4: Ipv4Addr::new(10, 99, 2, 2),
        tun6: Ipv6Addr::new(0xfd99, 2, 0, 0, 0, 0, 0, 2),
    },
];

/// The gateways of site `s`.
pub(super) fn gateways_of(s: usize) -> [usize; 2] {
    [2 * s, 2 * s + 1]
}

/// A gateway's BGP sessions: its site router over the core segment and
/// its partner over the tunnel, each in both families.
pub(super) fn gateway_neighbors(g: usize) -> Vec<Neighbor> {
    let gw = &GATEWAYS[g];
    let (site, partner) = (&SITES[gw.site], &GATEWAYS[gw.partner]);
    vec![
        Neighbor {
            address: site.core4.into(),
            asn: site.asn,
        },
        Neighbor {
            address: site.core6.into(),
            asn: site.asn,
        },
        Neighbor {
            address: partner.tun4.into(),
            asn: partner.asn,
        },
        Neighbor {
            address: partner.tun6.into(),
            asn: partner.asn,
        },
    ]
}

/// A gateway's FRR: its sessions, nothing originated (it passes on
/// what it learns), one path per neighbour.
pub(super) fn gateway_conf(g: usize) -> RouterConf {
    let gw = &GATEWAYS[g];
    RouterConf {
        hostname: gw.name.into(),
        asn: gw.asn,
        router_id: gw.core4,
        neighbors: gateway_neighbors(g),
        networks: Vec::new(),
        bfd_interval_ms: BFD_INTERVAL_MS,
        all_paths: false,
    }
}

/// A site router's sessions: both of its gateways, both families; it
/// originates its LAN.
pub(super) fn router_conf(s: usize) -> RouterConf {
    let site = &SITES[s];
    let neighbors = gateways_of(s)
        .into_iter()
        .flat_map(|g| {
            let gw = &GATEWAYS[g];
            [
                Neighbor {
                    address: gw.core4.into(),
                    asn: gw.asn,
                },
                Neighbor {
                    address: gw.core6.into(),
                    asn: gw.asn,
                },
            ]
        })
        .collect();
    RouterConf {
        hostname: site.router.into(),
        asn: site.asn,
        router_id: site.core4,
        neighbors,
        networks: site.lan.map(String::from).to_vec(),
        bfd_interval_ms: BFD_INTERVAL_MS,
        all_paths: true,
    }
}

/// A gateway's ringtun: its tunnel addresses, no routes, its partner as
/// the one peer, allowed the far site's LAN and the partner's tunnel
/// address (BGP's next hop and BFD's peer).
pub(super) fn ringtun_conf(g: usize, keys: &[Keypair; 4]) -> Conf {
    let gw = &GATEWAYS[g];
    let partner = &GATEWAYS[gw.partner];
    let far = &SITES[partner.site];
    let peer = PeerConf::wireguard(&keys[gw.partner].public_key)
        .endpoint(SocketAddr::new(partner.wan4.into(), PORT))
        .allowed_ip(far.lan[0])
        .allowed_ip(far.lan[1])
        .allowed_ip(&format!("{}/32", partner.tun4))
        .allowed_ip(&format!("{}/128", partner.tun6));
    Conf::wireguard(&keys[g])
        .listen_port(PORT)
        .address(gw.tun[0])
        .address(gw.tun[1])
        .mtu(1420)
        .table("off")
        .peer(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The addresses a router holds.
    type IpAddrs = Vec<std::net::IpAddr>;

    #[test]
    fn partners_are_mutual_and_each_pair_shares_a_tunnel_prefix() {
        for (g, gw) in GATEWAYS.iter().enumerate() {
            let p = &GATEWAYS[gw.partner];
            assert_eq!(p.partner, g, "{} and {}", gw.name, p.name);
            assert_ne!(p.site, gw.site, "{} and {}", gw.name, p.name);
            assert_eq!(gw.tun4.octets()[..3], p.tun4.octets()[..3], "{}", gw.name);
            assert!(gw.tun[0].starts_with(&gw.tun4.to_string()), "{}", gw.name);
            assert!(gw.tun[1].starts_with(&gw.tun6.to_string()), "{}", gw.name);
        }
        for s in 0..SITES.len() {
            for g in gateways_of(s) {
                assert_eq!(GATEWAYS[g].site, s);
            }
        }
    }

    #[test]
    fn each_session_is_configured_at_both_ends_with_the_right_as() {
        let confs: Vec<(IpAddrs, RouterConf)> = (0..GATEWAYS.len())
            .map(|g| {
                let gw = &GATEWAYS[g];
                (
                    vec![
                        gw.core4.into(),
                        gw.core6.into(),
                        gw.tun4.into(),
                        gw.tun6.into(),
                    ],
                    gateway_conf(g),
                )
            })
            .chain((0..SITES.len()).map(|s| {
                let site = &SITES[s];
                (vec![site.core4.into(), site.core6.into()], router_conf(s))
            }))
            .collect();
        for (_, conf) in &confs {
            for n in &conf.neighbors {
                let (_, other) = confs
                    .iter()
                    .find(|(own, _)| own.contains(&n.address))
                    .unwrap_or_else(|| panic!("{}: nobody holds {}", conf.hostname, n.address));
                assert_eq!(other.asn, n.asn, "{} -> {}", conf.hostname, n.address);
                assert!(
                    other.neighbors.iter().any(|back| back.asn == conf.asn),
                    "{} does not peer back with {}",
                    other.hostname,
                    conf.hostname
                );
            }
        }
    }

    #[test]
    fn ringtun_adds_no_routes_and_allows_what_bgp_sends_over_the_pair() {
        let keys = std::array::from_fn(|i| Keypair {
            private_key: format!("private-{i}"),
            public_key: format!("public-{i}"),
        });
        let text = ringtun_conf(A1, &keys).render();
        assert!(text.contains("Table = off"), "{text}");
        for allowed in [
            "10.10.2.0/24",
            "fd00:10:2::/64",
            "10.99.1.2/32",
            "fd99:1::2/128",
        ] {
            assert!(text.contains(allowed), "{allowed} missing: {text}");
        }
        assert!(text.contains("PublicKey = public-2"), "{text}");
        assert!(text.contains("Endpoint = 192.0.2.21:51820"), "{text}");
    }
}
