//! The offload rows: whether the offloads ringtun claims actually engaged,
//! read from its own counters ("offloads at work" in `ringtun show`) on
//! both gateways around each bulk transfer. The claim alone (`udp-gso` in
//! the offload list) holds whenever offloads are configured; these rows
//! fail when TSO, UDP GSO, GRO or coalescing silently stop working.

use anyhow::Result;
use dataplane::status::OffloadTotals;
use ringtun_tests::ringtun::Ringtun;

use super::checks::{self, Ctx};
use super::lab::Sites;
use super::pair::Pair;
use super::rows::Mode;

/// The rows with offloads on, in the order [`on_rows`] makes them.
pub const ON_ROWS: [&str; 3] = [
    "offloads at work: tso reads",
    "offloads at work: udp gso",
    "offloads at work: coalesced writes",
];

/// The rows with `--no-offload`, in the order [`off_rows`] makes them.
pub const OFF_ROWS: [&str; 2] = [
    "offloads off: one datagram per send [--no-offload]",
    "offloads off: no super-packets, gro or coalesced writes [--no-offload]",
];

/// The least average (datagrams per UDP send, segments per coalesced
/// write) that counts as the offload at work. Without it each average is
/// one (or there is nothing to average); with it a 256 MiB transfer
/// measured 13.8-15.1 datagrams per send and 12.1-12.7 segments per
/// coalesced write in both modes, so 8 leaves room for a slower machine
/// while a stalled offload cannot reach it.
pub const MIN_AVERAGE: f64 = 8.0;

/// The least share of a GRO receive's datagrams that one coalesced write
/// carries on average. A write can merge only what one receive brought,
/// and how much that is follows the sender's batches, so on a busy
/// machine the receives shrink (8.8 datagrams against 12-13 on a quiet
/// one) and a fixed floor fails with nothing wrong in the coalescer.
/// Measured 0.89 on both; a stalled coalescer writes one segment at a
/// time, a tenth of that.
pub const MIN_COALESCED_SHARE: f64 = 0.8;

/// The least datagrams per GRO receive that count as GRO at work (one
/// without it), so that the share above means something.
pub const MIN_GRO_AVERAGE: f64 = 4.0;

/// Both gateways' counters: (gateway A's, gateway B's).
type Both = (OffloadTotals, OffloadTotals);

/// What both gateways counted during each of the two bulk transfers.
struct Measured {
    /// During the transfer from lan-a to lan-b.
    a_to_b: Both,
    /// During the transfer from lan-b to lan-a.
    b_to_a: Both,
    /// Why the figures cannot be trusted: a transfer that made no row of
    /// its own did not complete, or a gateway's counters could not be read.
    failed: Option<String>,
}

/// The bulk transfers with offloads on (`bulk tcp a->b`, `b->a`), then
/// the [`ON_ROWS`] from the counters read around them.
pub fn bulk_on(ctx: &mut Ctx, s: &Sites, m: &Mode, pair: &Pair) -> Result<()> {
    let bytes = ctx.opts.bulk_size;
    // The yield row reads what these transfers left in the counters too.
    let rows: Vec<&str> = ON_ROWS.iter().copied().chain([checks::GIVES_WAY]).collect();
    if let Some(measured) = bulk_measured(ctx, s, m, pair, ("", &rows), bytes)? {
        on_rows(ctx, &measured);
    }
    Ok(())
}

/// The bulk transfers with `--no-offload` (their rows named with
/// `suffix`), then the [`OFF_ROWS`].
pub fn bulk_off(ctx: &mut Ctx, s: &Sites, m: &Mode, pair: &Pair, suffix: &str) -> Result<()> {
    let bytes = ctx.opts.bulk_size;
    if let Some(measured) = bulk_measured(ctx, s, m, pair, (suffix, &OFF_ROWS), bytes)? {
        off_rows(ctx, &measured);
    }
    Ok(())
}

/// The bulk transfers `bulk tcp a->b{suffix}` and `bulk tcp b->a{suffix}`
/// of `bytes` each, with both gateways' counters read before and after
/// each. A transfer whose row `--only` leaves out still runs, without a
/// row, when any of `rows` is wanted: those rows need its traffic. `None`
/// when none of `rows` is wanted (the transfers then run as
/// [`checks::bulk`] decides).
fn bulk_measured(
    ctx: &mut Ctx,
    s: &Sites,
    m: &Mode,
    pair: &Pair,
    (suffix, rows): (&str, &[&str]),
    bytes: u64,
) -> Result<Option<Measured>> {
    let measure = ctx.wants_any(rows);
    let mut failed = None;
    let mut deltas = Vec::with_capacity(2);
    for (dir, from, to_ns, to) in [
        ("a->b", &s.lan_a, &s.lan_b, m.lan_b4),
        ("b->a", &s.lan_b, &s.lan_a, m.lan_a4),
    ] {
        let check = format!("bulk tcp {dir}{suffix}");
        let before = if measure {
            totals(pair, &mut failed)
        } else {
            None
        };
        if ctx.wants(&check) || !measure {
            checks::bulk(ctx, &check, from, to_ns, to, bytes)?;
        } else {
            ctx.interrupted()?;
            let outcome = checks::start_bulk(ctx, from, to_ns, to, bytes)
                .and_then(|t| checks::wait_bulk(ctx, t));
            ctx.interrupted()?;
            let why = match outcome {
                Ok(Ok(r)) if r.intact() => None,
                Ok(Ok(r)) => Some(checks::bulk_figure(&r)),
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("{e:#}")),
            };
            if let Some(why) = why {
                failed.get_or_insert(format!("transfer {dir} failed: {why}"));
            }
        }
        if measure {
            // Unread counters leave zeros, and `failed` says why.
            let delta = match (before, totals(pair, &mut failed)) {
                (Some(b), Some(a)) => (a.0.since(&b.0), a.1.since(&b.1)),
                _ => Both::default(),
            };
            deltas.push(delta);
        }
    }
    Ok(match deltas[..] {
        [a_to_b, b_to_a] => Some(Measured {
            a_to_b,
            b_to_a,
            failed,
        }),
        _ => None,
    })
}

