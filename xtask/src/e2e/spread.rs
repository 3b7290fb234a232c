//! One peer on every worker: with `Workers = 2` and eight TCP flows each
//! way between the two LANs, both workers of each gateway must seal and
//! open a share of its one peer's packets, as `ringtun show` counts them,
//! and every flow must arrive whole.
//!
//! What spreads one peer is the sender's per-flow source port (vxlan mode
//! always; wireguard mode with `SpreadFlows` on both ends): new flows take
//! consecutive ports in turn, each TCP direction class on its own (the
//! openings, the answers), and the receiver steers each datagram to the
//! worker its sender's address plus source port names, modulo the worker
//! count. The sending side
//! follows: the TUN hands each flow to the queue that last wrote its
//! return traffic. So the split is even by construction, not by chance
//! (with a hash, eight flows left a worker under a quarter about one set
//! in four); a second and third set are still tried before the row fails,
//! since on a busy machine one flow can stall, and the figure says so.
//!
//! The same flows first cross a pair with one worker each, for the
//! reference. Spreading a peer's packets over workers must not reorder a
//! flow: in every set, with one worker and with two, the reordering the
//! LAN hosts' TCP detected (`nstat`'s TcpExtTCPSACKReorder, TCPTSReorder,
//! TCPRenoReorder) must stay within what its unneeded retransmissions
//! explain (TCPDSACKRecv) plus [`REORDERING_SLACK`]. The counters that
//! loss raises (TCPOFOQueue, RetransSegs) are given beside the gateways'
//! TUN ring drops, where forwarded TCP loses: they move together, and by
//! tens of percent from one set to the next with either worker count.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use dataplane::status::InterfaceStatus;
use ringtun_tests::ringtun::{Conf, Ringtun};

use super::checks::{self, Ctx};
use super::lab::{Sites, TUN_A, TUN_B};
use super::pair::Pair;
use super::rows::Mode;
use crate::process;

/// The row.
pub const ROW: &str = "spread: one peer's flows over 2 workers each way";

/// Workers per gateway.
const WORKERS: usize = 2;
/// Flows each way.
const FLOWS: usize = 8;
/// The least share of a peer's packets each worker must seal and open.
const LEAST_SHARE: f64 = 0.35;

/// Reordering events the senders may detect in a set beyond their DSACKs,
/// with one worker or two. A flow's packets leave from one socket of one
/// worker and are opened by one worker, so there should be none; a flow
/// whose port moves after an idle second (none does in a set this short)
/// could add one. The kernel also counts a retransmission that turns out
/// unneeded (a stall, a spurious timeout) as reordering, and the receiver
/// reports each such one with a DSACK, so those are allowed for. Packets
/// of a flow sent from two sockets, even of one worker, make ten thousand
/// events against a few thousand DSACKs. The bound is not the one-worker
/// set's figure, since such a fault reorders that set too.
const REORDERING_SLACK: u64 = 2;

/// Runs the row if selected, on a pair of its own started from `confs`
/// with two workers each.
pub fn rows(ctx: &mut Ctx, s: &Sites, mode: &Mode, confs: (Conf, Conf)) -> Result<()> {
    if !ctx.wants(ROW) {
        return Ok(());
    }
    ctx.interrupted()?;
    let one = (confs.0.clone().workers(1), confs.1.clone().workers(1));
    let reference = match Pair::start(ctx, s, one, false) {
        Ok(pair) => {
            let r = transfer(ctx, s, mode);
            pair.stop_row(ctx);
            match r {
                Ok(t) if t.broken.is_empty() => t.reorder,
                Ok(t) => {
                    let broken = t.broken.join("; ");
                    ctx.table
                        .fail(ROW, format!("with 1 worker each, broken: {broken}"));
                    return Ok(());
                }
                Err(e) => {
                    ctx.table.fail(ROW, format!("with 1 worker each: {e:#}"));
                    return Ok(());
                }
            }
        }
        Err(e) => {
            ctx.table.fail(ROW, format!("ringtun up, 1 worker: {e:#}"));
            return Ok(());
        }
    };
    ctx.interrupted()?;
    let two = (confs.0.workers(WORKERS), confs.1.workers(WORKERS));
    let pair = match Pair::start(ctx, s, two, false) {
        Ok(p) => p,
        Err(e) => {
            ctx.table.fail(ROW, format!("ringtun up: {e:#}"));
            return Ok(());
        }
    };
    match spread(ctx, s, mode, &pair) {
        Ok((even, figure, worst)) => {
            let unexplained = worst
                .unexplained_reordering()
                .max(reference.unexplained_reordering());
            let in_order = unexplained <= REORDERING_SLACK;
            let verdict = if in_order {
                String::new()
            } else {
                format!(
                    "; flows reordered: {unexplained} events beyond the DSACKs in a set \
                     (at most {REORDERING_SLACK}); the worst set with 2 workers: {worst}"
                )
            };
            ctx.table.check(
                ROW,
                even && in_order,
                format!("{figure}; with 1 worker each: {reference}{verdict}"),
            )
        }
        Err(e) => ctx.table.fail(ROW, format!("{e:#}")),
    }
    pair.stop_row(ctx);
    Ok(())
}

