//! `wireguard` mode: ringtun on both gateways (offloads on and off, IPv4
//! and IPv6 WAN, lossy WAN through the relay, restarts, hostile input),
//! then wireguard-go and boringtun on gateway B against ringtun on
//! gateway A, each side initiating in turn; then ringtun driven by the
//! WireGuard tools, in a lab of its own ([`uapi`]).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ringtun_tests::ringtun::{Conf, Keypair, PeerConf, Ringtun};

use super::checks::{self, Ctx, control, drop_deltas, reach, socket_in};
use super::first_packet;
use super::hostile;
use super::lab::{self, Sites, l3, wan};
use super::pair::Pair;
use super::probe::{Probe, probe_retry};
use super::relay::Impairment;
use super::rows::{self, Attack, Endpoints, HOSTILE_ROWS, Mode, OwnRows};
use super::service;
use super::spread;
use super::storm;
use super::uapi;
use crate::peers::{self, Userspace, UserspacePeer, WgConf};

pub(super) const MODE: Mode = Mode {
    name: "wireguard",
    lan_a4: l3::LAN_A4,
    lan_b4: l3::LAN_B4,
    lan_a6: l3::LAN_A6,
    lan_b6: l3::LAN_B6,
    reach_gw: ["reach tunnel addresses v4", "reach tunnel addresses v6"],
    gw_a4: l3::TUN_A4,
    gw_b4: l3::TUN_B4,
    gw_a6: l3::TUN_A6,
    gw_b6: l3::TUN_B6,
    mtu: l3::MTU,
    port: l3::PORT,
    replies_to_source_port: true,
    // The first ping waits for a handshake.
    first_reply: Duration::from_secs(10),
    fits: "size: 1420 B packet fits the tunnel MTU",
};

/// Straight over the IPv6 WAN.
fn over_ipv6() -> Endpoints {
    (wan::at(wan::B6, l3::PORT), wan::at(wan::A6, l3::PORT))
}

/// Workers of every ringtun in the two-site labs, whatever the machine:
/// one peer's traffic then meets two workers at each end (the rows pass
/// with `Workers = 2`, the way a multi-core gateway runs), and a machine
/// with more cores tests the same. `cargo xtask e2e --workers N` overrides it.
pub(super) const E2E_WORKERS: usize = 2;

/// The config of one gateway's ringtun.
pub(super) fn conf(
    me: &Keypair,
    peer: &Keypair,
    tun: [&str; 2],
    allowed: &[&str],
    endpoint: Option<SocketAddr>,
) -> Conf {
    let mut p = PeerConf::wireguard(&peer.public_key);
    for a in allowed {
        p = p.allowed_ip(a);
    }
    if let Some(e) = endpoint {
        p = p.endpoint(e);
    }
    Conf::wireguard(me)
        .listen_port(l3::PORT)
        .workers(E2E_WORKERS)
        .address(tun[0])
        .address(tun[1])
        .mtu(l3::MTU)
        .peer(p)
}

/// What gateway A routes to B.
pub(super) fn allowed_at_a() -> Vec<&'static str> {
    let mut v = l3::TUN_B_HOST.to_vec();
    v.extend(l3::LAN_B_NETS);
    v
}

/// What gateway B routes to A.
pub(super) fn allowed_at_b() -> Vec<&'static str> {
    let mut v = l3::TUN_A_HOST.to_vec();
    v.extend(l3::LAN_A_NETS);
    v
}

/// Runs every wireguard-mode row the filters select.
pub fn run(ctx: &mut Ctx, peer_filter: &dyn Fn(&str) -> bool, build_dir: &Path) -> Result<()> {
    rows::in_lab(ctx, &MODE, ("two-sites-l3.toml", "wg"), |ctx, s| {
        if peer_filter("ringtun") {
            ringtun_pair(ctx, s)?;
        }
        for kind in Userspace::ALL {
            if peer_filter(kind.name()) {
                interop(ctx, s, kind, build_dir)?;
            }
        }
        for kind in std::iter::once(None).chain(Userspace::ALL.map(Some)) {
            if peer_filter(kind.map_or("ringtun", Userspace::name)) {
                first_packet::rows(ctx, s, kind, build_dir)?;
            }
        }
        Ok(())
    })?;
    if peer_filter("ringtun") {
        uapi::run(ctx, build_dir)?;
    }
    Ok(())
}