/// Both gateways' offload counters now, or `None` with the first reason
/// in `failed` (a dead daemon fails the rows; it must not end the run).
fn totals(pair: &Pair, failed: &mut Option<String>) -> Option<Both> {
    let read = |d: &Option<Ringtun>, gw: &str| -> Result<OffloadTotals> {
        match d {
            Some(d) => Ok(d.show()?.offload_totals()),
            None => anyhow::bail!("{gw}'s ringtun is not running"),
        }
    };
    match read(&pair.a, "gw-a").and_then(|a| Ok((a, read(&pair.b, "gw-b")?))) {
        Ok(both) => Some(both),
        Err(e) => {
            failed.get_or_insert(format!("reading the counters: {e:#}"));
            None
        }
    }
}

/// One direction's sender and receiver, named, with their counters.
struct Leg<'a> {
    dir: &'static str,
    sender: (&'static str, &'a OffloadTotals),
    receiver: (&'static str, &'a OffloadTotals),
}

/// Which end of a direction a row reads.
#[derive(Clone, Copy)]
enum Side {
    /// The gateway whose LAN sent: it reads super-packets and sends.
    Sender,
    /// The gateway whose LAN received: it receives and writes coalesced.
    Receiver,
}

impl<'a> Leg<'a> {
    fn at(&self, side: Side) -> (&'static str, &'a OffloadTotals) {
        match side {
            Side::Sender => self.sender,
            Side::Receiver => self.receiver,
        }
    }
}

impl Measured {
    fn legs(&self) -> [Leg<'_>; 2] {
        [
            Leg {
                dir: "a->b",
                sender: ("gw-a", &self.a_to_b.0),
                receiver: ("gw-b", &self.a_to_b.1),
            },
            Leg {
                dir: "b->a",
                sender: ("gw-b", &self.b_to_a.1),
                receiver: ("gw-a", &self.b_to_a.0),
            },
        ]
    }

