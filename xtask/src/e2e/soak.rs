//! `cargo xtask soak`: ringtun on both gateways of the two-site WireGuard
//! lab for minutes, across rekeys (REKEY_AFTER_TIME, whitepaper §6.1, is
//! 120 s: the default 10 minutes make 4 or 5).
//!
//! Throughout: a paced TCP transfer each way, lan-a to lan-b and back,
//! hashed at both ends; a UDP delivery probe each way, one datagram a
//! millisecond, that finds the longest time the tunnel delivered nothing
//! and what it lost ([`stream`]); `ringtun show` of both gateways every
//! second, whose handshake counts say when each rekey happened
//! ([`rekeys`]); and every 10 s each daemon's resident memory and open
//! descriptors ([`footprint`]).
//!
//! It passes ([`verdict`]) when both transfers arrive whole, at least 4
//! rekeys happen, no stall within 2 s of a rekey exceeds 100 ms (either
//! way), each daemon's resident memory at the end is within 1 MiB of its
//! sample after the first minute, and neither ends with more descriptors
//! than it had then. It prints the figures and a table of those criteria,
//! and exits non-zero on a failed one. The lab, its guards (also on
//! Ctrl-C and failure) and the cleanup row are e2e's.

mod footprint;
mod rekeys;
mod stream;
mod verdict;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dataplane::status::InterfaceStatus;
use ringtun_tests::ringtun::{Keypair, LabDir, lab_uapi_dir};
use ringtun_tests::traffic::{self, BulkOptions, BulkReport, BulkTransfer};

use super::checks::{self, Ctx, Options, human};
use super::lab::{Sites, l3};
use super::pair::Pair;
use super::relay::SplitMix64;
use super::rows;
use super::table::Table;
use super::wireguard::{MODE, allowed_at_a, allowed_at_b, conf};
use footprint::Sample;
use rekeys::{Rekey, RekeyLog};
use stream::{Stream, StreamReport};
use verdict::{Figures, GATEWAYS, REKEY_WINDOW, RSS_ALLOWANCE_KIB, RekeyStalls, WAYS, stall_text};

/// Options for `cargo xtask soak`.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// How long the traffic runs, in minutes (each rekey comes 2 minutes
    /// after the one before).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Bytes a second of each of the two transfers (suffixes K, M, G):
    /// enough to keep the gateways busy, not to saturate the machine.
    #[arg(long, value_name = "SIZE", default_value = "24M", value_parser = super::parse_size)]
    pace: u64,
    /// Seed of the transfers' payloads.
    #[arg(long)]
    seed: Option<u64>,
    /// The ringtun binary to soak (default: build it with `--release`).
    #[arg(long, value_name = "PATH")]
    ringtun: Option<PathBuf>,
}

