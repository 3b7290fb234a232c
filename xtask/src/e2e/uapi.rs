//! The `uapi:` rows (wireguard mode, peer ringtun): ringtun operated as
//! WireGuard is, by the stock WireGuard tools over its configuration
//! socket in `/var/run/wireguard`. `wg show`, `showconf` and `dump`
//! print what the file says ([`show`]); `wg syncconf` during a transfer
//! changes nothing ([`syncconf`]); a second peer is removed and added back
//! and a prefix moves between peers while traffic flows ([`peers`]);
//! wg-quick brings an interface up and down, also as a full tunnel kept
//! out of itself by its fwmark ([`wg_quick`]); a Prometheus exporter reads
//! the counters ([`exporter`]); hostile requests and users are refused
//! ([`socket`]).
//!
//! `/var/run/wireguard` is shared by every namespace of the host, so each
//! interface here has a name of this run's own ([`iface`]), and the rows
//! run in a lab of their own with a third gateway
//! (`xtask/topologies/three-sites-l3.toml`).

mod exporter;
mod peers;
mod show;
mod socket;
mod syncconf;
mod wg_quick;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Result, bail};
use ringtun_tests::ringtun::{Conf, Keypair, PeerConf, Ringtun, UAPI_DIR_ENV};

use super::checks::{self, Ctx};
use super::lab::{self, l3, l3c, wan};
use super::table::Diagnostics;
use crate::labs::LabGuard;
use crate::process;

/// `wg show IFACE`, `wg show all dump` and `wg showconf IFACE` against
/// the file, after traffic.
pub const SHOW: &str = "uapi: wg show, showconf, dump";
/// `wg syncconf` with the same configuration, again and again during a
/// transfer.
pub const SYNCCONF: &str = "uapi: syncconf under load";
/// A second peer removed and added back during a transfer with the first.
pub const REMOVE_ADD: &str = "uapi: remove and addconf a second peer";
/// A prefix moved from one peer to another.
pub const MOVE: &str = "uapi: allowed ips move between peers";
/// wg-quick up and down with ringtun as its userspace implementation.
pub const WG_QUICK: &str = "uapi: wg-quick up and down";
/// The same as a full tunnel: policy routing and the fwmark.
pub const WG_QUICK_FULL: &str = "uapi: wg-quick up and down, full tunnel (fwmark)";
/// The counters through prometheus_wireguard_exporter.
pub const EXPORTER: &str = "uapi: prometheus exporter";
/// Malformed, partial and stalled requests on the raw socket.
pub const BAD_INPUT: &str = "uapi: bad input refused, nothing changed";
/// Users that are not root, also with a user namespace of their own.
pub const PERMISSION: &str = "uapi: permission refused";

/// The rows that run against ringtun on all three gateways.
const GATEWAY_ROWS: [&str; 7] = [
    SHOW, SYNCCONF, REMOVE_ADD, MOVE, EXPORTER, BAD_INPUT, PERMISSION,
];
/// The row that fails when the three gateways cannot be started.
const UP: &str = "uapi: ringtun up with its socket in /var/run/wireguard";

/// Where the WireGuard tools look for configuration sockets.
pub const WG_DIR: &str = "/var/run/wireguard";
/// How long one `wg` command may run (a stalled client ahead of it on a
/// socket holds it up for 5 s).
const WG_TIMEOUT: Duration = Duration::from_secs(20);

/// An interface name of this run's own for `role` (`a`, `b`, `c`, `q`):
/// `rtu` + role + the pid tag the cleanup row looks for, at most 13 bytes.
pub fn iface(role: char) -> String {
    format!("rtu{role}{}", std::process::id() % 1_000_000)
}

/// The configuration socket of `iface` in [`WG_DIR`].
pub fn socket_path(iface: &str) -> PathBuf {
    Path::new(WG_DIR).join(format!("{iface}.sock"))
}

/// The namespaces of the uapi lab.
pub struct Sites3 {
    /// LAN host of site A.
    pub lan_a: String,
    /// Gateway A.
    pub gw_a: String,
    /// Gateway B.
    pub gw_b: String,
    /// LAN host of site B.
    pub lan_b: String,
    /// Gateway C.
    pub gw_c: String,
}