/// The LAN hosts' TCP counters over a set, and the gateways' TUN ring
/// drops that explain most of them.
///
/// `reordered` is what the senders' TCP took for reordering (SACK,
/// timestamp or duplicate-ACK evidence that a segment came after a later
/// one), which an unneeded retransmission also raises; `dsack` counts
/// those. `ofo` and `retrans` rise with loss: a flow that loses a segment
/// queues everything after it out of order until the retransmission
/// comes, and forwarded TCP, with no back-pressure from the tunnel, loses
/// at the TUN's transmit ring whenever it sends faster than the gateway
/// reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TcpCounters {
    /// TcpExtTCPSACKReorder + TCPTSReorder + TCPRenoReorder: reordering
    /// the senders detected.
    reordered: u64,
    /// TcpExtTCPDSACKRecv: retransmissions the receiver already had.
    dsack: u64,
    /// TcpExtTCPOFOQueue: segments queued out of order.
    ofo: u64,
    /// TcpRetransSegs: segments sent again.
    retrans: u64,
    /// Packets the gateways' tunnel devices dropped with their transmit
    /// ring full (`tx_dropped`), before ringtun read them.
    ring_drops: u64,
}

impl TcpCounters {
    /// What moved from `before` to `self`.
    fn since(self, before: TcpCounters) -> TcpCounters {
        TcpCounters {
            reordered: self.reordered.saturating_sub(before.reordered),
            dsack: self.dsack.saturating_sub(before.dsack),
            ofo: self.ofo.saturating_sub(before.ofo),
            retrans: self.retrans.saturating_sub(before.retrans),
            ring_drops: self.ring_drops.saturating_sub(before.ring_drops),
        }
    }

    /// Both hosts' counters together.
    fn add(self, o: TcpCounters) -> TcpCounters {
        TcpCounters {
            reordered: self.reordered + o.reordered,
            dsack: self.dsack + o.dsack,
            ofo: self.ofo + o.ofo,
            retrans: self.retrans + o.retrans,
            ring_drops: self.ring_drops + o.ring_drops,
        }
    }

    /// Reordering the senders saw beyond what their DSACKs explain.
    fn unexplained_reordering(self) -> u64 {
        self.reordered.saturating_sub(self.dsack)
    }
}

impl std::fmt::Display for TcpCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reordering seen +{} (DSACKs +{}); with loss: TCPOFOQueue +{}, RetransSegs +{}, TUN ring drops +{}",
            self.reordered, self.dsack, self.ofo, self.retrans, self.ring_drops
        )
    }
}

/// Reads `/proc/net/netstat` and `/proc/net/snmp` as seen from `ns`:
/// lines in pairs, names then values, under one prefix (`TcpExt:`).
fn parse_reorder(text: &str) -> TcpCounters {
    let mut r = TcpCounters::default();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.windows(2) {
        let (names, values) = (pair[0], pair[1]);
        let (Some((p1, names)), Some((p2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if p1 != p2
            || names
                .split_whitespace()
                .next()
                .is_some_and(|n| n.parse::<u64>().is_ok())
        {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            let Ok(v) = v.parse::<u64>() else { continue };
            match (p1, n) {
                ("TcpExt", "TCPSACKReorder" | "TCPTSReorder" | "TCPRenoReorder") => {
                    r.reordered += v
                }
                ("TcpExt", "TCPDSACKRecv") => r.dsack = v,
                ("TcpExt", "TCPOFOQueue") => r.ofo = v,
                ("Tcp", "RetransSegs") => r.retrans = v,
                _ => {}
            }
        }
    }
    r
}

/// The transmit drops of device `dev` in `/proc/net/dev` (`dev: ` then
/// eight receive and eight transmit figures, drops the fourth of each).
fn parse_tx_dropped(text: &str, dev: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, figures) = l.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        figures.split_whitespace().nth(11)?.parse().ok()
    })
}

