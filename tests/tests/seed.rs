//! The seed article, reproduced step by step through the netctl library:
//! namespace A holds veth0 (and later br0), namespace B holds veth1 =
//! 10.1.1.1/24. Echoes are sent from Rust over a raw ICMP socket, bound to
//! a device as the article's `ping -c 1 -I DEV 10.1.1.1` is.

use std::time::Duration;

use netctl::ping::{Echo, PingOptions};
use netctl::{LinkKind, Netlink, VethConfig};
use ringtun_tests::{NetnsGuard, ping_with, require_root};

fn via(dev: &str, timeout: Duration) -> PingOptions {
    PingOptions {
        interface: Some(dev.to_string()),
        timeout,
        ..PingOptions::default()
    }
}

/// Pings until answered, for up to three seconds: the first echo after a
/// link comes up can race the link's carrier.
fn answered(ns: &str, dev: &str) -> Echo {
    let mut last = Echo::Timeout;
    for _ in 0..6 {
        last = ping_with(ns, "10.1.1.1", &via(dev, Duration::from_millis(500)));
        if last.is_reply() {
            break;
        }
    }
    last
}

#[test]
fn seed_article_veth_pair_bridge_and_the_address_given_to_the_bridge() {
    require_root!("seed_article_veth_pair_bridge_and_the_address_given_to_the_bridge");
    let mut guard = NetnsGuard::new();
    let a = guard.create("seed-a");
    let b = guard.create("seed-b");
    let in_a = Netlink::in_netns(&a).unwrap();
    let in_b = Netlink::in_netns(&b).unwrap();

    // ip link add veth0 type veth peer name veth1 (veth1 straight into B)
    in_a.add_veth(&VethConfig::new("veth0", "veth1").peer_netns(&b))
        .unwrap();
    let veth0 = in_a.link("veth0").unwrap();
    let veth1 = in_b.link("veth1").unwrap();
    for end in [&veth0, &veth1] {
        assert_eq!(end.kind, LinkKind::Veth, "{} kind", end.name);
        assert_eq!(
            end.mtu, 1500,
            "a new veth has MTU 1500: {} has {}",
            end.name, end.mtu
        );
        assert!(!end.up, "a new veth is DOWN: {} is up", end.name);
        assert_eq!(end.state, "DOWN", "{} operstate", end.name);
    }

    // ip addr add 10.1.1.2/24 dev veth0; ip addr add 10.1.1.1/24 dev veth1
    in_a.addr_add("veth0", "10.1.1.2/24".parse().unwrap())
        .unwrap();
    in_b.addr_add("veth1", "10.1.1.1/24".parse().unwrap())
        .unwrap();
    // ip link set dev veth0 up; ip link set dev veth1 up
    in_a.link_set_up("veth0").unwrap();
    in_b.link_set_up("veth1").unwrap();
    assert!(in_a.link("veth0").unwrap().up);
    let echo = answered(&a, "veth0");
    assert!(
        echo.is_reply(),
        "ping -I veth0 10.1.1.1 before the bridge: expected a reply, got {echo:?}"
    );

    // ip link add name br0 type bridge; ip link set br0 up
    in_a.add_bridge("br0").unwrap();
    let br0 = in_a.link("br0").unwrap();
    assert_eq!(br0.kind, LinkKind::Bridge);
    assert!(!br0.up, "a new bridge is DOWN");
    in_a.link_set_up("br0").unwrap();
    // ip link set dev veth0 master br0
    in_a.set_master("veth0", "br0").unwrap();
    let veth0 = in_a.link("veth0").unwrap();
    assert_eq!(veth0.master.as_deref(), Some("br0"));
    assert!(
        veth0
            .addresses
            .iter()
            .any(|x| x.prefix.to_string() == "10.1.1.2/24"),
        "10.1.1.2/24 is still on veth0: {:?}",
        veth0.addresses
    );

    // ping -c 1 -I veth0 10.1.1.1: the replies now go up through br0, and
    // the stack never sees them on veth0.
    let echo = ping_with(&a, "10.1.1.1", &via("veth0", Duration::from_secs(2)));
    assert!(
        !echo.is_reply(),
        "veth0 is a bridge port holding 10.1.1.2/24: expected no reply, got {echo:?}"
    );

    // ip addr del 10.1.1.2/24 dev veth0; ip addr add 10.1.1.2/24 dev br0
    in_a.addr_del("veth0", "10.1.1.2/24".parse().unwrap())
        .unwrap();
    in_a.addr_add("br0", "10.1.1.2/24".parse().unwrap())
        .unwrap();
    assert!(
        in_a.addrs(Some("veth0"))
            .unwrap()
            .iter()
            .all(|x| x.prefix.family() != netctl::Family::Ipv4)
    );
    let echo = answered(&a, "br0");
    assert!(
        echo.is_reply(),
        "ping -I br0 10.1.1.1 with the address on br0: expected a reply, got {echo:?}"
    );
    // And without binding a device, as a program in A would send it.
    let echo = ringtun_tests::ping(&a, "10.1.1.1");
    assert!(
        echo.is_reply(),
        "unbound ping from A: expected a reply, got {echo:?}"
    );
}
