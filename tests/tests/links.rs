//! Links, addresses and routes through the library: TUN/TAP, VXLAN, bridge
//! ports, several changes at once, counters, and the errors that name the
//! object.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netctl::route::Route;
use netctl::{
    AddrOptions, Error, Family, IpPrefix, LinkChange, LinkKind, Netlink, TunMode, TunTapConfig,
    VethConfig, VxlanConfig, tuntap,
};
use ringtun_tests::{NetnsGuard, ping_until_reply, require_root};

fn prefix(text: &str) -> IpPrefix {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// Attaches one more queue to a multi-queue TUN the way a data plane
/// worker does, on a thread inside `ns`; returns the open queue.
fn attach_queue(ns: &str, name: &str) -> std::fs::File {
    netctl::netns::run_in(ns, || {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap_or_else(|e| panic!("opening /dev/net/tun: {e}"));
        // SAFETY: zeroed ifreq is valid; the name is short and NUL-terminated.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as libc::c_short;
        // SAFETY: TUNSETIFF on an open /dev/net/tun with a live ifreq.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETIFF,
                &mut ifr as *mut libc::ifreq,
            )
        };
        assert_eq!(
            rc,
            0,
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        );
        file
    })
    .unwrap_or_else(|e| panic!("entering {ns}: {e}"))
}

#[test]
fn tun_and_tap_devices_are_persistent_multi_queue_and_owned() {
    require_root!("tun_and_tap_devices_are_persistent_multi_queue_and_owned");
    let mut guard = NetnsGuard::new();
    let ns = guard.create("tun");
    let handle = Netlink::in_netns(&ns).unwrap();

    let cfg = TunTapConfig {
        multi_queue: true,
        owner: Some(65534),
        group: Some(65534),
        ..TunTapConfig::new("tun0", TunMode::Tun)
    };
    tuntap::create_in(Some(&ns), &cfg).unwrap();
    let tun = handle.link("tun0").unwrap();
    assert_eq!(tun.kind, LinkKind::Tun);
    assert!(!tun.up, "a new tun is down");
    let info = tun.tun.unwrap();
    assert!(info.persist && info.multi_queue && !info.tap, "{info:?}");
    assert_eq!((info.owner, info.group), (Some(65534), Some(65534)));
    assert_eq!(info.queues, 0, "the device outlived its creator's fd");

    // Workers attach one queue each.
    let q1 = attach_queue(&ns, "tun0");
    let q2 = attach_queue(&ns, "tun0");
    assert_eq!(handle.link("tun0").unwrap().tun.unwrap().queues, 2);
    drop((q1, q2));

    let err = tuntap::create_in(Some(&ns), &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("tun0 already exists in namespace {ns}")
    );

    tuntap::create_in(Some(&ns), &TunTapConfig::new("tap0", TunMode::Tap)).unwrap();
    let tap = handle.link("tap0").unwrap();
    assert_eq!(tap.kind, LinkKind::Tap);
    assert!(!tap.tun.unwrap().multi_queue);

    let err = tuntap::delete(&handle, "tap0", Some(TunMode::Tun)).unwrap_err();
    assert_eq!(err.to_string(), "tap0 is a tap device, not tun");
    tuntap::delete(&handle, "tap0", Some(TunMode::Tap)).unwrap();
    tuntap::delete(&handle, "tun0", None).unwrap();
    assert!(matches!(
        handle.link("tun0"),
        Err(Error::NoSuchDevice { .. })
    ));
}

