//! Handshake storms at gateway B while real traffic needs it.
//!
//! One source: 5,000 initiations a second with a valid MAC1 from the
//! attacker's one address, a rate the control thread keeps up with (so
//! the backlog never says "under load"), while gateway A starts again and
//! must handshake through it. ringtun must answer with cookie replies
//! within the first second and spend at most a tenth of a core on it.
//!
//! Many sources: initiations with a valid MAC1 from 1,000 addresses of
//! the attacker's subnet (a raw socket writing its own source addresses)
//! across the moment the session is due for its rekey, while a paced,
//! hashed transfer runs: the transfer arrives whole, the rekey happens,
//! and the control thread keeps answering `ringtun show` within 100 ms.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use netctl::{IpPrefix, Netlink, Route};
use ringtun_tests::ringtun::{Conf, lab_uapi_dir};
use ringtun_tests::traffic::{self, BulkOptions};

use super::checks::{self, Ctx, drop_deltas, socket_in};
use super::hostile::{self, Pace, SpoofingSender};
use super::lab::{Sites, l3, wan};
use super::pair::Pair;
use super::relay::SplitMix64;
use super::rows::AttackerAddr;
use crate::bench::cpu;

/// The one-source row.
pub const ONE_SOURCE: &str = "hostile: 5,000 initiations/s from one address";
/// The many-sources row.
pub const MANY_SOURCES: &str = "hostile: initiations from 1,000 addresses across a rekey";

/// The one-source flood's rate and length (long enough for gateway A's
/// handshake through it: a cookie round trip costs REKEY_TIMEOUT, 5 s).
const ONE_RATE: u64 = 5_000;
const ONE_FOR: Duration = Duration::from_secs(10);
/// Cookie replies must start within this.
const COOKIES_WITHIN: Duration = Duration::from_secs(1);
/// The daemon's CPU during the flood, in cores.
const CPU_BUDGET: f64 = 0.10;

/// The many-sources flood: how many addresses, and how fast in all.
const SOURCES: u32 = 1_000;
const MANY_RATE: u64 = 10_000;
/// The attacker's subnet (RFC 2544's benchmarking range), routed from
/// gateway B to gateway A for the row, so that no reverse-path filter
/// drops the datagrams before ringtun sees them.
const SPOOFED_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const SPOOFED_PREFIX: u8 = 22;
/// `ringtun show` must answer within this throughout, on top of the
/// longest wait the unflooded gateway saw in the same run (the machine's).
const SHOW_WITHIN: Duration = Duration::from_millis(100);
const SHOW_EVERY: Duration = Duration::from_millis(50);
/// The transfer's pace: enough to keep sessions busy, little CPU.
const PACE: u64 = 8 << 20;
/// WireGuard's REKEY_AFTER_TIME, and the room after it for a cookie
/// round trip (REKEY_TIMEOUT plus jitter) and one lost initiation.
const REKEY_AFTER: u64 = 120;
const REKEY_ROOM: u64 = 25;

