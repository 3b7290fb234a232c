//! The first packet after a peer restarts. ringtun stays up on gateway A
//! and answers handshakes (it has no endpoint for B, so it never
//! initiates); the peer on gateway B (ringtun, wireguard-go or boringtun)
//! is stopped by SIGTERM or SIGKILL and started again, and one ping from
//! lan-b, the restarted peer's first packet, must be answered. The reply
//! must leave on the session the restarted peer has just made, not on the
//! one it forgot: a lost reply is never sent again, so one echo with a
//! long timeout tells the two apart on a busy machine as on an idle one.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use netctl::ping::{Echo, PingOptions};
use ringtun_tests::ringtun::{Keypair, Ringtun};

use super::checks::{self, Ctx, Stop};
use super::lab::{Sites, l3, wan};
use crate::peers::{self, Tools, Userspace, UserspacePeer, WgConf};

/// How long the one echo may take: a handshake on a loaded machine, with
/// room for one retransmitted initiation (REKEY_TIMEOUT is 5 s).
const ECHO_TIMEOUT: Duration = Duration::from_secs(12);

/// How long the session before the restart may take to come up.
const FIRST_SESSION: Duration = Duration::from_secs(10);

/// The two rows for the peer `name` (`ringtun`, `wireguard-go`, ...).
pub fn row_names(name: &str) -> [String; 2] {
    [Stop::Term, Stop::Kill].map(|how| {
        format!(
            "first packet after {name} restarts ({})",
            match how {
                Stop::Term => "SIGTERM",
                Stop::Kill => "SIGKILL",
            }
        )
    })
}

/// The peer on gateway B, stopped and started again.
enum PeerB<'a> {
    Ringtun {
        daemon: Option<Ringtun>,
        path: &'a Path,
    },
    Userspace {
        kind: Userspace,
        tools: &'a Tools,
        iface: String,
        conf: WgConf,
        peer: Option<UserspacePeer>,
    },
}