#[test]
fn vxlan_attributes_read_back_as_given() {
    require_root!("vxlan_attributes_read_back_as_given");
    let mut guard = NetnsGuard::new();
    let a = guard.create("vxa");
    let b = guard.create("vxb");
    let handle = Netlink::in_netns(&a).unwrap();
    handle
        .add_veth(&VethConfig::new("wan0", "wan0").peer_netns(&b))
        .unwrap();
    handle.addr_add("wan0", prefix("192.0.2.1/30")).unwrap();

    let cfg = VxlanConfig {
        name: "vx7".into(),
        vni: 7,
        local: Some("192.0.2.1".parse().unwrap()),
        remote: Some("192.0.2.2".parse().unwrap()),
        dstport: Some(4790),
        dev: Some("wan0".into()),
        learning: Some(false),
        ..VxlanConfig::default()
    };
    handle.add_vxlan(&cfg).unwrap();
    let vx = handle.link("vx7").unwrap();
    assert_eq!(vx.kind, LinkKind::Vxlan);
    assert_eq!(vx.mtu, 1450, "the kernel's VXLAN MTU over a 1500 underlay");
    let info = vx.vxlan.unwrap();
    assert_eq!(
        (info.vni, info.dstport, info.learning),
        (7, 4790, false),
        "{info:?}"
    );
    assert_eq!(info.local, cfg.local);
    assert_eq!(info.remote, cfg.remote);
    assert_eq!(info.group, None);
    assert_eq!(info.dev_index, Some(handle.link_index("wan0").unwrap()));

    let group = VxlanConfig {
        name: "vx8".into(),
        vni: 8,
        group: Some("239.1.1.1".parse().unwrap()),
        dev: Some("wan0".into()),
        ..VxlanConfig::default()
    };
    handle.add_vxlan(&group).unwrap();
    let info = handle.link("vx8").unwrap().vxlan.unwrap();
    assert_eq!(info.group, group.group);
    assert_eq!(info.dstport, netctl::link::VXLAN_PORT);
    assert!(info.learning);

    let too_big = VxlanConfig {
        name: "vx9".into(),
        vni: 1 << 24,
        ..VxlanConfig::default()
    };
    assert!(
        handle
            .add_vxlan(&too_big)
            .unwrap_err()
            .to_string()
            .contains("24-bit VNI")
    );
    let unicast_group = VxlanConfig {
        group: Some("10.0.0.1".parse().unwrap()),
        ..too_big.clone()
    };
    assert!(
        handle
            .add_vxlan(&VxlanConfig {
                vni: 9,
                ..unicast_group
            })
            .is_err()
    );
}

#[test]
fn one_link_set_changes_several_attributes_and_veth_ends_move_between_namespaces() {
    require_root!("one_link_set_changes_several_attributes_and_veth_ends_move_between_namespaces");
    let mut guard = NetnsGuard::new();
    let a = guard.create("seta");
    let b = guard.create("setb");
    let in_a = Netlink::in_netns(&a).unwrap();
    let in_b = Netlink::in_netns(&b).unwrap();
    in_a.add_veth(&VethConfig::new("veth0", "veth1")).unwrap();
    in_a.add_bridge("br0").unwrap();

    in_a.link_set(
        "veth0",
        &LinkChange {
            up: Some(true),
            mtu: Some(1400),
            master: Some(Some("br0".into())),
            ..LinkChange::default()
        },
    )
    .unwrap();
    let veth0 = in_a.link("veth0").unwrap();
    assert!(veth0.up);
    assert_eq!(veth0.mtu, 1400);
    assert_eq!(veth0.master.as_deref(), Some("br0"));

    in_a.set_nomaster("veth0").unwrap();
    assert_eq!(in_a.link("veth0").unwrap().master, None);

    // ip link set dev veth1 netns B, then rename it there.
    in_a.move_to_netns("veth1", &b).unwrap();
    assert!(matches!(
        in_a.link("veth1"),
        Err(Error::NoSuchDevice { .. })
    ));
    in_b.link_set(
        "veth1",
        &LinkChange {
            name: Some("eth0".into()),
            ..LinkChange::default()
        },
    )
    .unwrap();
    let eth0 = in_b.link("eth0").unwrap();
    assert_eq!(eth0.kind, LinkKind::Veth);
    assert!(
        eth0.link_netnsid.is_some(),
        "the peer is in another namespace"
    );

    // Deleting one end deletes the pair.
    in_a.delete_link("veth0").unwrap();
    assert!(matches!(in_b.link("eth0"), Err(Error::NoSuchDevice { .. })));

    // Bridges are pinned to their namespace; the kernel says so.
    in_b.add_bridge("brp").unwrap();
    let err = in_b.move_to_netns("brp", &a).unwrap_err().to_string();
    assert!(err.starts_with("setting brp netns "), "{err}");
}