/// The footprint baseline: the sample after the first minute, once
/// buffers, sessions and the allocator's arenas are in use.
const WARM_UP: Duration = Duration::from_secs(60);
/// Footprints are sampled this often...
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// ...and `ringtun show` polled this often.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// After the probes stop sending, what is in flight gets this to arrive.
const PROBE_GRACE: Duration = Duration::from_millis(500);
/// Stalls this long are listed in the figures...
const LISTED_STALL: Duration = Duration::from_millis(20);
/// ...the longest this many of them each way.
const LISTED_STALLS: usize = 10;
/// Progress is printed this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// Runs the soak.
pub fn run(args: &SoakArgs) -> Result<()> {
    if !(args.minutes.is_finite() && args.minutes > 0.0) {
        bail!("--minutes must be a positive number, not {}", args.minutes);
    }
    let started = Instant::now();
    let super::Start {
        ringtun,
        stop,
        links_before,
        seed,
    } = super::start("soak", args.ringtun.as_ref(), args.seed)?;
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    println!(
        "soak: ringtun {}, {:.1} min, a transfer each way paced at {}/s, seed {seed} (repeat with --seed {seed})",
        ringtun.display(),
        args.minutes,
        human(args.pace)
    );
    let mut ctx = Ctx {
        table: Table::of("soak"),
        stop: stop.clone(),
        opts: Options {
            bulk_size: bytes_for(args.pace, run_for),
            only: None,
            workers: None,
            keep: false,
            install: false,
        },
        dir: LabDir::new("soak")?,
        rng: SplitMix64(seed),
    };
    let mut figures = None;
    let result = rows::in_lab(&mut ctx, &MODE, ("two-sites-l3.toml", "soak"), |ctx, s| {
        ctx.table.context(MODE.name, "ringtun");
        figures = soak(ctx, s, args.pace, run_for)?;
        Ok(())
    });
    ctx.table.set_diagnostics(None);
    ctx.table.context("-", "-");
    let mut interrupted = None;
    if let Err(e) = result {
        ctx.table.fail("soak: could not go on", format!("{e:#}"));
        if stop.load(Ordering::Relaxed) {
            interrupted = Some(e);
        }
    }
    let Ctx { mut table, dir, .. } = ctx;
    drop(dir);
    super::cleanup_row(&mut table, &links_before)?;
    if let Some(f) = figures {
        println!("\n{f}");
    }
    println!("\n{}", table.render());
    println!("soak: {:.0} s in all", started.elapsed().as_secs_f64());
    if let Some(e) = interrupted {
        return Err(e);
    }
    let (_, failed, _) = table.counts();
    if failed > 0 {
        bail!("{failed} soak criteria failed");
    }
    Ok(())
}

/// Bytes of a transfer paced at `pace` for `run_for`.
fn bytes_for(pace: u64, run_for: Duration) -> u64 {
    ((pace as f64 * run_for.as_secs_f64()) as u64).max(1)
}

/// Starts the pair, soaks it, stops it. Returns the figures, printed at
/// the end (none if the pair did not come up).
fn soak(ctx: &mut Ctx, s: &Sites, pace: u64, run_for: Duration) -> Result<Option<String>> {
    let (ka, kb) = (Keypair::generate()?, Keypair::generate()?);
    let (to_b, to_a) = MODE.direct();
    let confs = (
        conf(&ka, &kb, l3::TUN_A, &allowed_at_a(), Some(to_b)),
        conf(&kb, &ka, l3::TUN_B, &allowed_at_b(), Some(to_a)),
    );
    let mut pair = Pair::start(ctx, s, confs, false).context("ringtun up on both gateways")?;
    let outcome = soak_pair(ctx, s, &mut pair, pace, run_for);
    pair.stop_row(ctx);
    outcome.map(Some)
}

/// What one run gathered.
struct Run {
    t0_ns: u64,
    pids: [u32; 2],
    handshakes_before: [u64; 2],
    log: RekeyLog,
    samples: [Vec<Sample>; 2],
    sample_failures: Vec<String>,
    show_failures: u64,
    first_show_failure: Option<String>,
    died: Vec<String>,
}