/// Runs the rows the filters select, on a pair of their own started
/// from `confs`; `b_public` is gateway B's public key (base64).
pub fn rows(ctx: &mut Ctx, s: &Sites, confs: (Conf, Conf), b_public: &str) -> Result<()> {
    let names = [ONE_SOURCE, MANY_SOURCES];
    if !ctx.wants_any(&names) {
        return Ok(());
    }
    ctx.interrupted()?;
    let public: [u8; 32] = tunnel_proto::PublicKey::from_base64(b_public)
        .context("gateway B's public key")?
        .as_bytes()
        .to_owned();
    let mut pair = match Pair::start(ctx, s, confs, false) {
        Ok(p) => p,
        Err(e) => {
            for n in names {
                if ctx.wants(n) {
                    ctx.table.fail(n, format!("ringtun up: {e:#}"));
                }
            }
            return Ok(());
        }
    };
    let echo = checks::ping_until(&s.lan_a, l3::LAN_B4, Duration::from_secs(10))?;
    if !echo.is_reply() {
        for n in names {
            if ctx.wants(n) {
                ctx.table.fail(
                    n,
                    format!("no session to start from: lan-a -> lan-b {echo:?}"),
                );
            }
        }
        pair.stop_row(ctx);
        return Ok(());
    }
    if ctx.wants(ONE_SOURCE) {
        match one_source(ctx, s, &mut pair, &public) {
            Ok((ok, fig)) => ctx.table.check(ONE_SOURCE, ok, fig),
            Err(e) => ctx.table.fail(ONE_SOURCE, format!("{e:#}")),
        }
    }
    if ctx.wants(MANY_SOURCES) {
        ctx.interrupted()?;
        match many_sources(ctx, s, &pair, &public) {
            Ok((ok, fig)) => ctx.table.check(MANY_SOURCES, ok, fig),
            Err(e) => ctx.table.fail(MANY_SOURCES, format!("{e:#}")),
        }
    }
    pair.stop_row(ctx);
    Ok(())
}

/// Gateway A stops; the flood starts; once gateway B answers it with
/// cookies, gateway A starts again and must reach lan-b through it.
fn one_source(
    ctx: &mut Ctx,
    s: &Sites,
    pair: &mut Pair,
    public: &[u8; 32],
) -> Result<(bool, String)> {
    let b = pair
        .b
        .as_ref()
        .context("gateway B's ringtun is not running")?;
    let b_pid = b.pid();
    let before = b.show()?;
    let _attacker = AttackerAddr::add(&s.gw_a)?;
    let sock = socket_in(&s.gw_a, SocketAddr::new(wan::ATTACKER_IP, 0))?;
    pair.stop_a()?;
    let dst = wan::at(wan::B4, l3::PORT);
    let mut rng = SplitMix64(ctx.rng.next_u64());
    let public = *public;
    let ticks_before = cpu::process_ticks(&[b_pid]);
    let started = Instant::now();
    let flood = std::thread::spawn(move || {
        hostile::initiation_flood(
            &sock,
            dst,
            &public,
            Pace::Steady {
                per_second: ONE_RATE,
                lasting: ONE_FOR,
            },
            Duration::from_millis(300),
            &mut rng,
        )
    });
    // Gateway A comes back once the flood is being answered with cookies
    // (or after a few seconds without: the row then fails on its figures).
    let b = pair
        .b
        .as_ref()
        .context("gateway B's ringtun is not running")?;
    let cookies = |st: &dataplane::status::InterfaceStatus| {
        drop_deltas(&before, st)
            .iter()
            .filter(|(n, _)| n == "cookie_required")
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    while started.elapsed() < Duration::from_secs(5) {
        if b.show().is_ok_and(|st| cookies(&st) > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pair.start_a()?;
    let a_started = Instant::now();
    let echo = checks::ping_until(&s.lan_a, l3::LAN_B4, ONE_FOR + Duration::from_secs(10))?;
    let handshake_took = a_started.elapsed();
    let report = flood
        .join()
        .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?
        .context("flooding gateway B")?;
    let wall = started.elapsed().as_secs_f64();
    let ticks = cpu::process_ticks(&[b_pid]).saturating_sub(ticks_before);
    let cores = ticks as f64 / cpu::ticks_per_second() / wall;
    let b = pair
        .b
        .as_ref()
        .context("gateway B's ringtun is not running")?;
    let after = b.show()?;
    let d = drop_deltas(&before, &after);
    let get = |r: &str| -> u64 { d.iter().filter(|(n, _)| n == r).map(|(_, v)| *v).sum() };
    let in_time = report
        .first_cookie_reply
        .is_some_and(|t| t <= COOKIES_WITHIN);
    let ok = in_time && cores <= CPU_BUDGET && echo.is_reply() && report.responses == 0;
    Ok((
        ok,
        format!(
            "{report}; gateway B used {cores:.3} of a core over {wall:.1} s (budget {CPU_BUDGET}); \
             gateway A restarted during it reached lan-b {} after {:.1} s; \
             drops cookie_required +{}, rate_limited +{}, queue_full +{}",
            if echo.is_reply() {
                "(handshake through the cookie round trip)"
            } else {
                "NEVER"
            },
            handshake_took.as_secs_f64(),
            get("cookie_required"),
            get("rate_limited"),
            get("queue_full"),
        ),
    ))
}

/// Routes the spoofed subnet from gateway B back to gateway A while it lives.
struct SpoofedRoute {
    ns: String,
    route: Route,
}

impl SpoofedRoute {
    fn add(ns: &str) -> Result<SpoofedRoute> {
        let prefix = IpPrefix::new(IpAddr::V4(SPOOFED_NET), SPOOFED_PREFIX)?;
        let route = Route::to(prefix).via(wan::A4);
        Netlink::in_netns(ns)?.route_add(&route)?;
        Ok(SpoofedRoute {
            ns: ns.to_string(),
            route,
        })
    }
}

impl Drop for SpoofedRoute {
    fn drop(&mut self) {
        if let Ok(nl) = Netlink::in_netns(&self.ns) {
            let _ = nl.route_del(&self.route);
        }
    }
}

/// A flood from [`SOURCES`] spoofed addresses at [`MANY_RATE`] until
/// `stop`; counts what it sent.
fn spoofed_flood(
    sender: SpoofingSender,
    public: [u8; 32],
    mut rng: SplitMix64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let key = hostile::mac1_key(&public);
    let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), l3::PORT);
    let base = u32::from(SPOOFED_NET) + 1;
    let started = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * MANY_RATE as f64) as u64;
        if n >= due {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let src = SocketAddrV4::new(
            Ipv4Addr::from(base + (n % u64::from(SOURCES)) as u32),
            1024 + rng.below(60_000) as u16,
        );
        let m = hostile::forged_initiation(&mut rng, &key);
        if sender.send(src, dst, &m).is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
    }
}

