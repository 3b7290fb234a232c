//! `wireguard` mode: ringtun on both gateways (offloads on and off, IPv4
//! and IPv6 WAN, lossy WAN through the relay, restarts, hostile input),
//! then wireguard-go and boringtun on gateway B against ringtun on
//! gateway A, each side initiating in turn.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use netctl::Netlink;
use ringtun_tests::ringtun::{Conf, Keypair, PeerConf, Ringtun, UpOptions};
use ringtun_tests::traffic::{Capture, CaptureFilter};

use super::checks::{self, Ctx, Stop, control, drop_deltas, fmt_deltas, reach, socket_in};
use super::hostile;
use super::lab::{self, l3, wan};
use super::peers::{self, Userspace, UserspacePeer, WgConf};
use super::probe::{self, Probe};
use super::relay::{Impairment, Relay, RelaySpec};
use crate::labs::LabGuard;

const MODE: &str = "wireguard";
/// Time allowed for the first ping, which waits for a handshake.
const FIRST_REPLY: Duration = Duration::from_secs(10);

/// The four namespaces of a lab.
pub struct Sites {
    /// LAN host of site A.
    pub lan_a: String,
    /// Gateway A.
    pub gw_a: String,
    /// Gateway B.
    pub gw_b: String,
    /// LAN host of site B.
    pub lan_b: String,
}

impl Sites {
    /// The namespaces of `lab`.
    pub fn of(lab: &LabGuard) -> Sites {
        Sites {
            lan_a: lab.ns("lan-a"),
            gw_a: lab.ns("gw-a"),
            gw_b: lab.ns("gw-b"),
            lan_b: lab.ns("lan-b"),
        }
    }
}

/// Where each gateway sends the other's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Underlay {
    /// Straight over the WAN, IPv4.
    V4,
    /// Straight over the WAN, IPv6.
    V6,
    /// Through the relay in gw-b (IPv4).
    Relay,
}

impl Underlay {
    /// (A's endpoint for B, B's endpoint for A).
    fn endpoints(self) -> (SocketAddr, SocketAddr) {
        match self {
            Underlay::V4 => (wan::at(wan::B4, l3::PORT), wan::at(wan::A4, l3::PORT)),
            Underlay::V6 => (wan::at(wan::B6, l3::PORT), wan::at(wan::A6, l3::PORT)),
            Underlay::Relay => (
                wan::at(wan::B4, wan::RELAY_PORTS.0),
                wan::at(wan::B4, wan::RELAY_PORTS.1),
            ),
        }
    }
}

/// The config of one gateway's ringtun.
fn conf(
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
        .address(tun[0])
        .address(tun[1])
        .mtu(l3::MTU)
        .peer(p)
}

fn allowed_at_a() -> Vec<&'static str> {
    let mut v = l3::TUN_B_HOST.to_vec();
    v.extend(l3::LAN_B_NETS);
    v
}

fn allowed_at_b() -> Vec<&'static str> {
    let mut v = l3::TUN_A_HOST.to_vec();
    v.extend(l3::LAN_A_NETS);
    v
}

/// A ringtun on each gateway, with what it takes to start them again.
struct Pair {
    a: Option<Ringtun>,
    b: Option<Ringtun>,
    a_path: PathBuf,
    b_path: PathBuf,
    gw_a: String,
    gw_b: String,
    up: UpOptions,
}

impl Pair {
    fn start(
        ctx: &Ctx,
        s: &Sites,
        keys: &(Keypair, Keypair),
        underlay: Underlay,
        no_offload: bool,
    ) -> Result<Pair> {
        let (ka, kb) = keys;
        let (to_b, to_a) = underlay.endpoints();
        let a_path =
            conf(ka, kb, l3::TUN_A, &allowed_at_a(), Some(to_b)).write(ctx.dir.path(), "rt-a")?;
        let b_path =
            conf(kb, ka, l3::TUN_B, &allowed_at_b(), Some(to_a)).write(ctx.dir.path(), "rt-b")?;
        let up = ctx.up_options(no_offload);
        let a = Ringtun::up(&s.gw_a, &a_path, &up)?;
        let b = Ringtun::up(&s.gw_b, &b_path, &up)?;
        Ok(Pair {
            a: Some(a),
            b: Some(b),
            a_path,
            b_path,
            gw_a: s.gw_a.clone(),
            gw_b: s.gw_b.clone(),
            up,
        })
    }

