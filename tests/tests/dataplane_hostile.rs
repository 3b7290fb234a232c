//! Hostile datagrams at ringtun's UDP port while a bulk transfer runs:
//! garbage, truncated, replayed and corrupted copies of real tunnel
//! datagrams, forged handshakes, frames for another VNI, frames from a
//! stranger. The daemon stays up, the transfer arrives intact, and
//! `ringtun show --json` counts each kind under its own drop reason.

mod dataplane_lab;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dataplane::status::InterfaceStatus;
use dataplane_lab::{Lab, Underlay, WAN, diagnose, inner4, must, port, wan};
use ringtun_tests::require_root;
use ringtun_tests::ringtun::{Ringtun, TunnelMode, UpOptions};
use ringtun_tests::traffic::{
    BulkReport, BulkTransfer, Capture, CaptureFilter, flip_bit, garbage, send_datagrams,
};

/// Datagrams of each hostile kind.
const EACH: usize = 60;
/// Bytes of the transfer the hostile datagrams are thrown into.
const BULK: u64 = 64 << 20;

/// The counters a test compares, before and after.
fn drops(d: &Ringtun) -> InterfaceStatus {
    must(d.show(), format!("ringtun show in {}", d.netns()))
}

/// Asserts that `reason` rose by at least `min` between two snapshots.
fn assert_rose(
    before: &InterfaceStatus,
    after: &InterfaceStatus,
    reason: &str,
    min: u64,
    ctx: &str,
) {
    let (b, a) = (before.drop_count(reason), after.drop_count(reason));
    assert!(
        a >= b + min,
        "{ctx}: drop reason {reason} should have risen by at least {min}: {b} before, {a} after; all drops after: {:?}",
        after.drops
    );
}

