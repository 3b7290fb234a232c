//! The checks both modes share (reachability, bulk TCP, UDP burst,
//! restart, hostile input), each making one row, and the context they
//! run in: options, the table, the stop flag.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dataplane::status::InterfaceStatus;
use netctl::ping::{Echo, PingOptions};
use ringtun_tests::ringtun::{LabDir, Ringtun, UpOptions};
use ringtun_tests::traffic::{self, BulkOptions, BulkReport, BulkTransfer, BurstOptions};

use super::relay::SplitMix64;
use super::table::Table;

/// The run's options, as the checks need them.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes of each bulk transfer.
    pub bulk_size: u64,
    /// Only checks whose `MODE PEER CHECK` contains this.
    pub only: Option<String>,
    /// `--workers` for ringtun.
    pub workers: Option<usize>,
    /// Leave the labs up.
    pub keep: bool,
    /// Install missing peers.
    pub install: bool,
}

/// What every check gets.
pub struct Ctx {
    /// The result table.
    pub table: Table,
    /// Set by SIGINT/SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// Options.
    pub opts: Options,
    /// Configuration files.
    pub dir: LabDir,
    /// Dice for hostile input and relays.
    pub rng: SplitMix64,
}

impl Ctx {
    /// An error once a signal asked to stop, so that the run unwinds and
    /// its guards clean up.
    pub fn interrupted(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted by a signal: cleaning up");
        }
        Ok(())
    }

    /// Whether `--only` selects this check in the current mode and peer.
    pub fn wants(&self, check: &str) -> bool {
        match &self.opts.only {
            None => true,
            Some(p) => {
                let full = format!("{} {} {check}", self.table.mode(), self.table.peer());
                selects(p, &full)
            }
        }
    }

    /// Whether any of these checks is wanted.
    pub fn wants_any(&self, checks: &[&str]) -> bool {
        checks.iter().any(|c| self.wants(c))
    }

    /// `ringtun up` options for this run. Logging at `info` costs two lines
    /// per daemon and says why it stopped (`cause=Signal`, ...), should it
    /// stop by itself.
    pub fn up_options(&self, no_offload: bool) -> UpOptions {
        UpOptions {
            workers: self.opts.workers,
            no_offload,
            env: vec![("RUST_LOG".into(), "info".into())],
            ..UpOptions::default()
        }
    }

    /// A bulk size no larger than `cap` (for the rows that repeat a transfer
    /// under some condition rather than measure it).
    pub fn bulk_capped(&self, cap: u64) -> u64 {
        self.opts.bulk_size.min(cap)
    }
}

/// Whether `--only PATTERN` selects the row `MODE PEER CHECK`: the
/// pattern appears in it (case-insensitive) as whole words, so that `ha`
/// selects the `ha` rows and not every row that names a handshake.
pub fn selects(pattern: &str, row: &str) -> bool {
    let (pattern, row) = (pattern.to_lowercase(), row.to_lowercase());
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    row.match_indices(&pattern).any(|(at, m)| {
        let starts_word = !(word(m.chars().next()) && word(row[..at].chars().next_back()));
        let ends_word = !(word(m.chars().next_back()) && word(row[at + m.len()..].chars().next()));
        starts_word && ends_word
    })
}

