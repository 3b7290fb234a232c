//! ringtun run as a service would run it: scraped by a real Prometheus
//! (Debian's `prometheus`, started in the lab with a configuration of its
//! own: a scrape a second of each gateway's `MetricsListen`, storage in a
//! temporary directory), and one gateway run as `nobody` holding only
//! CAP_NET_ADMIN.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ringtun_tests::ringtun::{Conf, Ringtun, UpOptions, ringtun_bin};

use super::checks::{self, Ctx, socket_in};
use super::hostile;
use super::lab::{self, Sites, wan};
use super::pair::Pair;
use super::rows::{self, Attack, Mode};
use crate::process::Daemon;

/// Prometheus saw the peer's received bytes rise during a transfer.
const PEER_RATE: &str = "service: prometheus: peer received-bytes rate > 0 during a transfer";
/// Prometheus saw the drop counters rise by the reasons the burst used.
const DROPS_SEEN: &str = "service: prometheus: drops rose by the hostile burst's reasons";
/// Gateway B as nobody with only CAP_NET_ADMIN, a transfer each way.
const NONROOT: [&str; 2] = [
    "service: gw-b as nobody with only CAP_NET_ADMIN: bulk tcp a->b",
    "service: gw-b as nobody with only CAP_NET_ADMIN: bulk tcp b->a",
];
/// The port of `MetricsListen` on each gateway's WAN address.
const METRICS_PORT: u16 = 9586;
/// The drop reasons the burst always raises at a WireGuard port: random
/// bytes are malformed, captured datagrams sent again are replays (the
/// others it raises, auth_failed or unknown_index, depend on timing:
/// ringtun show says which, and Prometheus must see the same).
const SURE_REASONS: &[&str] = &["malformed", "replay"];
/// How long Prometheus may take to start, and to show a change (a scrape a
/// second; a busy machine makes it slower).
const WITHIN: Duration = Duration::from_secs(30);

/// Every row of this module the filters select.
pub fn rows(ctx: &mut Ctx, s: &Sites, m: &Mode, confs: (Conf, Conf)) -> Result<()> {
    prometheus_rows(ctx, s, m, confs.clone())?;
    nonroot_rows(ctx, s, m, confs)
}

/// A directory that every user can enter, removed on drop: the CI runs the
/// checkout inside a 0700 directory, which `nobody` cannot cross.
struct OpenDir(PathBuf);