/// The session is made, then the traffic runs for `run_for` while the
/// gateways are watched; then the criteria rows.
fn soak_pair(
    ctx: &mut Ctx,
    s: &Sites,
    pair: &mut Pair,
    pace: u64,
    run_for: Duration,
) -> Result<String> {
    const UP: &str = "soak: a session at the start";
    let echo = checks::ping_until(&s.lan_a, l3::LAN_B4, MODE.first_reply)?;
    if !echo.is_reply() {
        ctx.table
            .fail(UP, format!("lan-a -> lan-b unanswered: {echo:?}"));
        bail!("no session to soak");
    }
    // Both gateways handshake at start; let the second settle before the
    // counts are taken.
    std::thread::sleep(Duration::from_secs(2));
    let daemons = [daemon(&pair.a)?, daemon(&pair.b)?];
    let namespaces = [s.gw_a.clone(), s.gw_b.clone()];
    let mut handshakes_before = [0; 2];
    for (i, before) in handshakes_before.iter_mut().enumerate() {
        *before = handshakes(&show(&namespaces[i], &daemons[i].1)?)
            .with_context(|| format!("{}'s ringtun show lists no peer", GATEWAYS[i]))?;
    }
    ctx.table.pass(
        UP,
        format!(
            "lan-a -> lan-b answered; handshakes gw-a {}, gw-b {}",
            handshakes_before[0], handshakes_before[1]
        ),
    );

    let bytes = bytes_for(pace, run_for);
    let started = Instant::now();
    let t0_ns = stream::monotonic_ns();
    let probes = [
        Stream::start(&s.lan_a, &s.lan_b, l3::LAN_B4, ctx.rng.next_u64() as u32)?,
        Stream::start(&s.lan_b, &s.lan_a, l3::LAN_A4, ctx.rng.next_u64() as u32)?,
    ];
    let bulk = |ctx: &mut Ctx, from: &str, to_ns: &str, to| {
        traffic::start_tcp_bulk(
            from,
            to_ns,
            to,
            &BulkOptions {
                bytes,
                seed: ctx.rng.next_u64(),
                timeout: run_for * 2 + Duration::from_secs(120),
                port: 0,
                pace: Some(pace),
            },
        )
        .with_context(|| format!("starting the transfer from {from} to {to}"))
    };
    let transfers = [
        bulk(ctx, &s.lan_a, &s.lan_b, l3::LAN_B4)?,
        bulk(ctx, &s.lan_b, &s.lan_a, l3::LAN_A4)?,
    ];
    println!(
        "soak: traffic under way: {} each way at {}/s, probes at 1 datagram/ms each way",
        human(bytes),
        human(pace)
    );

    let mut run = Run {
        t0_ns,
        pids: [daemons[0].0, daemons[1].0],
        handshakes_before,
        log: RekeyLog::new(handshakes_before),
        samples: Default::default(),
        sample_failures: Vec::new(),
        show_failures: 0,
        first_show_failure: None,
        died: Vec::new(),
    };
    let mut next_sample = Duration::ZERO;
    let mut next_progress = PROGRESS_EVERY;
    let mut tick = Duration::ZERO;
    loop {
        let at = started.elapsed();
        if at >= next_sample {
            sample_both(&mut run, at);
            next_sample += SAMPLE_EVERY;
        }
        let mut counts = [None; 2];
        for (i, ns) in namespaces.iter().enumerate() {
            match show(ns, &daemons[i].1) {
                Ok(st) => counts[i] = handshakes(&st),
                Err(e) => {
                    run.show_failures += 1;
                    run.first_show_failure.get_or_insert_with(|| {
                        format!("{} at {:.0} s: {e:#}", GATEWAYS[i], at.as_secs_f64())
                    });
                }
            }
        }
        run.log.observe(at, counts);
        if at >= next_progress {
            println!("soak: {}", progress(&run, at, &transfers));
            next_progress += PROGRESS_EVERY;
        }
        if transfers.iter().all(BulkTransfer::is_finished) || ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        for (slot, gw) in [&mut pair.a, &mut pair.b].into_iter().zip(GATEWAYS) {
            if slot.as_mut().is_some_and(|d| !d.is_running()) {
                run.died.push(format!(
                    "{gw}'s ringtun exited at {:.0} s: {}",
                    at.as_secs_f64(),
                    slot.as_ref().map(|d| d.stderr()).unwrap_or_default()
                ));
            }
        }
        if !run.died.is_empty() {
            break;
        }
        tick += POLL_EVERY;
        let now = started.elapsed();
        if tick > now {
            std::thread::sleep(tick - now);
        } else {
            tick = now;
        }
    }
    ctx.interrupted()?;
    let [p_ab, p_ba] = probes;
    let reports = [p_ab.finish(PROBE_GRACE)?, p_ba.finish(PROBE_GRACE)?];
    let end = started.elapsed();
    sample_both(&mut run, end);
    let mut counts = [None; 2];
    for (i, ns) in namespaces.iter().enumerate() {
        counts[i] = show(ns, &daemons[i].1).ok().as_ref().and_then(handshakes);
    }
    run.log.observe(end, counts);
    let transfers = transfers.map(|t| {
        if t.is_finished() {
            t.join().map_err(|e| e.to_string())
        } else {
            Err(format!(
                "still running when the soak ended ({} of {} received)",
                human(t.received_so_far()),
                human(bytes)
            ))
        }
    });
    judge(ctx, &run, &reports, &transfers);
    Ok(render(&run, &reports, &transfers, pace, end))
}