impl Sites3 {
    fn of(lab: &LabGuard) -> Sites3 {
        Sites3 {
            lan_a: lab.ns("lan-a"),
            gw_a: lab.ns("gw-a"),
            gw_b: lab.ns("gw-b"),
            lan_b: lab.ns("lan-b"),
            gw_c: lab.ns("gw-c"),
        }
    }
}

/// `wg` (wireguard-tools) run inside a namespace.
#[derive(Clone, Debug)]
pub struct Wg {
    /// The program.
    pub path: PathBuf,
}

impl Wg {
    /// `wg ARGS` in `ns`; its stdout, or an error with its stderr.
    pub fn run(&self, ns: &str, args: &[&str]) -> Result<String> {
        process::run_with_timeout(ns, &self.path, args, WG_TIMEOUT)
    }

    /// `wg ARGS` in `ns`, however it exits.
    pub fn output(&self, ns: &str, args: &[&str]) -> Result<Output> {
        process::output_in(ns, &self.path, args, &[], WG_TIMEOUT)
    }

    /// `wg showconf IFACE` in `ns`.
    pub fn showconf(&self, ns: &str, iface: &str) -> Result<String> {
        self.run(ns, &["showconf", iface])
    }
}

/// The key pairs of the three gateways.
pub struct Keys {
    /// Gateway A's.
    pub a: Keypair,
    /// Gateway B's.
    pub b: Keypair,
    /// Gateway C's.
    pub c: Keypair,
}

impl Keys {
    fn generate() -> Result<Keys> {
        Ok(Keys {
            a: Keypair::generate()?,
            b: Keypair::generate()?,
            c: Keypair::generate()?,
        })
    }
}

/// A wireguard peer with these AllowedIPs and endpoint.
fn peer(public_key: &str, allowed: &[&str], endpoint: Option<SocketAddr>) -> PeerConf {
    let mut p = PeerConf::wireguard(public_key);
    for a in allowed {
        p = p.allowed_ip(a);
    }
    if let Some(e) = endpoint {
        p = p.endpoint(e);
    }
    p
}

/// Gateway A's peer B: B's tunnel address, site B and the shared prefixes.
pub fn peer_b_at_a(keys: &Keys, endpoint: SocketAddr) -> PeerConf {
    let mut allowed = l3::TUN_B_HOST.to_vec();
    allowed.extend(l3::LAN_B_NETS);
    allowed.extend(l3c::SHARED_NETS);
    peer(&keys.b.public_key, &allowed, Some(endpoint))
}

/// Gateway C's own prefixes: its tunnel address and site C.
pub fn own_c() -> Vec<&'static str> {
    let mut allowed = l3c::TUN_C_HOST.to_vec();
    allowed.extend(l3c::SITE_C_NETS);
    allowed
}

/// Gateway A's peer C: [`own_c`], at gw-c's WAN address.
pub fn peer_c_at_a(keys: &Keys) -> PeerConf {
    peer(
        &keys.c.public_key,
        &own_c(),
        Some(wan::at(l3c::WAN_C4, l3::PORT)),
    )
}

/// Gateway A (as B and C see it): its tunnel address and site A.
fn peer_a(keys: &Keys, endpoint: Option<SocketAddr>) -> PeerConf {
    let mut allowed = l3::TUN_A_HOST.to_vec();
    allowed.extend(l3::LAN_A_NETS);
    peer(&keys.a.public_key, &allowed, endpoint)
}

/// A gateway's interface with `addresses`, the lab's port and MTU.
fn interface(me: &Keypair, addresses: [&str; 2]) -> Conf {
    Conf::wireguard(me)
        .listen_port(l3::PORT)
        .address(addresses[0])
        .address(addresses[1])
        .mtu(l3::MTU)
}

/// The three gateways' files: A with peers B and C, B and C with A.
/// Every gateway handshakes at start; B and C are up first, so their
/// initiations go unanswered until A's handshake makes a session, which
/// must end their retries (the rows that count handshakes would count
/// one more each).
pub struct Confs {
    /// Gateway A's.
    pub a: Conf,
    /// Gateway B's.
    pub b: Conf,
    /// Gateway C's.
    pub c: Conf,
}

