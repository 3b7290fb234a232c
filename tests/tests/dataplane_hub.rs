//! Three wireguard sites on one hub interface: the hub has the two spokes
//! as peers, each spoke has the hub as its only peer with the whole tunnel
//! prefix behind it, and the hub's kernel forwards spoke to spoke (in and
//! out of the same interface). Every site reaches every other, both
//! address families inside.

mod dataplane_lab;

use std::net::SocketAddr;

use dataplane_lab::{
    Lab, Underlay, WG_PORT, assert_bulk, assert_reaches, inner4, inner6, must, wan,
};
use ringtun_tests::require_root;
use ringtun_tests::ringtun::{Conf, PeerConf, TunnelMode, UpOptions};

const BULK: u64 = 16 << 20;

fn site_conf(lab: &Lab, i: u8, underlay: Underlay) -> Conf {
    let mode = TunnelMode::WireGuard;
    let me = usize::from(i) - 1;
    let conf = Conf::wireguard(&lab.keys[me])
        .listen_port(WG_PORT)
        .address(&format!("{}/24", inner4(mode, i)))
        .address(&format!("{}/64", inner6(mode, i)));
    let peer = |p: u8| {
        PeerConf::wireguard(&lab.keys[usize::from(p) - 1].public_key)
            .endpoint(SocketAddr::new(wan(p, underlay), WG_PORT))
    };
    if i == 1 {
        conf.peer(
            peer(2)
                .allowed_ip(&format!("{}/32", inner4(mode, 2)))
                .allowed_ip(&format!("{}/128", inner6(mode, 2))),
        )
        .peer(
            peer(3)
                .allowed_ip(&format!("{}/32", inner4(mode, 3)))
                .allowed_ip(&format!("{}/128", inner6(mode, 3))),
        )
    } else {
        conf.peer(peer(1).allowed_ip("10.99.0.0/24").allowed_ip("fd99::/64"))
    }
}

#[test]
fn three_sites_on_one_hub_interface_all_reach_each_other() {
    require_root!("three_sites_on_one_hub_interface_all_reach_each_other");
    let ctx = "hub";
    let mode = TunnelMode::WireGuard;
    let underlay = Underlay::V4;
    let lab = Lab::star("dpk", 3);
    for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
        must(
            netctl::sysctl::write_in(Some(lab.ns(1)), key, "1"),
            format!("{key} in the hub"),
        );
    }
    let opts = UpOptions {
        workers: Some(2),
        ..UpOptions::default()
    };
    let hub = lab.up(1, &site_conf(&lab, 1, underlay), &opts);
    let s2 = lab.up(2, &site_conf(&lab, 2, underlay), &opts);
    let s3 = lab.up(3, &site_conf(&lab, 3, underlay), &opts);
    for from in 1..=3u8 {
        for to in (1..=3u8).filter(|&t| t != from) {
            let c = format!("{ctx}: site {from} to site {to}");
            assert_reaches(lab.ns(from), inner4(mode, to), &c);
            assert_reaches(lab.ns(from), inner6(mode, to), &c);
        }
    }
    let all = [&hub, &s2, &s3];
    assert_bulk(
        lab.ns(2),
        lab.ns(3),
        inner4(mode, 3),
        BULK,
        &all,
        "hub: spoke 2 to spoke 3 through the hub",
    );
    assert_bulk(
        lab.ns(3),
        lab.ns(2),
        inner6(mode, 2),
        BULK,
        &all,
        "hub: spoke 3 to spoke 2 through the hub",
    );
    assert_bulk(
        lab.ns(1),
        lab.ns(2),
        inner4(mode, 2),
        BULK,
        &all,
        "hub: hub to spoke 2",
    );
    assert_bulk(
        lab.ns(3),
        lab.ns(1),
        inner6(mode, 1),
        BULK,
        &all,
        "hub: spoke 3 to hub",
    );

    let status = must(hub.show(), "show on the hub");
    assert_eq!(
        status.peers.len(),
        2,
        "{ctx}: the hub has two peers: {status:?}"
    );
    for p in &status.peers {
        assert!(
            p.latest_handshake_unix.is_some() && p.rx_bytes > BULK && p.tx_bytes > BULK,
            "{ctx}: every hub peer handshook and carried at least one transfer's bytes each way: {p:?}"
        );
    }
    for d in [hub, s2, s3] {
        must(d.terminate(), "stopping a site");
    }
}
