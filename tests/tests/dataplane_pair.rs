//! Two ringtun sites joined by veth: ICMP, hashed TCP bulk transfers and a
//! checked UDP burst, in both modes, with 1 and 2 workers, over an IPv4 and
//! an IPv6 underlay, with IPv4 and IPv6 inside, with and without offloads.

mod dataplane_lab;

use dataplane_lab::{Lab, Underlay, assert_bulk, assert_reaches, diagnose, inner4, inner6};
use ringtun_tests::require_root;
use ringtun_tests::ringtun::{TunnelMode, UpOptions};
use ringtun_tests::traffic::{BurstOptions, udp_burst};

/// Bytes per bulk transfer: big enough for GSO/GRO and many batches,
/// small enough for a 2-core CI machine (the e2e harness does the big ones).
const BULK: u64 = 64 << 20;

/// Everything one combination must do: both sites up, pings both ways with
/// IPv4 and IPv6 inside, a bulk transfer each way (IPv4 inside one way,
/// IPv6 the other), a UDP burst of mixed sizes (fragments included), and
/// both daemons stop cleanly on SIGTERM.
fn roundtrip(test: &str, mode: TunnelMode, workers: usize, underlay: Underlay, no_offload: bool) {
    let lab = Lab::pair("dp");
    let opts = UpOptions {
        workers: Some(workers),
        no_offload,
        ..UpOptions::default()
    };
    let a = lab.up(1, &lab.conf(mode, 1, &[2], underlay), &opts);
    let b = lab.up(2, &lab.conf(mode, 2, &[1], underlay), &opts);
    let status = a.show().unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(status.mode, mode.as_str(), "{test}: mode in ringtun show");
    assert_eq!(
        status.workers.len(),
        workers,
        "{test}: workers in ringtun show"
    );
    if no_offload {
        assert!(
            status.offloads.is_empty(),
            "{test}: --no-offload, yet ringtun show lists offloads {:?}",
            status.offloads
        );
    }

    for inner in [inner4 as fn(TunnelMode, u8) -> _, inner6] {
        let ctx = format!("{test}: {} inside", inner(mode, 1));
        assert_reaches(lab.ns(1), inner(mode, 2), &ctx);
        assert_reaches(lab.ns(2), inner(mode, 1), &ctx);
    }
    let ctx = format!("{test}: IPv4 inside, site 1 to site 2");
    assert_bulk(lab.ns(1), lab.ns(2), inner4(mode, 2), BULK, &[&a, &b], &ctx);
    let ctx = format!("{test}: IPv6 inside, site 2 to site 1");
    assert_bulk(lab.ns(2), lab.ns(1), inner6(mode, 1), BULK, &[&a, &b], &ctx);

    let burst = BurstOptions {
        count: 1000,
        sizes: vec![20, 100, 576, 1000, 1300, 2000, 4000],
        pause_every: 16,
        ..BurstOptions::default()
    };
    let report = udp_burst(lab.ns(1), lab.ns(2), inner4(mode, 2), &burst)
        .unwrap_or_else(|e| panic!("{test}: UDP burst: {e}"));
    eprintln!("{test}: UDP burst: {report:?}");
    assert_eq!(report.corrupt, 0, "{test}: corrupt datagrams: {report:?}");
    assert_eq!(
        report.duplicated, 0,
        "{test}: duplicated datagrams: {report:?}"
    );
    // Paced and small: a healthy tunnel loses nothing here, but UDP may
    // lose a few on a loaded 2-core machine; most must arrive.
    assert!(
        report.received * 100 >= report.sent * 95,
        "{test}: too many datagrams lost: {report:?}{}",
        diagnose(&[&a, &b])
    );

    for (i, daemon) in [a, b].into_iter().enumerate() {
        daemon
            .terminate()
            .unwrap_or_else(|e| panic!("{test}: stopping site {}: {e}", i + 1));
    }
}

macro_rules! combos {
    ($($name:ident: $mode:ident, $workers:expr, $underlay:ident, $no_offload:expr;)*) => {$(
        #[test]
        fn $name() {
            require_root!(stringify!($name));
            roundtrip(
                stringify!($name),
                TunnelMode::$mode,
                $workers,
                Underlay::$underlay,
                $no_offload,
            );
        }
    )*};
}

combos! {
    wireguard_1_worker_ipv4_underlay: WireGuard, 1, V4, false;
    wireguard_1_worker_ipv6_underlay: WireGuard, 1, V6, false;
    wireguard_2_workers_ipv4_underlay: WireGuard, 2, V4, false;
    wireguard_2_workers_ipv6_underlay: WireGuard, 2, V6, false;
    vxlan_1_worker_ipv4_underlay: Vxlan, 1, V4, false;
    vxlan_1_worker_ipv6_underlay: Vxlan, 1, V6, false;
    vxlan_2_workers_ipv4_underlay: Vxlan, 2, V4, false;
    vxlan_2_workers_ipv6_underlay: Vxlan, 2, V6, false;
    wireguard_no_offload_2_workers_ipv4_underlay: WireGuard, 2, V4, true;
    wireguard_no_offload_1_worker_ipv6_underlay: WireGuard, 1, V6, true;
    vxlan_no_offload_2_workers_ipv6_underlay: Vxlan, 2, V6, true;
    vxlan_no_offload_1_worker_ipv4_underlay: Vxlan, 1, V4, true;
}
