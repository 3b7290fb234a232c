//! Topology files: apply twice then destroy leaves the host as it was;
//! mismatches are errors naming the difference; a failed apply rolls back;
//! the same file applies side by side under different prefixes.

use std::time::Duration;

use netctl::topology::LinkKindSpec;
use netctl::{Error, LinkKind, Netlink, Topology, netns};
use ringtun_tests::{
    TopologyGuard, host_snapshot, link_names, ping_until_reply, repo_root, require_root,
    require_tool_or_skip, unique_name,
};

fn example() -> Topology {
    let path = repo_root().join("netctl/examples/topology.toml");
    Topology::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn seed() -> Topology {
    let path = repo_root().join("xtask/topologies/seed.toml");
    Topology::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn example_topology_applies_twice_routes_both_families_and_destroys_without_a_trace() {
    require_root!(
        "example_topology_applies_twice_routes_both_families_and_destroys_without_a_trace"
    );
    if !require_tool_or_skip(
        "example_topology_applies_twice_routes_both_families_and_destroys_without_a_trace",
        "ip",
    ) {
        return;
    }
    let topology = example();
    let prefix = format!("{}-", unique_name("ex"));
    // The host as far as this test's objects go: what it could touch.
    let names = link_names(&topology);
    assert!(
        names.contains("wan0"),
        "link names of the example: {names:?}"
    );
    let before = host_snapshot(&prefix, &names);
    assert!(before.netns.is_empty());

    let result = std::panic::catch_unwind(|| {
        let first = topology.apply(Some(&prefix)).unwrap();
        assert!(
            first
                .created
                .iter()
                .any(|c| c == &format!("namespace {prefix}gw-a"))
        );
        assert!(first.created.len() > 30, "created: {:?}", first.created);

        // Routed across two gateways with forwarding on, both families.
        let lan_a = format!("{prefix}lan-a");
        for dst in ["10.20.2.2", "fd00:20:2::2"] {
            let echo = ping_until_reply(&lan_a, dst, Duration::from_secs(5));
            assert!(echo.is_reply(), "lan-a -> {dst}: {echo:?}");
        }

        // The kernel devices are as described.
        let gw_a = Netlink::in_netns(&format!("{prefix}gw-a")).unwrap();
        let vx = gw_a.link("vx42").unwrap();
        assert_eq!(vx.kind, LinkKind::Vxlan);
        let info = vx.vxlan.unwrap();
        assert_eq!(info.vni, 42);
        assert_eq!(info.dstport, 4789);
        assert_eq!(info.remote, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(info.local, Some("192.0.2.1".parse().unwrap()));
        assert!(!info.learning);
        assert_eq!(info.dev_index, Some(gw_a.link_index("wan0").unwrap()));
        assert!(!vx.up);
        let tun = Netlink::in_netns(&format!("{prefix}gw-b"))
            .unwrap()
            .link("tun0")
            .unwrap();
        assert_eq!(tun.kind, LinkKind::Tun);
        assert_eq!(tun.mtu, 1420);
        let t = tun.tun.unwrap();
        assert!(t.multi_queue && t.persist, "{t:?}");
        assert_eq!(
            netctl::sysctl::read_in(Some(&format!("{prefix}gw-b")), "net.ipv4.ip_forward").unwrap(),
            "1"
        );

        let second = topology.apply(Some(&prefix)).unwrap();
        assert!(
            second.created.is_empty(),
            "second apply created {:?}",
            second.created
        );
        for what in first.created.iter().filter(|c| !c.starts_with("veth pair")) {
            assert!(
                second.unchanged.contains(what),
                "{what} not unchanged: {:?}",
                second.unchanged
            );
        }
    });

    let destroyed = topology.destroy(Some(&prefix)).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(destroyed.deleted.len(), 4, "{destroyed:?}");
    let after = host_snapshot(&prefix, &names);
    assert_eq!(before, after, "the host changed");
    // A second destroy finds nothing and says so.
    assert_eq!(topology.destroy(Some(&prefix)).unwrap().absent.len(), 4);
}

#[test]
fn an_existing_object_that_differs_is_an_error_naming_the_difference() {
    require_root!("an_existing_object_that_differs_is_an_error_naming_the_difference");
    let guard = TopologyGuard::apply(seed(), "mm");
    let mut changed = seed();
    let br0 = changed.links.iter_mut().find(|l| l.name == "br0").unwrap();
    br0.mtu = Some(1400);
    let err = changed.apply(Some(guard.prefix())).unwrap_err();
    let Error::Apply(failure) = &err else {
        panic!("expected an apply failure, got {err}");
    };
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "link br0 in namespace {} exists with mtu 1500, but the topology says 1400",
            guard.netns("a")
        )),
        "{text}"
    );
    assert!(
        failure.created.is_empty(),
        "a mismatch created {:?}",
        failure.created
    );
    assert!(text.contains("nothing had been created"), "{text}");
    // Nothing was reconciled.
    let a = Netlink::in_netns(&guard.netns("a")).unwrap();
    assert_eq!(a.link("br0").unwrap().mtu, 1500);

    let mut moved = seed();
    moved
        .links
        .iter_mut()
        .find(|l| l.name == "veth0")
        .unwrap()
        .master = None;
    let text = moved.apply(Some(guard.prefix())).unwrap_err().to_string();
    assert!(
        text.contains("exists with master br0, but the topology says none"),
        "{text}"
    );
}

