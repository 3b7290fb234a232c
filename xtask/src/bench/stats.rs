//! From samples to figures: the metrics, their medians with min–max over
//! the repeats, ringtun's ratios to the references measured in the same
//! run, and the latency added over raw veth.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::systems::System;
use super::workload::{Sample, Workload};

/// Which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// More is better (throughput).
    Higher,
    /// Less is better (latency, CPU).
    Lower,
}

/// One figure a sample yields.
pub struct Metric {
    /// Key in report.json.
    pub key: &'static str,
    /// Column label.
    pub label: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// The workload that produces it.
    pub workload: Workload,
    /// Reads it from a sample.
    pub extract: fn(&Sample) -> Option<f64>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn lat(s: &Sample) -> Option<&bench::probe::ProbeReport> {
    s.latency.as_ref().filter(|r| r.received > 0)
}

/// Every metric, in report order.
pub const METRICS: &[Metric] = &[
    Metric {
        key: "tcp1_gbps",
        label: "TCP 1 stream",
        unit: "Gbit/s",
        better: Better::Higher,
        workload: Workload::Tcp1,
        extract: |s| s.tcp.as_ref().map(|t| t.gbps),
    },
    Metric {
        key: "tcp4_gbps",
        label: "TCP 4 streams",
        unit: "Gbit/s",
        better: Better::Higher,
        workload: Workload::Tcp4,
        extract: |s| s.tcp.as_ref().map(|t| t.gbps),
    },
    Metric {
        key: "udp64_kpps",
        label: "UDP 64 B delivered",
        unit: "kpps",
        better: Better::Higher,
        workload: Workload::Udp64,
        extract: |s| s.udp.as_ref().map(|u| u.delivered_pps / 1e3),
    },
    Metric {
        key: "tcp1_cpu_s_per_gb",
        label: "CPU per GB, TCP 1 stream (machine)",
        unit: "s/GB",
        better: Better::Lower,
        workload: Workload::Tcp1,
        extract: |s| s.cpu_s_per_gb,
    },
    Metric {
        key: "tcp1_tunnel_cpu_s_per_gb",
        label: "CPU per GB, TCP 1 stream (tunnel processes)",
        unit: "s/GB",
        better: Better::Lower,
        workload: Workload::Tcp1,
        extract: |s| s.tunnel_cpu_s_per_gb,
    },
    Metric {
        key: "tcp1_tunnel_share_pct",
        label: "tunnel processes' share of machine CPU, TCP 1 stream",
        unit: "%",
        better: Better::Lower,
        workload: Workload::Tcp1,
        extract: |s| {
            s.cpu
                .as_ref()
                .and_then(|c| c.tunnel_share())
                .map(|x| x * 100.0)
        },
    },
    Metric {
        key: "tcp1_machine_busy_cores",
        label: "machine busy, TCP 1 stream",
        unit: "cores",
        better: Better::Lower,
        workload: Workload::Tcp1,
        extract: |s| {
            s.cpu
                .as_ref()
                .filter(|c| c.wall_s > 0.0)
                .map(|c| c.busy_s / c.wall_s)
        },
    },
    Metric {
        key: "tcp4_cpu_s_per_gb",
        label: "CPU per GB, TCP 4 streams (machine)",
        unit: "s/GB",
        better: Better::Lower,
        workload: Workload::Tcp4,
        extract: |s| s.cpu_s_per_gb,
    },
    Metric {
        key: "udp64_cpu_us_per_packet",
        label: "CPU per delivered 64 B datagram (machine)",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::Udp64,
        extract: |s| {
            let (c, u) = (s.cpu.as_ref()?, s.udp.as_ref()?);
            (u.delivered_packets > 0).then(|| c.busy_s * 1e6 / u.delivered_packets as f64)
        },
    },
    Metric {
        key: "lat_idle_p50_us",
        label: "idle RTT p50",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatIdle,
        extract: |s| lat(s).map(|r| us(r.p50_ns)),
    },
    Metric {
        key: "lat_idle_p90_us",
        label: "idle RTT p90",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatIdle,
        extract: |s| lat(s).map(|r| us(r.p90_ns)),
    },
    Metric {
        key: "lat_idle_p99_us",
        label: "idle RTT p99",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatIdle,
        extract: |s| lat(s).map(|r| us(r.p99_ns)),
    },
    Metric {
        key: "lat_idle_p999_us",
        label: "idle RTT p99.9",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatIdle,
        extract: |s| lat(s).map(|r| us(r.p999_ns)),
    },
    Metric {
        key: "lat_idle_max_us",
        label: "idle RTT max",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatIdle,
        extract: |s| lat(s).map(|r| us(r.max_ns)),
    },
    Metric {
        key: "lat_load_p50_us",
        label: "loaded RTT p50",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatLoad,
        extract: |s| lat(s).map(|r| us(r.p50_ns)),
    },
    Metric {
        key: "lat_load_p90_us",
        label: "loaded RTT p90",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatLoad,
        extract: |s| lat(s).map(|r| us(r.p90_ns)),
    },
    Metric {
        key: "lat_load_p99_us",
        label: "loaded RTT p99",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatLoad,
        extract: |s| lat(s).map(|r| us(r.p99_ns)),
    },
    Metric {
        key: "lat_load_p999_us",
        label: "loaded RTT p99.9",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatLoad,
        extract: |s| lat(s).map(|r| us(r.p999_ns)),
    },
    Metric {
        key: "lat_load_max_us",
        label: "loaded RTT max",
        unit: "µs",
        better: Better::Lower,
        workload: Workload::LatLoad,
        extract: |s| lat(s).map(|r| us(r.max_ns)),
    },
    Metric {
        key: "lat_load_bulk_gbps",
        label: "bulk TCP beside the loaded probe",
        unit: "Gbit/s",
        better: Better::Higher,
        workload: Workload::LatLoad,
        extract: |s| s.tcp.as_ref().map(|t| t.gbps),
    },
    Metric {
        key: "lat_idle_loss_pct",
        label: "idle probe loss",
        unit: "%",
        better: Better::Lower,
        workload: Workload::LatIdle,
        extract: |s| {
            let r = s.latency.as_ref()?;
            (r.sent > 0).then(|| r.lost as f64 * 100.0 / r.sent as f64)
        },
    },
    Metric {
        key: "lat_load_loss_pct",
        label: "loaded probe loss",
        unit: "%",
        better: Better::Lower,
        workload: Workload::LatLoad,
        extract: |s| {
            let r = s.latency.as_ref()?;
            (r.sent > 0).then(|| r.lost as f64 * 100.0 / r.sent as f64)
        },
    },
];

/// The metrics a reader looks at first: those of the printed ratio table
/// and of the comparison with a baseline.
pub const HEADLINE: &[&str] = &[
    "tcp1_gbps",
    "tcp4_gbps",
    "udp64_kpps",
    "tcp1_cpu_s_per_gb",
    "lat_idle_p50_us",
    "lat_idle_p99_us",
    "lat_load_p50_us",
    "lat_load_p99_us",
];

/// The metric with this key.
pub fn metric(key: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.key == key)
}

