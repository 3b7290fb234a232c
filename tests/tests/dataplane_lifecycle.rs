//! The daemon's life as an operator sees it: `ringtun down` stops an
//! instance and its interface goes; a second `ringtun up` for a name that
//! is taken fails with a clear error and leaves the first one serving;
//! `ringtun show` and `ringtun down` without an instance fail clearly; the
//! control socket belongs to the namespace the daemon runs in.

mod dataplane_lab;

use std::time::{Duration, Instant};

use dataplane_lab::{IFACE, Lab, Underlay, assert_reaches, inner4, must};
use ringtun_tests::require_root;
use ringtun_tests::ringtun::{self, Error, Ringtun, TunnelMode, UpOptions};

fn link_exists(netns: &str, iface: &str) -> bool {
    let nl = must(netctl::Netlink::in_netns(netns), netns);
    match nl.link(iface) {
        Ok(_) => true,
        Err(netctl::Error::NoSuchDevice { .. }) => false,
        Err(e) => panic!("looking up {iface} in {netns}: {e}"),
    }
}

/// Runs `ringtun ARGS` in `netns`, requires a failure, returns its stderr.
fn fails(netns: &str, args: &[&str]) -> String {
    let out = must(
        ringtun::run_in(Some(netns), args),
        format!("ringtun {args:?}"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "ringtun {args:?} in {netns} should fail, but exited with {}: stdout {:?}, stderr {stderr:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[test]
fn ringtun_down_stops_the_instance_and_its_interface_goes() {
    require_root!("ringtun_down_stops_the_instance_and_its_interface_goes");
    let mode = TunnelMode::WireGuard;
    let lab = Lab::pair("dpd");
    let opts = UpOptions::default();
    let _a = lab.up(1, &lab.conf(mode, 1, &[2], Underlay::V4), &opts);
    let mut b = lab.up(2, &lab.conf(mode, 2, &[1], Underlay::V4), &opts);
    assert_reaches(lab.ns(1), inner4(mode, 2), "before ringtun down");
    assert!(link_exists(lab.ns(2), IFACE), "{IFACE} exists while up");

    must(b.down(), "ringtun down");
    if let Err(e) = b.expect_clean_exit(Duration::from_secs(10)) {
        panic!("after ringtun down: {e}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while link_exists(lab.ns(2), IFACE) {
        assert!(
            Instant::now() < deadline,
            "{IFACE} is still in {} 5 s after ringtun down",
            lab.ns(2)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = fails(lab.ns(2), &["show", IFACE]);
    assert!(
        stderr.contains("no ringtun instance for interface rt0"),
        "show after down: expected `no ringtun instance for interface rt0`, got {stderr:?}"
    );
}

#[test]
fn a_second_up_for_a_taken_name_fails_clearly_and_the_first_keeps_serving() {
    require_root!("a_second_up_for_a_taken_name_fails_clearly_and_the_first_keeps_serving");
    let mode = TunnelMode::WireGuard;
    let lab = Lab::pair("dpu");
    let opts = UpOptions::default();
    let conf = lab.conf(mode, 1, &[2], Underlay::V4);
    let first = lab.up(1, &conf, &opts);
    let _b = lab.up(2, &lab.conf(mode, 2, &[1], Underlay::V4), &opts);

    let path = lab.write(1, &conf);
    match Ringtun::up(lab.ns(1), &path, &opts) {
        Ok(second) => panic!(
            "a second ringtun up for {IFACE} in {} became ready (pid {})",
            lab.ns(1),
            second.pid()
        ),
        Err(Error::NotReady { why, stderr, .. }) => {
            assert!(
                why.contains("exited with exit status: 1"),
                "the second instance should exit with status 1, not: {why}"
            );
            assert!(
                stderr.contains("another process serves rt0"),
                "expected `another process serves rt0` on stderr, got {stderr:?}"
            );
        }
        Err(e) => panic!("starting the second instance failed oddly: {e}"),
    }
    let status = must(first.show(), "show on the first instance");
    assert_eq!(
        status.pid,
        first.pid(),
        "the control socket is still the first instance's"
    );
    assert_reaches(
        lab.ns(2),
        inner4(mode, 1),
        "the first instance after the second failed",
    );
    must(first.terminate(), "stopping the first instance");
}

#[test]
fn show_and_down_without_an_instance_fail_clearly() {
    require_root!("show_and_down_without_an_instance_fail_clearly");
    let mode = TunnelMode::WireGuard;
    let lab = Lab::pair("dps");
    let stderr = fails(lab.ns(1), &["show", IFACE]);
    assert!(
        stderr.contains("no ringtun instance for interface rt0 (no socket answers at"),
        "show IFACE: {stderr:?}"
    );
    let stderr = fails(lab.ns(1), &["show"]);
    assert!(
        stderr.contains("no ringtun instance runs on this host"),
        "show: {stderr:?}"
    );
    let stderr = fails(lab.ns(1), &["down", IFACE]);
    assert!(
        stderr.contains("no ringtun instance for interface rt0"),
        "down IFACE: {stderr:?}"
    );

    // An instance in one lab namespace is invisible from another: each lab
    // namespace has its own socket directory (`/var/run/wireguard` itself
    // is shared by the whole host, as for wireguard-go).
    let a = lab.up(
        1,
        &lab.conf(mode, 1, &[2], Underlay::V4),
        &UpOptions::default(),
    );
    let stderr = fails(lab.ns(2), &["show", IFACE]);
    assert!(
        stderr.contains("no ringtun instance for interface rt0"),
        "show from the other namespace: {stderr:?}"
    );
    let listed = must(
        ringtun::run_ok_in(Some(lab.ns(1)), &["show"]),
        "ringtun show (all) where it runs",
    );
    assert!(
        listed.contains("interface: rt0 (wireguard mode"),
        "ringtun show lists the instance: {listed:?}"
    );
    must(a.terminate(), "stopping");
}
