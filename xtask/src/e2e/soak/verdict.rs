//! The soak's pass criteria, judged from its figures alone (no lab, no
//! root), so that each one is tested on figures made up to pass or fail it.

use std::time::Duration;

use ringtun_tests::traffic::BulkReport;

use super::footprint;
use super::rekeys::Rekey;
use super::stream::{NOTABLE, Stall};
use crate::e2e::checks::{bulk_figure, human};

/// At least this many rekeys: REKEY_AFTER_TIME (whitepaper §6.1) is
/// 120 s, so the default 10 minutes make 4 or 5.
pub const MIN_REKEYS: usize = 4;
/// No stall around a rekey may exceed this: a rekey must not be felt.
pub const STALL_LIMIT: Duration = Duration::from_millis(100);
/// "Around a rekey": this far either side of the polls it was seen between.
pub const REKEY_WINDOW: Duration = Duration::from_secs(2);
/// Resident memory may end this far above the baseline, KiB.
pub const RSS_ALLOWANCE_KIB: u64 = 1024;

/// The gateways, in the order of every per-gateway array here.
pub const GATEWAYS: [&str; 2] = ["gw-a", "gw-b"];
/// The directions, likewise.
pub const WAYS: [&str; 2] = ["a->b", "b->a"];

/// One rekey and the longest stall each way (a->b, b->a) within
/// [`REKEY_WINDOW`] of it (`None`: none of [`NOTABLE`]).
#[derive(Clone, Copy, Debug)]
pub struct RekeyStalls {
    /// The rekey.
    pub rekey: Rekey,
    /// The longest stall each way around it.
    pub stalls: [Option<Stall>; 2],
    /// Probe datagrams each way sent around it and never received.
    pub lost: [u64; 2],
}

/// What the criteria are judged on.
#[derive(Clone, Debug)]
pub struct Figures<'a> {
    /// A sentence for each daemon that exited during the run.
    pub died: &'a [String],
    /// Each way's transfer, or why it has no report.
    pub transfers: &'a [Result<BulkReport, String>; 2],
    /// Each gateway's handshake count before the traffic and at the end.
    pub handshakes: [(u64, u64); 2],
    /// The rekeys seen, with their stalls.
    pub rekeys: &'a [RekeyStalls],
    /// The probes' time zero (CLOCK_MONOTONIC ns): stall times are told
    /// from it.
    pub t0_ns: u64,
    /// The longest stall each way, anywhere.
    pub longest: [Option<Stall>; 2],
    /// Probe datagrams lost each way, in all.
    pub lost: [u64; 2],
    /// Each gateway's footprint, or why it has none.
    pub footprints: [Result<footprint::Verdict, String>; 2],
}

/// One criterion's outcome: a row of the soak's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Criterion {
    /// What is checked.
    pub check: String,
    /// Whether it held.
    pub passed: bool,
    /// The figures it was judged on.
    pub detail: String,
}

/// `12.3 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A stall for the figures: `12.3 ms at 233.1 s` (from `t0_ns`); `None`
/// is none of [`NOTABLE`] (shorter ones are not kept).
pub fn stall_text(t0_ns: u64, s: Option<Stall>) -> String {
    match s {
        Some(s) => format!(
            "{} at {:.1} s",
            ms(s.extra()),
            s.from_ns.saturating_sub(t0_ns) as f64 / 1e9
        ),
        None => format!("< {}", ms(NOTABLE)),
    }
}

