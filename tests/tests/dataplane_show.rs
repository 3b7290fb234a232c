//! What `ringtun show --json` says about a peer after traffic: each side
//! counts the handshake it completed with its peer (consistently with the
//! interface's control counters and the peer's latest handshake time), and
//! every packet each way, the one that waited for the handshake included.

mod dataplane_lab;

use dataplane_lab::{Lab, Underlay, inner4, must};
use ringtun_tests::ringtun::{TunnelMode, UpOptions};
use ringtun_tests::{ping, require_root};

#[test]
fn show_counts_each_peers_handshakes_and_packets() {
    require_root!("show_counts_each_peers_handshakes_and_packets");
    let mode = TunnelMode::WireGuard;
    let lab = Lab::pair("dpw");
    let opts = UpOptions::default();
    let a = lab.up(1, &lab.conf(mode, 1, &[2], Underlay::V4), &opts);
    let b = lab.up(2, &lab.conf(mode, 2, &[1], Underlay::V4), &opts);
    // One echo each way: site 1's request waits for the handshake it starts.
    for (from, to) in [(1, 2), (2, 1)] {
        let echo = ping(lab.ns(from), &inner4(mode, to).to_string());
        assert!(echo.is_reply(), "site {from} to site {to}: {echo:?}");
    }
    let statuses: Vec<_> = [&a, &b]
        .iter()
        .map(|d| must(d.show(), format!("show in {}", d.netns())))
        .collect();
    for (i, s) in statuses.iter().enumerate() {
        eprintln!("site {}: {:?}; control {:?}", i + 1, s.peers[0], s.control);
    }
    for (i, status) in statuses.iter().enumerate() {
        let site = i + 1;
        let completed = status
            .control
            .iter()
            .find(|(n, _)| n == "handshakes_completed")
            .map(|(_, v)| *v);
        let peer = &status.peers[0];
        assert!(
            peer.latest_handshake_unix.is_some(),
            "site {site}: no latest handshake after pings both ways: {peer:?}"
        );
        assert!(
            peer.handshakes >= 1,
            "site {site}: the peer has a latest handshake time but `handshakes` is {} (the interface counts handshakes_completed = {completed:?}): {peer:?}",
            peer.handshakes
        );
        // Two echo requests and two replies crossed: one of each per side
        // per direction.
        assert_eq!(
            (peer.tx_packets, peer.rx_packets),
            (2, 2),
            "site {site}: (tx_packets, rx_packets) after one echo each way: {peer:?}"
        );
    }
    for d in [a, b] {
        must(d.terminate(), "stopping a site");
    }
}