    /// Stops both with SIGTERM; an unclean exit is an error.
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

/// Runs every wireguard-mode row the filters select.
pub fn run(
    ctx: &mut Ctx,
    peer_filter: &dyn Fn(&str) -> bool,
    build_dir: &std::path::Path,
) -> Result<()> {
    ctx.table.context(MODE, "-");
    let lab = lab::apply("two-sites-l3.toml", "wg", ctx.opts.keep)?;
    let s = Sites::of(&lab);
    ctx.table.set_diagnostics(Some(checks::show_gateways(vec![
        s.gw_a.clone(),
        s.gw_b.clone(),
    ])));
    checks::unreachable(
        ctx,
        "isolation: no path between the LANs without a tunnel",
        &[
            (&s.lan_a, l3::LAN_B4, "a->b v4"),
            (&s.lan_a, l3::LAN_B6, "a->b v6"),
        ],
    )?;
    if peer_filter("ringtun") {
        ringtun_pair(ctx, &s)?;
    }
    for kind in [Userspace::WireguardGo, Userspace::Boringtun] {
        if peer_filter(kind.name()) {
            interop(ctx, &s, kind, build_dir)?;
        }
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
            (&s.lan_a, l3::LAN_B4, "a->b"),
            (&s.lan_b, l3::LAN_A4, "b->a"),
        ],
        FIRST_REPLY,
    )?;
    reach(
        ctx,
        &format!("reach lan v6{suffix}"),
        &[
            (&s.lan_a, l3::LAN_B6, "a->b"),
            (&s.lan_b, l3::LAN_A6, "b->a"),
        ],
        FIRST_REPLY,
    )?;
    reach(
        ctx,
        &format!("reach tunnel addresses v4{suffix}"),
        &[
            (&s.gw_a, l3::TUN_B4, "gw a->b"),
            (&s.gw_b, l3::TUN_A4, "gw b->a"),
        ],
        FIRST_REPLY,
    )?;
    reach(
        ctx,
        &format!("reach tunnel addresses v6{suffix}"),
        &[
            (&s.gw_a, l3::TUN_B6, "gw a->b"),
            (&s.gw_b, l3::TUN_A6, "gw b->a"),
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
        l3::LAN_B4,
        bytes,
    )?;
    checks::bulk(
        ctx,
        &format!("bulk tcp b->a{suffix}"),
        &s.lan_b,
        &s.lan_a,
        l3::LAN_A4,
        bytes,
    )?;
    Ok(())
}

/// The payload of the largest UDP datagram that fits the tunnel MTU (IPv4).
const MAX_UDP_PAYLOAD: usize = l3::MTU as usize - 28;

/// ringtun on both gateways, every row.
fn ringtun_pair(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    ctx.table.context(MODE, "ringtun");
    let keys = (Keypair::generate()?, Keypair::generate()?);
    let bulk = ctx.opts.bulk_size;

    let main_checks = [
        "ringtun up (offloads on)",
        "reach lan v4",
        "reach lan v6",
        "reach tunnel addresses v4",
        "reach tunnel addresses v6",
        "bulk tcp a->b",
        "bulk tcp b->a",
        "udp burst a->b",
        "size: 1420 B packet fits the tunnel MTU",
        "size: 1500 B v4 with DF gets frag-needed",
        "size: 1500 B v6 gets packet-too-big",
        "hostile: transfer intact under attack",
        "hostile: drops counted by reason",
        "hostile: initiation flood gets cookie replies",
        "restart gw-a by SIGTERM mid-transfer",
        "restart gw-b by SIGKILL mid-transfer",
    ];
    if ctx.wants_any(&main_checks) {
        match Pair::start(ctx, s, &keys, Underlay::V4, false) {
            Err(e) => ctx.table.fail("ringtun up (offloads on)", format!("{e:#}")),
            Ok(mut pair) => {
                if ctx.wants("ringtun up (offloads on)") {
                    let st = pair.a.as_ref().map(|a| a.show()).transpose()?;
                    let offloads = st.map(|s| s.offloads.join(" ")).unwrap_or_default();
                    ctx.table.check(
                        "ringtun up (offloads on)",
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
                    l3::LAN_B4,
                    MAX_UDP_PAYLOAD,
                )?;
                sizes(ctx, s)?;
                if let Some(b) = pair.b.as_mut() {
                    checks::guarded(ctx, "hostile input", |ctx| {
                        hostile_wg(ctx, s, b, &keys.1.public_key)
                    })?;
                }
                let (path, ns, up) = (pair.a_path.clone(), pair.gw_a.clone(), pair.up.clone());
                checks::restart(
                    ctx,
                    "restart gw-a by SIGTERM mid-transfer",
                    &mut pair.a,
                    Stop::Term,
                    &|| Ok(Ringtun::up(&ns, &path, &up)?),
                    &s.lan_a,
                    &s.lan_b,
                    l3::LAN_B4,
                )?;
                let (path, ns, up) = (pair.b_path.clone(), pair.gw_b.clone(), pair.up.clone());
                checks::restart(
                    ctx,
                    "restart gw-b by SIGKILL mid-transfer",
                    &mut pair.b,
                    Stop::Kill,
                    &|| Ok(Ringtun::up(&ns, &path, &up)?),
                    &s.lan_a,
                    &s.lan_b,
                    l3::LAN_B4,
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
        match Pair::start(ctx, s, &keys, Underlay::V4, true) {
            Err(e) => ctx.table.fail("ringtun up --no-offload", format!("{e:#}")),
            Ok(pair) => {
                if ctx.wants("ringtun up --no-offload") {
                    let st = pair.a.as_ref().map(|a| a.show()).transpose()?;
                    let offloads = st.map(|s| s.offloads).unwrap_or_default();
                    ctx.table.check(
                        "ringtun up --no-offload",
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
                    &format!("reach lan v4{suffix}"),
                    &[
                        (&s.lan_a, l3::LAN_B4, "a->b"),
                        (&s.lan_b, l3::LAN_A4, "b->a"),
                    ],
                    FIRST_REPLY,
                )?;
                bulk_both(ctx, s, suffix, bulk)?;
                checks::udp(
                    ctx,
                    &format!("udp burst a->b{suffix}"),
                    &s.lan_a,
                    &s.lan_b,
                    l3::LAN_B4,
                    MAX_UDP_PAYLOAD,
                )?;
                stop_row(ctx, pair);
            }
        }
    }

    let suffix = " [ipv6 wan]";
    let checks_v6 = ["reach lan v4+v6 [ipv6 wan]", "bulk tcp a->b [ipv6 wan]"];
    if ctx.wants_any(&checks_v6) {
        ctx.interrupted()?;
        match Pair::start(ctx, s, &keys, Underlay::V6, false) {
            Err(e) => ctx.table.fail("ringtun up [ipv6 wan]", format!("{e:#}")),
            Ok(pair) => {
                reach(
                    ctx,
                    &format!("reach lan v4+v6{suffix}"),
                    &[
                        (&s.lan_a, l3::LAN_B4, "a->b v4"),
                        (&s.lan_b, l3::LAN_A6, "b->a v6"),
                    ],
                    FIRST_REPLY,
                )?;
                checks::bulk(
                    ctx,
                    &format!("bulk tcp a->b{suffix}"),
                    &s.lan_a,
                    &s.lan_b,
                    l3::LAN_B6,
                    ctx.bulk_capped(256 << 20),
                )?;
                stop_row(ctx, pair);
            }
        }
    }

    lossy(
        ctx,
        s,
        &keys,
        "lossy wan 1%: bulk tcp a->b",
        Impairment {
            loss: 0.01,
            ..Impairment::default()
        },
        bulk,
    )?;
    lossy(
        ctx,
        s,
        &keys,
        "impaired wan: bulk tcp a->b",
        Impairment {
            loss: 0.002,
            duplicate: 0.01,
            reorder: 0.01,
            reorder_hold: Duration::from_millis(2),
            delay: Duration::from_millis(1),
        },
        ctx.bulk_capped(128 << 20),
    )?;
    Ok(())
}

/// Stops a pair; a daemon that does not exit cleanly on SIGTERM is a failed row.
fn stop_row(ctx: &mut Ctx, pair: Pair) {
    if let Err(e) = pair.stop() {
        ctx.table
            .fail("ringtun stops cleanly on SIGTERM", format!("{e:#}"));
    }
}

/// The size rows: the largest packet passes whole; one larger with DF is
/// answered by gateway A's kernel with the tunnel's MTU.
fn sizes(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    let check = "size: 1420 B packet fits the tunnel MTU";
    if ctx.wants(check) {
        let v4 = probe_retry(&s.lan_a, l3::LAN_B4, l3::MTU as usize)?;
        let v6 = probe_retry(&s.lan_a, l3::LAN_B6, l3::MTU as usize)?;
        let ok = matches!(v4, Probe::Reply { .. }) && matches!(v6, Probe::Reply { .. });
        ctx.table.check(
            check,
            ok,
            format!("{} B with DF a->b: v4 {v4}, v6 {v6}", l3::MTU),
        );
    }
    for (check, dst) in [
        ("size: 1500 B v4 with DF gets frag-needed", l3::LAN_B4),
        ("size: 1500 B v6 gets packet-too-big", l3::LAN_B6),
    ] {
        if !ctx.wants(check) {
            continue;
        }
        let p = probe_retry(&s.lan_a, dst, 1500)?;
        let ok = matches!(p, Probe::TooBig { mtu, .. } if mtu == l3::MTU);
        ctx.table.check(check, ok, format!("1500 B a->b: {p}"));
    }
    Ok(())
}

/// A probe, tried up to three times: ICMP errors are rate limited and the
/// first packet may wait for a handshake.
pub fn probe_retry(ns: &str, dst: IpAddr, total: usize) -> Result<Probe> {
    let mut last = Probe::Timeout;
    for _ in 0..3 {
        last = probe::probe_in(ns, dst, total, Duration::from_secs(2))?;
        if !matches!(last, Probe::Timeout) {
            break;
        }
    }
    Ok(last)
}

/// Adds the attacker's address to gateway A's WAN port for as long as it lives.
pub struct AttackerAddr {
    ns: String,
}

impl AttackerAddr {
    /// Adds [`wan::ATTACKER`] to `wan0` in `ns`.
    pub fn add(ns: &str) -> Result<AttackerAddr> {
        Netlink::in_netns(ns)?.addr_add_with(
            "wan0",
            wan::ATTACKER.parse()?,
            netctl::AddrOptions { nodad: true },
        )?;
        Ok(AttackerAddr { ns: ns.to_string() })
    }
}

impl Drop for AttackerAddr {
    fn drop(&mut self) {
        if let (Ok(nl), Ok(p)) = (Netlink::in_netns(&self.ns), wan::ATTACKER.parse()) {
            let _ = nl.addr_del("wan0", p);
        }
    }
}

/// Hostile input at gateway B's port while lan-a sends to lan-b.
fn hostile_wg(ctx: &mut Ctx, s: &Sites, b: &mut Ringtun, b_public: &str) -> Result<()> {
    let checks_h = [
        "hostile: transfer intact under attack",
        "hostile: drops counted by reason",
        "hostile: initiation flood gets cookie replies",
    ];
    if !ctx.wants_any(&checks_h) {
        return Ok(());
    }
    ctx.interrupted()?;
    // Long enough to outlast the hostile input on a fast machine,
    // whatever --bulk-size says: the input must land during the transfer.
    let bytes = 1 << 30;
    let _attacker = AttackerAddr::add(&s.gw_a)?;
    let dst = wan::at(wan::B4, l3::PORT);
    let mut capture = Capture::start(
        &s.gw_b,
        "wan0",
        CaptureFilter {
            dst_port: Some(l3::PORT),
            dst_addr: Some(wan::B4),
            min_len: 64,
            ..CaptureFilter::default()
        },
    )?;
    let before = b.show()?;
    let t = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, l3::LAN_B4, bytes)?;
    let real: Vec<Vec<u8>> = capture
        .collect(256, Duration::from_secs(10))?
        .into_iter()
        .filter(|c| c.payload.first() == Some(&hostile::TYPE_DATA))
        .map(|c| c.payload)
        .collect();
    drop(capture);
    let sock = socket_in(&s.gw_a, SocketAddr::new(wan::ATTACKER_IP, 0))?;
    let random = hostile::random_datagrams(&mut ctx.rng, 2000);
    let truncated = hostile::truncated(&mut ctx.rng, &real);
    let flipped = hostile::bit_flipped(&mut ctx.rng, &real);
    let n_random = hostile::send_all(&sock, dst, &random);
    let n_trunc = hostile::send_all(&sock, dst, &truncated);
    let n_flip = hostile::send_all(&sock, dst, &flipped);
    let n_replay = hostile::send_all(&sock, dst, &real);
    std::thread::sleep(Duration::from_millis(300));
    let mid = b.show()?;
    let public: [u8; 32] = tunnel_proto::PublicKey::from_base64(b_public)
        .context("gateway B's public key")?
        .as_bytes()
        .to_owned();
    let flood = hostile::initiation_flood(
        &sock,
        dst,
        &public,
        50_000,
        Duration::from_millis(500),
        &mut ctx.rng,
    )
    .context("flooding gateway B with initiations")?;
    let during = !t.is_finished();
    let report = checks::wait_bulk(ctx, t)?;
    let running = b.is_running();
    let after = if running { b.show().ok() } else { None };

    if ctx.wants(checks_h[0]) {
        let (ok, fig) = match &report {
            Ok(r) => (
                r.intact() && running && during,
                format!(
                    "{}; ringtun {}; input sent {} the transfer",
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
        let want = ["malformed", "auth_failed", "replay"];
        let missing: Vec<&str> = want.iter().copied().filter(|r| !rose(r)).collect();
        let fig = format!(
            "sent {n_random} random, {n_trunc} truncated, {n_flip} bit-flipped, {n_replay} replayed ({} captured): {}{}",
            real.len(),
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
    if ctx.wants(checks_h[2]) {
        match after {
            None => ctx
                .table
                .fail(checks_h[2], format!("{flood}; ringtun is gone")),
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
                    checks_h[2],
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

/// Both ringtuns talk through the relay in gw-b, which impairs the WAN;
/// a bulk transfer must still arrive whole.
fn lossy(
    ctx: &mut Ctx,
    s: &Sites,
    keys: &(Keypair, Keypair),
    check: &str,
    imp: Impairment,
    bytes: u64,
) -> Result<()> {
    if !ctx.wants(check) {
        return Ok(());
    }
    ctx.interrupted()?;
    let relay = match start_relay(ctx, &s.gw_b, imp, l3::PORT) {
        Ok(r) => r,
        Err(e) => {
            ctx.table.fail(check, format!("starting the relay: {e:#}"));
            return Ok(());
        }
    };
    let pair = match Pair::start(ctx, s, keys, Underlay::Relay, false) {
        Ok(p) => p,
        Err(e) => {
            ctx.table.fail(check, format!("{e:#}"));
            return Ok(());
        }
    };
    let before = pair.b.as_ref().map(|b| b.show()).transpose()?;
    let outcome = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, l3::LAN_B4, bytes)
        .and_then(|t| checks::wait_bulk(ctx, t));
    let after = pair.b.as_ref().map(|b| b.show()).transpose()?;
    let drops = match (before, after) {
        (Some(b), Some(a)) => fmt_deltas(&drop_deltas(&b, &a)),
        _ => String::new(),
    };
    let fig = |r: &str| {
        format!(
            "{imp}: {r}; relay a->b {}, b->a {}; gw-b drops: {drops}",
            relay.a_to_b(),
            relay.b_to_a()
        )
    };
    match outcome {
        Ok(Ok(r)) => {
            let lost = relay.a_to_b().lost + relay.b_to_a().lost;
            let ok = r.intact() && (imp.loss == 0.0 || lost > 0);
            ctx.table.check(check, ok, fig(&checks::bulk_figure(&r)));
        }
        Ok(Err(e)) => ctx.table.fail(check, fig(&e.to_string())),
        Err(e) => ctx.table.fail(check, fig(&format!("{e:#}"))),
    }
    stop_row(ctx, pair);
    drop(relay);
    Ok(())
}

/// The relay in gateway B's namespace between A (at `port` on gw-a) and B.
pub fn start_relay(ctx: &mut Ctx, gw_b: &str, imp: Impairment, port: u16) -> Result<Relay> {
    let seed = ctx.rng.next_u64();
    Relay::start(&RelaySpec {
        netns: Some(gw_b.to_string()),
        a_side: wan::at(wan::B4, wan::RELAY_PORTS.0),
        b_side: wan::at(wan::B4, wan::RELAY_PORTS.1),
        a_peer: wan::at(wan::A4, port),
        b_peer: wan::at(wan::B4, port),
        impairment: imp,
        seed,
    })
}

/// wireguard-go or boringtun on gateway B, ringtun on gateway A.
fn interop(ctx: &mut Ctx, s: &Sites, kind: Userspace, build_dir: &std::path::Path) -> Result<()> {
    ctx.table.context(MODE, kind.name());
    let first = [
        "handshake: ringtun initiates",
        "reach lan v4",
        "reach lan v6",
        "reach tunnel addresses v4",
        "reach tunnel addresses v6",
        "bulk tcp a->b",
        "bulk tcp b->a",
        "udp burst a->b",
        "size: 1420 B packet fits the tunnel MTU",
    ];
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
        .write(ctx.dir.path(), "rt-a")?;
        let started = Ringtun::up(&s.gw_a, &path, &up)
            .map_err(anyhow::Error::from)
            .and_then(|a| {
                Ok((
                    a,
                    UserspacePeer::start(
                        kind,
                        &tools,
                        &s.gw_b,
                        &iface,
                        &wg_conf(None),
                        ctx.dir.path(),
                    )?,
                ))
            });
        match started {
            Err(e) => ctx.table.fail(first[0], format!("{e:#}")),
            Ok((a, mut p)) => {
                if ctx.wants(first[0]) {
                    let echo = checks::ping_until(&s.lan_a, l3::LAN_B4, FIRST_REPLY)?;
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
                reach_all(ctx, s, "")?;
                bulk_both(ctx, s, "", ctx.opts.bulk_size)?;
                checks::udp(
                    ctx,
                    "udp burst a->b",
                    &s.lan_a,
                    &s.lan_b,
                    l3::LAN_B4,
                    MAX_UDP_PAYLOAD,
                )?;
                let check = "size: 1420 B packet fits the tunnel MTU";
                if ctx.wants(check) {
                    let v4 = probe_retry(&s.lan_a, l3::LAN_B4, l3::MTU as usize)?;
                    let v6 = probe_retry(&s.lan_a, l3::LAN_B6, l3::MTU as usize)?;
                    let ok = matches!(v4, Probe::Reply { .. }) && matches!(v6, Probe::Reply { .. });
                    ctx.table.check(
                        check,
                        ok,
                        format!("{} B with DF a->b: v4 {v4}, v6 {v6}", l3::MTU),
                    );
                }
                if let Err(e) = checks::terminate(a) {
                    ctx.table
                        .fail("ringtun stops cleanly on SIGTERM", format!("{e:#}"));
                }
                p.stop()?;
            }
        }
    }

    // 2. The peer initiates: ringtun has no endpoint for it and cannot.
    if ctx.wants_any(&second) {
        ctx.interrupted()?;
        let path =
            conf(&ka, &kb, l3::TUN_A, &allowed_at_a(), None).write(ctx.dir.path(), "rt-a")?;
        let started = Ringtun::up(&s.gw_a, &path, &up)
            .map_err(anyhow::Error::from)
            .and_then(|a| {
                Ok((
                    a,
                    UserspacePeer::start(
                        kind,
                        &tools,
                        &s.gw_b,
                        &iface,
                        &wg_conf(Some(wan::at(wan::A4, l3::PORT))),
                        ctx.dir.path(),
                    )?,
                ))
            });
        match started {
            Err(e) => ctx.table.fail(second[0], format!("{e:#}")),
            Ok((a, mut p)) => {
                if ctx.wants(second[0]) {
                    let echo = checks::ping_until(&s.lan_b, l3::LAN_A4, FIRST_REPLY)?;
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
                    FIRST_REPLY,
                )?;
                checks::bulk(
                    ctx,
                    second[2],
                    &s.lan_b,
                    &s.lan_a,
                    l3::LAN_A4,
                    ctx.bulk_capped(256 << 20),
                )?;
                if let Err(e) = checks::terminate(a) {
                    ctx.table
                        .fail("ringtun stops cleanly on SIGTERM", format!("{e:#}"));
                }
                p.stop()?;
            }
        }
    }
    Ok(())
}
