//! `vxlan` mode: one LAN stretched over both sites. ringtun on both
//! gateways (offloads on and off, lossy WAN, restarts, hostile input,
//! frame sizes), then the Linux kernel's vxlan device on gateway B against
//! ringtun on gateway A.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use netctl::Netlink;
use ringtun_tests::ringtun::{Conf, PeerConf, Ringtun, UpOptions};
use ringtun_tests::traffic::{Capture, CaptureFilter};

use super::checks::{self, Ctx, Stop, drop_deltas, fmt_deltas, reach, socket_in};
use super::hostile;
use super::lab::{self, l2, wan};
use super::peers::KernelVxlan;
use super::probe::Probe;
use super::relay::Impairment;
use super::wireguard::{AttackerAddr, Sites, probe_retry, start_relay};

const MODE: &str = "vxlan";
/// Time allowed for the first ping (ARP/ND across the overlay).
const FIRST_REPLY: Duration = Duration::from_secs(5);
/// The payload of the largest UDP datagram that fits the LAN MTU (IPv4).
const MAX_UDP_PAYLOAD: usize = l2::MTU as usize - 28;

fn conf(vtep: SocketAddr) -> Conf {
    Conf::vxlan(l2::VNI)
        .listen_port(l2::PORT)
        .bridge("br-lan")
        .mtu(l2::MTU)
        .peer(PeerConf::vtep(vtep))
}

/// A ringtun on each gateway.
struct Pair {
    a: Option<Ringtun>,
    b: Option<Ringtun>,
    a_path: PathBuf,
    b_path: PathBuf,
    up: UpOptions,
}

impl Pair {
    fn start(
        ctx: &Ctx,
        s: &Sites,
        to_b: SocketAddr,
        to_a: SocketAddr,
        no_offload: bool,
    ) -> Result<Pair> {
        let a_path = conf(to_b).write(ctx.dir.path(), "rt-a")?;
        let b_path = conf(to_a).write(ctx.dir.path(), "rt-b")?;
        let up = ctx.up_options(no_offload);
        let a = Ringtun::up(&s.gw_a, &a_path, &up)?;
        let b = Ringtun::up(&s.gw_b, &b_path, &up)?;
        Ok(Pair {
            a: Some(a),
            b: Some(b),
            a_path,
            b_path,
            up,
        })
    }