/// The TCP counters of the host in `ns`.
fn reorder_in(ns: &str) -> Result<TcpCounters> {
    let text = process::run_in(
        ns,
        Path::new("cat"),
        &["/proc/net/netstat", "/proc/net/snmp"],
    )
    .with_context(|| format!("reading the TCP counters in {ns}"))?;
    Ok(parse_reorder(&text))
}

/// Packets `dev` in `ns` dropped with its transmit ring full.
fn ring_drops_in(ns: &str, dev: &str) -> Result<u64> {
    let text = process::run_in(ns, Path::new("cat"), &["/proc/net/dev"])
        .with_context(|| format!("reading the device counters in {ns}"))?;
    parse_tx_dropped(&text, dev).with_context(|| format!("no device {dev} in {ns}'s /proc/net/dev"))
}

/// Both LAN hosts' TCP counters, with both gateways' TUN ring drops.
fn reorder(s: &Sites) -> Result<TcpCounters> {
    let ring_drops = ring_drops_in(&s.gw_a, TUN_A)? + ring_drops_in(&s.gw_b, TUN_B)?;
    let hosts = reorder_in(&s.lan_a)?.add(reorder_in(&s.lan_b)?);
    Ok(TcpCounters {
        ring_drops,
        ..hosts
    })
}

/// What one set of flows each way did.
struct Transfer {
    secs: f64,
    per_flow: u64,
    /// Figures of the flows that did not arrive whole.
    broken: Vec<String>,
    reorder: TcpCounters,
}

/// [`FLOWS`] flows each way at once, waited for.
fn transfer(ctx: &mut Ctx, s: &Sites, mode: &Mode) -> Result<Transfer> {
    let per_flow = (ctx.bulk_capped(256 << 20) / (2 * FLOWS) as u64).max(4 << 20);
    let before = reorder(s)?;
    let started = Instant::now();
    let mut flows = Vec::new();
    for _ in 0..FLOWS {
        flows.push(checks::start_bulk(
            ctx,
            &s.lan_a,
            &s.lan_b,
            mode.lan_b4,
            per_flow,
        )?);
        flows.push(checks::start_bulk(
            ctx,
            &s.lan_b,
            &s.lan_a,
            mode.lan_a4,
            per_flow,
        )?);
    }
    let broken = checks::wait_all_bulk(ctx, flows)?;
    let secs = started.elapsed().as_secs_f64();
    Ok(Transfer {
        secs,
        per_flow,
        broken,
        reorder: reorder(s)?.since(before),
    })
}

/// Per worker: (sealed, opened) packets of the one peer.
type Counts = Vec<(u64, u64)>;

fn counts(st: &InterfaceStatus) -> Counts {
    st.peers.first().map_or_else(Vec::new, |p| {
        p.by_worker
            .iter()
            .map(|w| (w.tx_packets, w.rx_packets))
            .collect()
    })
}

fn show(r: Option<&Ringtun>) -> Result<Counts> {
    match r {
        Some(r) => Ok(counts(&r.show()?)),
        None => anyhow::bail!("a gateway's ringtun is not running"),
    }
}

/// Each worker's share of what `before..after` sealed (`sealed`) or
/// opened, in worker order; empty if the worker count is not [`WORKERS`].
fn shares(before: &Counts, after: &Counts, sealed: bool) -> Vec<f64> {
    if after.len() != WORKERS || before.len() != WORKERS {
        return Vec::new();
    }
    let part = |c: &(u64, u64)| if sealed { c.0 } else { c.1 };
    let delta: Vec<u64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| part(a).saturating_sub(part(b)))
        .collect();
    let total = delta.iter().sum::<u64>().max(1) as f64;
    delta.iter().map(|d| *d as f64 / total).collect()
}

fn percent(shares: &[f64]) -> String {
    if shares.is_empty() {
        return format!("not {WORKERS} workers");
    }
    let parts: Vec<String> = shares.iter().map(|s| format!("{:.0}", s * 100.0)).collect();
    format!("{}%", parts.join("/"))
}

/// Sets of flows tried before a share below [`LEAST_SHARE`] fails the
/// row: the split is even by construction, but on a busy machine one
/// flow of a set can stall while the others finish.
const SETS: u32 = 3;