    /// Each gateway over both transfers.
    fn per_gateway(&self) -> [(&'static str, OffloadTotals); 2] {
        [
            ("gw-a", self.a_to_b.0.plus(&self.b_to_a.0)),
            ("gw-b", self.a_to_b.1.plus(&self.b_to_a.1)),
        ]
    }

    fn suffix(&self) -> String {
        self.failed
            .as_ref()
            .map(|f| format!("; {f}"))
            .unwrap_or_default()
    }
}

fn avg(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn at_least(v: Option<f64>) -> bool {
    v.is_some_and(|v| v >= MIN_AVERAGE)
}

/// Whether GRO receives brought several datagrams and the coalesced
/// writes carried most of each.
fn coalesced_most_of_each_receive(t: &OffloadTotals) -> bool {
    match (
        t.datagrams_per_gro_receive(),
        t.segments_per_coalesced_write(),
    ) {
        (Some(gro), Some(write)) => gro >= MIN_GRO_AVERAGE && write >= MIN_COALESCED_SHARE * gro,
        _ => false,
    }
}

/// The rows with offloads on, each direction on the gateway where the
/// offload acts: the one whose LAN sent read super-packets and sent at
/// least [`MIN_AVERAGE`] datagrams per send; the one whose LAN received
/// received through GRO and wrote most of each receive's datagrams as one
/// coalesced write ([`MIN_COALESCED_SHARE`]). Not both
/// gateways summed: the receiving one's sends are the TCP ACKs, fewer to
/// a send, which only dilute the sender's figure (11.0-13.6 summed
/// against 13.8-15.1 alone), and the sending one coalesces nothing (ACKs
/// carry no payload to merge).
///
/// Super-packets are required, not a number of segments in each: the LAN
/// host's TCP sizes them (TSO autosizing, about 1 ms of data at its
/// current rate), so their average follows the tunnel's throughput (19-21
/// measured, 5.7 with UDP GSO forced off) and says nothing about the
/// device; without TSO the device splits them itself and hands over none.
fn on_rows(ctx: &mut Ctx, m: &Measured) {
    let legs = m.legs();
    let row = |ctx: &mut Ctx,
               check: &str,
               (pass, need): (fn(&OffloadTotals) -> bool, String),
               side: Side,
               fig: fn(&OffloadTotals) -> String| {
        if !ctx.wants(check) {
            return;
        }
        let ok = legs.iter().all(|l| pass(l.at(side).1)) && m.failed.is_none();
        let figure = legs
            .iter()
            .map(|l| {
                let (name, t) = l.at(side);
                format!("{} at {name}: {}", l.dir, fig(t))
            })
            .collect::<Vec<_>>()
            .join("; ");
        ctx.table
            .check(check, ok, format!("{figure}; need {need}{}", m.suffix()));
    };
    row(
        ctx,
        ON_ROWS[0],
        (|t| t.super_packets > 0, "super-packets each way".into()),
        Side::Sender,
        |t| {
            format!(
                "{} super-packets -> {} segments (avg {})",
                t.super_packets,
                t.super_packet_segments,
                avg(t.segments_per_super_packet())
            )
        },
    );
    row(
        ctx,
        ON_ROWS[1],
        (
            |t| at_least(t.datagrams_per_send()),
            format!("avg >= {MIN_AVERAGE}"),
        ),
        Side::Sender,
        |t| {
            format!(
                "{} sends carrying {} datagrams (avg {})",
                t.udp_sends,
                t.udp_datagrams,
                avg(t.datagrams_per_send())
            )
        },
    );
    row(
        ctx,
        ON_ROWS[2],
        (
            coalesced_most_of_each_receive,
            format!("gro avg >= {MIN_GRO_AVERAGE}, write avg >= {MIN_COALESCED_SHARE} x gro avg"),
        ),
        Side::Receiver,
        |t| {
            format!(
                "{} writes carrying {} segments (avg {}), gro {} receives carrying {} of {} datagrams (avg {})",
                t.coalesced_writes,
                t.coalesced_segments,
                avg(t.segments_per_coalesced_write()),
                t.gro_receives,
                t.gro_datagrams,
                t.rx_datagrams,
                avg(t.datagrams_per_gro_receive())
            )
        },
    );
}

/// The rows with `--no-offload`: on both gateways, over both transfers,
/// every send carried one datagram, and nothing was read as a
/// super-packet, received through GRO or written coalesced.
fn off_rows(ctx: &mut Ctx, m: &Measured) {
    let gws = m.per_gateway();
    if ctx.wants(OFF_ROWS[0]) {
        // Sends are counted when submitted and their datagrams when they
        // complete, so a send still in flight at the reading makes the
        // average a little under one, never over.
        let ok = gws
            .iter()
            .all(|(_, t)| t.udp_sends > 0 && t.udp_datagrams <= t.udp_sends)
            && m.failed.is_none();
        let figure = gws
            .iter()
            .map(|(gw, t)| {
                format!(
                    "{gw}: {} sends carrying {} datagrams (avg {:.2})",
                    t.udp_sends,
                    t.udp_datagrams,
                    t.datagrams_per_send().unwrap_or(0.0)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        ctx.table
            .check(OFF_ROWS[0], ok, format!("{figure}{}", m.suffix()));
    }
    if ctx.wants(OFF_ROWS[1]) {
        let ok = gws
            .iter()
            .all(|(_, t)| t.super_packets == 0 && t.gro_receives == 0 && t.coalesced_writes == 0)
            && m.failed.is_none();
        let figure = gws
            .iter()
            .map(|(gw, t)| {
                format!(
                    "{gw}: {} super-packets, {} gro receives, {} coalesced writes",
                    t.super_packets, t.gro_receives, t.coalesced_writes
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        ctx.table
            .check(OFF_ROWS[1], ok, format!("{figure}{}", m.suffix()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiving(
        gro_receives: u64,
        gro_datagrams: u64,
        writes: u64,
        segments: u64,
    ) -> OffloadTotals {
        OffloadTotals {
            gro_receives,
            gro_datagrams,
            rx_datagrams: gro_datagrams,
            coalesced_writes: writes,
            coalesced_segments: segments,
            ..OffloadTotals::default()
        }
    }

    #[test]
    fn coalesced_writes_are_judged_against_what_each_receive_brought() {
        // A busy machine's figures (CI): small receives, each written whole.
        assert!(coalesced_most_of_each_receive(&receiving(
            87_471, 767_474, 97_739, 764_971
        )));
        // A quiet machine's.
        assert!(coalesced_most_of_each_receive(&receiving(
            60_000, 768_000, 62_000, 767_000
        )));
        // A coalescer that writes one segment at a time.
        assert!(!coalesced_most_of_each_receive(&receiving(
            87_471, 767_474, 764_971, 764_971
        )));
        // Every other segment alone: half of each receive.
        assert!(!coalesced_most_of_each_receive(&receiving(
            87_471, 767_474, 195_000, 764_971
        )));
        // GRO not at work: nothing to judge the writes by.
        assert!(!coalesced_most_of_each_receive(&receiving(
            700_000, 767_474, 380_000, 760_000
        )));
        assert!(!coalesced_most_of_each_receive(&OffloadTotals::default()));
    }
}