impl PeerB<'_> {
    fn start(&mut self, ctx: &Ctx, s: &Sites) -> Result<()> {
        match self {
            PeerB::Ringtun { daemon, path } => {
                *daemon = Some(Ringtun::up(&s.gw_b, path, &ctx.up_options(false))?);
            }
            PeerB::Userspace {
                kind,
                tools,
                iface,
                conf,
                peer,
            } => {
                *peer = Some(UserspacePeer::start(
                    *kind,
                    tools,
                    &s.gw_b,
                    iface,
                    conf,
                    ctx.dir.path(),
                )?);
            }
        }
        Ok(())
    }

    /// Stops it `how`; for SIGTERM, an unclean exit is an error.
    fn stop(&mut self, how: Stop) -> Result<()> {
        match (self, how) {
            (PeerB::Ringtun { daemon, .. }, Stop::Term) => {
                if let Some(d) = daemon.take() {
                    checks::terminate(d)?;
                }
            }
            (PeerB::Ringtun { daemon, .. }, Stop::Kill) => {
                if let Some(mut d) = daemon.take() {
                    let (ns, iface) = (d.netns().to_string(), d.iface().to_string());
                    d.kill()?;
                    drop(d);
                    checks::wait_link_gone(&ns, &iface, Duration::from_secs(10))?;
                    checks::wait_udp_port_free(&ns, l3::PORT, Duration::from_secs(10))?;
                }
            }
            (PeerB::Userspace { peer, .. }, how) => {
                if let Some(mut p) = peer.take() {
                    match how {
                        Stop::Term => p.stop()?,
                        Stop::Kill => p.kill()?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// The rows for one peer kind on gateway B (`None`: ringtun).
pub fn rows(ctx: &mut Ctx, s: &Sites, kind: Option<Userspace>, build_dir: &Path) -> Result<()> {
    let name = kind.map_or("ringtun", Userspace::name);
    let names = row_names(name);
    if !ctx.wants_any(&[&names[0], &names[1]]) {
        return Ok(());
    }
    ctx.interrupted()?;
    ctx.table.context("wireguard", name);
    let tools = match kind.map(|k| peers::ensure(k, ctx.opts.install, build_dir)) {
        Some(Err(why)) => {
            for n in &names {
                if ctx.wants(n) {
                    ctx.table.skip(n.as_str(), why.clone());
                }
            }
            return Ok(());
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let (ka, kb) = (Keypair::generate()?, Keypair::generate()?);
    let a_conf =
        super::wireguard::conf(&ka, &kb, l3::TUN_A, &super::wireguard::allowed_at_a(), None);
    let a_path = a_conf.write(ctx.dir.path(), "rt-a")?;
    let to_a: SocketAddr = wan::at(wan::A4, l3::PORT);
    let b_path = super::wireguard::conf(
        &kb,
        &ka,
        l3::TUN_B,
        &super::wireguard::allowed_at_b(),
        Some(to_a),
    )
    .write(ctx.dir.path(), "rt-b")?;
    let mut b = match (kind, &tools) {
        (Some(kind), Some(tools)) => PeerB::Userspace {
            kind,
            tools,
            iface: UserspacePeer::iface_name(kind),
            conf: WgConf {
                private_key: kb.private_key.clone(),
                listen_port: l3::PORT,
                peer_public_key: ka.public_key.clone(),
                peer_endpoint: Some(to_a),
                allowed_ips: super::wireguard::allowed_at_b()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                addresses: l3::TUN_B.iter().map(|s| s.to_string()).collect(),
                mtu: l3::MTU,
            },
            peer: None,
        },
        _ => PeerB::Ringtun {
            daemon: None,
            path: &b_path,
        },
    };
    let a = match Ringtun::up(&s.gw_a, &a_path, &ctx.up_options(false)) {
        Ok(a) => a,
        Err(e) => {
            for n in &names {
                ctx.table
                    .fail(n.as_str(), format!("ringtun on gateway A: {e:#}"));
            }
            return Ok(());
        }
    };
    for (row, how) in names.iter().zip([Stop::Term, Stop::Kill]) {
        if !ctx.wants(row) {
            continue;
        }
        ctx.interrupted()?;
        let outcome = restart_then_ping(ctx, s, &mut b, how);
        match outcome {
            Ok((true, detail)) => ctx.table.check(row.as_str(), true, detail),
            Ok((false, detail)) => ctx.table.check(row.as_str(), false, detail),
            Err(e) => ctx.table.fail(row.as_str(), format!("{e:#}")),
        }
    }
    let _ = b.stop(Stop::Term);
    checks::terminate_row(ctx, a);
    Ok(())
}

/// A session first (so ringtun holds one the peer will forget), then the
/// restart, then the one echo.
fn restart_then_ping(ctx: &Ctx, s: &Sites, b: &mut PeerB, how: Stop) -> Result<(bool, String)> {
    b.stop(Stop::Term)?;
    b.start(ctx, s)?;
    let before = checks::ping_until(&s.lan_b, l3::LAN_A4, FIRST_SESSION)?;
    if !before.is_reply() {
        return Ok((
            false,
            format!("no session before the restart: lan-b -> lan-a {before:?}"),
        ));
    }
    b.stop(how)?;
    b.start(ctx, s)?;
    let opts = PingOptions {
        timeout: ECHO_TIMEOUT,
        ..PingOptions::default()
    };
    let echo = netctl::ping::echo_in(Some(&s.lan_b), l3::LAN_A4, &opts)?;
    Ok(match echo {
        Echo::Reply { rtt, .. } => (
            true,
            format!(
                "the restarted peer's first packet answered in {:.1} ms (its handshake included)",
                rtt.as_secs_f64() * 1e3
            ),
        ),
        other => (
            false,
            format!(
                "the restarted peer's first packet got {other:?} within {ECHO_TIMEOUT:?}: the reply was lost"
            ),
        ),
    })
}