/// The longest `ringtun show` round trip through the socket, and failures.
#[derive(Default)]
struct ShowTimes {
    asked: u64,
    failed: u64,
    longest: Duration,
    first_failure: Option<String>,
}

impl ShowTimes {
    fn ask(&mut self, base: &std::path::Path, iface: &str) {
        let asked = Instant::now();
        let r = dataplane::uapi::client::show_in(Some(base), iface);
        self.asked += 1;
        self.longest = self.longest.max(asked.elapsed());
        if let Err(e) = r {
            self.failed += 1;
            self.first_failure.get_or_insert(e.to_string());
        }
    }
}

/// Where `show` is asked: the flooded gateway, and the other one as the
/// reference for what the machine itself costs (on a busy host every
/// thread waits for a core at times; the flood must not add to that).
struct ShowTargets {
    flooded: (std::path::PathBuf, String),
    reference: (std::path::PathBuf, String),
}

/// Asks both targets in turn every [`SHOW_EVERY`] until `stop`; returns
/// (flooded, reference).
fn probe_show(targets: ShowTargets, stop: Arc<AtomicBool>) -> (ShowTimes, ShowTimes) {
    let (mut flooded, mut reference) = (ShowTimes::default(), ShowTimes::default());
    while !stop.load(Ordering::Relaxed) {
        flooded.ask(&targets.flooded.0, &targets.flooded.1);
        reference.ask(&targets.reference.0, &targets.reference.1);
        std::thread::sleep(SHOW_EVERY);
    }
    (flooded, reference)
}