/// ringtun on both gateways, every row.
fn ringtun_pair(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    ctx.table.context(MODE.name, "ringtun");
    let (ka, kb) = (Keypair::generate()?, Keypair::generate()?);
    let confs = |(to_b, to_a): Endpoints| {
        (
            conf(&ka, &kb, l3::TUN_A, &allowed_at_a(), Some(to_b)),
            conf(&kb, &ka, l3::TUN_B, &allowed_at_b(), Some(to_a)),
        )
    };
    rows::ringtun_pair(
        ctx,
        s,
        &MODE,
        &confs,
        &OwnRows {
            names: &[
                TOO_BIG[0].0,
                TOO_BIG[1].0,
                HOSTILE_ROWS[0],
                HOSTILE_ROWS[1],
                FLOOD,
            ],
            sizes: &|ctx| too_big(ctx, s),
            hostile: &|ctx, b| hostile_wg(ctx, s, b, &kb.public_key),
        },
    )?;

    storm::rows(ctx, s, confs(MODE.direct()), &kb.public_key)?;
    service::rows(ctx, s, &MODE, confs(MODE.direct()))?;
    let (a, b) = confs(MODE.direct());
    spread::rows(ctx, s, &MODE, (a.spread_flows(true), b.spread_flows(true)))?;

    let suffix = " [ipv6 wan]";
    let checks_v6 = ["reach lan v4+v6 [ipv6 wan]", "bulk tcp a->b [ipv6 wan]"];
    if ctx.wants_any(&checks_v6) {
        ctx.interrupted()?;
        match Pair::start(ctx, s, confs(over_ipv6()), false) {
            Err(e) => ctx.table.fail("ringtun up [ipv6 wan]", format!("{e:#}")),
            Ok(pair) => {
                reach(
                    ctx,
                    &format!("reach lan v4+v6{suffix}"),
                    &[
                        (&s.lan_a, l3::LAN_B4, "a->b v4"),
                        (&s.lan_b, l3::LAN_A6, "b->a v6"),
                    ],
                    MODE.first_reply,
                )?;
                checks::bulk(
                    ctx,
                    &format!("bulk tcp a->b{suffix}"),
                    &s.lan_a,
                    &s.lan_b,
                    l3::LAN_B6,
                    ctx.bulk_capped(256 << 20),
                )?;
                pair.stop_row(ctx);
            }
        }
    }

    rows::lossy_1pct(ctx, s, &MODE, &confs, true)?;
    rows::lossy(
        ctx,
        s,
        &MODE,
        &confs,
        "impaired wan: bulk tcp a->b",
        Impairment {
            loss: 0.002,
            duplicate: 0.01,
            reorder: 0.01,
            reorder_hold: Duration::from_millis(2),
            delay: Duration::from_millis(1),
        },
        ctx.bulk_capped(128 << 20),
        true,
    )?;
    Ok(())
}

/// The rows that a packet of 1500 bytes with DF is answered by gateway
/// A's kernel with the tunnel's MTU.
const TOO_BIG: [(&str, IpAddr); 2] = [
    ("size: 1500 B v4 with DF gets frag-needed", l3::LAN_B4),
    ("size: 1500 B v6 gets packet-too-big", l3::LAN_B6),
];

fn too_big(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    for (check, dst) in TOO_BIG {
        if !ctx.wants(check) {
            continue;
        }
        let p = probe_retry(&s.lan_a, dst, 1500)?;
        let ok = matches!(p, Probe::TooBig { mtu, .. } if mtu == l3::MTU);
        ctx.table.check(check, ok, format!("1500 B a->b: {p}"));
    }
    Ok(())
}

/// The row that a flood of handshake initiations with a valid MAC1 is
/// answered with cookie replies, not handshakes.
const FLOOD: &str = "hostile: initiation flood gets cookie replies";

/// The drop reasons the hostile input at a WireGuard port must raise.
const HOSTILE_WG_REASONS: &[&str] = &["malformed", "auth_failed", "replay"];