/// Waits until the transfer has moved some bytes, so that what follows
/// lands in the middle of it.
fn wait_for_progress(bulk: &BulkTransfer, ctx: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while bulk.received_so_far() == 0 {
        assert!(
            !bulk.is_finished() && Instant::now() < deadline,
            "{ctx}: the transfer never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `d` has delivered at least `n` packets from its peers (the
/// data messages captured on its WAN, opened and counted).
fn wait_until_received(d: &Ringtun, n: u64, ctx: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: u64 = drops(d).peers.iter().map(|p| p.rx_packets).sum();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: {} delivered {got} packets from its peers, expected the {n} captured on its WAN",
            d.netns()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the 64 MiB transfer from site 1 to site 2 that the attack runs
/// beside, and waits until it moves.
fn start_bulk(lab: &Lab, mode: TunnelMode, ctx: &str) -> BulkTransfer {
    let bulk = lab.start_bulk(mode, BULK);
    wait_for_progress(&bulk, ctx);
    bulk
}

/// Sends each named set of datagrams from `ns` to `target`: every one
/// must leave, and site 2 (`b`) must survive each set.
fn inject(
    ctx: &str,
    ns: &str,
    target: SocketAddr,
    sets: &[(&str, SocketAddr, &Vec<Vec<u8>>)],
    a: &Ringtun,
    b: &mut Ringtun,
) {
    for (kind, from, set) in sets {
        let sent = must(
            send_datagrams(ns, *from, target, set),
            format!("sending {kind} datagrams"),
        );
        assert_eq!(
            sent,
            set.len(),
            "{ctx}: {kind}: not every datagram was sent"
        );
        assert!(
            b.is_running(),
            "{ctx}: site 2 died after {kind} datagrams{}",
            diagnose(&[a, b])
        );
    }
}

/// The transfer that ran beside the attack: it must arrive intact, and
/// site 2 still be running.
fn finish(ctx: &str, bulk: BulkTransfer, a: &Ringtun, b: &mut Ringtun) -> BulkReport {
    let report = match bulk.join() {
        Ok(r) => r,
        Err(e) => panic!("{ctx}: the transfer failed: {e}{}", diagnose(&[a, b])),
    };
    assert!(report.intact(), "{ctx}: {}", report.summary());
    assert!(b.is_running(), "{ctx}: site 2 died{}", diagnose(&[a, b]));
    report
}

/// Garbage that no parser may take for a message: the first byte is no
/// WireGuard type (1-4) and, with byte 0 clear of the I flag, no VXLAN header.
fn junk(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut d = garbage(0xBAD0 + i as u64, 1 + (i * 97) % 1400);
            d[0] = [0u8, 5, 7, 0x42, 0xff][i % 5];
            d
        })
        .collect()
}

#[test]
fn wireguard_counts_hostile_datagrams_by_reason_and_the_transfer_survives() {
    require_root!("wireguard_counts_hostile_datagrams_by_reason_and_the_transfer_survives");
    let ctx = "wireguard hostile";
    let mode = TunnelMode::WireGuard;
    let lab = Lab::pair("dph");
    let opts = UpOptions {
        workers: Some(2),
        ..UpOptions::default()
    };
    let a = lab.up(1, &lab.conf(mode, 1, &[2], Underlay::V4), &opts);
    let mut b = lab.up(2, &lab.conf(mode, 2, &[1], Underlay::V4), &opts);
    let target = SocketAddr::new(wan(2, Underlay::V4), port(mode));
    let injector = SocketAddr::new(wan(1, Underlay::V4), 0);

    // Real datagrams from site 1 to site 2, captured on site 2's WAN while
    // pings flow: the handshake, then one data message per echo.
    let mut capture = must(
        Capture::start(
            lab.ns(2),
            WAN,
            CaptureFilter {
                dst_port: Some(port(mode)),
                dst_addr: Some(target.ip()),
                ..CaptureFilter::default()
            },
        ),
        "starting the capture",
    );
    dataplane_lab::assert_reaches(lab.ns(1), inner4(mode, 2), ctx);
    for _ in 0..8 {
        ringtun_tests::ping(lab.ns(1), &inner4(mode, 2).to_string());
    }
    let seen = must(capture.collect(64, Duration::from_secs(3)), "capturing");
    drop(capture);
    let data: Vec<Vec<u8>> = seen
        .into_iter()
        .map(|c| c.payload)
        .filter(|p| p.len() >= 32 && p[..4] == [4, 0, 0, 0])
        .collect();
    assert!(
        data.len() >= 4,
        "{ctx}: expected at least 4 captured data messages from site 1, got {}",
        data.len()
    );
    // Let the originals arrive first: an early copy would be accepted,
    // not replayed.
    // (Keepalives, 32 bytes, carry nothing to deliver and are not counted.)
    let carrying = data.iter().filter(|d| d.len() > 32).count() as u64;
    wait_until_received(&b, carrying, ctx);

    let before = drops(&b);
    let bulk = start_bulk(&lab, mode, ctx);

    let replays: Vec<Vec<u8>> = data.iter().cycle().take(EACH).cloned().collect();
    // Bits in the ciphertext (after the 16-byte header): the tag fails.
    let flipped: Vec<Vec<u8>> = (0..EACH)
        .map(|i| {
            let d = &data[i % data.len()];
            flip_bit(d, 16 * 8 + (i * 131) % ((d.len() - 16) * 8))
        })
        .collect();
    // A bit of the receiver index: no such session.
    let unknown: Vec<Vec<u8>> = (0..EACH)
        .map(|i| flip_bit(&data[i % data.len()], 4 * 8 + i % 32))
        .collect();
    // Shorter than the 32-byte minimum of a data message.
    let truncated: Vec<Vec<u8>> = (0..EACH)
        .map(|i| data[i % data.len()][..4 + i % 28].to_vec())
        .collect();
    // Initiations of the right size with no valid MAC1.
    let forged: Vec<Vec<u8>> = (0..EACH)
        .map(|i| {
            let mut d = garbage(0xF0F0 + i as u64, 148);
            d[..4].copy_from_slice(&[1, 0, 0, 0]);
            d
        })
        .collect();
    let junk = junk(EACH);
    inject(
        ctx,
        lab.ns(1),
        target,
        &[
            ("garbage", injector, &junk),
            ("truncated", injector, &truncated),
            ("replayed", injector, &replays),
            ("bit-flipped", injector, &flipped),
            ("unknown-index", injector, &unknown),
            ("forged initiation", injector, &forged),
        ],
        &a,
        &mut b,
    );
    let report = finish(ctx, bulk, &a, &mut b);
    let after = drops(&b);
    let n = EACH as u64;
    assert_rose(&before, &after, "malformed", 2 * n, ctx);
    assert_rose(&before, &after, "replay", n, ctx);
    assert_rose(&before, &after, "auth_failed", 2 * n, ctx);
    assert_rose(&before, &after, "unknown_index", n, ctx);
    eprintln!("{ctx}: {}; drops {:?}", report.summary(), after.drops);

    // And it still works afterwards, both ways.
    dataplane_lab::assert_reaches(lab.ns(2), inner4(mode, 1), ctx);
    for d in [a, b] {
        must(d.terminate(), "stopping a site");
    }
}

#[test]
fn vxlan_counts_hostile_datagrams_by_reason_and_the_transfer_survives() {
    require_root!("vxlan_counts_hostile_datagrams_by_reason_and_the_transfer_survives");
    let ctx = "vxlan hostile";
    let mode = TunnelMode::Vxlan;
    let lab = Lab::pair("dpv");
    let opts = UpOptions {
        workers: Some(2),
        ..UpOptions::default()
    };
    let a = lab.up(1, &lab.conf(mode, 1, &[2], Underlay::V4), &opts);
    let mut b = lab.up(2, &lab.conf(mode, 2, &[1], Underlay::V4), &opts);
    let target = SocketAddr::new(wan(2, Underlay::V4), port(mode));
    let from_peer = SocketAddr::new(wan(1, Underlay::V4), 0);
    // A stranger on site 1's WAN: an address no VTEP has.
    let stranger: IpAddr = "192.0.2.99".parse().unwrap_or_else(|e| panic!("{e}"));
    let nl = must(netctl::Netlink::in_netns(lab.ns(1)), "netlink in site 1");
    must(
        nl.addr_add(WAN, must(netctl::IpPrefix::new(stranger, 24), "prefix")),
        "adding the stranger's address",
    );
    dataplane_lab::assert_reaches(lab.ns(1), inner4(mode, 2), ctx);

    let before = drops(&b);
    let bulk = start_bulk(&lab, mode, ctx);

    let frame = |vni: u32, len: usize, seed: u64| {
        let mut d = garbage(seed, len);
        d[..8].copy_from_slice(&[
            0x08,
            0,
            0,
            0,
            (vni >> 16) as u8,
            (vni >> 8) as u8,
            vni as u8,
            0,
        ]);
        d
    };
    let truncated: Vec<Vec<u8>> = (0..EACH).map(|i| vec![0x08; i % 8]).collect();
    let wrong_vni: Vec<Vec<u8>> = (0..EACH)
        .map(|i| frame(dataplane_lab::VNI + 1 + i as u32, 60 + i * 13, i as u64))
        .collect();
    let foreign: Vec<Vec<u8>> = (0..EACH)
        .map(|i| frame(dataplane_lab::VNI, 60 + i * 7, 0xF00 + i as u64))
        .collect();
    let junk = junk(EACH);
    inject(
        ctx,
        lab.ns(1),
        target,
        &[
            ("garbage", from_peer, &junk),
            ("truncated", from_peer, &truncated),
            ("wrong VNI", from_peer, &wrong_vni),
            ("from a stranger", SocketAddr::new(stranger, 0), &foreign),
        ],
        &a,
        &mut b,
    );
    let report = finish(ctx, bulk, &a, &mut b);
    let after = drops(&b);
    let n = EACH as u64;
    assert_rose(&before, &after, "malformed", 2 * n, ctx);
    assert_rose(&before, &after, "wrong_vni", n, ctx);
    assert_rose(&before, &after, "disallowed_source", n, ctx);
    eprintln!("{ctx}: {}; drops {:?}", report.summary(), after.drops);
    for d in [a, b] {
        must(d.terminate(), "stopping a site");
    }
}