#[test]
fn addresses_and_routes_of_both_families() {
    require_root!("addresses_and_routes_of_both_families");
    let mut guard = NetnsGuard::new();
    let a = guard.create("rta");
    let b = guard.create("rtb");
    let in_a = Netlink::in_netns(&a).unwrap();
    let in_b = Netlink::in_netns(&b).unwrap();
    in_a.add_veth(&VethConfig::new("eth0", "eth0").peer_netns(&b))
        .unwrap();
    let nodad = AddrOptions { nodad: true };
    in_a.addr_add("eth0", prefix("10.3.0.1/24")).unwrap();
    in_a.addr_add_with("eth0", prefix("fd00:3::1/64"), nodad)
        .unwrap();
    in_b.addr_add("eth0", prefix("10.3.0.2/24")).unwrap();
    in_b.addr_add_with("eth0", prefix("fd00:3::2/64"), nodad)
        .unwrap();
    in_a.link_set_up("eth0").unwrap();
    in_b.link_set_up("eth0").unwrap();
    in_b.link_set_up("lo").unwrap();
    // b's other networks, reachable only by route.
    in_b.addr_add("lo", prefix("10.4.0.1/32")).unwrap();
    in_b.addr_add_with("lo", prefix("fd00:4::1/128"), nodad)
        .unwrap();

    let addrs = in_a.addrs(Some("eth0")).unwrap();
    let v6 = addrs
        .iter()
        .find(|x| x.prefix == prefix("fd00:3::1/64"))
        .unwrap();
    assert!(!v6.tentative, "nodad: usable at once");
    assert_eq!(
        in_a.addr_add("eth0", prefix("10.3.0.1/24"))
            .unwrap_err()
            .to_string(),
        format!("address 10.3.0.1/24 already exists on eth0 in namespace {a}")
    );

    let v4 = Route::to(prefix("10.4.0.0/24")).via("10.3.0.2".parse().unwrap());
    let v6 = Route::default_route(Family::Ipv6)
        .via("fd00:3::2".parse().unwrap())
        .dev("eth0")
        .metric(50);
    in_a.route_add(&v4).unwrap();
    in_a.route_add(&v6).unwrap();
    let routes = in_a.routes(None).unwrap();
    let found4 = routes.iter().find(|r| r.route.dest == v4.dest).unwrap();
    assert_eq!(found4.route.via, v4.via);
    assert_eq!(found4.route.dev.as_deref(), Some("eth0"));
    assert_eq!(found4.protocol, "boot");
    let found6 = routes.iter().find(|r| r.route.dest == v6.dest).unwrap();
    assert_eq!((found6.route.via, found6.route.metric), (v6.via, Some(50)));
    assert_eq!(
        in_a.routes(Some(Family::Ipv4))
            .unwrap()
            .iter()
            .filter(|r| r.route.family() != Family::Ipv4)
            .count(),
        0
    );

    for dst in ["10.4.0.1", "fd00:4::1"] {
        let echo = ping_until_reply(&a, dst, Duration::from_secs(3));
        assert!(echo.is_reply(), "{a} -> {dst} by route: {echo:?}");
    }

    assert!(matches!(
        in_a.route_add(&v4),
        Err(Error::RouteExists { .. })
    ));
    // A route on a device, no gateway (scope link).
    let on_dev = Route::to(prefix("10.5.0.0/16")).dev("eth0");
    in_a.route_add(&on_dev).unwrap();
    let listed = in_a.routes(Some(Family::Ipv4)).unwrap();
    assert_eq!(
        listed
            .iter()
            .find(|r| r.route.dest == on_dev.dest)
            .unwrap()
            .scope,
        "link"
    );

    in_a.route_del(&v4).unwrap();
    in_a.route_del(&v6).unwrap();
    in_a.route_del(&on_dev).unwrap();
    assert_eq!(
        in_a.route_del(&v4).unwrap_err().to_string(),
        format!("no such route to 10.4.0.0/24 in namespace {a}")
    );
    let echo = ringtun_tests::ping(&a, "10.4.0.1");
    assert!(!echo.is_reply(), "no route, yet a reply: {echo:?}");

    in_a.addr_del("eth0", prefix("10.3.0.1/24")).unwrap();
    assert_eq!(
        in_a.addr_del("eth0", prefix("10.3.0.1/24"))
            .unwrap_err()
            .to_string(),
        format!("address 10.3.0.1/24 is not on eth0 in namespace {a}")
    );
}