/// Diagnostics for failing rows: `ringtun show` of every instance in
/// each gateway namespace.
pub fn show_gateways(gateways: Vec<String>) -> super::table::Diagnostics {
    Box::new(move || {
        let mut out = String::new();
        for ns in &gateways {
            match ringtun_tests::ringtun::run_in(Some(ns), &["show"]) {
                Ok(o) if o.status.success() => {
                    out.push_str(&format!("ringtun show in {ns}:\n"));
                    out.push_str(&String::from_utf8_lossy(&o.stdout));
                }
                Ok(o) => out.push_str(&format!(
                    "ringtun show in {ns}: {}\n",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => out.push_str(&format!("ringtun show in {ns}: {e}\n")),
            }
            out.push_str(&layer2(ns));
        }
        out
    })
}

/// Every link's MAC and bridge, and the neighbour table, in `ns`: what a
/// reachability failure inside one L2 segment turns on (a stale entry
/// for a MAC that changed, an unresolved one).
fn layer2(ns: &str) -> String {
    let nl = match netctl::Netlink::in_netns(ns) {
        Ok(nl) => nl,
        Err(e) => return format!("links in {ns}: {e}\n"),
    };
    let mut out = format!("links in {ns}:\n");
    match nl.links() {
        Ok(links) => {
            for l in links {
                let master = l.master.map(|m| format!(" master {m}")).unwrap_or_default();
                let mac = l.mac.unwrap_or_else(|| "-".to_string());
                out.push_str(&format!("  {} {} {mac}{master}\n", l.name, l.kind));
            }
        }
        Err(e) => out.push_str(&format!("  {e}\n")),
    }
    out.push_str(&format!("neighbours in {ns}:\n"));
    match nl.neighbours(None) {
        Ok(entries) => {
            for n in entries {
                out.push_str(&format!("  {n}\n"));
            }
        }
        Err(e) => out.push_str(&format!("  {e}\n")),
    }
    out
}

/// Runs a check that may fail to even set itself up; such an error
/// becomes a failing row named `check` and the run goes on (unless a
/// signal asked to stop).
pub fn guarded(ctx: &mut Ctx, check: &str, f: impl FnOnce(&mut Ctx) -> Result<()>) -> Result<()> {
    match f(ctx) {
        Ok(()) => Ok(()),
        Err(e) => {
            ctx.interrupted()?;
            ctx.table.fail(check, format!("{e:#}"));
            Ok(())
        }
    }
}

/// One ICMP echo from `ns` to `dst`, retried until a reply or `within`.
pub fn ping_until(ns: &str, dst: IpAddr, within: Duration) -> Result<Echo> {
    let deadline = Instant::now() + within;
    loop {
        let opts = PingOptions {
            timeout: Duration::from_millis(500),
            ..PingOptions::default()
        };
        let echo = netctl::ping::echo_in(Some(ns), dst, &opts)
            .with_context(|| format!("pinging {dst} from {ns}"))?;
        if echo.is_reply() || Instant::now() >= deadline {
            return Ok(echo);
        }
        if !matches!(echo, Echo::Timeout) {
            // Unreachable comes back at once: do not spin.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn describe(e: &Echo) -> String {
    match e {
        Echo::Reply { rtt, .. } => format!("{:.2} ms", rtt.as_secs_f64() * 1e3),
        Echo::Unreachable { reason } => format!("unreachable ({reason})"),
        Echo::Timeout => "no reply".into(),
    }
}

/// One row: every `(namespace, destination, label)` answers a ping within
/// `within` (the first one may wait for a handshake).
pub fn reach(
    ctx: &mut Ctx,
    check: &str,
    pairs: &[(&str, IpAddr, &str)],
    within: Duration,
) -> Result<()> {
    if !ctx.wants(check) {
        return Ok(());
    }
    ctx.interrupted()?;
    let mut ok = true;
    let mut parts = Vec::new();
    for (ns, dst, label) in pairs {
        let echo = ping_until(ns, *dst, within)?;
        ok &= echo.is_reply();
        parts.push(format!("{label} {}", describe(&echo)));
    }
    ctx.table.check(check, ok, parts.join(", "));
    Ok(())
}

/// One row: nothing answers (the sites are joined by nothing but the tunnel).
pub fn unreachable(ctx: &mut Ctx, check: &str, pairs: &[(&str, IpAddr, &str)]) -> Result<()> {
    if !ctx.wants(check) {
        return Ok(());
    }
    let mut ok = true;
    let mut parts = Vec::new();
    for (ns, dst, label) in pairs {
        let echo = ping_until(ns, *dst, Duration::from_millis(500))?;
        ok &= !echo.is_reply();
        parts.push(format!("{label} {}", describe(&echo)));
    }
    ctx.table.check(check, ok, parts.join(", "));
    Ok(())
}

/// Bytes in binary units.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A deadline for moving `bytes`: generous (functional, not a speed test).
pub fn bulk_timeout(bytes: u64) -> Duration {
    Duration::from_secs(120).max(Duration::from_secs_f64(bytes as f64 / 2e6))
}

/// Starts a bulk transfer of `bytes` from `from_ns` to `to` in `to_ns`.
pub fn start_bulk(
    ctx: &mut Ctx,
    from_ns: &str,
    to_ns: &str,
    to: IpAddr,
    bytes: u64,
) -> Result<BulkTransfer> {
    let seed = ctx.rng.next_u64();
    traffic::start_tcp_bulk(
        from_ns,
        to_ns,
        to,
        &BulkOptions {
            bytes,
            seed,
            timeout: bulk_timeout(bytes),
            port: 0,
            pace: None,
        },
    )
    .with_context(|| format!("starting a bulk transfer from {from_ns} to {to}"))
}

/// Waits for a transfer, giving up (with an error) when a signal arrives.
pub fn wait_bulk(ctx: &Ctx, t: BulkTransfer) -> Result<traffic::Result<BulkReport>> {
    while !t.is_finished() {
        ctx.interrupted()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(t.join())
}

/// Waits for every transfer; returns the figures of those that did not
/// arrive whole (or failed), in the order given.
pub fn wait_all_bulk(ctx: &Ctx, transfers: Vec<BulkTransfer>) -> Result<Vec<String>> {
    let mut broken = Vec::new();
    for t in transfers {
        match wait_bulk(ctx, t)? {
            Ok(r) if r.intact() => {}
            Ok(r) => broken.push(bulk_figure(&r)),
            Err(e) => broken.push(format!("{e}")),
        }
    }
    Ok(broken)
}

/// The figure of a bulk transfer: size, time, rate, hashes.
pub fn bulk_figure(r: &BulkReport) -> String {
    let same = if r.intact() { "equal" } else { "DIFFER" };
    format!(
        "{} in {:.1} s, {:.2} Gbit/s, sha256 {}… {same} ({} received)",
        human(r.bytes_sent),
        r.elapsed.as_secs_f64(),
        r.gbit_per_s(),
        &traffic::hex(&r.received_sha256)[..12],
        human(r.bytes_received)
    )
}

/// One row: a bulk transfer of `bytes` arrives whole, hashes equal.
pub fn bulk(
    ctx: &mut Ctx,
    check: &str,
    from_ns: &str,
    to_ns: &str,
    to: IpAddr,
    bytes: u64,
) -> Result<Option<BulkReport>> {
    if !ctx.wants(check) {
        return Ok(None);
    }
    ctx.interrupted()?;
    let outcome = start_bulk(ctx, from_ns, to_ns, to, bytes).and_then(|t| wait_bulk(ctx, t));
    ctx.interrupted()?;
    match outcome {
        Ok(Ok(r)) => {
            ctx.table.check(check, r.intact(), bulk_figure(&r));
            Ok(Some(r))
        }
        Ok(Err(e)) => {
            ctx.table.fail(check, e.to_string());
            Ok(None)
        }
        Err(e) => {
            ctx.table.fail(check, format!("{e:#}"));
            Ok(None)
        }
    }
}

/// One row: a UDP burst of mixed sizes arrives with nothing corrupted;
/// loss, duplicates and reordering are reported.
pub fn udp(
    ctx: &mut Ctx,
    check: &str,
    from_ns: &str,
    to_ns: &str,
    to: IpAddr,
    max_payload: usize,
) -> Result<()> {
    if !ctx.wants(check) {
        return Ok(());
    }
    ctx.interrupted()?;
    let sizes: Vec<usize> = [20, 64, 200, 512, 1000, max_payload].into();
    let opts = BurstOptions {
        count: 5000,
        sizes: sizes.clone(),
        seed: ctx.rng.next_u64(),
        ..BurstOptions::default()
    };
    match traffic::udp_burst(from_ns, to_ns, to, &opts) {
        Ok(r) => {
            let ok = r.corrupt == 0 && r.received > 0;
            let loss = f64::from(r.lost) * 100.0 / f64::from(r.sent.max(1));
            ctx.table.check(
                check,
                ok,
                format!(
                    "{} sent ({}..{} B), {} received, {} lost ({loss:.2}%), {} corrupt, {} dup, {} reordered",
                    r.sent,
                    sizes.iter().min().copied().unwrap_or(0),
                    sizes.iter().max().copied().unwrap_or(0),
                    r.received,
                    r.lost,
                    r.corrupt,
                    r.duplicated,
                    r.reordered
                ),
            );
        }
        Err(e) => ctx.table.fail(check, e.to_string()),
    }
    Ok(())
}

/// The row that busy workers let woken threads run first.
pub const GIVES_WAY: &str = "busy workers give way to woken threads";

/// The [`GIVES_WAY`] row, after the bulk transfers: a worker yields after
/// 200 µs of running without sleeping, and a bulk transfer keeps a
/// worker busy that long many times over, so each gateway, having sent
/// one bulk transfer and received the other, counts yields since it
/// started. None means the yield is not wired.
pub fn gives_way(ctx: &mut Ctx, a: Option<&Ringtun>, b: Option<&Ringtun>) {
    if !ctx.wants(GIVES_WAY) {
        return;
    }
    let read = |d: Option<&Ringtun>| -> Result<u64> {
        let d = d.context("a gateway's ringtun is not running")?;
        Ok(d.show()?.workers.iter().map(|w| w.yields).sum())
    };
    match (read(a), read(b)) {
        (Ok(ya), Ok(yb)) => ctx.table.check(
            GIVES_WAY,
            ya > 0 && yb > 0,
            format!("yields since start, after the bulk transfers: gw-a {ya}, gw-b {yb}"),
        ),
        (Err(e), _) | (_, Err(e)) => ctx.table.fail(GIVES_WAY, format!("{e:#}")),
    }
}

/// Drops by reason that rose between two statuses, as `reason +N` pairs.
pub fn drop_deltas(before: &InterfaceStatus, after: &InterfaceStatus) -> Vec<(String, u64)> {
    after
        .drops
        .iter()
        .map(|(name, v)| (name.clone(), v.saturating_sub(before.drop_count(name))))
        .filter(|(_, d)| *d > 0)
        .collect()
}

/// A control counter's value (0 if absent).
pub fn control(st: &InterfaceStatus, name: &str) -> u64 {
    st.control
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .sum()
}

/// `a +1, b +2`.
pub fn fmt_deltas(d: &[(String, u64)]) -> String {
    if d.is_empty() {
        return "no drops".into();
    }
    d.iter()
        .map(|(n, v)| format!("{n} +{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a gateway's ringtun is stopped in a restart check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: a clean exit is required.
    Term,
    /// SIGKILL.
    Kill,
}

/// One row: while `from_ns` sends to `to`, the ringtun in `slot` is stopped
/// (`how`) and started again with `restart`; the transfer resumes within a
/// generous timeout and arrives whole. Reports the time to resume.
#[allow(clippy::too_many_arguments)]
pub fn restart(
    ctx: &mut Ctx,
    check: &str,
    slot: &mut Option<Ringtun>,
    how: Stop,
    restart: &dyn Fn() -> Result<Ringtun>,
    from_ns: &str,
    to_ns: &str,
    to: IpAddr,
) -> Result<()> {
    if !ctx.wants(check) {
        return Ok(());
    }
    ctx.interrupted()?;
    let bytes = ctx.bulk_capped(512 << 20).max(16 << 20);
    let t = match start_bulk(ctx, from_ns, to_ns, to, bytes) {
        Ok(t) => t,
        Err(e) => {
            ctx.table.fail(check, format!("{e:#}"));
            return Ok(());
        }
    };
    // Mid-transfer: a quarter in.
    let started = Instant::now();
    while t.received_so_far() < bytes / 4 && !t.is_finished() {
        ctx.interrupted()?;
        if started.elapsed() > bulk_timeout(bytes) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Some(mut daemon) = slot.take() else {
        bail!("restart check without a running ringtun");
    };
    let (ns, iface) = (daemon.netns().to_string(), daemon.iface().to_string());
    let killed_at = Instant::now();
    let at_kill = t.received_so_far();
    let stopped = match how {
        Stop::Term => daemon
            .signal(nix::sys::signal::Signal::SIGTERM)
            .and_then(|_| daemon.expect_clean_exit(Duration::from_secs(10)))
            .map_err(|e| format!("SIGTERM: {e}")),
        Stop::Kill => daemon
            .kill()
            .map(|_| ())
            .map_err(|e| format!("SIGKILL: {e}")),
    };
    drop(daemon);
    let linger = wait_link_gone(&ns, &iface, Duration::from_secs(5));
    // Let what was already through drain, so that progress after this
    // point is the tunnel's doing.
    let mut mark = t.received_so_far();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
        let now = t.received_so_far();
        if now != mark {
            mark = now;
            quiet_since = Instant::now();
        }
    }
    let new = restart();
    let ready_at = Instant::now();
    let new = match new {
        Ok(d) => d,
        Err(e) => {
            ctx.table.fail(check, format!("restarting: {e:#}"));
            return Ok(());
        }
    };
    *slot = Some(new);
    let resume_deadline = Duration::from_secs(120);
    let mut resumed = None;
    while !t.is_finished() {
        ctx.interrupted()?;
        if t.received_so_far() > mark {
            resumed = Some(Instant::now());
            break;
        }
        if ready_at.elapsed() > resume_deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = wait_bulk(ctx, t)?;
    let mut why = Vec::new();
    if let Err(e) = &stopped {
        why.push(e.clone());
    }
    if let Err(e) = &linger {
        why.push(format!("{e:#}"));
    }
    let figure = match (&report, resumed) {
        (Ok(r), Some(at)) => format!(
            "resumed {:.2} s after the stop ({:.2} s after ready), stopped at {} of {}; {}",
            at.duration_since(killed_at).as_secs_f64(),
            at.duration_since(ready_at).as_secs_f64(),
            human(at_kill),
            human(bytes),
            if r.intact() {
                "hashes equal"
            } else {
                "hashes DIFFER"
            }
        ),
        (Ok(r), None) if t_done_before(mark, r) => {
            why.push("the transfer had ended before the stop took effect".into());
            String::new()
        }
        (Ok(_), None) => {
            why.push(format!(
                "no progress within {resume_deadline:?} of the restart"
            ));
            String::new()
        }
        (Err(e), _) => {
            why.push(e.to_string());
            String::new()
        }
    };
    let ok = why.is_empty() && report.as_ref().is_ok_and(|r| r.intact()) && resumed.is_some();
    let text = if why.is_empty() {
        figure
    } else {
        format!("{} {}", why.join("; "), figure)
    };
    ctx.table.check(check, ok, text.trim().to_string());
    Ok(())
}

fn t_done_before(mark: u64, r: &BulkReport) -> bool {
    mark >= r.bytes_sent
}

/// Waits until the link `iface` is gone from `ns` (a daemon's device
/// outlives the process by a few milliseconds: the kernel closes the
/// queues registered with its io_uring asynchronously), and says how long
/// that took. An error if it is still there after `within`.
pub fn wait_link_gone(ns: &str, iface: &str, within: Duration) -> Result<Duration> {
    let nl = netctl::Netlink::in_netns(ns)?;
    let start = Instant::now();
    while nl.link_index(iface).is_ok() {
        if start.elapsed() > within {
            bail!("{iface} in {ns} still exists {within:?} after its daemon exited");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(start.elapsed())
}

/// Waits until UDP `port` can be bound again in `ns` (IPv4 and IPv6): a
/// daemon's sockets, registered with its io_uring, are released a little
/// after the process exits, as its device is.
pub fn wait_udp_port_free(ns: &str, port: u16, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let free = netctl::netns::run_in(ns, || {
            UdpSocket::bind(("0.0.0.0", port)).is_ok() && UdpSocket::bind(("::", port)).is_ok()
        })?;
        if free {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("UDP port {port} in {ns} is still taken {within:?} after its daemon exited");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops a ringtun with SIGTERM (a clean exit required) and waits for its
/// device and its UDP port to be free, so that the next one (or another
/// peer) can take them.
pub fn terminate(mut d: Ringtun) -> Result<()> {
    let (ns, iface) = (d.netns().to_string(), d.iface().to_string());
    let port = d.show().ok().map(|s| s.listen_port).filter(|&p| p != 0);
    if !d.is_running() {
        // Gone before anyone asked: a crash, or a signal from outside.
        let status = d.wait_exit(Duration::from_secs(1))?;
        bail!(
            "ringtun for {iface} in {ns} had already exited ({status}) before it was stopped\n--- its stderr ---\n{}",
            d.stderr()
        );
    }
    d.terminate()?;
    wait_link_gone(&ns, &iface, Duration::from_secs(5))?;
    if let Some(port) = port {
        wait_udp_port_free(&ns, port, Duration::from_secs(5))?;
    }
    Ok(())
}

/// The row that fails when a ringtun does not exit cleanly on SIGTERM.
pub const STOPS_CLEANLY: &str = "ringtun stops cleanly on SIGTERM";

/// Stops `d` as [`terminate`] does; an unclean exit is a failed
/// [`STOPS_CLEANLY`] row.
pub fn terminate_row(ctx: &mut Ctx, d: Ringtun) {
    if let Err(e) = terminate(d) {
        ctx.table.fail(STOPS_CLEANLY, format!("{e:#}"));
    }
}

/// Binds a UDP socket to `addr` inside `ns`.
pub fn socket_in(ns: &str, addr: SocketAddr) -> Result<UdpSocket> {
    netctl::netns::run_in(ns, || UdpSocket::bind(addr))?
        .with_context(|| format!("binding {addr} in {ns}"))
}

#[cfg(test)]
mod tests {
    use super::selects;

    #[test]
    fn only_selects_whole_words_of_the_row() {
        assert!(selects(
            "ha",
            "ha ringtun failover: SIGKILL ringtun on gw-a1"
        ));
        assert!(!selects(
            "ha",
            "wireguard ringtun first handshake under loss"
        ));
        assert!(!selects("ha", "wireguard ringtun sha256 of the bulk"));
        assert!(selects("HOSTILE", "wireguard ringtun hostile: garbage"));
        assert!(selects("reach lan", "vxlan kernel reach lan v4"));
        assert!(selects(
            "wireguard ringtun hostile",
            "wireguard ringtun hostile: flood"
        ));
        assert!(selects("a->b", "vxlan ringtun bulk tcp a->b"));
        assert!(!selects("bulk", "vxlan ringtun bulky"));
        assert!(!selects("seed", "vxlan ringtun reseeded"));
    }
}
