//! The rows both modes run the same way, over a mode's addresses
//! ([`Mode`]): the rows any peer must pass, ringtun on both gateways with
//! offloads on and off, a lossy WAN, and the frame of the hostile input
//! rows. What stays in `wireguard` and `vxlan` is what differs.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Result;
use dataplane::status::InterfaceStatus;
use netctl::Netlink;
use ringtun_tests::ringtun::{Conf, Ringtun};
use ringtun_tests::traffic::{self, BulkReport, BulkTransfer, Capture, CaptureFilter};

use super::checks::{self, Ctx, drop_deltas, fmt_deltas, reach};
use super::lab::{self, Sites, wan};
use super::offloads;
use super::pair::{self, Pair};
use super::probe::{Probe, probe_retry};
use super::relay::{Impairment, Relay, RelaySpec};

/// A mode as the shared rows see it: its addresses in its lab, the names
/// of the rows that differ only by those, its MTU and port.
pub struct Mode {
    /// The table's mode column: `wireguard`, `vxlan`.
    pub name: &'static str,
    /// lan-a's host.
    pub lan_a4: IpAddr,
    /// lan-b's host.
    pub lan_b4: IpAddr,
    /// lan-a's host, IPv6.
    pub lan_a6: IpAddr,
    /// lan-b's host, IPv6.
    pub lan_b6: IpAddr,
    /// The rows that the gateways reach each other's own address inside
    /// the overlay (IPv4, IPv6).
    pub reach_gw: [&'static str; 2],
    /// Gateway A's own address inside the overlay.
    pub gw_a4: IpAddr,
    /// Gateway B's.
    pub gw_b4: IpAddr,
    /// Gateway A's, IPv6.
    pub gw_a6: IpAddr,
    /// Gateway B's, IPv6.
    pub gw_b6: IpAddr,
    /// The MTU inside the overlay.
    pub mtu: u32,
    /// The UDP port every tunnel end listens on.
    pub port: u16,
    /// Whether a tunnel end sends to the port its peer's datagrams came
    /// from (WireGuard roams to it) rather than to the configured one
    /// (VXLAN, whose source ports are per flow).
    pub replies_to_source_port: bool,
    /// Time allowed for the first ping (a handshake, or ARP/ND across the
    /// overlay).
    pub first_reply: Duration,
    /// The row that a packet of [`Mode::mtu`] bytes crosses in both families.
    pub fits: &'static str,
}

impl Mode {
    /// The payload of the largest UDP datagram that fits the MTU (IPv4).
    pub fn max_udp_payload(&self) -> usize {
        self.mtu as usize - 28
    }

    /// Straight over the IPv4 WAN.
    pub fn direct(&self) -> Endpoints {
        (wan::at(wan::B4, self.port), wan::at(wan::A4, self.port))
    }

