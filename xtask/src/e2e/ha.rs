//! The `ha` rows: two sites, each with two ringtun gateways, routed by
//! FRR (`xtask/topologies/ha-sites.toml`). gw-a1 tunnels to gw-b1 and
//! gw-a2 to gw-b2, in wireguard mode with `Table = off`: ringtun adds no
//! route, BGP does. Each gateway runs eBGP with its partner over the
//! tunnel and with its site router over the site's core segment, BFD on
//! every session; the site routers install both tunnels (ECMP on ports).
//!
//! Rows, in order: BGP and BFD come up; the routers hold both paths, in
//! both families; 16 flows spread over both tunnels; one flow's data out
//! through one tunnel and its ACKs back through the other; ringtun on
//! gw-a1 killed under a flow that crosses it (failover), then started
//! again (recovery); gw-a2 drained (its routes withdrawn, then `ringtun
//! down`) under a flow that crosses it; everything stops and nothing is
//! left.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ringtun_tests::ringtun::{Keypair, Ringtun, UpOptions};
use ringtun_tests::traffic::{self, BulkOptions, BulkTransfer};

use super::checks::{self, Ctx};
use super::frr::{self, Frr, FrrRoot, Neighbor};
use super::lab::{self, HA_TUNNELS};

mod plan;

use plan::{
    A1, A2, B1, B2, BFD_INTERVAL_MS, GATEWAYS, SITES, gateway_conf, gateway_neighbors,
    ringtun_conf, router_conf,
};

/// The table's mode column for these rows (`--only ha` selects them).
pub const MODE: &str = "ha";

const UP: &str = "bgp established and bfd up on every session";
const ECMP: &str = "site routers install both tunnels, v4 and v6";
const REACH: &str = "reach lan v4 and v6 across the sites";
const SPREAD: &str = "16 tcp flows a->b use both tunnels";
const ASYMMETRIC: &str = "asymmetric: out through gw-a1, back through gw-b2";
const FAILOVER: &str = "failover: SIGKILL ringtun on gw-a1 under a flow through it";
const RECOVERY: &str = "recovery: ringtun on gw-a1 started again";
const DRAIN: &str = "graceful drain of gw-a2: withdraw, then ringtun down";
const STOPS: &str = "frr and ringtun stop; frr's processes, sockets and folders gone";

/// Every row, in the order they are made.
const ROWS: [&str; 9] = [
    UP, ECMP, REACH, SPREAD, ASYMMETRIC, FAILOVER, RECOVERY, DRAIN, STOPS,
];

/// BGP and BFD must be up within this of FRR's start.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// A route change (BFD down, a withdrawal) is waited for this long.
const ROUTE_CHANGE_WITHIN: Duration = Duration::from_secs(10);
/// A paced flow: slow enough to leave the machine idle, long enough to
/// span a failover.
const PACE: u64 = 8 << 20;
/// Seconds of a paced flow.
const PACED_SECONDS: u64 = 8;
/// Flows in the spread rows.
const FLOWS: usize = 16;
/// The least share of the bytes each gateway must carry in the spread rows.
const LEAST_SHARE: f64 = 0.20;

// ---------------------------------------------------------------- the lab

/// The lab while it runs: namespaces, the ringtuns, the FRR instances.
struct Ha {
    gw_ns: [String; 4],
    router_ns: [String; 2],
    host_ns: [String; 2],
    ringtun: [Option<Ringtun>; 4],
    conf_paths: Vec<PathBuf>,
    up: UpOptions,
    // Declared before `root`: stopped before their folder goes.
    gw_frr: Vec<Frr>,
    router_frr: Vec<Frr>,
    root: Option<FrrRoot>,
}