impl Confs {
    fn new(keys: &Keys) -> Confs {
        Confs {
            a: interface(&keys.a, l3::TUN_A)
                .peer(peer_b_at_a(keys, wan::at(wan::B4, l3::PORT)))
                .peer(peer_c_at_a(keys)),
            b: interface(&keys.b, l3::TUN_B).peer(peer_a(keys, Some(wan::at(wan::A4, l3::PORT)))),
            c: interface(&keys.c, l3c::TUN_C)
                .peer(peer_a(keys, Some(wan::at(l3c::WAN_A4, l3::PORT)))),
        }
    }
}

/// `conf` in wg's own format, as `wg-quick strip` prints it: the
/// interface's key and port, and the peers; neither wg-quick's keys
/// (Address, MTU, ...) nor ringtun's own (Mode, PinEndpoint, ...).
pub fn wg_format(conf: &Conf) -> String {
    let mut s = String::from("[Interface]\n");
    if let Some(k) = &conf.private_key {
        let _ = writeln!(s, "PrivateKey = {k}");
    }
    if let Some(p) = conf.listen_port {
        let _ = writeln!(s, "ListenPort = {p}");
    }
    for p in &conf.peers {
        s.push_str(&peer_section(p));
    }
    s
}

/// One `[Peer]` section in wg's format.
pub fn peer_section(p: &PeerConf) -> String {
    let mut s = String::from("\n[Peer]\n");
    if let Some(k) = &p.public_key {
        let _ = writeln!(s, "PublicKey = {k}");
    }
    if let Some(k) = &p.preshared_key {
        let _ = writeln!(s, "PresharedKey = {k}");
    }
    if !p.allowed_ips.is_empty() {
        let _ = writeln!(s, "AllowedIPs = {}", p.allowed_ips.join(", "));
    }
    if let Some(e) = &p.endpoint {
        let _ = writeln!(s, "Endpoint = {e}");
    }
    if let Some(k) = p.persistent_keepalive {
        let _ = writeln!(s, "PersistentKeepalive = {k}");
    }
    s
}

/// `conf` as a wg-quick file: wg's format plus Address and MTU.
pub fn wg_quick_format(conf: &Conf) -> String {
    let wg = wg_format(conf);
    let mut s = String::from("[Interface]\n");
    for a in &conf.addresses {
        let _ = writeln!(s, "Address = {a}");
    }
    if let Some(m) = conf.mtu {
        let _ = writeln!(s, "MTU = {m}");
    }
    s.push_str(wg.strip_prefix("[Interface]\n").unwrap_or(&wg));
    s
}

/// Starts `ringtun up` for `conf` in `ns` as interface `iface`, its
/// socket in [`WG_DIR`] (`RINGTUN_UAPI_DIR` empty: the default) where the
/// WireGuard tools look.
pub fn up(ctx: &Ctx, ns: &str, conf: &Conf, iface: &str) -> Result<Ringtun> {
    let path = conf.write(ctx.dir.path(), iface)?;
    let mut opts = ctx.up_options(false);
    opts.name = Some(iface.to_string());
    opts.env.push((UAPI_DIR_ENV.to_string(), String::new()));
    Ok(Ringtun::up(ns, &path, &opts)?)
}

/// ringtun on the three gateways, sockets in [`WG_DIR`].
pub struct Gateways {
    /// Gateway A's (peers B and C).
    pub a: Ringtun,
    /// Gateway B's (peer A).
    pub b: Ringtun,
    /// Gateway C's (peer A).
    pub c: Ringtun,
}

impl Gateways {
    /// Starts B and C, then A (whose handshakes at start then find both up).
    fn start(ctx: &Ctx, s: &Sites3, confs: &Confs) -> Result<Gateways> {
        let b = up(ctx, &s.gw_b, &confs.b, &iface('b'))?;
        let c = up(ctx, &s.gw_c, &confs.c, &iface('c'))?;
        let a = up(ctx, &s.gw_a, &confs.a, &iface('a'))?;
        Ok(Gateways { a, b, c })
    }

    /// Stops all three; one that does not stop cleanly is a failed row.
    fn stop_row(self, ctx: &mut Ctx) {
        for d in [self.a, self.b, self.c] {
            checks::terminate_row(ctx, d);
        }
    }
}

/// `ringtun show IFACE` (text) in `ns` for a socket in [`WG_DIR`], or why not.
fn ringtun_show_text(ns: &str, iface: &str) -> String {
    let env = [(UAPI_DIR_ENV.to_string(), String::new())];
    match ringtun_tests::ringtun::run_with_env(Some(ns), &["show", iface], &env) {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("{e}\n"),
    }
}