/// Median and range of one figure over the repeats.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many repeats gave a figure.
    pub n: usize,
}

/// Median, min and max of `values`; `None` if empty.
pub fn stat(values: &[f64]) -> Option<Stat> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// metric key → system name → figure.
pub type Summary = BTreeMap<String, BTreeMap<String, Stat>>;

/// Every metric's figure for every system that gave one.
pub fn summarize(samples: &[Sample]) -> Summary {
    let mut out = Summary::new();
    for m in METRICS {
        for sys in System::ALL {
            let vals: Vec<f64> = samples
                .iter()
                .filter(|s| s.system == sys.name() && s.workload == m.workload.name())
                .filter(|s| s.error.is_none())
                .filter_map(|s| (m.extract)(s))
                .collect();
            if let Some(st) = stat(&vals) {
                out.entry(m.key.to_string())
                    .or_default()
                    .insert(sys.name().to_string(), st);
            }
        }
    }
    out
}

/// The median of `metric` for `system`.
pub fn median(sum: &Summary, metric: &str, system: System) -> Option<f64> {
    sum.get(metric)?.get(system.name()).map(|s| s.median)
}

/// The best userspace WireGuard for `metric` (by median) and its figure.
pub fn best_userspace(sum: &Summary, metric: &Metric) -> Option<(System, f64)> {
    System::ALL
        .into_iter()
        .filter(|s| s.is_userspace_wireguard())
        .filter_map(|s| median(sum, metric.key, s).map(|v| (s, v)))
        .reduce(|a, b| {
            let b_better = match metric.better {
                Better::Higher => b.1 > a.1,
                Better::Lower => b.1 < a.1,
            };
            if b_better { b } else { a }
        })
}

