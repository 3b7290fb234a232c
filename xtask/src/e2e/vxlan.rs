//! `vxlan` mode: one LAN stretched over both sites. ringtun on both
//! gateways (offloads on and off, lossy WAN, restarts, hostile input,
//! frame sizes), then the Linux kernel's vxlan device on gateway B against
//! ringtun on gateway A.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use dataplane::offload::ETHERNET_HEADER_LEN;
use netctl::Netlink;
use ringtun_tests::ringtun::{Conf, PeerConf, Ringtun};

use super::checks::{self, Ctx, socket_in};
use super::hostile;
use super::lab::{self, Sites, l2, wan};
use super::probe::Probe;
use super::rows::{self, Attack, HOSTILE_ROWS, Mode, OwnRows};
use crate::peers::KernelVxlan;

const MODE: Mode = Mode {
    name: "vxlan",
    lan_a4: l2::LAN_A4,
    lan_b4: l2::LAN_B4,
    lan_a6: l2::LAN_A6,
    lan_b6: l2::LAN_B6,
    reach_gw: ["reach gateway bridges v4", "reach gateway bridges v6"],
    gw_a4: l2::GW_A4,
    gw_b4: l2::GW_B4,
    gw_a6: l2::GW_A6,
    gw_b6: l2::GW_B6,
    mtu: l2::MTU,
    port: l2::PORT,
    // A VTEP sends from a source port per flow (RFC 7348 §5), to the
    // configured port of the other.
    replies_to_source_port: false,
    // ARP/ND across the overlay.
    first_reply: Duration::from_secs(5),
    fits: "size: full-size 1450 B frame crosses",
};

fn conf(vtep: SocketAddr) -> Conf {
    Conf::vxlan(l2::VNI)
        .listen_port(l2::PORT)
        .workers(super::wireguard::E2E_WORKERS)
        .bridge("br-lan")
        .mtu(l2::MTU)
        .peer(PeerConf::vtep(vtep))
}

/// Both gateways' configurations: each has the other as its one VTEP.
fn confs((to_b, to_a): rows::Endpoints) -> (Conf, Conf) {
    (conf(to_b), conf(to_a))
}

/// Runs every vxlan-mode row the filters select.
pub fn run(ctx: &mut Ctx, peer_filter: &dyn Fn(&str) -> bool) -> Result<()> {
    rows::in_lab(ctx, &MODE, ("two-sites-l2.toml", "vx"), |ctx, s| {
        if peer_filter("ringtun") {
            ringtun_pair(ctx, s)?;
        }
        if peer_filter("kernel") {
            kernel(ctx, s)?;
        }
        Ok(())
    })
}

/// ringtun on both gateways, every row.
fn ringtun_pair(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    ctx.table.context(MODE.name, "ringtun");
    rows::ringtun_pair(
        ctx,
        s,
        &MODE,
        &confs,
        &OwnRows {
            names: &[OVERSIZED, HOSTILE_ROWS[0], HOSTILE_ROWS[1]],
            sizes: &|ctx| oversized(ctx, s),
            hostile: &|ctx, b| hostile_vxlan(ctx, s, b),
        },
    )?;
    super::spread::rows(ctx, s, &MODE, confs(MODE.direct()))?;
    rows::lossy_1pct(ctx, s, &MODE, &confs, false)
}

/// The row that a host wrongly set to MTU 1500 sends a 1514-byte frame
/// that the LAN (MTU 1450) drops at the gateway's port and counts.
const OVERSIZED: &str = "size: oversized frame is dropped and counted";

fn oversized(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    let check = OVERSIZED;
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

/// The drop reasons the hostile input at a VXLAN port must raise.
const HOSTILE_VXLAN_REASONS: &[&str] = &["disallowed_source", "malformed", "wrong_vni"];

/// Hostile input at gateway B's VXLAN port while lan-a sends to lan-b.
/// VXLAN has no authentication: what a VTEP's address sends is taken, so
/// the checks are that nothing from elsewhere is, that damaged headers are
/// refused by reason, and that the transfer survives what gets through.
fn hostile_vxlan(ctx: &mut Ctx, s: &Sites, b: &mut Ringtun) -> Result<()> {
    if !ctx.wants_any(&HOSTILE_ROWS) {
        return Ok(());
    }
    ctx.interrupted()?;
    let attack = Attack::start(ctx, s, &MODE, b, |_| true)?;
    let (dst, real) = (attack.dst, &attack.real);
    // From an address no VTEP has: all refused whatever they hold.
    let stranger = socket_in(&s.gw_a, SocketAddr::new(wan::ATTACKER_IP, 0))?;
    // From gateway A's own address (another port: the kernel's VXLAN
    // varies its source port too), so the headers are what is judged.
    let spoof = socket_in(&s.gw_a, SocketAddr::new(wan::A4, 0))?;
    let random = hostile::random_datagrams(&mut ctx.rng, 2000);
    // Shorter than a VXLAN header plus an Ethernet header.
    let too_short = tunnel_proto::vxlan::HEADER_LEN + ETHERNET_HEADER_LEN - 1;
    let truncated: Vec<Vec<u8>> = hostile::truncated(&mut ctx.rng, real)
        .into_iter()
        .map(|mut d| {
            d.truncate(d.len().min(too_short));
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
    let flipped = hostile::bit_flipped(&mut ctx.rng, real);
    let n_stranger = hostile::send_all(&stranger, dst, &random);
    let n_random = hostile::send_all(&spoof, dst, &random);
    let n_trunc = hostile::send_all(&spoof, dst, &truncated);
    let n_vni = hostile::send_all(&spoof, dst, &wrong_vni);
    let n_flip = hostile::send_all(&spoof, dst, &flipped);
    let n_replay = hostile::send_all(&spoof, dst, real);
    let during = !attack.transfer.is_finished();
    let mid = rows::status_once_risen(ctx, b, &attack.before, HOSTILE_VXLAN_REASONS)?;
    let report = checks::wait_bulk(ctx, attack.transfer)?;
    let running = b.is_running();

    rows::intact_row(
        ctx,
        &report,
        running,
        during,
        Some(&format!(
            "{n_flip} bit-flipped and {n_replay} replayed frames delivered among it"
        )),
    );
    rows::reasons_row(
        ctx,
        (&attack.before, &mid),
        HOSTILE_VXLAN_REASONS,
        &format!(
            "sent {n_stranger} from a stranger, {n_random} random, {n_trunc} truncated, {n_vni} wrong-VNI from the VTEP's address"
        ),
        !real.is_empty(),
    );
    Ok(())
}

/// The kernel's vxlan device on gateway B, ringtun on gateway A.
fn kernel(ctx: &mut Ctx, s: &Sites) -> Result<()> {
    ctx.table.context(MODE.name, "kernel vxlan");
    if !ctx.wants_any(&MODE.core_rows()) {
        return Ok(());
    }
    ctx.interrupted()?;
    let vx = match KernelVxlan::start(
        &s.gw_b,
        lab::KERNEL_VXLAN,
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
    let path = conf(wan::at(wan::B4, l2::PORT)).write(ctx.dir.path(), lab::TUN_A)?;
    let up = ctx.up_options(false);
    let a = match Ringtun::up(&s.gw_a, &path, &up) {
        Ok(a) => a,
        Err(e) => {
            ctx.table.fail("ringtun up", format!("{e:#}"));
            return Ok(());
        }
    };
    rows::core(ctx, s, &MODE)?;
    checks::terminate_row(ctx, a);
    drop(vx);
    Ok(())
}