    fn stop(mut self) -> Result<()> {
        let mut first = None;
        for d in [self.a.take(), self.b.take()].into_iter().flatten() {
            if let Err(e) = checks::terminate(d) {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn stop_row(ctx: &mut Ctx, pair: Pair) {
    if let Err(e) = pair.stop() {
        ctx.table
            .fail("ringtun stops cleanly on SIGTERM", format!("{e:#}"));
    }
}

/// Runs every vxlan-mode row the filters select.
pub fn run(ctx: &mut Ctx, peer_filter: &dyn Fn(&str) -> bool) -> Result<()> {
    ctx.table.context(MODE, "-");
    let lab = lab::apply("two-sites-l2.toml", "vx", ctx.opts.keep)?;
    let s = Sites::of(&lab);
    ctx.table.set_diagnostics(Some(checks::show_gateways(vec![
        s.gw_a.clone(),
        s.gw_b.clone(),
    ])));
    checks::unreachable(
        ctx,
        "isolation: no path between the LANs without a tunnel",
        &[
            (&s.lan_a, l2::LAN_B4, "a->b v4"),
            (&s.lan_a, l2::LAN_B6, "a->b v6"),
        ],
    )?;
    if peer_filter("ringtun") {
        ringtun_pair(ctx, &s)?;
    }
    if peer_filter("kernel") {
        kernel(ctx, &s)?;
    }
    ctx.table.set_diagnostics(None);
    drop(lab);
    Ok(())
}

fn reach_all(ctx: &mut Ctx, s: &Sites, suffix: &str) -> Result<()> {
    reach(
        ctx,
        &format!("reach lan v4{suffix}"),
        &[
            (&s.lan_a, l2::LAN_B4, "a->b"),
            (&s.lan_b, l2::LAN_A4, "b->a"),
        ],
        FIRST_REPLY,
    )?;
    reach(
        ctx,
        &format!("reach lan v6{suffix}"),
        &[
            (&s.lan_a, l2::LAN_B6, "a->b"),
            (&s.lan_b, l2::LAN_A6, "b->a"),
        ],
        FIRST_REPLY,
    )?;
    reach(
        ctx,
        &format!("reach gateway bridges v4{suffix}"),
        &[
            (&s.gw_a, l2::GW_B4, "gw a->b"),
            (&s.gw_b, l2::GW_A4, "gw b->a"),
        ],
        FIRST_REPLY,
    )?;
    reach(
        ctx,
        &format!("reach gateway bridges v6{suffix}"),
        &[
            (&s.gw_a, l2::GW_B6, "gw a->b"),
            (&s.gw_b, l2::GW_A6, "gw b->a"),
        ],
        FIRST_REPLY,
    )
}

fn bulk_both(ctx: &mut Ctx, s: &Sites, suffix: &str, bytes: u64) -> Result<()> {
    checks::bulk(
        ctx,
        &format!("bulk tcp a->b{suffix}"),
        &s.lan_a,
        &s.lan_b,
        l2::LAN_B4,
        bytes,
    )?;
    checks::bulk(
        ctx,
        &format!("bulk tcp b->a{suffix}"),
        &s.lan_b,
        &s.lan_a,
        l2::LAN_A4,
        bytes,
    )?;
    Ok(())
}

fn direct() -> (SocketAddr, SocketAddr) {
    (wan::at(wan::B4, l2::PORT), wan::at(wan::A4, l2::PORT))
}

fn ringtun_pair(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    ctx.table.context(MODE, "ringtun");
    let bulk = ctx.opts.bulk_size;
    let main_checks = [
        "ringtun up (offloads on)",
        "reach lan v4",
        "reach lan v6",
        "reach gateway bridges v4",
        "reach gateway bridges v6",
        "bulk tcp a->b",
        "bulk tcp b->a",
        "udp burst a->b",
        "size: full-size 1450 B frame crosses",
        "size: oversized frame is dropped and counted",
        "hostile: transfer intact under attack",
        "hostile: drops counted by reason",
        "restart gw-a by SIGTERM mid-transfer",
        "restart gw-b by SIGKILL mid-transfer",
    ];
    let (to_b, to_a) = direct();
    if ctx.wants_any(&main_checks) {
        match Pair::start(ctx, s, to_b, to_a, false) {
            Err(e) => ctx.table.fail(main_checks[0], format!("{e:#}")),
            Ok(mut pair) => {
                if ctx.wants(main_checks[0]) {
                    let st = pair.a.as_ref().map(|a| a.show()).transpose()?;
                    let offloads = st.map(|s| s.offloads.join(" ")).unwrap_or_default();
                    ctx.table.check(
                        main_checks[0],
                        offloads.contains("udp-gso"),
                        format!("offloads: {offloads}"),
                    );
                }
                reach_all(ctx, s, "")?;
                bulk_both(ctx, s, "", bulk)?;
                checks::udp(
                    ctx,
                    "udp burst a->b",
                    &s.lan_a,
                    &s.lan_b,
                    l2::LAN_B4,
                    MAX_UDP_PAYLOAD,
                )?;
                sizes(ctx, s)?;
                if let Some(b) = pair.b.as_mut() {
                    checks::guarded(ctx, "hostile input", |ctx| hostile_vxlan(ctx, s, b))?;
                }
                let (path, ns, up) = (pair.a_path.clone(), s.gw_a.clone(), pair.up.clone());
                checks::restart(
                    ctx,
                    "restart gw-a by SIGTERM mid-transfer",
                    &mut pair.a,
                    Stop::Term,
                    &|| Ok(Ringtun::up(&ns, &path, &up)?),
                    &s.lan_a,
                    &s.lan_b,
                    l2::LAN_B4,
                )?;
                let (path, ns, up) = (pair.b_path.clone(), s.gw_b.clone(), pair.up.clone());
                checks::restart(
                    ctx,
                    "restart gw-b by SIGKILL mid-transfer",
                    &mut pair.b,
                    Stop::Kill,
                    &|| Ok(Ringtun::up(&ns, &path, &up)?),
                    &s.lan_a,
                    &s.lan_b,
                    l2::LAN_B4,
                )?;
                stop_row(ctx, pair);
            }
        }
    }

    let suffix = " [--no-offload]";
    let checks_no = [
        "ringtun up --no-offload",
        "reach lan v4 [--no-offload]",
        "bulk tcp a->b [--no-offload]",
        "bulk tcp b->a [--no-offload]",
        "udp burst a->b [--no-offload]",
    ];
    if ctx.wants_any(&checks_no) {
        ctx.interrupted()?;
        match Pair::start(ctx, s, to_b, to_a, true) {
            Err(e) => ctx.table.fail(checks_no[0], format!("{e:#}")),
            Ok(pair) => {
                if ctx.wants(checks_no[0]) {
                    let st = pair.a.as_ref().map(|a| a.show()).transpose()?;
                    let offloads = st.map(|s| s.offloads).unwrap_or_default();
                    ctx.table.check(
                        checks_no[0],
                        offloads.is_empty(),
                        if offloads.is_empty() {
                            "offloads: none".to_string()
                        } else {
                            format!("offloads still on: {}", offloads.join(" "))
                        },
                    );
                }
                reach(
                    ctx,
                    checks_no[1],
                    &[
                        (&s.lan_a, l2::LAN_B4, "a->b"),
                        (&s.lan_b, l2::LAN_A4, "b->a"),
                    ],
                    FIRST_REPLY,
                )?;
                bulk_both(ctx, s, suffix, bulk)?;
                checks::udp(
                    ctx,
                    checks_no[4],
                    &s.lan_a,
                    &s.lan_b,
                    l2::LAN_B4,
                    MAX_UDP_PAYLOAD,
                )?;
                stop_row(ctx, pair);
            }
        }
    }

    let check = "lossy wan 1%: bulk tcp a->b";
    if ctx.wants(check) {
        ctx.interrupted()?;
        let imp = Impairment {
            loss: 0.01,
            ..Impairment::default()
        };
        match start_relay(ctx, &s.gw_b, imp, l2::PORT) {
            Err(e) => ctx.table.fail(check, format!("starting the relay: {e:#}")),
            Ok(relay) => {
                let (ra, rb) = wan::RELAY_PORTS;
                match Pair::start(ctx, s, wan::at(wan::B4, ra), wan::at(wan::B4, rb), false) {
                    Err(e) => ctx.table.fail(check, format!("{e:#}")),
                    Ok(pair) => {
                        let outcome = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, l2::LAN_B4, bulk)
                            .and_then(|t| checks::wait_bulk(ctx, t));
                        let fig = |r: &str| {
                            format!(
                                "{imp}: {r}; relay a->b {}, b->a {}",
                                relay.a_to_b(),
                                relay.b_to_a()
                            )
                        };
                        match outcome {
                            Ok(Ok(r)) => {
                                let lost = relay.a_to_b().lost + relay.b_to_a().lost;
                                ctx.table.check(
                                    check,
                                    r.intact() && lost > 0,
                                    fig(&checks::bulk_figure(&r)),
                                );
                            }
                            Ok(Err(e)) => ctx.table.fail(check, fig(&e.to_string())),
                            Err(e) => ctx.table.fail(check, fig(&format!("{e:#}"))),
                        }
                        stop_row(ctx, pair);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Frame sizes: a full-size frame (1450-byte IP packet) crosses in both
/// families; a host wrongly set to MTU 1500 sends a 1514-byte frame that
/// the LAN (MTU 1450) drops at the gateway's port and counts.
fn sizes(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    let check = "size: full-size 1450 B frame crosses";
    if ctx.wants(check) {
        let v4 = probe_retry(&s.lan_a, l2::LAN_B4, l2::MTU as usize)?;
        let v6 = probe_retry(&s.lan_a, l2::LAN_B6, l2::MTU as usize)?;
        let ok = matches!(v4, Probe::Reply { .. }) && matches!(v6, Probe::Reply { .. });
        ctx.table.check(
            check,
            ok,
            format!("{} B with DF a->b: v4 {v4}, v6 {v6}", l2::MTU),
        );
    }
    let check = "size: oversized frame is dropped and counted";
    if ctx.wants(check) {
        let host = Netlink::in_netns(&s.lan_a)?;
        let gw = Netlink::in_netns(&s.gw_a)?;
        host.set_mtu("eth0", 1500)?;
        let before = (host.link_stats("eth0")?, gw.link_stats("lan0")?);
        let p = super::probe::probe_in(&s.lan_a, l2::LAN_B4, 1500, Duration::from_secs(2));
        let after = (host.link_stats("eth0")?, gw.link_stats("lan0")?);
        host.set_mtu("eth0", l2::MTU)?;
        let p = p?;
        let tx = after.0.tx_dropped.saturating_sub(before.0.tx_dropped);
        let rx = after.1.rx_dropped.saturating_sub(before.1.rx_dropped);
        let ok = !matches!(p, Probe::Reply { .. }) && (tx > 0 || rx > 0);
        ctx.table.check(
            check,
            ok,
            format!(
                "1500 B IP (1514 B frame) from a host set to MTU 1500: {p}; \
                 lan-a eth0 tx_dropped +{tx}, gw-a lan0 rx_dropped +{rx}"
            ),
        );
    }
    Ok(())
}

/// Hostile input at gateway B's VXLAN port while lan-a sends to lan-b.
/// VXLAN has no authentication: what a VTEP's address sends is taken, so
/// the checks are that nothing from elsewhere is, that damaged headers are
/// refused by reason, and that the transfer survives what gets through.
fn hostile_vxlan(ctx: &mut Ctx, s: &Sites, b: &mut Ringtun) -> Result<()> {
    let checks_h = [
        "hostile: transfer intact under attack",
        "hostile: drops counted by reason",
    ];
    if !ctx.wants_any(&checks_h) {
        return Ok(());
    }
    ctx.interrupted()?;
    // Long enough to outlast the hostile input on a fast machine,
    // whatever --bulk-size says: the input must land during the transfer.
    let bytes = 1 << 30;
    let _attacker = AttackerAddr::add(&s.gw_a)?;
    let dst = wan::at(wan::B4, l2::PORT);
    let mut capture = Capture::start(
        &s.gw_b,
        "wan0",
        CaptureFilter {
            dst_port: Some(l2::PORT),
            dst_addr: Some(wan::B4),
            min_len: 64,
            ..CaptureFilter::default()
        },
    )?;
    let before = b.show()?;
    let t = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, l2::LAN_B4, bytes)?;
    let real: Vec<Vec<u8>> = capture
        .collect(256, Duration::from_secs(10))?
        .into_iter()
        .map(|c| c.payload)
        .collect();
    drop(capture);
    // From an address no VTEP has: all refused whatever they hold.
    let stranger = socket_in(&s.gw_a, SocketAddr::new(wan::ATTACKER_IP, 0))?;
    // From gateway A's own address (another port: the kernel's VXLAN
    // varies its source port too), so the headers are what is judged.
    let spoof = socket_in(&s.gw_a, SocketAddr::new(wan::A4, 0))?;
    let random = hostile::random_datagrams(&mut ctx.rng, 2000);
    let truncated: Vec<Vec<u8>> = hostile::truncated(&mut ctx.rng, &real)
        .into_iter()
        .map(|mut d| {
            // Shorter than a VXLAN header plus an Ethernet header.
            d.truncate(d.len().min(8 + 13));
            d
        })
        .collect();
    let wrong_vni: Vec<Vec<u8>> = real
        .iter()
        .map(|d| {
            let mut c = d.clone();
            if c.len() > 6 {
                c[6] ^= 0x01;
            }
            c
        })
        .collect();
    let flipped = hostile::bit_flipped(&mut ctx.rng, &real);
    let n_stranger = hostile::send_all(&stranger, dst, &random);
    let n_random = hostile::send_all(&spoof, dst, &random);
    let n_trunc = hostile::send_all(&spoof, dst, &truncated);
    let n_vni = hostile::send_all(&spoof, dst, &wrong_vni);
    let n_flip = hostile::send_all(&spoof, dst, &flipped);
    let n_replay = hostile::send_all(&spoof, dst, &real);
    let during = !t.is_finished();
    std::thread::sleep(Duration::from_millis(300));
    let mid = b.show()?;
    let report = checks::wait_bulk(ctx, t)?;
    let running = b.is_running();

    if ctx.wants(checks_h[0]) {
        let (ok, fig) = match &report {
            Ok(r) => (
                r.intact() && running && during,
                format!(
                    "{}; ringtun {}; {n_flip} bit-flipped and {n_replay} replayed frames delivered among it; input sent {} the transfer",
                    checks::bulk_figure(r),
                    if running { "still up" } else { "DIED" },
                    if during { "during" } else { "partly AFTER" }
                ),
            ),
            Err(e) => (
                false,
                format!("{e}; ringtun {}", if running { "still up" } else { "DIED" }),
            ),
        };
        ctx.table.check(checks_h[0], ok, fig);
    }
    if ctx.wants(checks_h[1]) {
        let d = drop_deltas(&before, &mid);
        let rose = |r: &str| d.iter().any(|(n, v)| n == r && *v > 0);
        let want = ["disallowed_source", "malformed", "wrong_vni"];
        let missing: Vec<&str> = want.iter().copied().filter(|r| !rose(r)).collect();
        let fig = format!(
            "sent {n_stranger} from a stranger, {n_random} random, {n_trunc} truncated, {n_vni} wrong-VNI from the VTEP's address: {}{}",
            fmt_deltas(&d),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; did not rise: {}", missing.join(", "))
            }
        );
        ctx.table
            .check(checks_h[1], missing.is_empty() && !real.is_empty(), fig);
    }
    Ok(())
}

/// The kernel's vxlan device on gateway B, ringtun on gateway A.
fn kernel(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    ctx.table.context(MODE, "kernel vxlan");
    let checks_k = [
        "reach lan v4",
        "reach lan v6",
        "reach gateway bridges v4",
        "reach gateway bridges v6",
        "bulk tcp a->b",
        "bulk tcp b->a",
        "udp burst a->b",
        "size: full-size 1450 B frame crosses",
    ];
    if !ctx.wants_any(&checks_k) {
        return Ok(());
    }
    ctx.interrupted()?;
    let vx = match KernelVxlan::start(
        &s.gw_b,
        "vx-b",
        l2::VNI,
        wan::B4,
        wan::A4,
        "wan0",
        "br-lan",
        l2::MTU,
    ) {
        Ok(v) => v,
        Err(e) => {
            ctx.table.fail("kernel vxlan device up", format!("{e:#}"));
            return Ok(());
        }
    };
    let path = conf(wan::at(wan::B4, l2::PORT)).write(ctx.dir.path(), "rt-a")?;
    let up = ctx.up_options(false);
    let a = match Ringtun::up(&s.gw_a, &path, &up) {
        Ok(a) => a,
        Err(e) => {
            ctx.table.fail("ringtun up", format!("{e:#}"));
            return Ok(());
        }
    };
    reach_all(ctx, s, "")?;
    bulk_both(ctx, s, "", ctx.opts.bulk_size)?;
    checks::udp(
        ctx,
        "udp burst a->b",
        &s.lan_a,
        &s.lan_b,
        l2::LAN_B4,
        MAX_UDP_PAYLOAD,
    )?;
    let check = "size: full-size 1450 B frame crosses";
    if ctx.wants(check) {
        let v4 = probe_retry(&s.lan_a, l2::LAN_B4, l2::MTU as usize)?;
        let v6 = probe_retry(&s.lan_a, l2::LAN_B6, l2::MTU as usize)?;
        let ok = matches!(v4, Probe::Reply { .. }) && matches!(v6, Probe::Reply { .. });
        ctx.table.check(
            check,
            ok,
            format!("{} B with DF a->b: v4 {v4}, v6 {v6}", l2::MTU),
        );
    }
    if let Err(e) = checks::terminate(a) {
        ctx.table
            .fail("ringtun stops cleanly on SIGTERM", format!("{e:#}"));
    }
    drop(vx);
    Ok(())
}
