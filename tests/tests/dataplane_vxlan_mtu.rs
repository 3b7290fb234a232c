//! vxlan mode over an IPv6 underlay with the default MTU: full-size frames
//! must still cross (fragmented, or with a default MTU that fits).

mod dataplane_lab;

use dataplane_lab::{Lab, Underlay, assert_bulk, assert_reaches, inner4};
use ringtun_tests::require_root;
use ringtun_tests::ringtun::{TunnelMode, UpOptions};

#[test]
fn vxlan_over_an_ipv6_underlay_with_the_default_mtu_carries_full_size_frames() {
    require_root!("vxlan_over_an_ipv6_underlay_with_the_default_mtu_carries_full_size_frames");
    let mode = TunnelMode::Vxlan;
    let lab = Lab::pair("dpm");
    let mut conf_a = lab.conf(mode, 1, &[2], Underlay::V6);
    let mut conf_b = lab.conf(mode, 2, &[1], Underlay::V6);
    // The daemon's default, not the lab's 1430.
    conf_a.mtu = None;
    conf_b.mtu = None;
    let opts = UpOptions::default();
    let a = lab.up(1, &conf_a, &opts);
    let b = lab.up(2, &conf_b, &opts);
    assert_reaches(lab.ns(1), inner4(mode, 2), "default MTU");
    assert_bulk(
        lab.ns(1),
        lab.ns(2),
        inner4(mode, 2),
        16 << 20,
        &[&a, &b],
        "default MTU, IPv6 underlay",
    );
}