/// A gateway's daemon: (pid, interface).
fn daemon(d: &Option<ringtun_tests::ringtun::Ringtun>) -> Result<(u32, String)> {
    let d = d.as_ref().context("a gateway's ringtun is not running")?;
    Ok((d.pid(), d.iface().to_string()))
}

/// `ringtun show` of `iface` in `ns`, through its socket (no process).
fn show(ns: &str, iface: &str) -> Result<InterfaceStatus> {
    Ok(dataplane::uapi::client::show_in(
        Some(&lab_uapi_dir(ns)),
        iface,
    )?)
}

/// The handshakes completed with the one peer.
fn handshakes(st: &InterfaceStatus) -> Option<u64> {
    st.peers.first().map(|p| p.handshakes)
}

fn sample_both(run: &mut Run, at: Duration) {
    for (i, pid) in run.pids.into_iter().enumerate() {
        match footprint::sample(pid, at) {
            Ok(s) => run.samples[i].push(s),
            Err(e) => run.sample_failures.push(format!(
                "{} at {:.0} s: {e:#}",
                GATEWAYS[i],
                at.as_secs_f64()
            )),
        }
    }
}

/// One line every minute, for whoever watches the log.
fn progress(run: &Run, at: Duration, transfers: &[BulkTransfer; 2]) -> String {
    let counts = run.log.counts();
    let last = |i: usize| {
        run.samples[i]
            .last()
            .map(|s| format!("{} KiB, {} fds", s.rss_kib, s.fds))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{:.1} min: {} rekeys (handshakes gw-a {}, gw-b {}); received a->b {}, b->a {}; gw-a {}; gw-b {}",
        at.as_secs_f64() / 60.0,
        run.log.rekeys().len(),
        counts[0],
        counts[1],
        human(transfers[0].received_so_far()),
        human(transfers[1].received_so_far()),
        last(0),
        last(1),
    )
}

/// The window around a rekey, on the probes' clock: from [`REKEY_WINDOW`]
/// before the poll it was seen after to as long after the one that saw it
/// (the handshake happened somewhere between them).
fn window(run: &Run, r: &Rekey) -> (u64, u64) {
    let ns = |d: Duration| d.as_nanos() as u64;
    (
        (run.t0_ns + ns(r.after)).saturating_sub(ns(REKEY_WINDOW)),
        run.t0_ns + ns(r.by) + ns(REKEY_WINDOW),
    )
}

/// Each rekey with the longest stall and the losses each way around it.
fn rekey_stalls(run: &Run, reports: &[StreamReport; 2]) -> Vec<RekeyStalls> {
    run.log
        .rekeys()
        .iter()
        .map(|r| {
            let (from, to) = window(run, r);
            RekeyStalls {
                rekey: *r,
                stalls: [0, 1].map(|i| reports[i].deliveries.longest_within(from, to)),
                lost: [0, 1].map(|i| reports[i].lost_within(from, to)),
            }
        })
        .collect()
}

/// Each daemon's footprint judged, or why it cannot be.
fn footprints(run: &Run) -> [Result<footprint::Verdict, String>; 2] {
    [0, 1].map(|i| {
        footprint::judge(&run.samples[i], WARM_UP, RSS_ALLOWANCE_KIB).ok_or_else(|| {
            format!(
                "no samples of pid {}: {}",
                run.pids[i],
                run.sample_failures.join("; ")
            )
        })
    })
}