/// One ringtun figure against the references of the same run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// ringtun system.
    pub system: String,
    /// Metric key.
    pub metric: String,
    /// ringtun's median.
    pub value: f64,
    /// ÷ raw veth.
    pub vs_raw_veth: Option<f64>,
    /// ÷ kernel VXLAN.
    pub vs_kernel_vxlan: Option<f64>,
    /// ÷ the best userspace WireGuard.
    pub vs_best_userspace: Option<f64>,
    /// Which userspace WireGuard was best.
    pub best_userspace: Option<String>,
}

fn div(a: f64, b: Option<f64>) -> Option<f64> {
    b.filter(|b| *b != 0.0).map(|b| a / b)
}

/// Ratios of every ringtun figure.
pub fn ratios(sum: &Summary) -> Vec<Ratio> {
    let mut out = Vec::new();
    for sys in System::ALL.into_iter().filter(|s| s.is_ringtun()) {
        for m in METRICS {
            let Some(value) = median(sum, m.key, sys) else {
                continue;
            };
            let best = best_userspace(sum, m);
            out.push(Ratio {
                system: sys.name().to_string(),
                metric: m.key.to_string(),
                value,
                vs_raw_veth: div(value, median(sum, m.key, System::RawVeth)),
                vs_kernel_vxlan: div(value, median(sum, m.key, System::KernelVxlan)),
                vs_best_userspace: div(value, best.map(|b| b.1)),
                best_userspace: best.map(|b| b.0.name().to_string()),
            });
        }
    }
    out
}

/// Latency added over raw veth, µs (median minus raw veth's median).
pub fn added_over_raw(sum: &Summary, metric: &str, system: System) -> Option<f64> {
    Some(median(sum, metric, system)? - median(sum, metric, System::RawVeth)?)
}

/// One line of the bar against userspace WireGuard and kernel VXLAN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BarCheck {
    /// What is required.
    pub requirement: String,
    /// What was measured, in words and figures.
    pub measured: String,
    /// `Some(true)`: met; `None`: a figure is missing.
    pub met: Option<bool>,
}