/// Runs the rows `--only` selects, in their own lab.
pub fn run(ctx: &mut Ctx) -> Result<()> {
    ctx.table.context(MODE, "ringtun");
    if !ctx.wants_any(&ROWS) {
        return Ok(());
    }
    ctx.interrupted()?;
    if let Some(why) = frr::missing() {
        for r in ROWS {
            if ctx.wants(r) {
                ctx.table.skip(r, why.clone());
            }
        }
        return Ok(());
    }
    let lab = lab::apply("ha-sites.toml", "ha", ctx.opts.keep)?;
    let root = FrrRoot::new()?;
    let gw_ns = GATEWAYS.map(|g| lab.ns(g.name));
    let instance_dirs: Vec<PathBuf> = GATEWAYS
        .iter()
        .map(|g| g.name)
        .chain(SITES.iter().map(|s| s.router))
        .map(|h| root.path().join(h))
        .collect();
    let show = checks::show_gateways(gw_ns.to_vec());
    ctx.table.set_diagnostics(Some(Box::new(move || {
        let mut out = show();
        for dir in &instance_dirs {
            out.push_str(&format!("frr in {}:\n", dir.display()));
            out.push_str(&frr::summary(dir));
        }
        out
    })));
    let mut ha = Ha {
        gw_ns,
        router_ns: SITES.map(|s| lab.ns(s.router)),
        host_ns: SITES.map(|s| lab.ns(s.host)),
        ringtun: [None, None, None, None],
        conf_paths: Vec::new(),
        up: ctx.up_options(false),
        gw_frr: Vec::new(),
        router_frr: Vec::new(),
        root: Some(root),
    };
    let result = ha.rows(ctx);
    // Stopped here whatever happened above, and the row says how.
    ha.stop_row(ctx);
    ctx.table.set_diagnostics(None);
    drop(ha);
    drop(lab);
    result
}

impl Ha {
    fn rows(&mut self, ctx: &mut Ctx) -> Result<()> {
        checks::unreachable(
            ctx,
            "isolation: no path between the LANs before BGP",
            &[(&self.host_ns[0], SITES[1].host4.into(), "a->b v4")],
        )?;
        let keys = [
            Keypair::generate()?,
            Keypair::generate()?,
            Keypair::generate()?,
            Keypair::generate()?,
        ];
        for (g, gw) in GATEWAYS.iter().enumerate() {
            let path = ringtun_conf(g, &keys).write(ctx.dir.path(), HA_TUNNELS[g])?;
            self.ringtun[g] = Some(
                Ringtun::up(&self.gw_ns[g], &path, &self.up)
                    .with_context(|| format!("starting ringtun on {}", gw.name))?,
            );
            self.conf_paths.push(path);
        }
        let started = Instant::now();
        let root = self.root.as_ref().context("FRR's folder is gone")?;
        for g in 0..GATEWAYS.len() {
            self.gw_frr
                .push(Frr::start(root, &self.gw_ns[g], &gateway_conf(g))?);
        }
        for s in 0..SITES.len() {
            self.router_frr
                .push(Frr::start(root, &self.router_ns[s], &router_conf(s))?);
        }

        let up = wait_for(CONVERGE_WITHIN, || self.sessions_down());
        let (up_ok, figure) = match &up {
            Ok(None) => (
                true,
                format!(
                    "{} BGP sessions and as many BFD sessions up {:.1} s after FRR started \
                     (BFD {BFD_INTERVAL_MS} ms x 3)",
                    self.session_count(),
                    started.elapsed().as_secs_f64()
                ),
            ),
            Ok(Some(down)) => (false, format!("after {CONVERGE_WITHIN:?}, not up: {down}")),
            Err(e) => (false, format!("{e:#}")),
        };
        if !up_ok {
            // Every selected row that needs the sessions says why it
            // could not run.
            for r in ROWS.into_iter().filter(|r| *r != STOPS) {
                if ctx.wants(r) {
                    ctx.table.fail(r, format!("BGP and BFD not up: {figure}"));
                }
            }
            return Ok(());
        }
        if ctx.wants(UP) {
            ctx.table.pass(UP, figure);
        }
        let both = self.wait_paths(ctx, [2, 2], CONVERGE_WITHIN)?;
        if ctx.wants(ECMP) {
            ctx.table.check(ECMP, both.is_ok(), match &both {
                Ok(t) => format!(
                    "rtr-a and rtr-b each hold 2 paths to the far LAN in v4 and v6 ({:.1} s after BGP)",
                    t.as_secs_f64()
                ),
                Err(e) => e.clone(),
            });
        }
        let (a, b) = (&self.host_ns[0], &self.host_ns[1]);
        checks::reach(
            ctx,
            REACH,
            &[
                (a, SITES[1].host4.into(), "a->b v4"),
                (a, SITES[1].host6.into(), "a->b v6"),
                (b, SITES[0].host4.into(), "b->a v4"),
                (b, SITES[0].host6.into(), "b->a v6"),
            ],
            Duration::from_secs(10),
        )?;
        if ctx.wants(SPREAD) {
            checks::guarded(ctx, SPREAD, |ctx| {
                let (ok, figure) = self.spread(ctx)?;
                ctx.table.check(SPREAD, ok, figure);
                Ok(())
            })?;
        }
        if ctx.wants(ASYMMETRIC) {
            checks::guarded(ctx, ASYMMETRIC, |ctx| self.asymmetric(ctx))?;
        }
        if ctx.wants(FAILOVER) {
            checks::guarded(ctx, FAILOVER, |ctx| self.failover(ctx))?;
        }
        if ctx.wants(RECOVERY) {
            checks::guarded(ctx, RECOVERY, |ctx| self.recovery(ctx))?;
        }
        if ctx.wants(DRAIN) {
            checks::guarded(ctx, DRAIN, |ctx| self.drain(ctx))?;
        }
        Ok(())
    }

