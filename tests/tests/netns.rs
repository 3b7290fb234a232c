//! Named namespaces: shared with `ip netns`, entered only by helper
//! threads, and with their own sysctls.

use std::os::unix::fs::MetadataExt;

use netctl::{Error, Netlink, netns, sysctl};
use ringtun_tests::{NetnsGuard, require_root, require_tool_or_skip, run_ip, unique_name};

/// The inode of the calling thread's network namespace.
fn own_netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .unwrap_or_else(|e| panic!("/proc/thread-self/ns/net: {e}"))
        .ino()
}

#[test]
fn run_in_enters_the_namespace_on_another_thread_and_leaves_the_caller_alone() {
    require_root!("run_in_enters_the_namespace_on_another_thread_and_leaves_the_caller_alone");
    let mut guard = NetnsGuard::new();
    let ns = guard.create("runin");
    let before = own_netns_inode();
    let target = std::fs::metadata(netns::path(&ns)).unwrap().ino();
    assert_ne!(before, target);
    let inside = netns::run_in(&ns, own_netns_inode).unwrap();
    assert_eq!(inside, target, "run_in did not enter {ns}");
    assert_eq!(own_netns_inode(), before, "the caller's namespace changed");

    // A handle opened for the namespace keeps acting there.
    let handle = Netlink::in_netns(&ns).unwrap();
    handle.add_bridge("brx").unwrap();
    assert!(handle.link("brx").is_ok());
    assert!(matches!(
        Netlink::current().unwrap().link("brx"),
        Err(Error::NoSuchDevice { netns: None, .. })
    ));

    // A panic inside reaches the caller.
    let caught = std::panic::catch_unwind(|| netns::run_in(&ns, || panic!("inside")));
    assert!(caught.is_err());
    assert_eq!(own_netns_inode(), before);
}

#[test]
fn ip_netns_and_netctl_see_the_same_namespaces() {
    require_root!("ip_netns_and_netctl_see_the_same_namespaces");
    if !require_tool_or_skip("ip_netns_and_netctl_see_the_same_namespaces", "ip") {
        return;
    }
    let mut guard = NetnsGuard::new();
    let ours = guard.create("seen");
    let listed = run_ip(&["netns", "list"]).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ours.as_str())),
        "{listed}"
    );
    let inside = run_ip(&["-n", &ours, "-o", "link", "show"]).unwrap();
    assert!(inside.contains("lo:"), "ip -n {ours} link: {inside}");

    let theirs = unique_name("byip");
    guard.adopt(&theirs);
    run_ip(&["netns", "add", &theirs]).unwrap();
    assert!(netns::list().unwrap().contains(&theirs));
    Netlink::in_netns(&theirs)
        .unwrap()
        .add_bridge("br7")
        .unwrap();
    let links = run_ip(&["-n", &theirs, "-o", "link", "show", "br7"]).unwrap();
    assert!(links.contains("br7"), "{links}");
}

#[test]
fn namespace_errors_name_the_namespace() {
    require_root!("namespace_errors_name_the_namespace");
    let mut guard = NetnsGuard::new();
    let ns = guard.create("errs");
    assert_eq!(
        netns::add(&ns).unwrap_err().to_string(),
        format!("namespace {ns} already exists")
    );
    let missing = unique_name("missing");
    assert_eq!(
        netns::delete(&missing).unwrap_err().to_string(),
        format!("no such namespace {missing} (see `netctl netns list`)")
    );
    assert!(matches!(
        netns::run_in(&missing, || ()),
        Err(Error::NoSuchNetns { .. })
    ));
    assert!(matches!(
        Netlink::in_netns(&missing),
        Err(Error::NoSuchNetns { .. })
    ));
    assert!(matches!(netns::add("a/b"), Err(Error::BadName { .. })));
}

#[test]
fn sysctls_belong_to_the_namespace_that_reads_them() {
    require_root!("sysctls_belong_to_the_namespace_that_reads_them");
    let mut guard = NetnsGuard::new();
    let a = guard.create("sysa");
    let b = guard.create("sysb");
    let host_before = sysctl::read("net.ipv4.ip_forward").unwrap();

    sysctl::write_in(Some(&a), "net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(
        sysctl::read_in(Some(&a), "net.ipv4.ip_forward").unwrap(),
        "1"
    );
    assert_eq!(
        sysctl::read_in(Some(&b), "net.ipv4.ip_forward").unwrap(),
        "0"
    );
    assert_eq!(
        sysctl::read("net.ipv4.ip_forward").unwrap(),
        host_before,
        "the host's value moved"
    );

    // Device keys exist once the device does, in its namespace only.
    let key = "net.ipv6.conf.brs.accept_dad";
    assert!(matches!(
        sysctl::read_in(Some(&a), key),
        Err(Error::BadSysctl { .. })
    ));
    Netlink::in_netns(&a).unwrap().add_bridge("brs").unwrap();
    sysctl::write_in(Some(&a), key, "0").unwrap();
    assert_eq!(sysctl::read_in(Some(&a), key).unwrap(), "0");
    assert!(sysctl::read_in(Some(&b), key).is_err());

    let err = sysctl::write_in(Some(&a), "kernel.hostname", "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("only net.* keys"), "{err}");
}