/// Whether a set split evenly, its figure, and the TCP counters of the
/// set with the most reordering beyond its DSACKs (of every set tried).
fn spread(
    ctx: &mut Ctx,
    s: &Sites,
    mode: &Mode,
    pair: &Pair,
) -> Result<(bool, String, TcpCounters)> {
    let mut first = None;
    // The set whose reordering is the least explained: every set counts.
    let mut worst = TcpCounters::default();
    for attempt in 1..=SETS {
        let before = (show(pair.a.as_ref())?, show(pair.b.as_ref())?);
        let Transfer {
            secs,
            per_flow,
            broken,
            reorder,
        } = transfer(ctx, s, mode)?;
        let after = (show(pair.a.as_ref())?, show(pair.b.as_ref())?);
        if reorder.unexplained_reordering() >= worst.unexplained_reordering() {
            worst = reorder;
        }
        let split = [
            ("gw-a sealed", shares(&before.0, &after.0, true)),
            ("opened", shares(&before.0, &after.0, false)),
            ("gw-b sealed", shares(&before.1, &after.1, true)),
            ("opened", shares(&before.1, &after.1, false)),
        ];
        let by_worker = split
            .iter()
            .map(|(what, s)| format!("{what} {}", percent(s)))
            .collect::<Vec<_>>()
            .join(", ");
        let figure = format!(
            "{} flows of {} each way in {secs:.1} s, {}/{} intact; by worker: {by_worker}; {reorder}",
            FLOWS,
            checks::human(per_flow),
            2 * FLOWS - broken.len(),
            2 * FLOWS,
        );
        if !broken.is_empty() {
            return Ok((
                false,
                format!("{figure}; broken: {}", broken.join("; ")),
                worst,
            ));
        }
        let even = split
            .iter()
            .all(|(_, s)| !s.is_empty() && s.iter().all(|v| *v >= LEAST_SHARE));
        if even {
            let again = match &first {
                Some(f) => format!(" (set {attempt}: the first split {f})"),
                None => String::new(),
            };
            return Ok((true, format!("{figure}{again}"), worst));
        }
        first.get_or_insert(by_worker);
        if split.iter().any(|(_, s)| s.is_empty()) {
            break;
        }
    }
    Ok((
        false,
        format!(
            "a worker took less than {:.0}% in each of {SETS} sets; the first: {}",
            LEAST_SHARE * 100.0,
            first.unwrap_or_default()
        ),
        worst,
    ))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn shares_are_each_workers_part_of_the_delta() {
        let before = vec![(100, 10), (50, 0)];
        let after = vec![(400, 110), (150, 300)];
        let sealed = shares(&before, &after, true);
        assert_eq!(sealed, vec![0.75, 0.25]);
        let opened = shares(&before, &after, false);
        assert_eq!(opened, vec![0.25, 0.75]);
        assert_eq!(percent(&sealed), "75/25%");
        assert!(shares(&before, &vec![(1, 1)], true).is_empty());
        assert_eq!(percent(&[]), "not 2 workers");
        // Nothing moved: no division by zero.
        assert_eq!(shares(&before, &before, true), vec![0.0, 0.0]);
    }

    #[test]
    fn reorder_counters_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent TCPOFOQueue TCPSACKReorder TCPTSReorder TCPDSACKRecv\n\
                    TcpExt: 0 17 3 5 2\n\
                    IpExt: InNoRoutes\n\
                    IpExt: 9\n\
                    Tcp: RtoAlgorithm RetransSegs\n\
                    Tcp: 1 42\n";
        let r = parse_reorder(text);
        assert_eq!(
            r,
            TcpCounters {
                reordered: 3 + 5,
                dsack: 2,
                ofo: 17,
                retrans: 42,
                ring_drops: 0,
            }
        );
        assert_eq!(r.since(r), TcpCounters::default());
        assert_eq!(parse_reorder("garbage\n: :\n"), TcpCounters::default());
        // Reordering beyond the DSACKs is what fails the row.
        assert_eq!(r.unexplained_reordering(), 6);
        assert_eq!(TcpCounters { dsack: 20, ..r }.unexplained_reordering(), 0);
        let r = TcpCounters { ring_drops: 9, ..r };
        assert_eq!(
            r.to_string(),
            "reordering seen +8 (DSACKs +2); with loss: TCPOFOQueue +17, RetransSegs +42, TUN ring drops +9"
        );
    }

    #[test]
    fn tun_ring_drops_are_the_fourth_transmit_figure() {
        let text = "Inter-|   Receive                            |  Transmit\n                     face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n                        lo: 1 2 0 0 0 0 0 0 1 2 0 0 0 0 0 0\n                      rt-a: 100 5 0 1 0 0 0 0 900 9 0 2331 0 0 0 0\n";
        assert_eq!(parse_tx_dropped(text, "rt-a"), Some(2331));
        assert_eq!(parse_tx_dropped(text, "lo"), Some(0));
        assert_eq!(parse_tx_dropped(text, "rt-b"), None);
        assert_eq!(parse_tx_dropped("rt-a: 1 2 3\n", "rt-a"), None);
    }
}