    /// The rows [`core`] makes.
    pub fn core_rows(&self) -> [&'static str; 8] {
        [
            "reach lan v4",
            "reach lan v6",
            self.reach_gw[0],
            self.reach_gw[1],
            "bulk tcp a->b",
            "bulk tcp b->a",
            "udp burst a->b",
            self.fits,
        ]
    }
}

/// Where each gateway sends the other's traffic: (A's endpoint for B,
/// B's endpoint for A).
pub type Endpoints = (SocketAddr, SocketAddr);

/// Through the relay in gateway B (IPv4).
pub fn via_relay() -> Endpoints {
    (
        wan::at(wan::B4, wan::RELAY_PORTS.0),
        wan::at(wan::B4, wan::RELAY_PORTS.1),
    )
}

/// A mode's ringtun configurations (gateway A's, gateway B's) for the
/// given endpoints.
pub type Confs<'a> = &'a dyn Fn(Endpoints) -> (Conf, Conf);

/// Applies the mode's lab (`xtask/topologies/FILE` under tag `tag`),
/// checks that nothing joins the LANs before a tunnel does, runs `rows`
/// in it, with every gateway's `ringtun show` printed under a failing
/// row, and removes it.
pub fn in_lab(
    ctx: &mut Ctx,
    m: &Mode,
    (file, tag): (&str, &str),
    rows: impl FnOnce(&mut Ctx, &Sites) -> Result<()>,
) -> Result<()> {
    ctx.table.context(m.name, "-");
    let lab = lab::apply(file, tag, ctx.opts.keep)?;
    let s = Sites::of(&lab);
    ctx.table.set_diagnostics(Some(checks::show_gateways(vec![
        s.gw_a.clone(),
        s.gw_b.clone(),
    ])));
    checks::unreachable(
        ctx,
        "isolation: no path between the LANs without a tunnel",
        &[
            (&s.lan_a, m.lan_b4, "a->b v4"),
            (&s.lan_a, m.lan_b6, "a->b v6"),
        ],
    )?;
    rows(ctx, &s)?;
    ctx.table.set_diagnostics(None);
    drop(lab);
    Ok(())
}

/// The rows any tunnel between the sites must pass, whoever sits on the
/// gateways: each LAN host and each gateway reaches the other in both
/// families, a bulk transfer each way, a UDP burst, the largest packet.
pub fn core(ctx: &mut Ctx, s: &Sites, m: &Mode) -> Result<()> {
    core_with(ctx, s, m, |ctx| {
        bulk_both(ctx, s, m, "", ctx.opts.bulk_size)
    })
}

/// [`core`] with `bulk` making the two transfers (ringtun's pair reads
/// its counters around them and makes the offload rows).
fn core_with(
    ctx: &mut Ctx,
    s: &Sites,
    m: &Mode,
    bulk: impl FnOnce(&mut Ctx) -> Result<()>,
) -> Result<()> {
    for (check, pairs) in [
        (
            "reach lan v4",
            [(&s.lan_a, m.lan_b4, "a->b"), (&s.lan_b, m.lan_a4, "b->a")],
        ),
        (
            "reach lan v6",
            [(&s.lan_a, m.lan_b6, "a->b"), (&s.lan_b, m.lan_a6, "b->a")],
        ),
        (
            m.reach_gw[0],
            [(&s.gw_a, m.gw_b4, "gw a->b"), (&s.gw_b, m.gw_a4, "gw b->a")],
        ),
        (
            m.reach_gw[1],
            [(&s.gw_a, m.gw_b6, "gw a->b"), (&s.gw_b, m.gw_a6, "gw b->a")],
        ),
    ] {
        let pairs = pairs.map(|(ns, dst, label)| (ns.as_str(), dst, label));
        reach(ctx, check, &pairs, m.first_reply)?;
    }
    bulk(ctx)?;
    checks::udp(
        ctx,
        "udp burst a->b",
        &s.lan_a,
        &s.lan_b,
        m.lan_b4,
        m.max_udp_payload(),
    )?;
    fits(ctx, s, m)
}

fn bulk_both(ctx: &mut Ctx, s: &Sites, m: &Mode, suffix: &str, bytes: u64) -> Result<()> {
    checks::bulk(
        ctx,
        &format!("bulk tcp a->b{suffix}"),
        &s.lan_a,
        &s.lan_b,
        m.lan_b4,
        bytes,
    )?;
    checks::bulk(
        ctx,
        &format!("bulk tcp b->a{suffix}"),
        &s.lan_b,
        &s.lan_a,
        m.lan_a4,
        bytes,
    )?;
    Ok(())
}

/// The row that the largest packet crosses whole, with DF, in both families.
fn fits(ctx: &mut Ctx, s: &Sites, m: &Mode) -> Result<()> {
    if !ctx.wants(m.fits) {
        return Ok(());
    }
    let v4 = probe_retry(&s.lan_a, m.lan_b4, m.mtu as usize)?;
    let v6 = probe_retry(&s.lan_a, m.lan_b6, m.mtu as usize)?;
    let ok = matches!(v4, Probe::Reply { .. }) && matches!(v6, Probe::Reply { .. });
    ctx.table.check(
        m.fits,
        ok,
        format!("{} B with DF a->b: v4 {v4}, v6 {v6}", m.mtu),
    );
    Ok(())
}

/// The rows a mode adds to those of ringtun on both gateways, offloads on.
pub struct OwnRows<'a> {
    /// Their names (for `--only`).
    pub names: &'a [&'a str],
    /// Size rows beyond the largest packet that fits.
    pub sizes: &'a dyn Fn(&mut Ctx) -> Result<()>,
    /// Hostile input at gateway B's ringtun.
    pub hostile: &'a dyn Fn(&mut Ctx, &mut Ringtun) -> Result<()>,
}