/// Hostile input at gateway B's port while lan-a sends to lan-b.
fn hostile_wg(ctx: &mut Ctx, s: &Sites, b: &mut Ringtun, b_public: &str) -> Result<()> {
    if !ctx.wants_any(&[HOSTILE_ROWS[0], HOSTILE_ROWS[1], FLOOD]) {
        return Ok(());
    }
    ctx.interrupted()?;
    let attack = Attack::start(ctx, s, &MODE, b, |p| p.first() == Some(&hostile::TYPE_DATA))?;
    let (dst, real) = (attack.dst, &attack.real);
    let sock = socket_in(&s.gw_a, SocketAddr::new(wan::ATTACKER_IP, 0))?;
    let random = hostile::random_datagrams(&mut ctx.rng, 2000);
    let truncated = hostile::truncated(&mut ctx.rng, real);
    let flipped = hostile::forged_ahead(&mut ctx.rng, real);
    let n_random = hostile::send_all(&sock, dst, &random);
    let n_trunc = hostile::send_all(&sock, dst, &truncated);
    let n_flip = hostile::send_all(&sock, dst, &flipped);
    let n_replay = hostile::send_all(&sock, dst, real);
    let mid = rows::status_once_risen(ctx, b, &attack.before, HOSTILE_WG_REASONS)?;
    let public: [u8; 32] = tunnel_proto::PublicKey::from_base64(b_public)
        .context("gateway B's public key")?
        .as_bytes()
        .to_owned();
    let flood = hostile::initiation_flood(
        &sock,
        dst,
        &public,
        hostile::Pace::Fastest { count: 50_000 },
        Duration::from_millis(500),
        &mut ctx.rng,
    )
    .context("flooding gateway B with initiations")?;
    let during = !attack.transfer.is_finished();
    let report = checks::wait_bulk(ctx, attack.transfer)?;
    let running = b.is_running();
    let after = if running { b.show().ok() } else { None };

    rows::intact_row(ctx, &report, running, during, None);
    rows::reasons_row(
        ctx,
        (&attack.before, &mid),
        HOSTILE_WG_REASONS,
        &format!(
            "sent {n_random} random, {n_trunc} truncated, {n_flip} forged ahead of the window, {n_replay} replayed ({} captured)",
            real.len()
        ),
        !real.is_empty(),
    );
    if ctx.wants(FLOOD) {
        match after {
            None => ctx.table.fail(FLOOD, format!("{flood}; ringtun is gone")),
            Some(after) => {
                let d = drop_deltas(&mid, &after);
                let get = |r: &str| {
                    d.iter()
                        .filter(|(n, _)| n == r)
                        .map(|(_, v)| *v)
                        .sum::<u64>()
                };
                let responses = control(&after, "handshake_responses")
                    .saturating_sub(control(&mid, "handshake_responses"));
                let ok = flood.cookie_replies > 0
                    && flood.responses == 0
                    && get("cookie_required") > 0
                    && responses <= 2;
                ctx.table.check(
                    FLOOD,
                    ok,
                    format!(
                        "{flood}; drops cookie_required +{}, rate_limited +{}, queue_full +{}, auth_failed +{}; handshake_responses +{responses}",
                        get("cookie_required"),
                        get("rate_limited"),
                        get("queue_full"),
                        get("auth_failed")
                    ) + if get("cookie_required") == 0 && get("queue_full") > 0 {
                        "; the handshake queue overflowed, yet nothing was treated as under load"
                    } else {
                        ""
                    },
                );
            }
        }
    }
    Ok(())
}