#[test]
fn link_errors_name_the_link_and_counters_count() {
    require_root!("link_errors_name_the_link_and_counters_count");
    let mut guard = NetnsGuard::new();
    let a = guard.create("lerr");
    let b = guard.create("lerrb");
    let handle = Netlink::in_netns(&a).unwrap();
    handle
        .add_veth(&VethConfig::new("veth0", "veth1").peer_netns(&b))
        .unwrap();

    let again = handle
        .add_veth(&VethConfig::new("veth0", "veth9"))
        .unwrap_err();
    assert_eq!(
        again.to_string(),
        format!("veth0 already exists in namespace {a}")
    );
    let peer_taken = handle
        .add_veth(&VethConfig::new("veth5", "veth1").peer_netns(&b))
        .unwrap_err();
    assert_eq!(
        peer_taken.to_string(),
        format!("veth1 already exists in namespace {b}")
    );
    assert_eq!(
        handle.link_set_up("br9").unwrap_err().to_string(),
        format!("no such device br9 in namespace {a}")
    );
    assert_eq!(
        handle.set_master("veth0", "br9").unwrap_err().to_string(),
        format!("no such device br9 in namespace {a}")
    );
    assert!(matches!(
        handle.add_bridge("a234567890abcdef"),
        Err(Error::BadIfName { .. })
    ));
    // Enslaving to something that is not a bridge: the kernel says why.
    handle.add_bridge("br0").unwrap();
    handle.add_veth(&VethConfig::new("vethx", "vethy")).unwrap();
    let err = handle.set_master("vethx", "veth0").unwrap_err();
    assert!(matches!(err, Error::Kernel { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("setting vethx master veth0: "),
        "{err}"
    );

    // Counters: an echo through veth0 is sent and one comes back.
    let in_b = Netlink::in_netns(&b).unwrap();
    handle.addr_add("veth0", prefix("10.9.0.1/24")).unwrap();
    in_b.addr_add("veth1", prefix("10.9.0.2/24")).unwrap();
    handle.link_set_up("veth0").unwrap();
    in_b.link_set_up("veth1").unwrap();
    let before = handle.link_stats("veth0").unwrap();
    let echo = ping_until_reply(&a, "10.9.0.2", Duration::from_secs(3));
    assert!(echo.is_reply(), "{echo:?}");
    let after = handle.link_stats("veth0").unwrap();
    assert!(
        after.tx_packets > before.tx_packets,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.rx_packets > before.rx_packets,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.tx_bytes >= before.tx_bytes + 84,
        "an echo is at least 84 bytes"
    );

    // The echo resolved veth1's MAC: the neighbour table holds it.
    let peer_mac = in_b.link("veth1").unwrap().mac;
    let entries = handle.neighbours(Some("veth0")).unwrap();
    let entry = entries
        .iter()
        .find(|n| n.address.to_string() == "10.9.0.2")
        .unwrap_or_else(|| panic!("no neighbour entry for 10.9.0.2: {entries:?}"));
    assert_eq!(entry.dev, "veth0");
    assert_eq!(entry.mac.map(|m| m.to_string()), peer_mac, "{entry}");
    assert!(
        ["REACHABLE", "STALE", "DELAY", "PROBE"].contains(&entry.state.as_str()),
        "{entry}"
    );
}

#[test]
fn gso_max_segs_is_set_and_read_back() {
    require_root!("gso_max_segs_is_set_and_read_back");
    let mut guard = NetnsGuard::new();
    let ns = guard.create("gso");
    let nl = Netlink::in_netns(&ns).unwrap();
    nl.add_bridge("br0").unwrap();
    nl.set_gso_max_segs("br0", 44).unwrap();
    assert_eq!(nl.link("br0").unwrap().gso_max_segs, Some(44));
}

#[test]
fn a_pinned_bridge_address_survives_ports_coming_and_going() {
    require_root!("a_pinned_bridge_address_survives_ports_coming_and_going");
    let mut guard = NetnsGuard::new();
    let ns = guard.create("mac");
    let nl = Netlink::in_netns(&ns).unwrap();
    nl.add_bridge("br0").unwrap();
    nl.add_veth(&VethConfig::new("p0", "p1")).unwrap();
    let low: netctl::MacAddr = "02:00:00:00:00:01".parse().unwrap();
    nl.set_address("p0", low).unwrap();
    nl.set_master("p0", "br0").unwrap();
    // Unpinned, the bridge follows its lowest port.
    assert_eq!(
        nl.link("br0").unwrap().mac.as_deref(),
        Some("02:00:00:00:00:01")
    );
    let pinned: netctl::MacAddr = "fe:54:00:00:00:09".parse().unwrap();
    nl.set_address("br0", pinned).unwrap();
    nl.set_nomaster("p0").unwrap();
    nl.set_master("p0", "br0").unwrap();
    assert_eq!(
        nl.link("br0").unwrap().mac.as_deref(),
        Some("fe:54:00:00:00:09")
    );
    let group: netctl::MacAddr = "01:00:5e:00:00:01".parse().unwrap();
    let err = nl.set_address("br0", group).unwrap_err().to_string();
    assert!(err.contains("multicast") && err.contains("br0"), "{err}");
}