    fn all_frr(&self) -> impl Iterator<Item = (&Frr, Vec<Neighbor>)> {
        self.gw_frr
            .iter()
            .enumerate()
            .map(|(g, f)| (f, gateway_neighbors(g)))
            .chain(
                self.router_frr
                    .iter()
                    .enumerate()
                    .map(|(s, f)| (f, router_conf(s).neighbors)),
            )
    }

    fn session_count(&self) -> usize {
        self.all_frr().map(|(_, n)| n.len()).sum()
    }

    /// `None` once every session of every instance is Established with
    /// BFD up; else which are not.
    fn sessions_down(&self) -> Result<Option<String>> {
        let mut down = Vec::new();
        for (f, neighbors) in self.all_frr() {
            down.extend(sessions_down_of(f, &neighbors)?);
        }
        Ok((!down.is_empty()).then(|| down.join(", ")))
    }

    /// Waits until rtr-a holds `want[0]` and rtr-b `want[1]` next hops in
    /// the kernel toward the far LAN, in both families; how long it took,
    /// or what they held at the deadline.
    fn wait_paths(
        &self,
        ctx: &Ctx,
        want: [usize; 2],
        within: Duration,
    ) -> Result<std::result::Result<Duration, String>> {
        self.wait_routes(ctx, within, "(v4, v6) paths", &format!("{want:?}"), || {
            let have = self.paths()?;
            let held = have
                .iter()
                .zip(want)
                .all(|(&(v4, v6), w)| v4 == w && v6 == w);
            Ok((held, format!("{have:?}")))
        })
    }

    /// Waits until each router's one IPv4 next hop toward the far LAN is
    /// gateway `via[router]`, or says what they are after `within`.
    fn wait_next_hops(
        &self,
        ctx: &Ctx,
        via: [usize; 2],
        within: Duration,
    ) -> Result<std::result::Result<Duration, String>> {
        let want = via.map(|g| GATEWAYS[g].core4.to_string());
        self.wait_routes(ctx, within, "IPv4 next hops", &format!("{want:?}"), || {
            let mut have = Vec::new();
            for (s, f) in self.router_frr.iter().enumerate() {
                have.push(f.fib_next_hops(SITES[1 - s].lan[0])?);
            }
            let held = have
                .iter()
                .zip(&want)
                .all(|(hops, w)| hops.as_slice() == std::slice::from_ref(w));
            Ok((held, format!("{have:?}")))
        })
    }

    /// Waits until `look` says the routers hold what is wanted; how long it
    /// took, or what `look` saw of `what` at the deadline against `want`.
    fn wait_routes(
        &self,
        ctx: &Ctx,
        within: Duration,
        what: &str,
        want: &str,
        mut look: impl FnMut() -> Result<(bool, String)>,
    ) -> Result<std::result::Result<Duration, String>> {
        let started = Instant::now();
        let result = wait_for(within, || {
            ctx.interrupted()?;
            let (held, have) = look()?;
            Ok((!held).then_some(have))
        })?;
        Ok(match result {
            None => Ok(started.elapsed()),
            Some(have) => Err(format!(
                "after {within:?}: {what} at rtr-a and rtr-b {have}, wanted {want}"
            )),
        })
    }