/// ringtun on both gateways, straight over the IPv4 WAN: with offloads
/// on, every row (the core, the offloads at work across its bulk
/// transfers, the mode's own, a restart of each gateway); then with
/// offloads off, reachability, the transfers and that no offload engaged.
pub fn ringtun_pair(
    ctx: &mut Ctx,
    s: &Sites,
    m: &Mode,
    confs: Confs<'_>,
    own: &OwnRows<'_>,
) -> Result<()> {
    const UP: &str = "ringtun up";
    let mut names = offloads::ON_ROWS.to_vec();
    names.push(checks::GIVES_WAY);
    names.extend(m.core_rows());
    names.extend(own.names);
    names.extend(pair::RESTART_ROWS);
    if ctx.wants_any(&names) {
        match Pair::start(ctx, s, confs(m.direct()), false) {
            Err(e) => ctx.table.fail(UP, format!("{e:#}")),
            Ok(mut pair) => {
                core_with(ctx, s, m, |ctx| offloads::bulk_on(ctx, s, m, &pair))?;
                checks::gives_way(ctx, pair.a.as_ref(), pair.b.as_ref());
                (own.sizes)(ctx)?;
                if let Some(b) = pair.b.as_mut() {
                    checks::guarded(ctx, "hostile input", |ctx| (own.hostile)(ctx, b))?;
                }
                pair.restart_rows(ctx, s, m.lan_b4)?;
                pair.stop_row(ctx);
            }
        }
    }

    const UP_NO: &str = "ringtun up --no-offload";
    let suffix = " [--no-offload]";
    let mut names = vec![
        UP_NO,
        "reach lan v4 [--no-offload]",
        "bulk tcp a->b [--no-offload]",
        "bulk tcp b->a [--no-offload]",
        "udp burst a->b [--no-offload]",
    ];
    names.extend(offloads::OFF_ROWS);
    if !ctx.wants_any(&names) {
        return Ok(());
    }
    ctx.interrupted()?;
    match Pair::start(ctx, s, confs(m.direct()), true) {
        Err(e) => ctx.table.fail(UP_NO, format!("{e:#}")),
        Ok(pair) => {
            if ctx.wants(UP_NO) {
                let offloads = pair.offloads_a()?.unwrap_or_default();
                ctx.table.check(
                    UP_NO,
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
                names[1],
                &[(&s.lan_a, m.lan_b4, "a->b"), (&s.lan_b, m.lan_a4, "b->a")],
                m.first_reply,
            )?;
            offloads::bulk_off(ctx, s, m, &pair, suffix)?;
            checks::udp(
                ctx,
                names[4],
                &s.lan_a,
                &s.lan_b,
                m.lan_b4,
                m.max_udp_payload(),
            )?;
            pair.stop_row(ctx);
        }
    }
    Ok(())
}

/// The row `check`: both ringtuns talk through the relay in gw-b, which
/// impairs the WAN as `imp` says; a bulk transfer of `bytes` must still
/// arrive whole (and with loss on, the relay must have lost some). With
/// `gw_b_drops`, the figure gives gateway B's drops too.
#[allow(clippy::too_many_arguments)]
pub fn lossy(
    ctx: &mut Ctx,
    s: &Sites,
    m: &Mode,
    confs: Confs<'_>,
    check: &str,
    imp: Impairment,
    bytes: u64,
    gw_b_drops: bool,
) -> Result<()> {
    if !ctx.wants(check) {
        return Ok(());
    }
    ctx.interrupted()?;
    let relay = match start_relay(ctx, &s.gw_b, imp, m) {
        Ok(r) => r,
        Err(e) => {
            ctx.table.fail(check, format!("starting the relay: {e:#}"));
            return Ok(());
        }
    };
    let pair = match Pair::start(ctx, s, confs(via_relay()), false) {
        Ok(p) => p,
        Err(e) => {
            ctx.table.fail(check, format!("{e:#}"));
            return Ok(());
        }
    };
    let show_b = || pair.b.as_ref().map(|b| b.show()).transpose();
    let before = if gw_b_drops { show_b()? } else { None };
    let outcome = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, m.lan_b4, bytes)
        .and_then(|t| checks::wait_bulk(ctx, t));
    let after = if gw_b_drops { show_b()? } else { None };
    let drops = match (before, after) {
        (Some(b), Some(a)) => format!("; gw-b drops: {}", fmt_deltas(&drop_deltas(&b, &a))),
        _ => String::new(),
    };
    let fig = |r: &str| {
        format!(
            "{imp}: {r}; relay a->b {}, b->a {}{drops}",
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
    pair.stop_row(ctx);
    drop(relay);
    Ok(())
}

/// The lossy row of both modes: 1% of the datagrams lost each way, a
/// transfer of the full bulk size.
pub fn lossy_1pct(
    ctx: &mut Ctx,
    s: &Sites,
    m: &Mode,
    confs: Confs<'_>,
    gw_b_drops: bool,
) -> Result<()> {
    let imp = Impairment {
        loss: 0.01,
        ..Impairment::default()
    };
    let bytes = ctx.opts.bulk_size;
    let check = "lossy wan 1%: bulk tcp a->b";
    lossy(ctx, s, m, confs, check, imp, bytes, gw_b_drops)
}

/// The relay in gateway B's namespace between A (at `port` on gw-a) and B.
fn start_relay(ctx: &mut Ctx, gw_b: &str, imp: Impairment, m: &Mode) -> Result<Relay> {
    let seed = ctx.rng.next_u64();
    let port = m.port;
    Relay::start(&RelaySpec {
        netns: Some(gw_b.to_string()),
        a_side: wan::at(wan::B4, wan::RELAY_PORTS.0),
        b_side: wan::at(wan::B4, wan::RELAY_PORTS.1),
        a_peer: wan::at(wan::A4, port),
        learn_a: m.replies_to_source_port,
        b_peer: wan::at(wan::B4, port),
        impairment: imp,
        seed,
    })
}

/// Hostile input under way at gateway B's port: the attacker's address on
/// gateway A's WAN port, a transfer from lan-a to lan-b, and real datagrams
/// captured on their way to gateway B, to damage and replay.
pub struct Attack {
    _attacker: AttackerAddr,
    /// Gateway B's tunnel port.
    pub dst: SocketAddr,
    /// Gateway B's status before.
    pub before: InterfaceStatus,
    /// The transfer the input must not spoil.
    pub transfer: BulkTransfer,
    /// The captured UDP payloads that `keep` kept.
    pub real: Vec<Vec<u8>>,
}

impl Attack {
    /// Adds the attacker's address, starts the transfer, captures up to
    /// 256 datagrams bound for gateway B and keeps those `keep` accepts.
    pub fn start(
        ctx: &mut Ctx,
        s: &Sites,
        m: &Mode,
        b: &Ringtun,
        keep: fn(&[u8]) -> bool,
    ) -> Result<Attack> {
        // Long enough to outlast the hostile input on a fast machine,
        // whatever --bulk-size says: the input must land during the transfer.
        let bytes = 1 << 30;
        let attacker = AttackerAddr::add(&s.gw_a)?;
        let dst = wan::at(wan::B4, m.port);
        let mut capture = Capture::start(
            &s.gw_b,
            "wan0",
            CaptureFilter {
                dst_port: Some(m.port),
                dst_addr: Some(wan::B4),
                min_len: 64,
                ..CaptureFilter::default()
            },
        )?;
        let before = b.show()?;
        let transfer = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, m.lan_b4, bytes)?;
        let real = capture
            .collect(256, Duration::from_secs(10))?
            .into_iter()
            .map(|c| c.payload)
            .filter(|p| keep(p))
            .collect();
        drop(capture);
        Ok(Attack {
            _attacker: attacker,
            dst,
            before,
            transfer,
            real,
        })
    }
}

/// The hostile input rows of both modes: [`intact_row`], [`reasons_row`].
pub const HOSTILE_ROWS: [&str; 2] = [
    "hostile: transfer intact under attack",
    "hostile: drops counted by reason",
];

/// The row that the transfer came through the attack whole, with ringtun
/// still running and the input sent while it ran. `among`, if any, says
/// what of the input was delivered among the transfer.
pub fn intact_row(
    ctx: &mut Ctx,
    report: &traffic::Result<BulkReport>,
    running: bool,
    during: bool,
    among: Option<&str>,
) {
    let check = HOSTILE_ROWS[0];
    if !ctx.wants(check) {
        return;
    }
    let state = if running { "still up" } else { "DIED" };
    let (ok, fig) = match report {
        Ok(r) => (
            r.intact() && running && during,
            format!(
                "{}; ringtun {state}; {}input sent {} the transfer",
                checks::bulk_figure(r),
                among.map(|a| format!("{a}; ")).unwrap_or_default(),
                if during { "during" } else { "partly AFTER" }
            ),
        ),
        Err(e) => (false, format!("{e}; ringtun {state}")),
    };
    ctx.table.check(check, ok, fig);
}

/// The row that every drop reason in `want` rose from `before` to
/// `after`, `sent` saying what was sent; it fails too if nothing real was
/// `captured` to damage.
pub fn reasons_row(
    ctx: &mut Ctx,
    (before, after): (&InterfaceStatus, &InterfaceStatus),
    want: &[&str],
    sent: &str,
    captured: bool,
) {
    let check = HOSTILE_ROWS[1];
    if !ctx.wants(check) {
        return;
    }
    let d = drop_deltas(before, after);
    let rose = |r: &str| d.iter().any(|(n, v)| n == r && *v > 0);
    let missing: Vec<&str> = want.iter().copied().filter(|r| !rose(r)).collect();
    let fig = format!(
        "{sent}: {}{}",
        fmt_deltas(&d),
        if missing.is_empty() {
            String::new()
        } else {
            format!("; did not rise: {}", missing.join(", "))
        }
    );
    ctx.table.check(check, missing.is_empty() && captured, fig);
}

/// How long the hostile rows wait for every expected drop reason to rise
/// after their input was sent: a functional bound, not a speed (an idle
/// machine needs a few milliseconds, a busy one may need seconds).
pub const REASONS_WITHIN: Duration = Duration::from_secs(30);

/// Gateway B's status once every reason in `want` has risen since
/// `before`, or the latest one after [`REASONS_WITHIN`] (then
/// [`reasons_row`] names what did not rise).
pub fn status_once_risen(
    ctx: &Ctx,
    b: &Ringtun,
    before: &InterfaceStatus,
    want: &[&str],
) -> Result<InterfaceStatus> {
    let started = Instant::now();
    loop {
        let now = b.show()?;
        let d = drop_deltas(before, &now);
        let all_rose = want.iter().all(|r| d.iter().any(|(n, v)| n == r && *v > 0));
        if all_rose || started.elapsed() > REASONS_WITHIN {
            return Ok(now);
        }
        ctx.interrupted()?;
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The attacker's address on gateway A's WAN port, for as long as it lives.
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