/// Diagnostics for a failing row: `ringtun show` of every interface of
/// this lab whose socket exists, and `wg show` of them.
fn diagnostics(wg: Wg, s: &Sites3) -> Diagnostics {
    let ifaces: Vec<(String, String)> = [
        (&s.gw_a, 'a'),
        (&s.gw_b, 'b'),
        (&s.gw_c, 'c'),
        (&s.gw_a, 'q'),
    ]
    .into_iter()
    .map(|(ns, role)| (ns.clone(), iface(role)))
    .collect();
    Box::new(move || {
        let mut out = String::new();
        for (ns, name) in &ifaces {
            if !socket_path(name).exists() {
                continue;
            }
            let _ = writeln!(out, "ringtun show {name} in {ns}:");
            out.push_str(&ringtun_show_text(ns, name));
            match wg.run(ns, &["show", name]) {
                Ok(text) => {
                    let _ = writeln!(out, "wg show {name}:\n{text}");
                }
                Err(e) => {
                    let _ = writeln!(out, "wg show {name}: {e:#}");
                }
            }
        }
        out
    })
}

/// Removes, when dropped, the sockets of this run's interfaces that
/// nobody answers on: a daemon killed outright (a failed start, SIGKILL)
/// leaves its socket in the shared [`WG_DIR`], where no lab's removal
/// takes it. A socket something still answers on is left for the cleanup
/// row to report.
struct SocketSweep;