    /// (v4, v6) next hops in the kernel toward the far LAN, at each router.
    fn paths(&self) -> Result<[(usize, usize); 2]> {
        let mut out = [(0, 0); 2];
        for (s, f) in self.router_frr.iter().enumerate() {
            let far = &SITES[1 - s];
            out[s] = (f.fib_paths(far.lan[0])?, f.fib_paths(far.lan[1])?);
        }
        Ok(out)
    }

    /// (received, sent) bytes of gateway `g`'s one peer, 0 if it is not
    /// running.
    fn tunnel_bytes(&self, g: usize) -> Result<(u64, u64)> {
        let Some(r) = &self.ringtun[g] else {
            return Ok((0, 0));
        };
        let st = r.show()?;
        Ok(st
            .peers
            .iter()
            .fold((0, 0), |(rx, tx), p| (rx + p.rx_bytes, tx + p.tx_bytes)))
    }

    /// How gateway `g`'s workers split the packets it sent to (`sent`) or
    /// received from its peer, as `ringtun show` gives it: `48/52%`.
    fn worker_split(&self, g: usize, sent: bool) -> Result<String> {
        let Some(r) = &self.ringtun[g] else {
            return Ok("-".into());
        };
        let st = r.show()?;
        let Some(peer) = st.peers.first() else {
            return Ok("-".into());
        };
        let parts: Vec<String> = peer
            .worker_shares()
            .iter()
            .map(|w| {
                let v = if sent { w.sent } else { w.received };
                v.map_or("-".into(), |v| format!("{v:.0}"))
            })
            .collect();
        Ok(format!("{}%", parts.join("/")))
    }

    fn all_tunnel_bytes(&self) -> Result<[(u64, u64); 4]> {
        Ok([
            self.tunnel_bytes(A1)?,
            self.tunnel_bytes(A2)?,
            self.tunnel_bytes(B1)?,
            self.tunnel_bytes(B2)?,
        ])
    }