impl OpenDir {
    fn new(tag: &str) -> Result<OpenDir> {
        let p = std::env::temp_dir().join(ringtun_tests::unique_name(tag));
        std::fs::create_dir(&p).with_context(|| format!("making {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(OpenDir(p))
    }
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------- prometheus

/// Prometheus in gateway A's namespace, scraping both gateways.
struct Prometheus {
    _daemon: Daemon,
    ns: String,
    port: u16,
    _dir: OpenDir,
}

impl Prometheus {
    fn start(ns: &str, targets: &[SocketAddr]) -> Result<Prometheus> {
        let dir = OpenDir::new("prom")?;
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: ringtun\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.0.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = netctl::netns::run_in(ns, || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?
            .context("a free loopback port")?
            .local_addr()?
            .port();
        let program = ringtun_tests::find_in_path("prometheus")
            .context("prometheus is not installed (apt-get install prometheus)")?;
        let daemon = Daemon::start(
            ns,
            &program,
            &[
                &format!("--config.file={}", config_path.display()),
                &format!("--storage.tsdb.path={}", dir.0.join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ],
            "Server is ready to receive web requests",
            WITHIN,
        )?;
        Ok(Prometheus {
            _daemon: daemon,
            ns: ns.to_string(),
            port,
            _dir: dir,
        })
    }

    /// An instant query: each series' labels and value.
    fn query(&self, q: &str) -> Result<Vec<(serde_json::Value, f64)>> {
        let body = http_get(
            &self.ns,
            self.port,
            &format!("/api/v1/query?query={}", encode(q)),
        )?;
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("prometheus answered {body}"))?;
        if v["status"] != "success" {
            bail!("query {q}: {body}");
        }
        let Some(results) = v["data"]["result"].as_array() else {
            bail!("query {q}: no result in {body}");
        };
        Ok(results
            .iter()
            .filter_map(|r| {
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), value))
            })
            .collect())
    }

    /// Polls `q` until `ok` holds for its result or [`WITHIN`] passes; the
    /// last result either way.
    fn wait_for(
        &self,
        q: &str,
        ok: impl Fn(&[(serde_json::Value, f64)]) -> bool,
        also_while: impl Fn() -> bool,
    ) -> Result<(bool, Vec<(serde_json::Value, f64)>)> {
        let deadline = Instant::now() + WITHIN;
        loop {
            let r = self.query(q)?;
            if ok(&r) {
                return Ok((true, r));
            }
            if Instant::now() > deadline || !also_while() {
                return Ok((false, r));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Percent-encodes a query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` from `127.0.0.1:port` inside `ns`: the body of a 200.
fn http_get(ns: &str, port: u16, path: &str) -> Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = netctl::netns::run_in(ns, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })??;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no header end in {text:?}");
    };
    if !head.lines().next().unwrap_or("").contains(" 200") {
        bail!("{path}: {head}");
    }
    // Prometheus answers chunked: the JSON is the one long line.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or("")
            .to_string()
    } else {
        body.to_string()
    };
    Ok(body)
}

fn metrics_at(ip: std::net::IpAddr) -> SocketAddr {
    wan::at(ip, METRICS_PORT)
}

fn prometheus_rows(ctx: &mut Ctx, s: &Sites, m: &Mode, confs: (Conf, Conf)) -> Result<()> {
    if !ctx.wants_any(&[PEER_RATE, DROPS_SEEN]) {
        return Ok(());
    }
    ctx.interrupted()?;
    if ringtun_tests::find_in_path("prometheus").is_none() {
        for r in [PEER_RATE, DROPS_SEEN] {
            if ctx.wants(r) {
                ctx.table.skip(
                    r,
                    "prometheus is not installed (apt-get install prometheus)",
                );
            }
        }
        return Ok(());
    }
    let (a, b) = confs;
    let (at_a, at_b) = (metrics_at(wan::A4), metrics_at(wan::B4));
    let confs = (
        a.extra(&format!("MetricsListen = {at_a}")),
        b.extra(&format!("MetricsListen = {at_b}")),
    );
    let mut pair = match Pair::start(ctx, s, confs, false) {
        Ok(p) => p,
        Err(e) => {
            ctx.table.fail(PEER_RATE, format!("{e:#}"));
            return Ok(());
        }
    };
    let prom = match Prometheus::start(&s.gw_a, &[at_a, at_b]) {
        Ok(p) => p,
        Err(e) => {
            ctx.table.fail(PEER_RATE, format!("{e:#}"));
            pair.stop_row(ctx);
            return Ok(());
        }
    };
    // Both targets scraped before anything is measured.
    let (scraping, up) = prom.wait_for("up{job=\"ringtun\"} == 1", |r| r.len() == 2, || true)?;
    if !scraping {
        ctx.table.fail(
            PEER_RATE,
            format!("prometheus does not scrape both gateways: up == 1 for {up:?}"),
        );
        drop(prom);
        pair.stop_row(ctx);
        return Ok(());
    }
    let Some(b) = pair.b.as_mut() else {
        bail!("gateway B is not running");
    };
    let attack = Attack::start(ctx, s, m, b, |p| p.first() == Some(&hostile::TYPE_DATA))?;

    // 1. The rate of gateway B's received bytes from its peer, while the
    // transfer runs.
    let rate_q = format!(
        "rate(wireguard_received_bytes_total{{instance=\"{at_b}\",interface=\"{}\"}}[5s])",
        lab::TUN_B
    );
    let (rate_ok, rate) = prom.wait_for(
        &rate_q,
        |r| r.iter().any(|(_, v)| *v > 0.0),
        || !attack.transfer.is_finished(),
    )?;
    let during = !attack.transfer.is_finished();

    // 2. The burst, during the transfer; the reasons ringtun itself counts
    // for it (`ringtun show`), then the same reasons as Prometheus sees them.
    let drops_q = format!("ringtun_drops_total{{instance=\"{at_b}\"}}");
    let shown_before = b.show()?;
    let before = prom.query(&drops_q)?;
    let sock = socket_in(&s.gw_a, SocketAddr::new(wan::ATTACKER_IP, 0))?;
    let real = &attack.real;
    let random = hostile::random_datagrams(&mut ctx.rng, 2000);
    let truncated = hostile::truncated(&mut ctx.rng, real);
    let flipped = hostile::bit_flipped(&mut ctx.rng, real);
    let sent = hostile::send_all(&sock, attack.dst, &random)
        + hostile::send_all(&sock, attack.dst, &truncated)
        + hostile::send_all(&sock, attack.dst, &flipped)
        + hostile::send_all(&sock, attack.dst, real);
    let shown_after = rows::status_once_risen(ctx, b, &shown_before, SURE_REASONS)?;
    let shown: Vec<(String, u64)> = checks::drop_deltas(&shown_before, &shown_after)
        .into_iter()
        .filter(|(_, d)| *d > 0)
        .collect();
    let by_reason = |r: &[(serde_json::Value, f64)], reason: &str| {
        r.iter()
            .find(|(m, _)| m["reason"] == reason)
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    };
    let seen = |after: &[(serde_json::Value, f64)]| -> Vec<(String, f64, u64)> {
        shown
            .iter()
            .map(|(r, d)| (r.clone(), by_reason(after, r) - by_reason(&before, r), *d))
            .collect()
    };
    let (drops_ok, after) = prom.wait_for(
        &drops_q,
        |after| seen(after).iter().all(|(_, p, d)| *p >= *d as f64),
        || true,
    )?;
    let report = checks::wait_bulk(ctx, attack.transfer)?;
    drop(prom);

    if ctx.wants(PEER_RATE) {
        let r = rate.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        let intact = matches!(&report, Ok(r) if r.intact());
        ctx.table.check(
            PEER_RATE,
            rate_ok && during && intact,
            format!(
                "{rate_q} = {}/s {} the transfer; transfer {}",
                checks::human(r as u64),
                if during { "during" } else { "AFTER" },
                match &report {
                    Ok(r) => checks::bulk_figure(r),
                    Err(e) => e.to_string(),
                }
            ),
        );
    }
    if ctx.wants(DROPS_SEEN) {
        let d = seen(&after);
        let sure = SURE_REASONS
            .iter()
            .all(|r| d.iter().any(|(n, p, _)| n == r && *p > 0.0));
        ctx.table.check(
            DROPS_SEEN,
            drops_ok && sure && !real.is_empty(),
            format!(
                "sent {sent} hostile datagrams ({} real captured); ringtun_drops_total rose in prometheus (ringtun show): {}",
                real.len(),
                d.iter()
                    .map(|(r, p, s)| format!("{r} +{p} ({s})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    pair.stop_row(ctx);
    Ok(())
}

// ------------------------------------------------------------- non-root

/// The launcher that makes a process `nobody` with only CAP_NET_ADMIN, and
/// gives it `/dev/net/tun` if this machine's is not open to every user (a
/// private mount namespace over a node made for it; distributions ship it
/// 0666, some containers 0600).
fn nobody_launcher(dir: &Path) -> Result<Vec<String>> {
    let setpriv = [
        "setpriv",
        "--reuid",
        "nobody",
        "--regid",
        "nogroup",
        "--clear-groups",
        "--inh-caps",
        "+net_admin",
        "--ambient-caps",
        "+net_admin",
    ];
    let mut launcher: Vec<String> = Vec::new();
    let tun = std::fs::metadata("/dev/net/tun").context("/dev/net/tun")?;
    if tun.mode() & 0o006 != 0o006 {
        let node = dir.join("tun");
        let made = std::process::Command::new("mknod")
            .args(["-m", "0666"])
            .arg(&node)
            .args(["c", "10", "200"])
            .status()?;
        if !made.success() {
            bail!("mknod {} failed", node.display());
        }
        launcher.extend(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                "mount --bind \"$0\" /dev/net/tun && exec \"$@\"",
            ]
            .map(String::from),
        );
        launcher.push(node.display().to_string());
    }
    launcher.extend(setpriv.map(String::from));
    Ok(launcher)
}

/// `Uid:` and `CapEff:` of a process, from /proc.
fn identity(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!("uid {}, CapEff {}", field("Uid:"), field("CapEff:"))
}

fn nonroot_rows(ctx: &mut Ctx, s: &Sites, m: &Mode, confs: (Conf, Conf)) -> Result<()> {
    if !ctx.wants_any(&NONROOT) {
        return Ok(());
    }
    ctx.interrupted()?;
    for tool in ["setpriv", "unshare", "mknod"] {
        if ringtun_tests::find_in_path(tool).is_none() {
            for r in NONROOT {
                ctx.table
                    .skip(r, format!("{tool} is not installed (util-linux)"));
            }
            return Ok(());
        }
    }
    let dir = OpenDir::new("nobody")?;
    let bin = dir.0.join("ringtun");
    std::fs::copy(ringtun_bin()?, &bin).context("copying ringtun where nobody can run it")?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    let nobody = nix::unistd::User::from_name("nobody")?.context("no user nobody")?;
    let chown = |p: &Path| nix::unistd::chown(p, Some(nobody.uid), None);
    let uapi = dir.0.join("uapi");
    std::fs::create_dir(&uapi)?;
    chown(&uapi)?;
    let b_path = confs.1.write(&dir.0, lab::TUN_B)?;
    chown(&b_path)?;
    let a_path = confs.0.write(ctx.dir.path(), lab::TUN_A)?;

    // The default RLIMIT_MEMLOCK (8 MiB) holds one worker without offloads
    // (with them, a worker pins about 8.7 MiB: the unit raises the limit).
    let up_b = UpOptions {
        workers: Some(1),
        no_offload: true,
        env: vec![
            ("RUST_LOG".into(), "info".into()),
            (
                ringtun_tests::ringtun::UAPI_DIR_ENV.into(),
                uapi.display().to_string(),
            ),
        ],
        launcher: nobody_launcher(&dir.0)?,
        program: Some(bin),
        ..UpOptions::default()
    };
    let fail_all = |ctx: &mut Ctx, why: String| {
        for r in NONROOT {
            if ctx.wants(r) {
                ctx.table.fail(r, why.clone());
            }
        }
    };
    let a = match Ringtun::up(&s.gw_a, &a_path, &ctx.up_options(false)) {
        Ok(a) => a,
        Err(e) => {
            fail_all(ctx, format!("gw-a: {e:#}"));
            return Ok(());
        }
    };
    let b = match Ringtun::up(&s.gw_b, &b_path, &up_b) {
        Ok(b) => b,
        Err(e) => {
            fail_all(ctx, format!("gw-b as nobody: {e:#}"));
            checks::terminate_row(ctx, a);
            return Ok(());
        }
    };
    let who = identity(b.pid());
    let bytes = ctx.opts.bulk_size;
    for (check, from, to, dst) in [
        (NONROOT[0], &s.lan_a, &s.lan_b, m.lan_b4),
        (NONROOT[1], &s.lan_b, &s.lan_a, m.lan_a4),
    ] {
        if !ctx.wants(check) {
            continue;
        }
        let outcome =
            checks::start_bulk(ctx, from, to, dst, bytes).and_then(|t| checks::wait_bulk(ctx, t));
        let as_nobody = who.starts_with("uid 65534") && who.ends_with("CapEff 0000000000001000");
        match outcome {
            Ok(Ok(r)) => ctx.table.check(
                check,
                r.intact() && as_nobody,
                format!("{}; gw-b ringtun: {who}", checks::bulk_figure(&r)),
            ),
            Ok(Err(e)) => ctx.table.fail(check, format!("{e}; gw-b ringtun: {who}")),
            Err(e) => ctx.table.fail(check, format!("{e:#}; gw-b ringtun: {who}")),
        }
    }
    checks::terminate_row(ctx, b);
    checks::terminate_row(ctx, a);
    drop(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_percent_encoded() {
        assert_eq!(
            encode("rate(x{a=\"b\"}[5s])"),
            "rate%28x%7Ba%3D%22b%22%7D%5B5s%5D%29"
        );
    }
}
