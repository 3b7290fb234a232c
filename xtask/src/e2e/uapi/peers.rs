//! Gateway A's second peer, changed with `wg` while the first one
//! carries traffic: `uapi: remove and addconf a second peer` (C removed
//! and added back while transfers run both ways between sites A and B)
//! and `uapi: allowed ips move between peers` (a prefix of B's given to C
//! with `wg set ... allowed-ips`, and traffic to it following).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use dataplane::status::InterfaceStatus;
use netctl::ping::Echo;
use ringtun_tests::traffic::BulkTransfer;

use super::super::checks::{self, Ctx, drop_deltas, fmt_deltas, human};
use super::super::lab::{l3, l3c};
use super::show::prefixes;
use super::{
    Gateways, Keys, MOVE, REMOVE_ADD, Sites3, Wg, iface, measured_rate, own_c, peer_c_at_a,
    peer_section, size_for, verdict,
};
use crate::peers::write_private;

/// Each transfer runs about this long, at half the rate measured for one
/// (the two share the path), so that both outlast the changes (about 5 s).
const SECONDS: f64 = 10.0;
/// Longer than this without a byte arriving, while a transfer runs, is a
/// stall (TCP's least retransmission timeout is 200 ms; a session lost
/// and made again, or a queue dropped, shows as more).
const MAX_STALL: Duration = Duration::from_secs(1);
/// How long each address of a removed peer must stay silent.
const SILENT: Duration = Duration::from_secs(1);
/// How long a peer added back may take to answer (a handshake first).
const BACK_WITHIN: Duration = Duration::from_secs(10);

/// A pause shorter than this is not noted as a stall.
const NOTED: Duration = Duration::from_millis(50);

/// The stalls of `transfers` of `total` bytes each while they ran (no
/// byte arriving for longer than [`NOTED`] before the last one), as
/// (start, end), sampled every 10 ms until `done`.
fn stalls(transfers: &[&BulkTransfer], total: u64, done: &AtomicBool) -> Vec<(Instant, Instant)> {
    let mut last: Vec<(u64, Instant)> = transfers
        .iter()
        .map(|t| (t.received_so_far(), Instant::now()))
        .collect();
    let mut out = Vec::new();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
        for (t, (bytes, at)) in transfers.iter().zip(last.iter_mut()) {
            let now = t.received_so_far();
            if now != *bytes || now >= total || t.is_finished() {
                if at.elapsed() > NOTED {
                    out.push((*at, Instant::now()));
                }
                *bytes = now;
                *at = Instant::now();
            }
        }
    }
    out.extend(
        last.into_iter()
            .filter(|(_, at)| at.elapsed() > NOTED)
            .map(|(_, at)| (at, Instant::now())),
    );
    out
}

/// The longest of `stalls` that overlap `window`, and the longest of the
/// others.
fn longest(stalls: &[(Instant, Instant)], window: (Instant, Instant)) -> (Duration, Duration) {
    let (mut inside, mut outside) = (Duration::ZERO, Duration::ZERO);
    for &(from, to) in stalls {
        let len = to.saturating_duration_since(from);
        if from <= window.1 && to >= window.0 {
            inside = inside.max(len);
        } else {
            outside = outside.max(len);
        }
    }
    (inside, outside)
}

/// Sets its flag when dropped, on every way out of a scope.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One ping from `ns` to each of `dsts`; which answered.
fn pings(ns: &str, dsts: &[IpAddr], within: Duration) -> Result<Vec<(IpAddr, Echo)>> {
    dsts.iter()
        .map(|&d| Ok((d, checks::ping_until(ns, d, within)?)))
        .collect()
}