    /// 16 flows from LAN A to LAN B at once, each hashed at both ends;
    /// each gateway must carry at least a fifth of the bytes (sent on
    /// site A's, received on site B's). The routers' hash is random per
    /// flow: 16 flows split worse than 20/80 about 2% of the time, so a
    /// second set of flows is tried before the row fails on the split
    /// alone (a tunnel that carries nothing fails both).
    fn spread(&self, ctx: &mut Ctx) -> Result<(bool, String)> {
        let per_flow = (ctx.bulk_capped(256 << 20) / FLOWS as u64).max(1 << 20);
        let mut first = None;
        for attempt in 1..=2 {
            let before = self.all_tunnel_bytes()?;
            let started = Instant::now();
            let mut flows = Vec::new();
            for _ in 0..FLOWS {
                flows.push(checks::start_bulk(
                    ctx,
                    &self.host_ns[0],
                    &self.host_ns[1],
                    SITES[1].host4.into(),
                    per_flow,
                )?);
            }
            let broken = checks::wait_all_bulk(ctx, flows)?;
            let secs = started.elapsed().as_secs_f64();
            let after = self.all_tunnel_bytes()?;
            let sent = [A1, A2].map(|g| after[g].1.saturating_sub(before[g].1));
            let recv = [B1, B2].map(|g| after[g].0.saturating_sub(before[g].0));
            let share =
                |part: [u64; 2], i: usize| part[i] as f64 / (part[0] + part[1]).max(1) as f64;
            let shares = [
                share(sent, 0),
                share(sent, 1),
                share(recv, 0),
                share(recv, 1),
            ];
            let figure = format!(
                "{FLOWS} x {} in {secs:.1} s, {}/{FLOWS} intact; bytes sent by gw-a1 {:.0}%, gw-a2 {:.0}%, \
                 received by gw-b1 {:.0}%, gw-b2 {:.0}%",
                checks::human(per_flow),
                FLOWS - broken.len(),
                shares[0] * 100.0,
                shares[1] * 100.0,
                shares[2] * 100.0,
                shares[3] * 100.0,
            );
            if !broken.is_empty() {
                return Ok((false, format!("{figure}; broken: {}", broken.join("; "))));
            }
            if shares.iter().all(|s| *s >= LEAST_SHARE) {
                let again = match (&first, attempt) {
                    (Some(f), 2) => format!(" (a second set: the first split {f})"),
                    _ => String::new(),
                };
                return Ok((
                    true,
                    format!(
                        "{figure}{again}; by worker (so far): gw-a1 sealed {}, gw-b1 opened {}",
                        self.worker_split(A1, true)?,
                        self.worker_split(B1, false)?
                    ),
                ));
            }
            first = Some(format!(
                "gw-a1 {:.0}% / gw-a2 {:.0}%",
                shares[0] * 100.0,
                shares[1] * 100.0
            ));
            if attempt == 2 {
                return Ok((false, format!("{figure}; each must carry at least 20%")));
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Starts a paced transfer from LAN A to LAN B whose forward path
    /// crosses gateway `g`, seen on the gateways' counters. The routers
    /// hash what the sending host's TCP put in the packet's metadata (a
    /// random hash per connection, which survives the veth crossings, and
    /// which TCP draws again after a timeout), not the ports: so flows are
    /// started until one takes `g`, the others cut short. Returns it with
    /// the bytes it will carry.
    fn paced_via(&self, ctx: &mut Ctx, g: usize) -> Result<(BulkTransfer, u64)> {
        let bytes = PACE * PACED_SECONDS;
        let other = if g == A1 { A2 } else { A1 };
        let mut tried = Vec::new();
        for _ in 0..12 {
            ctx.interrupted()?;
            let t = traffic::start_tcp_bulk(
                &self.host_ns[0],
                &self.host_ns[1],
                SITES[1].host4.into(),
                &BulkOptions {
                    bytes,
                    seed: ctx.rng.next_u64(),
                    timeout: Duration::from_secs(PACED_SECONDS * 10 + 60),
                    pace: Some(PACE),
                    ..BulkOptions::default()
                },
            )
            .context("starting the paced transfer")?;
            let before = (self.tunnel_bytes(g)?.1, self.tunnel_bytes(other)?.1);
            std::thread::sleep(Duration::from_millis(500));
            let after = (self.tunnel_bytes(g)?.1, self.tunnel_bytes(other)?.1);
            let (on_g, on_other) = (
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            );
            // The flow's bytes against BGP's and BFD's few hundred a
            // second on the other tunnel; a starved machine moves less than
            // the pace, and no more than it lets through is asked.
            if on_g >= 256 << 10 && on_g > 4 * on_other {
                return Ok((t, bytes));
            }
            tried.push(format!(
                "{} {} / {} {}",
                GATEWAYS[g].name,
                checks::human(on_g),
                GATEWAYS[other].name,
                checks::human(on_other)
            ));
            t.cut_short();
            wait_finished(ctx, &t)?;
        }
        bail!(
            "no flow of 12 crossed {} (bytes sent in their first 0.5 s: {})",
            GATEWAYS[g].name,
            tried.join(", ")
        )
    }

    /// A flow whose two directions cross different tunnels: rtr-a
    /// prefers gw-a1's routes and rtr-b gw-b2's, so data goes out through
    /// tunnel 1 and its ACKs come back through tunnel 2. Nothing in a
    /// gateway may need to see both directions of a flow.
    fn asymmetric(&mut self, ctx: &mut Ctx) -> Result<()> {
        ctx.interrupted()?;
        let sessions_with = |s: usize, g: usize| -> Vec<Neighbor> {
            router_conf(s)
                .neighbors
                .into_iter()
                .filter(|n| {
                    n.address == IpAddr::V4(GATEWAYS[g].core4)
                        || n.address == IpAddr::V6(GATEWAYS[g].core6)
                })
                .collect()
        };
        let (via_a1, via_b2) = (sessions_with(0, A1), sessions_with(1, B2));
        self.router_frr[0].prefer_routes_of(&via_a1, true)?;
        self.router_frr[1].prefer_routes_of(&via_b2, true)?;
        let one = self.wait_paths(ctx, [1, 1], ROUTE_CHANGE_WITHIN)?;
        // One path is not enough: while FRR applies the preference, the
        // one path can for a moment be the other gateway's.
        let one = match one {
            Ok(_) => self.wait_next_hops(ctx, [A1, B2], ROUTE_CHANGE_WITHIN)?,
            Err(e) => Err(e),
        };
        let result = match one {
            Err(e) => Err(e),
            Ok(_) => {
                let before = self.all_tunnel_bytes()?;
                let bytes = ctx.bulk_capped(256 << 20);
                let t = checks::start_bulk(
                    ctx,
                    &self.host_ns[0],
                    &self.host_ns[1],
                    SITES[1].host4.into(),
                    bytes,
                )?;
                let r = checks::wait_bulk(ctx, t)?.context("the transfer")?;
                let after = self.all_tunnel_bytes()?;
                let d = |g: usize, i: usize| {
                    let pick = |c: (u64, u64)| if i == 0 { c.0 } else { c.1 };
                    pick(after[g]).saturating_sub(pick(before[g]))
                };
                // Data: sent by gw-a1, received by gw-b1. ACKs: sent by
                // gw-b2, received by gw-a2. Little else on the other two.
                let figure = format!(
                    "{}; data sent by gw-a1 {} (gw-a2 {}), ACKs sent by gw-b2 {} (gw-b1 {})",
                    checks::bulk_figure(&r),
                    checks::human(d(A1, 1)),
                    checks::human(d(A2, 1)),
                    checks::human(d(B2, 1)),
                    checks::human(d(B1, 1)),
                );
                let ok = r.intact()
                    && d(A1, 1) >= bytes
                    && d(A2, 1) < bytes / 100
                    && d(B2, 1) > d(B1, 1) * 10;
                if ok { Ok(figure) } else { Err(figure) }
            }
        };
        // Back to both paths, whatever happened.
        self.router_frr[0].prefer_routes_of(&via_a1, false)?;
        self.router_frr[1].prefer_routes_of(&via_b2, false)?;
        let both = self.wait_paths(ctx, [2, 2], CONVERGE_WITHIN)?;
        match (result, both) {
            (Ok(f), Ok(_)) => ctx.table.pass(ASYMMETRIC, f),
            (Err(f), _) => ctx.table.fail(ASYMMETRIC, f),
            (Ok(f), Err(e)) => ctx.table.fail(
                ASYMMETRIC,
                format!("{f}; both paths did not come back: {e}"),
            ),
        }
        Ok(())
    }

    fn failover(&mut self, ctx: &mut Ctx) -> Result<()> {
        ctx.interrupted()?;
        if self.ringtun[A1].is_none() {
            bail!("ringtun on gw-a1 is not running");
        }
        let (t, bytes) = self.paced_via(ctx, A1)?;
        let a2_before = self.tunnel_bytes(A2)?.1;
        let at_kill = t.received_so_far();
        let (events, gap) = watch_gaps(&t, || -> Result<_> {
            let killed = Instant::now();
            if let Some(mut r) = self.ringtun[A1].take() {
                r.kill()?;
            }
            // BFD on the far side notices, then both routers drop to one path.
            let peer: IpAddr = GATEWAYS[A1].tun4.into();
            let bfd_up = wait_for(ROUTE_CHANGE_WITHIN, || {
                let st = self.gw_frr[B1].bfd_states()?;
                Ok(st
                    .iter()
                    .any(|(ip, s)| *ip == peer && s == "up")
                    .then_some(()))
            })?;
            let bfd_down = bfd_up.is_none().then(|| killed.elapsed());
            let one_path = self
                .wait_paths(ctx, [1, 1], ROUTE_CHANGE_WITHIN)?
                .map(|_| killed.elapsed());
            wait_finished(ctx, &t)?;
            Ok((bfd_down, one_path))
        });
        let (bfd_down, one_path) = events?;
        let r = checks::wait_bulk(ctx, t)?.context("the paced transfer")?;
        let moved = self.tunnel_bytes(A2)?.1.saturating_sub(a2_before);
        let left = bytes.saturating_sub(at_kill);
        let ok = r.intact() && bfd_down.is_some() && one_path.is_ok() && moved >= left / 2;
        let figure = format!(
            "longest delivery gap {} ms; gw-b1's BFD saw gw-a1 down after {}, rtr-a and rtr-b \
             on one path after {}; gw-a2 then sent {} (of {} left); {}",
            gap.as_millis(),
            bfd_down.map_or("never (10 s)".into(), |d| format!("{} ms", d.as_millis())),
            match &one_path {
                Ok(d) => format!("{} ms", d.as_millis()),
                Err(e) => e.clone(),
            },
            checks::human(moved),
            checks::human(left),
            checks::bulk_figure(&r)
        );
        ctx.table.check(FAILOVER, ok, figure);
        Ok(())
    }

    /// gw-a1's ringtun started again from its file (killed first if the
    /// failover row did not run): how long until its sessions are back
    /// and both routers hold both paths, and new flows use both tunnels.
    fn recovery(&mut self, ctx: &mut Ctx) -> Result<()> {
        ctx.interrupted()?;
        if let Some(mut r) = self.ringtun[A1].take() {
            r.kill()?;
            self.wait_paths(ctx, [1, 1], ROUTE_CHANGE_WITHIN)?
                .map_err(anyhow::Error::msg)?;
        }
        let started = Instant::now();
        self.ringtun[A1] = Some(Ringtun::up(
            &self.gw_ns[A1],
            &self.conf_paths[A1],
            &self.up,
        )?);
        let neighbors = gateway_neighbors(A1);
        let back = wait_for(Duration::from_secs(60), || {
            ctx.interrupted()?;
            let down = sessions_down_of(&self.gw_frr[A1], &neighbors)?;
            Ok((!down.is_empty()).then(|| down.join(", ")))
        })?;
        let sessions = started.elapsed();
        if let Some(down) = back {
            ctx.table.fail(
                RECOVERY,
                format!("after 60 s, gw-a1's sessions not up: {down}"),
            );
            return Ok(());
        }
        let paths = self.wait_paths(ctx, [2, 2], Duration::from_secs(30))?;
        let paths_after = started.elapsed();
        let (spread_ok, spread) = self.spread(ctx)?;
        let ok = paths.is_ok() && spread_ok;
        let figure = format!(
            "gw-a1's {} BGP and BFD sessions up {:.1} s after its ringtun started, both paths at \
             rtr-a and rtr-b after {}; then {spread}",
            neighbors.len(),
            sessions.as_secs_f64(),
            match paths {
                Ok(_) => format!("{:.1} s", paths_after.as_secs_f64()),
                Err(e) => e,
            },
        );
        ctx.table.check(RECOVERY, ok, figure);
        Ok(())
    }

    /// A planned stop of gw-a2 under a flow that crosses it: its routes
    /// withdrawn first (it keeps forwarding meanwhile), `ringtun down`
    /// once both routers have moved to gw-a1's tunnel.
    fn drain(&mut self, ctx: &mut Ctx) -> Result<()> {
        ctx.interrupted()?;
        if self.ringtun[A2].is_none() {
            bail!("ringtun on gw-a2 is not running");
        }
        let (t, _) = self.paced_via(ctx, A2)?;
        let (events, gap) = watch_gaps(&t, || -> Result<_> {
            let started = Instant::now();
            self.gw_frr[A2].withdraw_all(&gateway_neighbors(A2))?;
            let withdrawn = self
                .wait_paths(ctx, [1, 1], ROUTE_CHANGE_WITHIN)?
                .map(|_| started.elapsed());
            let mut stopped = Err("not stopped: the routes were not withdrawn".to_string());
            if withdrawn.is_ok()
                && let Some(mut r) = self.ringtun[A2].take()
            {
                r.down()?;
                stopped = r
                    .expect_clean_exit(Duration::from_secs(10))
                    .map_err(|e| format!("{e}"));
            }
            wait_finished(ctx, &t)?;
            Ok((withdrawn, stopped))
        });
        let (withdrawn, stopped) = events?;
        let r = checks::wait_bulk(ctx, t)?.context("the paced transfer")?;
        let ok = r.intact() && withdrawn.is_ok() && stopped.is_ok();
        let figure = format!(
            "longest delivery gap {} ms; routes withdrawn from rtr-a and rtr-b {}, then `ringtun down` {}; {}",
            gap.as_millis(),
            match &withdrawn {
                Ok(d) => format!("in {} ms", d.as_millis()),
                Err(e) => e.clone(),
            },
            match &stopped {
                Ok(()) => "exited 0".to_string(),
                Err(e) => e.clone(),
            },
            checks::bulk_figure(&r)
        );
        ctx.table.check(DRAIN, ok, figure);
        Ok(())
    }

    /// Stops FRR and ringtun everywhere and removes FRR's folder; the row
    /// (if selected) fails on a daemon that had died or did not stop, or
    /// on anything of FRR's left.
    fn stop_row(&mut self, ctx: &mut Ctx) {
        let mut problems = Vec::new();
        let instances = self.gw_frr.len() + self.router_frr.len();
        let ringtuns = self.ringtun.iter().flatten().count();
        for f in self.gw_frr.iter_mut().chain(self.router_frr.iter_mut()) {
            if let Err(e) = f.stop() {
                problems.push(format!("{e:#}"));
            }
        }
        self.gw_frr.clear();
        self.router_frr.clear();
        for (g, slot) in self.ringtun.iter_mut().enumerate() {
            if let Some(r) = slot.take()
                && let Err(e) = checks::terminate(r)
            {
                problems.push(format!("ringtun on {}: {e:#}", GATEWAYS[g].name));
            }
        }
        let Some(root) = self.root.take() else {
            return;
        };
        let folder = root.path().to_path_buf();
        drop(root);
        if folder.exists() {
            problems.push(format!("{} is still there", folder.display()));
        }
        let folder_name = folder.to_string_lossy().into_owned();
        let left = processes_naming(&folder_name);
        if !left.is_empty() {
            problems.push(format!("still running: {}", left.join(", ")));
        }
        if ctx.wants(STOPS) {
            ctx.table.check(
                STOPS,
                problems.is_empty(),
                if problems.is_empty() {
                    format!(
                        "{instances} FRR instances and {ringtuns} ringtuns still running exited \
                         cleanly; {folder_name} removed"
                    )
                } else {
                    problems.join("; ")
                },
            );
        }
    }
}

/// The sessions of `f` among `neighbors` that are not Established with
/// BFD up, as `ADDR (bgp STATE, bfd STATUS)`.
fn sessions_down_of(f: &Frr, neighbors: &[Neighbor]) -> Result<Vec<String>> {
    let bgp = f.bgp_states()?;
    let bfd = f.bfd_states()?;
    let mut down = Vec::new();
    for n in neighbors {
        let state = bgp
            .iter()
            .find(|(ip, _)| *ip == n.address)
            .map_or("none", |(_, s)| s.as_str());
        let status = bfd
            .iter()
            .find(|(ip, _)| *ip == n.address)
            .map_or("none", |(_, s)| s.as_str());
        if state != "Established" || status != "up" {
            down.push(format!(
                "{} -> {} (bgp {state}, bfd {status})",
                f.hostname(),
                n.address
            ));
        }
    }
    Ok(down)
}

/// Polls `what` every 100 ms until it returns `None` (done) or `within`
/// passes; the last `Some` it returned if it never did.
fn wait_for<T>(within: Duration, mut what: impl FnMut() -> Result<Option<T>>) -> Result<Option<T>> {
    let deadline = Instant::now() + within;
    loop {
        let pending = what()?;
        if pending.is_none() || Instant::now() >= deadline {
            return Ok(pending);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for a transfer's both ends to finish, giving up on a signal.
fn wait_finished(ctx: &Ctx, t: &BulkTransfer) -> Result<()> {
    while !t.is_finished() {
        ctx.interrupted()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs `body` while another thread reads `t`'s received bytes every
/// millisecond; returns what `body` returned and the longest stretch with
/// nothing delivered, from `body`'s start to the end of the transfer (or
/// of `body`, if that comes later).
fn watch_gaps<R>(t: &BulkTransfer, body: impl FnOnce() -> R) -> (R, Duration) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut last = t.received_so_far();
            let mut since = Instant::now();
            let mut longest = Duration::ZERO;
            while !done.load(Ordering::Relaxed) && !t.is_finished() {
                let now = t.received_so_far();
                if now != last {
                    longest = longest.max(since.elapsed());
                    last = now;
                    since = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // A transfer that ended in a stall (its deadline) ends on a gap.
            longest.max(since.elapsed())
        });
        let r = body();
        done.store(true, Ordering::Relaxed);
        let longest = sampler.join().unwrap_or(Duration::MAX);
        (r, longest)
    })
}

/// Processes whose command line mentions `needle` (a folder of ours).
fn processes_naming(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            out.push(format!("{} (pid {pid})", text.trim()));
        }
    }
    out
}