impl Drop for SocketSweep {
    fn drop(&mut self) {
        for role in ['a', 'b', 'c', 'q'] {
            let path = socket_path(&iface(role));
            let refused = std::os::unix::net::UnixStream::connect(&path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
            if refused {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Runs the `uapi:` rows `--only` selects, in a lab of their own.
pub fn run(ctx: &mut Ctx, build_dir: &Path) -> Result<()> {
    let mut rows = GATEWAY_ROWS.to_vec();
    rows.extend([WG_QUICK, WG_QUICK_FULL]);
    if !ctx.wants_any(&rows) {
        return Ok(());
    }
    ctx.interrupted()?;
    ctx.table.context("wireguard", "ringtun");
    let wg = match crate::peers::ensure_wg(ctx.opts.install) {
        Ok(path) => Wg { path },
        Err(why) => {
            for r in rows {
                if ctx.wants(r) {
                    ctx.table.skip(r, why.clone());
                }
            }
            return Ok(());
        }
    };
    // Before any daemon starts: a cold install takes minutes, and the
    // rows read handshake times.
    let exporter = if ctx.wants(EXPORTER) {
        crate::peers::ensure_exporter(ctx.opts.install, build_dir)
    } else {
        Err("not wanted".into())
    };
    let _sweep = SocketSweep;
    let lab = lab::apply("three-sites-l3.toml", "uapi", ctx.opts.keep)?;
    let s = Sites3::of(&lab);
    ctx.table.set_diagnostics(Some(diagnostics(wg.clone(), &s)));
    let result = all_rows(ctx, &s, &wg, &exporter);
    ctx.table.set_diagnostics(None);
    drop(lab);
    result
}

fn all_rows(ctx: &mut Ctx, s: &Sites3, wg: &Wg, exporter: &Result<PathBuf, String>) -> Result<()> {
    let keys = Keys::generate()?;
    let confs = Confs::new(&keys);
    if ctx.wants_any(&GATEWAY_ROWS) {
        match Gateways::start(ctx, s, &confs) {
            Err(e) => ctx.table.fail(UP, format!("{e:#}")),
            Ok(gw) => {
                let result = gateway_rows(ctx, s, wg, &keys, &confs, &gw, exporter);
                gw.stop_row(ctx);
                result?;
            }
        }
    }
    wg_quick::rows(ctx, s, wg, &keys)
}

fn gateway_rows(
    ctx: &mut Ctx,
    s: &Sites3,
    wg: &Wg,
    keys: &Keys,
    confs: &Confs,
    gw: &Gateways,
    exporter: &Result<PathBuf, String>,
) -> Result<()> {
    // What a transfer from lan-a to lan-b moves per second, measured once
    // by the first row that sizes a transfer by it.
    let mut rate = None;
    checks::guarded(ctx, SHOW, |ctx| show::row(ctx, s, wg, keys, confs))?;
    checks::guarded(ctx, SYNCCONF, |ctx| {
        syncconf::row(ctx, s, wg, (keys, confs), gw, &mut rate)
    })?;
    checks::guarded(ctx, REMOVE_ADD, |ctx| {
        peers::remove_add(ctx, s, wg, keys, gw, &mut rate)
    })?;
    checks::guarded(ctx, MOVE, |ctx| peers::move_prefix(ctx, s, wg, keys, gw))?;
    checks::guarded(ctx, EXPORTER, |ctx| {
        exporter::row(ctx, s, keys, gw, exporter)
    })?;
    checks::guarded(ctx, BAD_INPUT, |ctx| socket::bad_input(ctx, s, wg, keys))?;
    checks::guarded(ctx, PERMISSION, |ctx| socket::permission(ctx, s, wg))?;
    Ok(())
}

/// The row `row`: passes with `figure` when nothing is `wrong`, else
/// fails with what was wrong, then the figure.
fn verdict(ctx: &mut Ctx, row: &str, wrong: &[String], figure: &str) {
    if wrong.is_empty() {
        ctx.table.pass(row, figure);
    } else {
        ctx.table
            .fail(row, format!("{}; {figure}", wrong.join("; ")));
    }
}

/// Bytes per second of a transfer from lan-a to lan-b through the
/// tunnel, measured with a 256 MiB transfer the first time (an error if
/// it does not arrive whole).
pub fn measured_rate(ctx: &mut Ctx, s: &Sites3, rate: &mut Option<f64>) -> Result<f64> {
    if let Some(r) = *rate {
        return Ok(r);
    }
    let t = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, l3::LAN_B4, 256 << 20)?;
    let r = match checks::wait_bulk(ctx, t)? {
        Ok(r) if r.intact() => r,
        Ok(r) => bail!("measuring the rate: {}", checks::bulk_figure(&r)),
        Err(e) => bail!("measuring the rate: {e}"),
    };
    let bps = r.bytes_received as f64 / r.elapsed.as_secs_f64().max(1e-3);
    *rate = Some(bps);
    Ok(bps)
}

/// A transfer size of about `seconds` at `rate`, whole MiB, between
/// `min` and `max`.
pub fn size_for(rate: f64, seconds: f64, min: u64, max: u64) -> u64 {
    let bytes = (rate * seconds) as u64;
    (bytes >> 20 << 20).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::generate().unwrap()
    }

    #[test]
    fn the_wg_format_keeps_keys_port_and_peers_and_drops_the_rest() {
        let k = keys();
        let confs = Confs::new(&k);
        let text = wg_format(&confs.a);
        assert!(text.starts_with("[Interface]\nPrivateKey = "), "{text}");
        assert!(text.contains("ListenPort = 51820\n"), "{text}");
        assert_eq!(text.matches("[Peer]").count(), 2, "{text}");
        assert!(
            text.contains("AllowedIPs = 10.99.0.2/32, fd99::2/128, 10.10.2.0/24"),
            "{text}"
        );
        assert!(text.contains("Endpoint = 198.51.100.3:51820"), "{text}");
        for gone in ["Mode", "Address", "MTU"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        let quick = wg_quick_format(&confs.a);
        assert!(
            quick.starts_with("[Interface]\nAddress = 10.99.0.1/24\n"),
            "{quick}"
        );
        assert!(quick.contains("MTU = 1420\nPrivateKey = "), "{quick}");
        assert_eq!(quick.matches("[Interface]").count(), 1, "{quick}");
        assert!(!quick.contains("Mode"), "{quick}");
    }

    #[test]
    fn interface_names_fit_and_are_this_runs() {
        let n = iface('q');
        assert!(n.len() <= 15, "{n}");
        assert!(n.ends_with(&(std::process::id() % 1_000_000).to_string()));
    }

    #[test]
    fn sizes_follow_the_rate_within_bounds() {
        assert_eq!(size_for(100e6, 5.0, 1 << 20, 1 << 40), 476 << 20);
        assert_eq!(size_for(1.0, 5.0, 256 << 20, 1 << 40), 256 << 20);
        assert_eq!(size_for(1e12, 5.0, 1, 8 << 30), 8 << 30);
    }
}