/// wireguard-go or boringtun on gateway B, ringtun on gateway A.
fn interop(ctx: &mut Ctx, s: &Sites, kind: Userspace, build_dir: &Path) -> Result<()> {
    ctx.table.context(MODE.name, kind.name());
    let mut first = vec!["handshake: ringtun initiates"];
    first.extend(MODE.core_rows());
    let peer_init = format!("handshake: {} initiates", kind.name());
    let second = [
        peer_init.as_str(),
        "reach lan v4+v6 [peer initiated]",
        "bulk tcp b->a [peer initiated]",
    ];
    if !ctx.wants_any(&first) && !ctx.wants_any(&second) {
        return Ok(());
    }
    let tools = match peers::ensure(kind, ctx.opts.install, build_dir) {
        Ok(t) => t,
        Err(why) => {
            for c in first.iter().chain(second.iter()) {
                if ctx.wants(c) {
                    ctx.table.skip(*c, why.clone());
                }
            }
            return Ok(());
        }
    };
    let (ka, kb) = (Keypair::generate()?, Keypair::generate()?);
    let iface = UserspacePeer::iface_name(kind);
    let wg_conf = |endpoint: Option<SocketAddr>| WgConf {
        private_key: kb.private_key.clone(),
        listen_port: l3::PORT,
        peer_public_key: ka.public_key.clone(),
        peer_endpoint: endpoint,
        allowed_ips: allowed_at_b().iter().map(|s| s.to_string()).collect(),
        addresses: l3::TUN_B.iter().map(|s| s.to_string()).collect(),
        mtu: l3::MTU,
    };
    let up = ctx.up_options(false);
    // ringtun on gateway A from `path`, the peer on gateway B with
    // `endpoint` for A.
    let start = |ctx: &Ctx, path: &Path, endpoint: Option<SocketAddr>| -> Result<_> {
        let a = Ringtun::up(&s.gw_a, path, &up)?;
        let p = UserspacePeer::start(
            kind,
            &tools,
            &s.gw_b,
            &iface,
            &wg_conf(endpoint),
            ctx.dir.path(),
        )?;
        Ok((a, p))
    };

    // 1. ringtun initiates: the peer has no endpoint for it and cannot.
    if ctx.wants_any(&first) {
        ctx.interrupted()?;
        let path = conf(
            &ka,
            &kb,
            l3::TUN_A,
            &allowed_at_a(),
            Some(wan::at(wan::B4, l3::PORT)),
        )
        .write(ctx.dir.path(), lab::TUN_A)?;
        let started = start(ctx, &path, None);
        match started {
            Err(e) => ctx.table.fail(first[0], format!("{e:#}")),
            Ok((a, mut p)) => {
                if ctx.wants(first[0]) {
                    let echo = checks::ping_until(&s.lan_a, l3::LAN_B4, MODE.first_reply)?;
                    let st = p.peer_state().unwrap_or_default();
                    ctx.table.check(
                        first[0],
                        echo.is_reply() && st.has_session(),
                        format!(
                            "first ping a->b {} while {} knew no endpoint; it reports a session: {} ({} B received)",
                            if echo.is_reply() {
                                "answered"
                            } else {
                                "UNANSWERED"
                            },
                            kind.name(),
                            if st.has_session() { "yes" } else { "NO" },
                            st.rx_bytes
                        ),
                    );
                }
                rows::core(ctx, s, &MODE)?;
                checks::terminate_row(ctx, a);
                p.stop()?;
            }
        }
    }

    // 2. The peer initiates: ringtun has no endpoint for it and cannot.
    if ctx.wants_any(&second) {
        ctx.interrupted()?;
        let path =
            conf(&ka, &kb, l3::TUN_A, &allowed_at_a(), None).write(ctx.dir.path(), lab::TUN_A)?;
        let started = start(ctx, &path, Some(wan::at(wan::A4, l3::PORT)));
        match started {
            Err(e) => ctx.table.fail(second[0], format!("{e:#}")),
            Ok((a, mut p)) => {
                if ctx.wants(second[0]) {
                    let echo = checks::ping_until(&s.lan_b, l3::LAN_A4, MODE.first_reply)?;
                    let hs = a
                        .show()
                        .ok()
                        .and_then(|st| st.peers.first().and_then(|p| p.latest_handshake_unix));
                    ctx.table.check(
                        second[0],
                        echo.is_reply() && hs.is_some(),
                        format!(
                            "first ping b->a {} while ringtun knew no endpoint; it reports a handshake: {}",
                            if echo.is_reply() {
                                "answered"
                            } else {
                                "UNANSWERED"
                            },
                            if hs.is_some() { "yes" } else { "NO" }
                        ),
                    );
                }
                reach(
                    ctx,
                    second[1],
                    &[
                        (&s.lan_b, l3::LAN_A4, "b->a v4"),
                        (&s.lan_b, l3::LAN_A6, "b->a v6"),
                        (&s.lan_a, l3::LAN_B6, "a->b v6"),
                    ],
                    MODE.first_reply,
                )?;
                checks::bulk(
                    ctx,
                    second[2],
                    &s.lan_b,
                    &s.lan_a,
                    l3::LAN_A4,
                    ctx.bulk_capped(256 << 20),
                )?;
                checks::terminate_row(ctx, a);
                p.stop()?;
            }
        }
    }
    Ok(())
}