/// `addr reply, addr no reply`.
fn fmt_pings(p: &[(IpAddr, Echo)]) -> String {
    p.iter()
        .map(|(d, e)| format!("{d} {}", if e.is_reply() { "replied" } else { "silent" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The peer of `st` with public key `key`.
fn peer<'a>(st: &'a InterfaceStatus, key: &str) -> Option<&'a dataplane::status::PeerStatus> {
    st.peers.iter().find(|p| p.name == key)
}

/// `uapi: remove and addconf a second peer`: while transfers run from
/// lan-a to lan-b and back, `wg set A peer C remove` (C then silent, its
/// traffic dropped), then `wg addconf A` of C's section (C answers again,
/// `ringtun show` lists it). The transfers must arrive whole, never stall
/// and B must need no new handshake.
pub fn remove_add(
    ctx: &mut Ctx,
    s: &Sites3,
    wg: &Wg,
    keys: &Keys,
    gw: &Gateways,
    rate: &mut Option<f64>,
) -> Result<()> {
    if !ctx.wants(REMOVE_ADD) {
        return Ok(());
    }
    ctx.interrupted()?;
    let a = iface('a');
    let c_key = keys.c.public_key.as_str();
    let file = ctx.dir.path().join("peer-c.wg.conf");
    write_private(&file, &peer_section(&peer_c_at_a(keys)))?;
    let file_arg = file.to_string_lossy().into_owned();
    let c_addrs = [l3c::TUN_C4, l3c::TUN_C6, l3c::SITE_C4];
    let bytes = size_for(
        measured_rate(ctx, s, rate)? / 2.0,
        SECONDS,
        256 << 20,
        16 << 30,
    );

    let before = gw.a.show()?;
    let up_first = pings(&s.gw_a, &c_addrs, BACK_WITHIN)?;
    let ab = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, l3::LAN_B4, bytes)?;
    let ba = checks::start_bulk(ctx, &s.lan_b, &s.lan_a, l3::LAN_A4, bytes)?;
    let done = AtomicBool::new(false);
    let (stalls, steps) = std::thread::scope(|scope| {
        let watch = scope.spawn(|| stalls(&[&ab, &ba], bytes, &done));
        let steps = (|| -> Result<_> {
            let _stop_watching = SetOnDrop(&done);
            // A tenth in, with the flows at speed.
            while ab.received_so_far() < bytes / 10 && !ab.is_finished() {
                ctx.interrupted()?;
                std::thread::sleep(Duration::from_millis(5));
            }
            let from = Instant::now();
            let removed = wg.run(&s.gw_a, &["set", &a, "peer", c_key, "remove"]);
            let listed = wg.run(&s.gw_a, &["show", &a, "peers"]);
            let mid = gw.a.show();
            let silent = pings(&s.gw_a, &c_addrs, SILENT)?;
            let mid_after = gw.a.show();
            let added = wg.run(&s.gw_a, &["addconf", &a, &file_arg]);
            let back = pings(&s.gw_a, &c_addrs, BACK_WITHIN)?;
            let running = !ab.is_finished() && !ba.is_finished();
            let window = (from, Instant::now());
            while !(ab.is_finished() && ba.is_finished()) {
                ctx.interrupted()?;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((
                removed, listed, mid, silent, mid_after, added, back, running, window,
            ))
        })();
        (watch.join().unwrap_or_default(), steps)
    });
    let (removed, listed, mid, silent, mid_after, added, back, running, window) = steps?;
    let (stall, stall_elsewhere) = longest(&stalls, window);
    let r_ab = checks::wait_bulk(ctx, ab)?;
    let r_ba = checks::wait_bulk(ctx, ba)?;
    let after = gw.a.show()?;

    let mut wrong = Vec::new();
    if up_first.iter().any(|(_, e)| !e.is_reply()) {
        wrong.push(format!("C before the removal: {}", fmt_pings(&up_first)));
    }
    if let Err(e) = &removed {
        wrong.push(format!("wg set peer C remove: {e:#}"));
    }
    match &listed {
        Ok(l) if l.contains(c_key) => wrong.push("wg show peers still lists C".into()),
        Ok(_) => {}
        Err(e) => wrong.push(format!("wg show peers: {e:#}")),
    }
    let mut dropped = String::new();
    match (&mid, &mid_after) {
        (Ok(m), Ok(ma)) => {
            if peer(m, c_key).is_some() {
                wrong.push("ringtun show still lists C after the removal".into());
            }
            let d = drop_deltas(m, ma);
            dropped = fmt_deltas(&d);
            if !d.iter().any(|(n, v)| n == "no_route" && *v > 0) {
                wrong.push(format!(
                    "pings to the removed C were not dropped as no_route ({dropped})"
                ));
            }
        }
        (m, ma) => wrong.push(format!("ringtun show while C was removed: {m:?} {ma:?}")),
    }
    if silent.iter().any(|(_, e)| e.is_reply()) {
        wrong.push(format!("C answered while removed: {}", fmt_pings(&silent)));
    }
    if let Err(e) = &added {
        wrong.push(format!("wg addconf: {e:#}"));
    }
    if back.iter().any(|(_, e)| !e.is_reply()) {
        wrong.push(format!("C after addconf: {}", fmt_pings(&back)));
    }
    match peer(&after, c_key) {
        None => wrong.push("ringtun show does not list C again".into()),
        Some(p) => {
            let got = prefixes(p.allowed_ips.iter().map(String::as_str));
            let want = prefixes(own_c());
            if !matches!((&got, &want), (Ok(g), Ok(w)) if g == w) {
                wrong.push(format!(
                    "ringtun show lists C with allowed ips {got:?}, addconf gave {want:?}"
                ));
            }
        }
    }
    let b_key = keys.b.public_key.as_str();
    let b_hs = |st: &InterfaceStatus| peer(st, b_key).map_or(0, |p| p.handshakes);
    let b_new = b_hs(&after).saturating_sub(b_hs(&before));
    if b_new != 0 {
        wrong.push(format!("{b_new} new handshake(s) with B"));
    }
    if !running {
        wrong.push("a transfer ended before C was back: make it longer".into());
    }
    if stall > MAX_STALL {
        wrong.push(format!(
            "a transfer stalled for {:.2} s during the changes (at most {MAX_STALL:?})",
            stall.as_secs_f64()
        ));
    }
    let mut figs = Vec::new();
    for (dir, r) in [("a->b", &r_ab), ("b->a", &r_ba)] {
        match r {
            Ok(r) if r.intact() => {
                figs.push(format!("{dir} {:.2} Gbit/s, sha256 equal", r.gbit_per_s()))
            }
            Ok(r) => wrong.push(format!("{dir}: {}", checks::bulk_figure(r))),
            Err(e) => wrong.push(format!("{dir}: {e}")),
        }
    }
    let figure = format!(
        "during {} each way ({}): after `wg set peer C remove`, {:.1} s each: {} (drops {dropped}); \
         after addconf {}; longest stall during the changes {:.0} ms (elsewhere in the transfers \
         {:.0} ms); new handshakes with B {b_new}",
        human(bytes),
        figs.join(", "),
        SILENT.as_secs_f64(),
        fmt_pings(&silent),
        fmt_pings(&back),
        stall.as_secs_f64() * 1e3,
        stall_elsewhere.as_secs_f64() * 1e3
    );
    verdict(ctx, REMOVE_ADD, &wrong, &figure);
    Ok(())
}

/// Bytes of the echo requests [`move_prefix`] sends: one of each family,
/// 56 bytes of payload (84 and 104 bytes as packets).
const ECHO_BYTES: u64 = 84 + 104;

/// Bytes sent to B and to C at gateway A.
fn tx(st: &InterfaceStatus, keys: &Keys) -> (u64, u64) {
    let get = |k: &str| peer(st, k).map_or(0, |p| p.tx_bytes);
    (get(&keys.b.public_key), get(&keys.c.public_key))
}

/// `uapi: allowed ips move between peers`: gateway A sends the shared
/// prefix (held by gw-b and gw-c alike) to B; `wg set A peer C
/// allowed-ips SHARED,C's own` moves it: `wg show` lists it under C only,
/// and pings of the shared address now go to C (its tx counter at A rises
/// by them, B's does not) and are answered.
pub fn move_prefix(ctx: &mut Ctx, s: &Sites3, wg: &Wg, keys: &Keys, gw: &Gateways) -> Result<()> {
    if !ctx.wants(MOVE) {
        return Ok(());
    }
    ctx.interrupted()?;
    let a = iface('a');
    let shared = [l3c::SHARED4, l3c::SHARED6];
    let mut wrong = Vec::new();

    // Before: to B.
    let t0 = tx(&gw.a.show()?, keys);
    let to_b = pings(&s.gw_a, &shared, Duration::from_secs(10))?;
    let t1 = tx(&gw.a.show()?, keys);
    let (b1, c1) = (t1.0.saturating_sub(t0.0), t1.1.saturating_sub(t0.1));
    if to_b.iter().any(|(_, e)| !e.is_reply()) || b1 < ECHO_BYTES || c1 >= ECHO_BYTES {
        wrong.push(format!(
            "before the move: {}; tx to B +{b1} B, to C +{c1} B (expected B at least {ECHO_BYTES}, C less)",
            fmt_pings(&to_b)
        ));
    }

    let mut moved: Vec<&str> = l3c::SHARED_NETS.to_vec();
    moved.extend(own_c());
    let list = moved.join(",");
    if let Err(e) = wg.run(
        &s.gw_a,
        &["set", &a, "peer", &keys.c.public_key, "allowed-ips", &list],
    ) {
        ctx.table.fail(MOVE, format!("wg set allowed-ips: {e:#}"));
        return Ok(());
    }
    let listed = wg.run(&s.gw_a, &["show", &a, "allowed-ips"])?;
    let under = |key: &str| -> String {
        listed
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .to_string()
    };
    let (at_b, at_c) = (under(&keys.b.public_key), under(&keys.c.public_key));
    let holds = |list: &str, p: &str| list.split_whitespace().any(|x| x == p);
    for p in l3c::SHARED_NETS {
        if holds(&at_b, p) || !holds(&at_c, p) {
            wrong.push(format!(
                "wg show allowed-ips: {p} under B: {}, under C: {}",
                holds(&at_b, p),
                holds(&at_c, p)
            ));
        }
    }

    // After: to C.
    let to_c = pings(&s.gw_a, &shared, Duration::from_secs(10))?;
    let t2 = tx(&gw.a.show()?, keys);
    let (b2, c2) = (t2.0.saturating_sub(t1.0), t2.1.saturating_sub(t1.1));
    if to_c.iter().any(|(_, e)| !e.is_reply()) || c2 < ECHO_BYTES || b2 >= ECHO_BYTES {
        wrong.push(format!(
            "after the move: {}; tx to C +{c2} B, to B +{b2} B (expected C at least {ECHO_BYTES}, B less)",
            fmt_pings(&to_c)
        ));
    }
    let figure = format!(
        "pings of {} and {}: before, tx to B +{b1} B and to C +{c2_before} B; after `wg set peer C \
         allowed-ips {list}`, to C +{c2} B and to B +{b2} B ({}); wg show allowed-ips checked",
        l3c::SHARED4,
        l3c::SHARED6,
        fmt_pings(&to_c),
        c2_before = c1
    );
    verdict(ctx, MOVE, &wrong, &figure);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_told_apart_by_the_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let stalls = [(at(0), at(300)), (at(1000), at(1100)), (at(2500), at(2600))];
        let (inside, outside) = longest(&stalls, (at(900), at(2000)));
        assert_eq!(inside, Duration::from_millis(100));
        assert_eq!(outside, Duration::from_millis(300));
        assert_eq!(
            longest(&[], (at(0), at(1))),
            (Duration::ZERO, Duration::ZERO)
        );
    }
}
