//! Restarting one side of a wireguard tunnel: after SIGTERM (a clean exit,
//! the interface removed) or SIGKILL, a new instance with the same
//! configuration comes up, and traffic from the side that kept running
//! resumes after a new handshake. The timeout is functional, not a
//! performance figure: the surviving side notices the dead session only
//! when its own timers fire (REKEY_TIMEOUT + KEEPALIVE_TIMEOUT, 15 s).

mod dataplane_lab;

use std::time::{Duration, Instant};

use dataplane_lab::{
    IFACE, Lab, Underlay, assert_bulk, assert_link_gone, assert_reaches, diagnose, inner4, inner6,
    must,
};
use nix::sys::signal::Signal;
use ringtun_tests::ringtun::{Ringtun, TunnelMode, UpOptions};
use ringtun_tests::{ping_until_reply, require_root};

/// How long traffic may take to resume after the restart.
const RESUME_WITHIN: Duration = Duration::from_secs(60);
/// Bytes of the transfers after the restart.
const BULK: u64 = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Term,
    Kill,
}

/// One of `ringtun show`'s control counters (`handshakes_completed`,
/// `handshake_responses`, ...).
fn control_counter(d: &Ringtun, counter: &str) -> u64 {
    let status = must(d.show(), format!("ringtun show in {}", d.netns()));
    status
        .control
        .iter()
        .find(|(name, _)| name == counter)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("no {counter} counter in {:?}", status.control))
}

fn completed_handshakes(d: &Ringtun) -> u64 {
    control_counter(d, "handshakes_completed")
}

fn restart(ctx: &str, stop: Stop) {
    let mode = TunnelMode::WireGuard;
    let lab = Lab::pair("dpr");
    let opts = UpOptions {
        workers: Some(2),
        ..UpOptions::default()
    };
    let conf_b = lab.conf(mode, 2, &[1], Underlay::V4);
    let a = lab.up(1, &lab.conf(mode, 1, &[2], Underlay::V4), &opts);
    let mut b = lab.up(2, &conf_b, &opts);
    assert_reaches(lab.ns(1), inner4(mode, 2), ctx);
    let handshakes_before = completed_handshakes(&a);
    assert!(
        handshakes_before >= 1,
        "{ctx}: site 1 reports no completed handshake after a ping went through"
    );
    let responses_before = control_counter(&a, "handshake_responses");

    match stop {
        Stop::Term => {
            if let Err(e) = b.signal(Signal::SIGTERM) {
                panic!("{ctx}: {e}");
            }
            if let Err(e) = b.expect_clean_exit(Duration::from_secs(10)) {
                panic!("{ctx}: site 2 after SIGTERM: {e}");
            }
        }
        Stop::Kill => {
            let status = must(b.kill(), "killing site 2");
            assert!(
                Ringtun::killed_by(status, Signal::SIGKILL),
                "{ctx}: expected death by SIGKILL, got {status}"
            );
        }
    }
    assert_link_gone(lab.ns(2), IFACE, ctx);
    let echo = ringtun_tests::ping(lab.ns(1), &inner4(mode, 2).to_string());
    assert!(
        !echo.is_reply(),
        "{ctx}: site 2 is down, yet its tunnel address answered: {echo:?}"
    );

    let b = lab.up(2, &conf_b, &opts);
    let started = Instant::now();
    // HandshakeOnStart: the restarted site contacts site 1 by itself, so
    // site 1 answers an initiation before anyone sends (without it site 1
    // would only ever initiate, after its 15 s "heard nothing" timer).
    let deadline = started + RESUME_WITHIN;
    while control_counter(&a, "handshake_responses") == responses_before {
        assert!(
            Instant::now() < deadline,
            "{ctx}: the restarted site 2 did not contact site 1 within {RESUME_WITHIN:?}{}",
            diagnose(&[&a, &b])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let echo = ping_until_reply(lab.ns(1), &inner4(mode, 2).to_string(), RESUME_WITHIN);
    assert!(
        echo.is_reply(),
        "{ctx}: no reply from the restarted site 2 within {RESUME_WITHIN:?}: {echo:?}{}",
        diagnose(&[&a, &b])
    );
    eprintln!(
        "{ctx}: traffic from site 1 resumed {:.1} s after the restart",
        started.elapsed().as_secs_f64()
    );
    let handshakes_after = completed_handshakes(&a);
    assert!(
        handshakes_after > handshakes_before,
        "{ctx}: traffic resumed without a new handshake? {handshakes_before} completed before, {handshakes_after} after"
    );
    assert_reaches(lab.ns(1), inner6(mode, 2), ctx);
    assert_bulk(lab.ns(1), lab.ns(2), inner4(mode, 2), BULK, &[&a, &b], ctx);
    assert_bulk(lab.ns(2), lab.ns(1), inner6(mode, 1), BULK, &[&a, &b], ctx);
    for d in [a, b] {
        must(d.terminate(), "stopping a site");
    }
}

#[test]
fn traffic_resumes_after_one_side_restarts_from_sigterm() {
    require_root!("traffic_resumes_after_one_side_restarts_from_sigterm");
    restart("restart after SIGTERM", Stop::Term);
}

#[test]
fn traffic_resumes_after_one_side_restarts_from_sigkill() {
    require_root!("traffic_resumes_after_one_side_restarts_from_sigkill");
    restart("restart after SIGKILL", Stop::Kill);
}