/// Every criterion, in the order of the table.
pub fn criteria(f: &Figures) -> Vec<Criterion> {
    let mut out = Vec::new();
    let mut row = |check: String, passed: bool, detail: String| {
        out.push(Criterion {
            check,
            passed,
            detail,
        })
    };

    row(
        "soak: both daemons ran throughout".into(),
        f.died.is_empty(),
        if f.died.is_empty() {
            "neither exited".into()
        } else {
            f.died.join("; ")
        },
    );

    for (way, t) in WAYS.iter().zip(f.transfers) {
        let check = format!("soak: bulk tcp {way} intact");
        match t {
            Ok(r) => row(check, r.intact(), bulk_figure(r)),
            Err(e) => row(check, false, e.clone()),
        }
    }

    // Both gateways count every handshake, whichever side began it, so
    // each count must have risen as often as there were rekeys.
    let rose = f
        .handshakes
        .map(|(before, after)| after.saturating_sub(before));
    let by: Vec<String> = f
        .rekeys
        .iter()
        .map(|r| format!("{:.0}", r.rekey.by.as_secs_f64()))
        .collect();
    row(
        format!("soak: at least {MIN_REKEYS} rekeys"),
        f.rekeys.len() >= MIN_REKEYS && rose.iter().all(|&n| n >= MIN_REKEYS as u64),
        format!(
            "{} rekeys, by {} s; handshakes gw-a {} -> {}, gw-b {} -> {}",
            f.rekeys.len(),
            if by.is_empty() {
                "-".into()
            } else {
                by.join(", ")
            },
            f.handshakes[0].0,
            f.handshakes[0].1,
            f.handshakes[1].0,
            f.handshakes[1].1,
        ),
    );

    let mut worst: Option<(usize, usize, Stall)> = None;
    for (n, r) in f.rekeys.iter().enumerate() {
        for (way, s) in r.stalls.iter().enumerate() {
            if let Some(s) = *s
                && worst.is_none_or(|(_, _, w)| s.extra_ns > w.extra_ns)
            {
                worst = Some((n, way, s));
            }
        }
    }
    row(
        format!(
            "soak: no stall over {} within {} s of a rekey",
            ms(STALL_LIMIT),
            REKEY_WINDOW.as_secs()
        ),
        worst.is_none_or(|(_, _, s)| s.extra() <= STALL_LIMIT),
        format!(
            "longest at a rekey: {}; anywhere a->b {}, b->a {}; lost a->b {}, b->a {}",
            match worst {
                Some((n, way, s)) => format!(
                    "{} {} (rekey {})",
                    WAYS[way],
                    stall_text(f.t0_ns, Some(s)),
                    n + 1
                ),
                None => format!("< {}", ms(NOTABLE)),
            },
            stall_text(f.t0_ns, f.longest[0]),
            stall_text(f.t0_ns, f.longest[1]),
            f.lost[0],
            f.lost[1],
        ),
    );

    for (gw, v) in GATEWAYS.iter().zip(&f.footprints) {
        let rss = format!(
            "soak: {gw} resident memory at the end within {} of its first-minute sample",
            human(RSS_ALLOWANCE_KIB << 10)
        );
        let fds = format!("soak: {gw} open descriptors no more at the end than after a minute");
        match v {
            Err(why) => {
                row(rss, false, why.clone());
                row(fds, false, why.clone());
            }
            Ok(v) => {
                row(
                    rss,
                    v.rss_ok,
                    format!(
                        "{} KiB at {:.0} s, {} KiB at the end, max {} KiB",
                        v.baseline.rss_kib,
                        v.baseline.at.as_secs_f64(),
                        v.last.rss_kib,
                        v.rss_max_kib
                    ),
                );
                row(
                    fds,
                    v.fds_ok,
                    format!(
                        "{} at {:.0} s, {} at the end, max {}",
                        v.baseline.fds,
                        v.baseline.at.as_secs_f64(),
                        v.last.fds,
                        v.fds_max
                    ),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::soak::footprint::Sample;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn whole() -> BulkReport {
        BulkReport {
            bytes_sent: 1 << 30,
            bytes_received: 1 << 30,
            sent_sha256: [7; 32],
            received_sha256: [7; 32],
            elapsed: Duration::from_secs(600),
        }
    }

    fn stall(at_s: u64, extra_ms: u64) -> Stall {
        Stall {
            from_ns: at_s * S,
            to_ns: at_s * S + (extra_ms + 1) * MS,
            extra_ns: extra_ms * MS,
            skipped: 0,
        }
    }

    fn rekey(at_s: u64, stall_ms: u64) -> RekeyStalls {
        RekeyStalls {
            rekey: Rekey {
                after: Duration::from_secs(at_s - 1),
                by: Duration::from_secs(at_s),
                handshakes: [0, 0],
            },
            stalls: [Some(stall(at_s, stall_ms)), None],
            lost: [0, 0],
        }
    }

    fn footprint(baseline_kib: u64, end_kib: u64, fds: (u64, u64)) -> footprint::Verdict {
        let sample = |at, rss_kib, fds| Sample {
            at: Duration::from_secs(at),
            rss_kib,
            fds,
        };
        let samples = [sample(60, baseline_kib, fds.0), sample(600, end_kib, fds.1)];
        footprint::judge(&samples, Duration::from_secs(60), RSS_ALLOWANCE_KIB)
            .expect("two samples make a verdict")
    }

    /// The figures of a good run, for each test to spoil one way.
    struct Good {
        died: Vec<String>,
        transfers: [Result<BulkReport, String>; 2],
        handshakes: [(u64, u64); 2],
        rekeys: Vec<RekeyStalls>,
        longest: [Option<Stall>; 2],
        footprints: [Result<footprint::Verdict, String>; 2],
    }

    impl Good {
        fn new() -> Good {
            Good {
                died: Vec::new(),
                transfers: [Ok(whole()), Ok(whole())],
                handshakes: [(1, 6), (1, 6)],
                rekeys: [120, 240, 360, 480, 600].map(|t| rekey(t, 3)).to_vec(),
                // A long stall away from any rekey is reported, not judged.
                longest: [Some(stall(300, 450)), None],
                footprints: [
                    Ok(footprint(40_000, 40_500, (20, 20))),
                    Ok(footprint(40_000, 40_000, (20, 19))),
                ],
            }
        }

        fn failed(&self) -> Vec<String> {
            criteria(&Figures {
                died: &self.died,
                transfers: &self.transfers,
                handshakes: self.handshakes,
                rekeys: &self.rekeys,
                t0_ns: 0,
                longest: self.longest,
                lost: [0, 0],
                footprints: self.footprints.clone(),
            })
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| c.check)
            .collect()
        }
    }

    #[test]
    fn a_good_run_passes_every_criterion() {
        assert_eq!(Good::new().failed(), Vec::<String>::new());
    }

    #[test]
    fn a_transfer_that_differs_or_broke_off_fails_its_way_only() {
        let mut g = Good::new();
        g.transfers[0] = Ok(BulkReport {
            received_sha256: [8; 32],
            ..whole()
        });
        g.transfers[1] = Err("connection reset".into());
        assert_eq!(
            g.failed(),
            ["soak: bulk tcp a->b intact", "soak: bulk tcp b->a intact"]
        );
    }

    #[test]
    fn fewer_than_four_rekeys_fail() {
        let mut g = Good::new();
        g.rekeys.truncate(3);
        assert_eq!(g.failed(), ["soak: at least 4 rekeys"]);
        // Four seen, but one gateway's count rose by three only.
        let mut g = Good::new();
        g.rekeys.truncate(4);
        g.handshakes[1] = (1, 4);
        assert_eq!(g.failed(), ["soak: at least 4 rekeys"]);
    }

    #[test]
    fn a_stall_over_100_ms_at_a_rekey_fails_and_100_ms_is_within() {
        let mut g = Good::new();
        g.rekeys[2].stalls[1] = Some(stall(360, 101));
        assert_eq!(
            g.failed(),
            ["soak: no stall over 100.0 ms within 2 s of a rekey"]
        );
        let mut g = Good::new();
        g.rekeys[2].stalls[1] = Some(stall(360, 100));
        assert_eq!(g.failed(), Vec::<String>::new());
    }

    #[test]
    fn memory_grown_past_the_allowance_or_more_descriptors_fail_that_gateway() {
        let mut g = Good::new();
        g.footprints[1] = Ok(footprint(40_000, 41_025, (20, 20)));
        assert_eq!(
            g.failed(),
            ["soak: gw-b resident memory at the end within 1 MiB of its first-minute sample"]
        );
        let mut g = Good::new();
        g.footprints[0] = Ok(footprint(40_000, 40_000, (20, 21)));
        assert_eq!(
            g.failed(),
            ["soak: gw-a open descriptors no more at the end than after a minute"]
        );
    }

    #[test]
    fn a_daemon_that_died_or_could_not_be_sampled_fails() {
        let mut g = Good::new();
        g.died.push("gw-a's ringtun exited at 300 s".into());
        g.footprints[0] = Err("no samples".into());
        assert_eq!(
            g.failed(),
            [
                "soak: both daemons ran throughout",
                "soak: gw-a resident memory at the end within 1 MiB of its first-minute sample",
                "soak: gw-a open descriptors no more at the end than after a minute",
            ]
        );
    }

    #[test]
    fn stalls_read_with_their_time() {
        assert_eq!(stall_text(S, Some(stall(3, 12))), "12.0 ms at 2.0 s");
        assert_eq!(stall_text(0, None), "< 1.0 ms");
    }
}