/// The criteria, one row each.
fn judge(
    ctx: &mut Ctx,
    run: &Run,
    reports: &[StreamReport; 2],
    transfers: &[Result<BulkReport, String>; 2],
) {
    let rekeys = rekey_stalls(run, reports);
    let counts = run.log.counts();
    let figures = Figures {
        died: &run.died,
        transfers,
        handshakes: [0, 1].map(|i| (run.handshakes_before[i], counts[i])),
        rekeys: &rekeys,
        t0_ns: run.t0_ns,
        longest: [0, 1].map(|i| reports[i].deliveries.longest()),
        lost: [0, 1].map(|i| reports[i].lost()),
        footprints: footprints(run),
    };
    for c in verdict::criteria(&figures) {
        ctx.table.check(c.check, c.passed, c.detail);
    }
}

/// Rows of cells as aligned text, each line indented by two spaces.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
    out
}

/// The figures: rekeys with their stalls, the probes, the footprints, the
/// transfers.
fn render(
    run: &Run,
    reports: &[StreamReport; 2],
    transfers: &[Result<BulkReport, String>; 2],
    pace: u64,
    end: Duration,
) -> String {
    let rekeys = rekey_stalls(run, reports);
    let mut out = format!(
        "soak figures: {:.1} min of traffic, each transfer paced at {}/s, probes 1 datagram/ms each way; {} rekeys\n",
        end.as_secs_f64() / 60.0,
        human(pace),
        rekeys.len()
    );

    let _ = writeln!(
        out,
        "\nrekeys (ringtun show every {} s; handshakes completed at gw-a / gw-b; stalls and losses within {} s):",
        POLL_EVERY.as_secs(),
        REKEY_WINDOW.as_secs()
    );
    let mut rows = vec![vec![
        "#".to_string(),
        "seen between".into(),
        "handshakes".into(),
        "longest stall a->b".into(),
        "longest stall b->a".into(),
        "lost a->b / b->a".into(),
    ]];
    for (n, r) in rekeys.iter().enumerate() {
        rows.push(vec![
            (n + 1).to_string(),
            format!(
                "{:.0}-{:.0} s",
                r.rekey.after.as_secs_f64(),
                r.rekey.by.as_secs_f64()
            ),
            format!("{} / {}", r.rekey.handshakes[0], r.rekey.handshakes[1]),
            stall_text(run.t0_ns, r.stalls[0]),
            stall_text(run.t0_ns, r.stalls[1]),
            format!("{} / {}", r.lost[0], r.lost[1]),
        ]);
    }
    out.push_str(&columns(&rows));
    if run.show_failures > 0 {
        let _ = writeln!(
            out,
            "  ringtun show failed {} times; first: {}",
            run.show_failures,
            run.first_show_failure.as_deref().unwrap_or("-")
        );
    }

    out.push_str("\ndelivery probes (UDP, lan to lan):\n");
    let mut rows = vec![vec![
        "way".to_string(),
        "sent".into(),
        "received".into(),
        "lost".into(),
        "socket drops".into(),
        "late".into(),
        "dup".into(),
        "sender late (ticks)".into(),
        "longest stall".into(),
    ]];
    for (way, r) in WAYS.iter().zip(reports) {
        rows.push(vec![
            way.to_string(),
            r.sent.count().to_string(),
            r.deliveries.received().to_string(),
            r.lost().to_string(),
            r.socket_drops.to_string(),
            r.deliveries.late().to_string(),
            r.deliveries.duplicates().to_string(),
            r.sent.ticks_missed.to_string(),
            stall_text(run.t0_ns, r.deliveries.longest()),
        ]);
    }
    out.push_str(&columns(&rows));
    // The long ones with their times, to tell a rekey's from the machine's:
    // a stall both ways at once points at something both share (a busy
    // host), one way alone at that way's path.
    for (way, r) in WAYS.iter().zip(reports) {
        let mut long: Vec<_> = r
            .deliveries
            .notable()
            .iter()
            .filter(|s| s.extra() >= LISTED_STALL)
            .collect();
        if long.is_empty() {
            continue;
        }
        let count = long.len();
        long.sort_by_key(|s| std::cmp::Reverse(s.extra_ns));
        long.truncate(LISTED_STALLS);
        long.sort_by_key(|s| s.from_ns);
        let listed: Vec<_> = long
            .iter()
            .map(|s| stall_text(run.t0_ns, Some(**s)))
            .collect();
        let _ = writeln!(
            out,
            "  {way}: {count} stalls of {} or more; the longest {}: {}",
            verdict::ms(LISTED_STALL),
            listed.len(),
            listed.join(", ")
        );
    }
    for (way, r) in WAYS.iter().zip(reports) {
        if r.sent.errors > 0 {
            let _ = writeln!(
                out,
                "  {way}: {} sends failed; first: {}",
                r.sent.errors,
                r.sent.first_error.as_deref().unwrap_or("-")
            );
        }
        if r.unstamped > 0 {
            let _ = writeln!(
                out,
                "  {way}: {} datagrams without a kernel timestamp",
                r.unstamped
            );
        }
    }

    let _ = writeln!(
        out,
        "\ndaemons (/proc every {} s; the first-minute sample is the one at {} s):",
        SAMPLE_EVERY.as_secs(),
        WARM_UP.as_secs()
    );
    let mut rows = vec![vec![
        "gateway".to_string(),
        "pid".into(),
        "rss 1st min".into(),
        "rss end".into(),
        "rss max".into(),
        "fds 1st min".into(),
        "fds end".into(),
        "fds max".into(),
        "samples".into(),
    ]];
    for (i, v) in footprints(run).into_iter().enumerate() {
        let kib = |k: u64| format!("{k} KiB");
        let (gw, pid) = (GATEWAYS[i].to_string(), run.pids[i].to_string());
        rows.push(match v {
            Ok(v) => vec![
                gw,
                pid,
                kib(v.baseline.rss_kib),
                kib(v.last.rss_kib),
                kib(v.rss_max_kib),
                v.baseline.fds.to_string(),
                v.last.fds.to_string(),
                v.fds_max.to_string(),
                run.samples[i].len().to_string(),
            ],
            Err(why) => vec![gw, pid, why],
        });
    }
    out.push_str(&columns(&rows));
    for f in &run.sample_failures {
        let _ = writeln!(out, "  sampling failed: {f}");
    }

    out.push_str("\ntransfers (TCP, lan to lan, SHA-256 at both ends):\n");
    let mut rows = vec![vec![
        "way".to_string(),
        "sent".into(),
        "received".into(),
        "time".into(),
        "rate".into(),
        "sha256 sent".into(),
        "sha256 received".into(),
    ]];
    for (way, t) in WAYS.iter().zip(transfers) {
        rows.push(match t {
            Ok(r) => vec![
                way.to_string(),
                format!("{} ({} B)", human(r.bytes_sent), r.bytes_sent),
                format!("{} ({} B)", human(r.bytes_received), r.bytes_received),
                format!("{:.1} s", r.elapsed.as_secs_f64()),
                format!(
                    "{:.1} MiB/s",
                    r.bytes_received as f64
                        / r.elapsed.as_secs_f64().max(1e-9)
                        / f64::from(1u32 << 20)
                ),
                traffic::hex(&r.sent_sha256),
                traffic::hex(&r.received_sha256),
            ],
            Err(e) => vec![way.to_string(), format!("FAILED: {e}")],
        });
    }
    out.push_str(&columns(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_spans_the_run_at_its_pace() {
        assert_eq!(
            bytes_for(24 << 20, Duration::from_secs(600)),
            600 * (24 << 20)
        );
        assert_eq!(bytes_for(1, Duration::ZERO), 1);
    }

    #[test]
    fn columns_line_up() {
        let text = columns(&[
            vec!["way".into(), "sent".into()],
            vec!["a->b".into(), "1".into()],
        ]);
        assert_eq!(text, "  way   sent\n  a->b  1\n");
    }
}
