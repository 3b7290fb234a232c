//! In `vxlan` mode ringtun's TAP joins a bridge, and a bridge without an
//! address of its own takes the lowest of its ports'. ringtun's TAP must
//! neither become that lowest (or every start and stop of the tunnel
//! changes the gateway's LAN MAC under its neighbours) nor change its own
//! address across restarts.

mod dataplane_lab;

use dataplane_lab::{IFACE, Lab, Underlay, VNI, VXLAN_PORT, assert_link_gone, must, wan};
use netctl::{MacAddr, Netlink, VethConfig};
use ringtun_tests::require_root;
use ringtun_tests::ringtun::{Conf, PeerConf, Ringtun, UpOptions};

/// The bridge's other port: a random kernel MAC is below it 62 times in
/// 64, so a TAP with one would almost always take the bridge's address.
const PORT_MAC: MacAddr = MacAddr([0xfa, 0, 0, 0, 0, 0x01]);

fn mac_of(nl: &Netlink, name: &str) -> String {
    must(nl.link(name), format!("looking up {name}"))
        .mac
        .unwrap_or_else(|| panic!("{name} has no hardware address"))
}

#[test]
fn ringtun_restarts_leave_the_bridge_mac_and_its_own_alone() {
    require_root!("ringtun_restarts_leave_the_bridge_mac_and_its_own_alone");
    let lab = Lab::pair("dpm");
    let ns = lab.ns(1);
    let nl = must(Netlink::in_netns(ns), "netlink in site 1");
    must(nl.add_bridge("br-lan"), "adding br-lan");
    must(
        nl.add_veth(&VethConfig::new("lan0", "lan1")),
        "adding the LAN veth",
    );
    must(nl.set_address("lan0", PORT_MAC), "setting lan0's address");
    must(nl.set_master("lan0", "br-lan"), "enslaving lan0");
    for link in ["lan0", "lan1", "br-lan"] {
        must(nl.link_set_up(link), format!("setting {link} up"));
    }
    let port = PORT_MAC.to_string();
    assert_eq!(mac_of(&nl, "br-lan"), port, "br-lan before ringtun");

    let conf = Conf::vxlan(VNI)
        .listen_port(VXLAN_PORT)
        .bridge("br-lan")
        .peer(PeerConf::vtep(std::net::SocketAddr::new(
            wan(2, Underlay::V4),
            VXLAN_PORT,
        )));
    let opts = UpOptions::default();
    let mut first = lab.up(1, &conf, &opts);
    let tap = mac_of(&nl, IFACE);
    assert!(
        tap.starts_with("fe:"),
        "{IFACE}'s address {tap} does not start with fe, the highest unicast first octet"
    );
    let link = must(nl.link(IFACE), "looking up the TAP");
    assert_eq!(
        link.master.as_deref(),
        Some("br-lan"),
        "{IFACE} joined br-lan"
    );
    assert_eq!(
        mac_of(&nl, "br-lan"),
        port,
        "ringtun's TAP ({tap}) took br-lan's address from its other port"
    );

    let status = must(first.kill(), "killing ringtun");
    assert!(
        Ringtun::killed_by(status, nix::sys::signal::Signal::SIGKILL),
        "expected death by SIGKILL, got {status}"
    );
    assert_link_gone(ns, IFACE, "after SIGKILL");
    assert_eq!(mac_of(&nl, "br-lan"), port, "br-lan while ringtun is down");

    let second = lab.up(1, &conf, &opts);
    assert_eq!(
        mac_of(&nl, IFACE),
        tap,
        "{IFACE} came back with another address"
    );
    assert_eq!(mac_of(&nl, "br-lan"), port, "br-lan after the restart");
    must(second.terminate(), "stopping ringtun");
}