/// The flood from many addresses across the session's rekey, with a
/// paced transfer and `show` asked every 50 ms.
fn many_sources(
    ctx: &mut Ctx,
    s: &Sites,
    pair: &Pair,
    public: &[u8; 32],
) -> Result<(bool, String)> {
    let b = pair
        .b
        .as_ref()
        .context("gateway B's ringtun is not running")?;
    let before = b.show()?;
    let hs_before = before
        .peers
        .first()
        .and_then(|p| p.latest_handshake_unix)
        .context("gateway B reports no handshake to start from")?;
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // The transfer spans the rekey, due REKEY_AFTER after the handshake.
    let span = (hs_before + REKEY_AFTER + REKEY_ROOM).saturating_sub(now_unix);
    let bytes = PACE * span.max(5);
    let _route = SpoofedRoute::add(&s.gw_b)?;
    let sender = netctl::netns::run_in(&s.gw_a, SpoofingSender::new)?
        .context("a raw socket in gateway A (CAP_NET_RAW)")?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent, public) = (stop.clone(), sent.clone(), *public);
        let rng = SplitMix64(ctx.rng.next_u64());
        std::thread::spawn(move || spoofed_flood(sender, public, rng, stop, sent))
    };
    let a = pair
        .a
        .as_ref()
        .context("gateway A's ringtun is not running")?;
    let prober = {
        let stop = stop.clone();
        let targets = ShowTargets {
            flooded: (lab_uapi_dir(&s.gw_b), b.iface().to_string()),
            reference: (lab_uapi_dir(&s.gw_a), a.iface().to_string()),
        };
        std::thread::spawn(move || probe_show(targets, stop))
    };
    let transfer = traffic::start_tcp_bulk(
        &s.lan_a,
        &s.lan_b,
        l3::LAN_B4,
        &BulkOptions {
            bytes,
            seed: ctx.rng.next_u64(),
            timeout: Duration::from_secs(span * 2 + 60),
            port: 0,
            pace: Some(PACE),
        },
    );
    let report = match transfer {
        Ok(t) => checks::wait_bulk(ctx, t),
        Err(e) => Ok(Err(e)),
    };
    stop.store(true, Ordering::Relaxed);
    let _ = flood.join();
    let (show, reference) = prober
        .join()
        .map_err(|_| anyhow::anyhow!("the show prober panicked"))?;
    let report = report?;
    let b = pair
        .b
        .as_ref()
        .context("gateway B's ringtun is not running")?;
    let after = b.show()?;
    let hs_after = after.peers.first().and_then(|p| p.latest_handshake_unix);
    let rekeyed = hs_after.is_some_and(|t| t > hs_before);
    let d = drop_deltas(&before, &after);
    let get = |r: &str| -> u64 { d.iter().filter(|(n, _)| n == r).map(|(_, v)| *v).sum() };
    let (intact, transfer_fig) = match &report {
        Ok(r) => (r.intact(), checks::bulk_figure(r)),
        Err(e) => (false, format!("transfer failed: {e}")),
    };
    // What the machine alone made the unflooded gateway wait is allowed on
    // top: on an idle host that is a millisecond or two.
    let limit = SHOW_WITHIN + reference.longest;
    let show_ok = show.failed == 0 && show.longest <= limit && show.asked > 0;
    let ok = intact && rekeyed && show_ok;
    Ok((
        ok,
        format!(
            "{transfer_fig}; {} initiations from {SOURCES} addresses; rekey {}; \
             show asked {} times, longest {:.1} ms (limit {} ms + the unflooded \
             gateway's longest, {:.1} ms){}; \
             drops cookie_required +{}, queue_full +{}",
            sent.load(Ordering::Relaxed),
            if rekeyed {
                format!(
                    "done {} s after the last handshake",
                    hs_after.unwrap_or(0) - hs_before
                )
            } else {
                "NOT done".to_string()
            },
            show.asked,
            show.longest.as_secs_f64() * 1e3,
            SHOW_WITHIN.as_millis(),
            reference.longest.as_secs_f64() * 1e3,
            match (&show.first_failure, show.failed) {
                (Some(e), n) => format!(", {n} FAILED (first: {e})"),
                (None, _) => String::new(),
            },
            get("cookie_required"),
            get("queue_full"),
        ),
    ))
}