/// The bar against userspace WireGuard and kernel VXLAN, checked against this
/// run's medians: ringtun's throughput, CPU per GB and added latency as ratios
/// to the best userspace WireGuard and to the kernel's VXLAN of the same run.
pub fn bar(sum: &Summary) -> Vec<BarCheck> {
    let mut out = Vec::new();
    let wg = System::RingtunWireguard;
    let vx = System::RingtunVxlan;
    // (requirement, ringtun mode, metric, reference (`None`: the best
    // userspace WireGuard), at least (else at most), factor).
    let ratio_checks = [
        (
            "wireguard mode, TCP 1 stream ≥ 5 × best userspace WireGuard",
            wg,
            "tcp1_gbps",
            None,
            true,
            5.0,
        ),
        (
            "wireguard mode, TCP 1 stream ≥ 0.35 × kernel VXLAN",
            wg,
            "tcp1_gbps",
            Some(System::KernelVxlan),
            true,
            0.35,
        ),
        (
            "vxlan mode, TCP 1 stream ≥ 0.70 × kernel VXLAN",
            vx,
            "tcp1_gbps",
            Some(System::KernelVxlan),
            true,
            0.70,
        ),
        (
            "wireguard mode, machine CPU s/GB (TCP 1 stream) ≤ 1/5 of best userspace WireGuard",
            wg,
            "tcp1_cpu_s_per_gb",
            None,
            false,
            0.2,
        ),
        (
            "wireguard mode, 64 B UDP delivered ≥ 1.5 × best userspace WireGuard",
            wg,
            "udp64_kpps",
            None,
            true,
            1.5,
        ),
    ];
    for (req, sys, key, reference, at_least, factor) in ratio_checks {
        let reference = match reference {
            Some(r) => median(sum, key, r).map(|v| (r, v)),
            None => metric(key).and_then(|m| best_userspace(sum, m)),
        };
        let (measured, met) = match (median(sum, key, sys), reference) {
            (Some(v), Some((by, r))) if r > 0.0 => {
                let ratio = v / r;
                (
                    format!("{v:.3} vs {} {r:.3}: ×{ratio:.2}", by.name()),
                    Some(if at_least {
                        ratio >= factor
                    } else {
                        ratio <= factor
                    }),
                )
            }
            _ => ("missing figure".to_string(), None),
        };
        out.push(BarCheck {
            requirement: req.to_string(),
            measured,
            met,
        });
    }
    for (q, key) in [("p50", "lat_idle_p50_us"), ("p99", "lat_idle_p99_us")] {
        // "Best userspace tunnel": the smaller added latency of the two.
        let best = System::ALL
            .into_iter()
            .filter(|s| s.is_userspace_wireguard())
            .filter_map(|s| added_over_raw(sum, key, s).map(|a| (s.name().to_string(), a)))
            .reduce(|a, b| if b.1 < a.1 { b } else { a });
        let mine = added_over_raw(sum, key, wg);
        let (measured, met) = match (mine, best) {
            (Some(m), Some((name, b))) => (
                format!("ringtun adds {m:.1} µs, {name} adds {b:.1} µs"),
                Some(m <= b / 2.0),
            ),
            _ => ("missing figure".to_string(), None),
        };
        out.push(BarCheck {
            requirement: format!(
                "wireguard mode, idle RTT {q} added over raw veth ≤ ½ of the best userspace tunnel's"
            ),
            measured,
            met,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::TcpResult;

    fn tcp(system: System, gbps: f64) -> Sample {
        Sample {
            system: system.name().into(),
            workload: "tcp1".into(),
            tcp: Some(TcpResult {
                gbps,
                ..TcpResult::default()
            }),
            ..Sample::default()
        }
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(stat(&[]), None);
        let s = stat(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = stat(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(stat(&[f64::NAN]), None);
    }

    #[test]
    fn ratios_use_the_best_userspace_peer_and_ignore_failed_samples() {
        let mut samples = vec![
            tcp(System::RawVeth, 20.0),
            tcp(System::KernelVxlan, 10.0),
            tcp(System::WireguardGo, 0.5),
            tcp(System::Boringtun, 0.8),
            tcp(System::RingtunWireguard, 4.0),
            tcp(System::RingtunWireguard, 6.0),
            tcp(System::RingtunWireguard, 5.0),
        ];
        let mut failed = tcp(System::RingtunWireguard, 1000.0);
        failed.error = Some("iperf3 died".into());
        samples.push(failed);
        let sum = summarize(&samples);
        let r = ratios(&sum);
        let wg = r
            .iter()
            .find(|r| r.system == "ringtun-wireguard" && r.metric == "tcp1_gbps")
            .unwrap();
        assert_eq!(wg.value, 5.0);
        assert_eq!(wg.vs_raw_veth, Some(0.25));
        assert_eq!(wg.vs_kernel_vxlan, Some(0.5));
        assert_eq!(wg.best_userspace.as_deref(), Some("boringtun"));
        assert_eq!(wg.vs_best_userspace, Some(5.0 / 0.8));
        let b = bar(&sum);
        assert_eq!(b[0].met, Some(true), "{:?}", b[0]);
        assert_eq!(b[1].met, Some(true), "{:?}", b[1]);
        assert_eq!(b[2].met, None, "no vxlan-mode figure: {:?}", b[2]);
    }

    #[test]
    fn for_latency_lower_is_better_when_picking_the_best() {
        let m = metric("lat_idle_p50_us").unwrap();
        let mut sum = Summary::new();
        let e = sum.entry(m.key.into()).or_default();
        for (s, v) in [(System::WireguardGo, 90.0), (System::Boringtun, 70.0)] {
            e.insert(
                s.name().into(),
                Stat {
                    median: v,
                    min: v,
                    max: v,
                    n: 1,
                },
            );
        }
        assert_eq!(best_userspace(&sum, m), Some((System::Boringtun, 70.0)));
    }
}
