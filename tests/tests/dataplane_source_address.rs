//! A site answers from the address its peer wrote to (`IP_PKTINFO`). When
//! that address is removed, the kernel refuses sends from it with EINVAL —
//! which must not be mistaken for a GSO size refusal: ringtun forgets the
//! address, resends letting the kernel choose, and the peer roams to the
//! new source.

mod dataplane_lab;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use dataplane_lab::{FIRST_PACKET, Lab, Underlay, WAN, WG_PORT, diagnose, inner4, must, wan};
use netctl::{AddrOptions, IpPrefix, Netlink};
use ringtun_tests::ringtun::{Conf, PeerConf, TunnelMode, UpOptions};
use ringtun_tests::{ping_until_reply, require_root};

/// Site 2's second WAN address, the one site 1 is configured to reach.
fn second(underlay: Underlay) -> IpPrefix {
    let r = match underlay {
        Underlay::V4 => IpPrefix::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 102)), 24),
        Underlay::V6 => IpPrefix::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x102)),
            64,
        ),
    };
    must(r, "the second prefix")
}

#[test]
fn a_removed_local_ipv4_address_is_forgotten_and_traffic_moves_to_another() {
    require_root!("a_removed_local_ipv4_address_is_forgotten_and_traffic_moves_to_another");
    removed_local_address(Underlay::V4, "dpsrc4");
}

#[test]
fn a_removed_local_ipv6_address_is_forgotten_and_traffic_moves_to_another() {
    require_root!("a_removed_local_ipv6_address_is_forgotten_and_traffic_moves_to_another");
    removed_local_address(Underlay::V6, "dpsrc6");
}

fn removed_local_address(underlay: Underlay, tag: &str) {
    let mode = TunnelMode::WireGuard;
    let lab = Lab::pair(tag);
    let nl2 = must(Netlink::in_netns(lab.ns(2)), "netlink in site 2");
    let second = second(underlay);
    must(
        nl2.addr_add_with(WAN, second, AddrOptions { nodad: true }),
        "adding site 2's second address",
    );
    // Site 1 knows site 2 only by its second address.
    let conf1 = Conf::wireguard(&lab.keys[0])
        .listen_port(WG_PORT)
        .address(&format!("{}/24", inner4(mode, 1)))
        .peer(
            PeerConf::wireguard(&lab.keys[1].public_key)
                .allowed_ip(&format!("{}/32", inner4(mode, 2)))
                .endpoint(SocketAddr::new(second.addr(), WG_PORT)),
        );
    let mut opts = UpOptions::default();
    // The failed sends are logged at debug: a failure shows their errno.
    opts.env
        .push(("RUST_LOG".to_string(), "dataplane=debug".to_string()));
    // Site 2 must first hear from site 1 (on its own it would write from
    // the address the kernel picks, and site 1 would roam to that).
    let conf2 = lab
        .conf(mode, 2, &[1], underlay)
        .extra("HandshakeOnStart = off");
    let a = lab.up(1, &conf1, &opts);
    let b = lab.up(2, &conf2, &opts);

    let echo = ping_until_reply(lab.ns(1), &inner4(mode, 2).to_string(), FIRST_PACKET);
    assert!(echo.is_reply(), "site 1 to site 2 before: {echo:?}");
    let peer = must(b.show(), "show in site 2").peers.remove(0);
    assert_eq!(
        peer.local_address,
        Some(second.addr().to_string()),
        "site 2 answers from the address site 1 wrote to: {peer:?}"
    );

    must(
        nl2.addr_del(WAN, second),
        "removing site 2's second address",
    );
    // Site 2 speaks first: its send from the removed address fails, is
    // resent from its first address, and site 1 roams to that.
    let echo = ping_until_reply(
        lab.ns(2),
        &inner4(mode, 1).to_string(),
        Duration::from_secs(10),
    );
    assert!(
        echo.is_reply(),
        "site 2 to site 1 after its address went: {echo:?}{}",
        diagnose(&[&b, &a])
    );
    let s2 = must(b.show(), "show in site 2");
    let resets: u64 = s2.workers.iter().map(|w| w.src_addr_resets).sum();
    let fallbacks: u64 = s2.workers.iter().map(|w| w.gso_fallbacks).sum();
    assert!(resets >= 1, "site 2 counted no local address reset: {s2:?}");
    assert_eq!(
        fallbacks, 0,
        "a vanished source address is not a GSO refusal: {s2:?}"
    );
    let s1 = must(a.show(), "show in site 1");
    assert_eq!(
        s1.peers[0].endpoint.as_deref(),
        Some(
            SocketAddr::new(wan(2, underlay), WG_PORT)
                .to_string()
                .as_str()
        ),
        "site 1 roamed to site 2's remaining address: {s1:?}"
    );
    for d in [a, b] {
        must(d.terminate(), "stopping a site");
    }
}