#[test]
fn a_failed_apply_removes_what_it_created_and_reports_it() {
    require_root!("a_failed_apply_removes_what_it_created_and_reports_it");
    // The route's gateway is on no connected network: the kernel refuses it
    // after the namespaces, links and addresses exist.
    let text = r#"
        [[namespace]]
        name = "a"
        [[namespace]]
        name = "b"
        [[link]]
        namespace = "a"
        name = "veth0"
        kind = "veth"
        peer = { name = "veth1", namespace = "b" }
        addresses = ["10.7.0.1/24"]
        [[route]]
        namespace = "a"
        to = "10.9.0.0/24"
        via = "10.8.0.1"
    "#;
    let topology = Topology::parse(text, "bad-route").unwrap();
    let prefix = format!("{}-", unique_name("rb"));
    let err = topology.apply(Some(&prefix)).unwrap_err();
    let Error::Apply(failure) = &err else {
        panic!("expected an apply failure, got {err}");
    };
    assert!(
        failure
            .step
            .contains("adding route 10.9.0.0/24 via 10.8.0.1"),
        "{}",
        failure.step
    );
    assert!(
        failure.created.contains(&format!("namespace {prefix}a")),
        "{:?}",
        failure.created
    );
    assert!(
        failure.rollback_errors.is_empty(),
        "{:?}",
        failure.rollback_errors
    );
    assert!(err.to_string().contains("all of it rolled back"), "{err}");
    assert!(!netns::exists(&format!("{prefix}a")) && !netns::exists(&format!("{prefix}b")));

    // Inside namespaces that existed before, only the new objects go.
    let base = TopologyGuard::apply(
        Topology::parse(
            r#"
            [[namespace]]
            name = "a"
            [[link]]
            namespace = "a"
            name = "br0"
            kind = "bridge"
            addresses = ["10.7.0.1/24"]
            "#,
            "base",
        )
        .unwrap(),
        "rb2",
    );
    let mut more = base.topology().clone();
    let mut extra = netctl::topology::LinkSpec::new("a", "br1", LinkKindSpec::Bridge);
    extra.addresses.push(netctl::topology::AddressSpec::new(
        "10.6.0.1/24".parse().unwrap(),
    ));
    more.links.push(extra);
    more.routes.push(netctl::topology::RouteSpec {
        namespace: "a".into(),
        to: "10.9.0.0/24".into(),
        via: Some("10.8.0.1".parse().unwrap()),
        dev: None,
        metric: None,
        src: None,
        table: None,
        onlink: false,
    });
    let err = more.apply(Some(base.prefix())).unwrap_err();
    let Error::Apply(failure) = &err else {
        panic!("expected an apply failure, got {err}");
    };
    assert_eq!(
        failure.rolled_back,
        vec![
            format!("address 10.6.0.1/24 on br1 in {}", base.netns("a")),
            format!("bridge br1 in {}", base.netns("a")),
        ]
    );
    let a = Netlink::in_netns(&base.netns("a")).unwrap();
    assert!(matches!(a.link("br1"), Err(Error::NoSuchDevice { .. })));
    assert!(a.link("br0").is_ok(), "the pre-existing link was touched");
}

#[test]
fn one_file_applies_side_by_side_under_different_prefixes() {
    require_root!("one_file_applies_side_by_side_under_different_prefixes");
    let guards: Vec<TopologyGuard> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| TopologyGuard::apply(seed(), "side")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for guard in &guards {
        let a = guard.netns("a");
        for dst in ["10.1.1.1", "fd00:1::1"] {
            let echo = ping_until_reply(&a, dst, Duration::from_secs(3));
            assert!(echo.is_reply(), "{a} -> {dst}: {echo:?}");
        }
    }
}

#[test]
fn a_missing_file_is_named_in_the_error() {
    let err = Topology::from_file("/nonexistent/t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/nonexistent/t.toml: cannot read it:"),
        "{err}"
    );
}
