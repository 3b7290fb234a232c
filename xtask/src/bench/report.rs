//! The bench report: `report.json` (every raw figure, the machine, the
//! versions, the load average), `report.md` (tables: medians with min–max,
//! ringtun's ratios, latency added over raw veth, the bar against userspace
//! WireGuard and kernel VXLAN) and the SVG pictures beside them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::plot::{self, Curve, Group};
use super::stats::{self, BarCheck, METRICS, Ratio, Summary};
use super::systems::System;
use super::workload::{Plan, Sample, Workload};

/// What the machine is.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Memory, MiB.
    pub memory_mib: u64,
}

impl Machine {
    /// Reads /proc.
    pub fn probe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .unwrap_or("")
                .trim()
                .to_string(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_mib: meminfo
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                / 1024,
        }
    }
}

/// What became of one system.
#[derive(Clone, Debug, Serialize)]
pub struct SystemInfo {
    /// Its name.
    pub name: String,
    /// `measured` or `skipped`.
    pub status: String,
    /// How it was set up, or why it was skipped.
    pub detail: String,
    /// Its tunnel processes.
    pub tunnel_pids: Vec<u32>,
    /// `ringtun show --json` of both gateways at the end (ringtun only).
    pub ringtun_status: Vec<serde_json::Value>,
}

/// Load averages seen during the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadSeen {
    /// At the start.
    pub start: [f64; 3],
    /// At the end.
    pub end: [f64; 3],
    /// Smallest one-minute average before a cell.
    pub min_1m: f64,
    /// Largest one-minute average before a cell.
    pub max_1m: f64,
}

/// Everything report.json holds.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When it was written, Unix seconds.
    pub generated_unix: u64,
    /// `--quick`.
    pub quick: bool,
    /// Repeats per cell.
    pub repeats: u32,
    /// Durations.
    pub plan: Plan,
    /// The machine.
    pub machine: Machine,
    /// Program versions.
    pub versions: BTreeMap<String, String>,
    /// Load average.
    pub load_average: LoadSeen,
    /// The systems.
    pub systems: Vec<SystemInfo>,
    /// Every measurement, in the order taken.
    pub samples: Vec<Sample>,
    /// Medians and ranges: metric → system → figure.
    pub summary: Summary,
    /// ringtun against the references.
    pub ratios: Vec<Ratio>,
    /// Latency added over raw veth, µs: system → metric → µs.
    pub latency_added_us: BTreeMap<String, BTreeMap<String, f64>>,
    /// The bar against userspace WireGuard and kernel VXLAN: each check met or not.
    pub bar: Vec<BarCheck>,
    /// Failed cells and skipped systems, in words.
    pub problems: Vec<String>,
    /// Files written beside the report.
    pub files: Vec<String>,
    /// The earlier run compared against (`--baseline`).
    pub baseline: Option<super::baseline::Baseline>,
}

impl Report {
    /// Derives the summary, ratios, added latency and bar from the samples.
    pub fn derive(&mut self) {
        self.summary = stats::summarize(&self.samples);
        self.ratios = stats::ratios(&self.summary);
        self.bar = stats::bar(&self.summary);
        self.latency_added_us.clear();
        for sys in System::ALL {
            for m in METRICS
                .iter()
                .filter(|m| matches!(m.workload, Workload::LatIdle | Workload::LatLoad))
                .filter(|m| m.unit == "µs")
            {
                if let Some(a) = stats::added_over_raw(&self.summary, m.key, sys) {
                    self.latency_added_us
                        .entry(sys.name().to_string())
                        .or_default()
                        .insert(m.key.to_string(), a);
                }
            }
        }
        let loads: Vec<f64> = self.samples.iter().map(|s| s.loadavg_before[0]).collect();
        self.load_average.min_1m = loads.iter().copied().fold(f64::INFINITY, f64::min);
        self.load_average.max_1m = loads.iter().copied().fold(0.0, f64::max);
        if !self.load_average.min_1m.is_finite() {
            self.load_average.min_1m = 0.0;
        }
    }

    /// Writes report.json, report.md and the SVGs into `dir`.
    pub fn write(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Files already listed (a profile) stay listed after the plots.
        let mut files = self.plots(dir)?;
        if let Some(b) = &self.baseline {
            files.extend(super::baseline::plots(b, &self.summary, dir)?);
        }
        files.append(&mut self.files);
        self.files = files;
        let json = serde_json::to_string_pretty(self).context("serialising the report")?;
        std::fs::write(dir.join("report.json"), json)
            .with_context(|| format!("writing {}", dir.join("report.json").display()))?;
        std::fs::write(dir.join("report.md"), self.markdown())
            .with_context(|| format!("writing {}", dir.join("report.md").display()))?;
        Ok(())
    }

    fn measured(&self) -> Vec<System> {
        System::ALL
            .into_iter()
            .filter(|s| {
                self.systems
                    .iter()
                    .any(|i| i.name == s.name() && i.status == "measured")
            })
            .collect()
    }

    fn stat(&self, key: &str, sys: System) -> Option<stats::Stat> {
        self.summary.get(key)?.get(sys.name()).copied()
    }

    fn plots(&self, dir: &Path) -> Result<Vec<String>> {
        let mut files = Vec::new();
        let systems = self.measured();
        let groups = |keys: &[&str]| -> Vec<Group> {
            systems
                .iter()
                .map(|s| Group {
                    label: s.name().to_string(),
                    bars: keys.iter().map(|k| self.stat(k, *s)).collect(),
                })
                .collect()
        };
        let mut chart = |name: &str, title: &str, unit: &str, series: &[&str], keys: &[&str]| {
            let path = dir.join(name);
            plot::bars(&path, title, unit, series, &groups(keys))?;
            files.push(name.to_string());
            anyhow::Ok(())
        };
        chart(
            "throughput.svg",
            "TCP throughput, gateway A to B (median, min–max)",
            "Gbit/s",
            &["1 stream", "4 streams"],
            &["tcp1_gbps", "tcp4_gbps"],
        )?;
        chart(
            "udp64.svg",
            "64-byte UDP datagrams delivered (median, min–max)",
            "thousand packets/s",
            &["delivered"],
            &["udp64_kpps"],
        )?;
        chart(
            "cpu.svg",
            "CPU seconds per GB delivered, TCP 1 stream (median, min–max)",
            "s/GB",
            &["whole machine", "tunnel processes"],
            &["tcp1_cpu_s_per_gb", "tcp1_tunnel_cpu_s_per_gb"],
        )?;
        chart(
            "latency.svg",
            "Round trip p50 and p99, idle and loaded (median, min–max)",
            "µs",
            &["idle p50", "idle p99", "loaded p50", "loaded p99"],
            &[
                "lat_idle_p50_us",
                "lat_idle_p99_us",
                "lat_load_p50_us",
                "lat_load_p99_us",
            ],
        )?;
        // One CDF per system: every repeat, idle and loaded.
        let curves_of = |sys: System, w: Workload, color: usize, tag: &str| -> Vec<Curve> {
            self.samples
                .iter()
                .filter(|s| s.system == sys.name() && s.workload == w.name())
                .filter_map(|s| {
                    let r = s.latency.as_ref().filter(|r| !r.cdf.is_empty())?;
                    Some(Curve {
                        label: format!("{tag}, repeat {}", s.repeat + 1),
                        points: r
                            .cdf
                            .iter()
                            .map(|p| (p.ns as f64 / 1000.0, p.quantile))
                            .collect(),
                        color,
                    })
                })
                .collect()
        };
        for sys in &systems {
            let mut curves = curves_of(*sys, Workload::LatIdle, 0, "idle");
            curves.extend(curves_of(
                *sys,
                Workload::LatLoad,
                1,
                "beside one TCP stream",
            ));
            if curves.is_empty() {
                continue;
            }
            let name = format!("latency-cdf-{}.svg", sys.name());
            plot::cdf(
                &dir.join(&name),
                &format!("{}: probe round trips (CDF)", sys.name()),
                &curves,
            )?;
            files.push(name);
        }
        // All systems idle on one chart (the first repeat of each).
        let all: Vec<Curve> = systems
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let mut c = curves_of(*s, Workload::LatIdle, i, s.name());
                (!c.is_empty()).then(|| {
                    let mut first = c.remove(0);
                    first.label = s.name().to_string();
                    first
                })
            })
            .collect();
        if !all.is_empty() {
            plot::cdf(
                &dir.join("latency-cdf-idle.svg"),
                "Idle probe round trips, every system (first repeat)",
                &all,
            )?;
            files.push("latency-cdf-idle.svg".into());
        }
        Ok(files)
    }

    /// The summary tables (throughput, CPU, latency, ratios), as printed
    /// at the end of a run.
    pub fn summary_markdown(&self) -> String {
        let mut md = String::new();
        let systems = self.measured();
        let cell = |key: &str, sys: System| match self.stat(key, sys) {
            Some(s) => fmt_stat(&s),
            None => "—".to_string(),
        };
        let _ = writeln!(
            md,
            "| system | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | UDP 64 B kpps | CPU s/GB machine (TCP 1) | CPU s/GB tunnel procs (TCP 1) | idle RTT p50 µs | idle RTT p99 µs | loaded RTT p50 µs | loaded RTT p99 µs |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
        for sys in &systems {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                sys.name(),
                cell("tcp1_gbps", *sys),
                cell("tcp4_gbps", *sys),
                cell("udp64_kpps", *sys),
                cell("tcp1_cpu_s_per_gb", *sys),
                cell("tcp1_tunnel_cpu_s_per_gb", *sys),
                cell("lat_idle_p50_us", *sys),
                cell("lat_idle_p99_us", *sys),
                cell("lat_load_p50_us", *sys),
                cell("lat_load_p99_us", *sys),
            );
        }
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "ringtun against the references of this run (ratio of medians; latency also as µs added over raw veth):\n"
        );
        let headline = self
            .ratios
            .iter()
            .filter(|r| stats::HEADLINE.contains(&r.metric.as_str()));
        ratio_table(&mut md, headline, |r| {
            self.latency_added_us
                .get(&r.system)
                .and_then(|a| a.get(&r.metric))
                .map(|a| format!(" (+{a:.1} µs)"))
                .unwrap_or_default()
        });
        md
    }

    /// The whole of report.md.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# ringtun bench report\n");
        let _ = writeln!(
            md,
            "{} run: {} repeat(s) of every cell, {} s per cell, systems and workloads interleaved round-robin \
             (every repeat runs each workload on every system in turn, starting from a different system each repeat). \
             Figures are medians with min–max over the repeats. Traffic runs from gateway A to gateway B of a lab of \
             two namespaces joined by a veth WAN (MTU 1500); every system has its own lab with the same topology.\n",
            if self.quick { "Quick (smoke)" } else { "Full" },
            self.repeats,
            self.plan.seconds
        );
        let _ = writeln!(
            md,
            "Machine: {} × {}, {} MiB, kernel {}. Load average at start {:.2} {:.2} {:.2}, at end {:.2} {:.2} {:.2}; \
             one-minute average before a cell between {:.2} and {:.2}. The machine is shared (both tunnel ends, the \
             traffic generators and anything else running): absolute figures drift, ratios within this run are what count.\n",
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.memory_mib,
            self.machine.kernel,
            self.load_average.start[0],
            self.load_average.start[1],
            self.load_average.start[2],
            self.load_average.end[0],
            self.load_average.end[1],
            self.load_average.end[2],
            self.load_average.min_1m,
            self.load_average.max_1m,
        );
        let _ = writeln!(md, "## Summary\n");
        md.push_str(&self.summary_markdown());
        let _ = writeln!(
            md,
            "\n## The bar: ringtun against userspace WireGuard and kernel VXLAN\n"
        );
        let _ = writeln!(md, "| requirement | measured | met |\n|---|---|---|");
        for b in &self.bar {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                b.requirement,
                b.measured,
                match b.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "n/a",
                }
            );
        }
        if let Some(b) = &self.baseline {
            let _ = writeln!(md, "\n## Before and after\n");
            md.push_str(&super::baseline::markdown(b, &self.summary));
        }
        let _ = writeln!(md, "\n## Every figure (median, min–max)\n");
        let systems = self.measured();
        let _ = write!(md, "| metric |");
        for s in &systems {
            let _ = write!(md, " {} |", s.name());
        }
        let _ = writeln!(md);
        let _ = writeln!(md, "|---|{}", "---|".repeat(systems.len()));
        for m in METRICS {
            let _ = write!(md, "| {} ({}) |", m.label, m.unit);
            for s in &systems {
                let c = self
                    .stat(m.key, *s)
                    .map(|st| fmt_stat(&st))
                    .unwrap_or_else(|| "—".into());
                let _ = write!(md, " {c} |");
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(
            md,
            "\n## Latency added over raw veth (µs, difference of medians)\n"
        );
        let _ = writeln!(
            md,
            "| system | idle p50 | idle p90 | idle p99 | idle p99.9 | loaded p50 | loaded p90 | loaded p99 | loaded p99.9 |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        for s in &systems {
            let a = self.latency_added_us.get(s.name());
            let g = |k: &str| {
                a.and_then(|a| a.get(k))
                    .map(|v| format!("{v:+.1}"))
                    .unwrap_or_else(|| "—".into())
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.name(),
                g("lat_idle_p50_us"),
                g("lat_idle_p90_us"),
                g("lat_idle_p99_us"),
                g("lat_idle_p999_us"),
                g("lat_load_p50_us"),
                g("lat_load_p90_us"),
                g("lat_load_p99_us"),
                g("lat_load_p999_us"),
            );
        }
        let _ = writeln!(md, "\n## All ringtun ratios\n");
        ratio_table(&mut md, &self.ratios, |_| String::new());
        let _ = writeln!(md, "\n## Systems\n");
        let _ = writeln!(md, "| system | status | set up as |\n|---|---|---|");
        for s in &self.systems {
            let _ = writeln!(md, "| {} | {} | {} |", s.name, s.status, s.detail);
        }
        let _ = writeln!(md, "\n## Method\n");
        let _ = writeln!(
            md,
            "- tcp1 / tcp4: `iperf3 -c B -t {s} -J [-P 4]` from gateway A; the receiver's bytes and seconds.\n\
             - udp64: `iperf3 -u -l 64 -b 0 -t {s}`: datagrams delivered (expected − lost at the receiver) per second.\n\
             - lat-idle: `rt-pingpong client` (this repository's probe: one 64-byte UDP probe in flight, one every {iv} µs, \
             every round trip recorded in an hdrhistogram, 50 warm-up probes dropped) against `rt-pingpong server` in gateway B.\n\
             - lat-load: the same probe, started 1.5 s into a one-stream iperf3 bulk transfer that outlasts it.\n\
             - CPU: whole-machine busy time from /proc/stat (user + nice + system + irq + softirq) over the iperf3 run, \
             per GB (10^9 bytes) delivered; the tunnel processes' own utime + stime from /proc/PID/stat (both gateways).\n\
             - Ratios divide ringtun's median by the reference's median from this same run; the best userspace WireGuard \
             is picked per metric (higher throughput, lower latency and CPU).",
            s = self.plan.seconds,
            iv = self.plan.probe_interval_us
        );
        let _ = writeln!(md, "\n## Versions\n");
        for (k, v) in &self.versions {
            let _ = writeln!(md, "- {k}: {v}");
        }
        let retried: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.retried_after.is_some())
            .collect();
        if !retried.is_empty() {
            let _ = writeln!(md, "\n## Cells measured on a second attempt\n");
            for s in retried {
                let _ = writeln!(
                    md,
                    "- {} {} repeat {}: first attempt: {}",
                    s.system,
                    s.workload,
                    s.repeat + 1,
                    s.retried_after.as_deref().unwrap_or("").replace('\n', " ")
                );
            }
        }
        self.placements(&mut md);
        self.ringtun_counters(&mut md);
        if !self.problems.is_empty() {
            let _ = writeln!(md, "\n## Problems\n");
            for p in &self.problems {
                let _ = writeln!(md, "- {}", p.replace('\n', " "));
            }
        }
        let _ = writeln!(md, "\n## Pictures\n");
        for f in &self.files {
            let _ = writeln!(md, "![{f}]({f})\n");
        }
        md
    }
}

impl Report {
    /// Where the two ends of each userspace tunnel ran in each TCP cell,
    /// beside its figures, and the medians of the labs by arrangement.
    fn placements(&self, md: &mut String) {
        // Only the TCP cells of a userspace tunnel carry a placement.
        let placed: Vec<_> = self
            .samples
            .iter()
            .filter_map(|s| Some((s, s.placement.as_ref()?, s.tcp.as_ref()?)))
            .filter(|(_, p, _)| p.same_cpu.is_some())
            .collect();
        if placed.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "\n## Where the two ends ran\n\n\
             Both gateways run on this machine. The same-CPU share is the chance that an instant of gateway A's \
             tunnel threads and one of gateway B's ran on one CPU (1: always together, 0: always apart; \
             \"together\" from {together}, \"apart\" up to {apart:.1}, \"mixed\" between: the ends moved, or each \
             spread over both CPUs, as several busy workers per gateway do). Together, B reads each datagram from the \
             cache A wrote it from; two machines never share a cache.\n",
            together = super::placement::TOGETHER,
            apart = super::placement::APART,
        );
        let _ = writeln!(
            md,
            "| system | workload | repeat | Gbit/s | tunnel CPU s/GB | same-CPU share | ends |\n|---|---|---|---|---|---|---|"
        );
        let mut by: BTreeMap<(String, String, &str), Vec<f64>> = BTreeMap::new();
        for (s, p, t) in placed {
            let label = p.label().unwrap_or("—");
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.2} | {label} |",
                s.system,
                s.workload,
                s.repeat + 1,
                fmt_num(t.gbps),
                s.tunnel_cpu_s_per_gb
                    .map(fmt_num)
                    .unwrap_or_else(|| "—".into()),
                p.same_cpu.unwrap_or(f64::NAN),
            );
            by.entry((s.system.clone(), s.workload.clone(), label))
                .or_default()
                .push(t.gbps);
        }
        let _ = writeln!(
            md,
            "\n| system | workload | ends | labs | Gbit/s median (min–max) |\n|---|---|---|---|---|"
        );
        for ((system, workload, label), v) in &by {
            if let Some(st) = stats::stat(v) {
                let _ = writeln!(
                    md,
                    "| {system} | {workload} | {label} | {} | {} |",
                    v.len(),
                    fmt_stat(&st)
                );
            }
        }
    }

    /// ringtun's non-zero drop counters at the end of the run, per gateway.
    fn ringtun_counters(&self, md: &mut String) {
        let mut lines = Vec::new();
        for s in self.systems.iter().filter(|s| !s.ringtun_status.is_empty()) {
            for (side, st) in ["B", "A"].iter().zip(&s.ringtun_status) {
                let drops: Vec<String> = st
                    .get("drops")
                    .and_then(|d| d.as_array())
                    .map(|d| {
                        d.iter()
                            .filter_map(|p| {
                                let name = p.get(0)?.as_str()?;
                                let n = p.get(1)?.as_u64()?;
                                (n > 0).then(|| format!("{name} {n}"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                lines.push(format!(
                    "- {} gateway {side}: {}",
                    s.name,
                    if drops.is_empty() {
                        "no drops".to_string()
                    } else {
                        format!("drops: {}", drops.join(", "))
                    }
                ));
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(md, "\n## ringtun's drop counters at the end of the run\n");
            for l in lines {
                let _ = writeln!(md, "{l}");
            }
        }
    }
}

/// A table of ringtun's figures over the references, a row a [`Ratio`];
/// `added` is written after the figure (the µs it adds over raw veth).
fn ratio_table<'a>(
    md: &mut String,
    ratios: impl IntoIterator<Item = &'a Ratio>,
    added: impl Fn(&Ratio) -> String,
) {
    let _ = writeln!(
        md,
        "| ringtun | metric | ringtun | ÷ raw veth | ÷ kernel VXLAN | ÷ best userspace WG |\n|---|---|---|---|---|---|"
    );
    for r in ratios {
        let Some(m) = stats::metric(&r.metric) else {
            continue;
        };
        let _ = writeln!(
            md,
            "| {} | {} ({}) | {}{} | {} | {} | {} |",
            r.system,
            m.label,
            m.unit,
            fmt_num(r.value),
            added(r),
            fmt_ratio(r.vs_raw_veth),
            fmt_ratio(r.vs_kernel_vxlan),
            match (&r.best_userspace, r.vs_best_userspace) {
                (Some(b), Some(x)) => format!("{} ({b})", fmt_ratio(Some(x))),
                _ => "—".to_string(),
            }
        );
    }
}

/// A number with precision to suit its size.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_stat(s: &stats::Stat) -> String {
    if s.n > 1 {
        format!(
            "{} ({}–{})",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        )
    } else {
        fmt_num(s.median)
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("×{r:.2}"),
        None => "—".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_three_significant_digits_or_so() {
        assert_eq!(fmt_num(1234.5), "1234");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(1.2345), "1.23");
        assert_eq!(fmt_num(0.12345), "0.123");
        let s = stats::Stat {
            median: 2.0,
            min: 1.5,
            max: 2.5,
            n: 3,
        };
        assert_eq!(fmt_stat(&s), "2.00 (1.50–2.50)");
        assert_eq!(fmt_ratio(None), "—");
        assert_eq!(fmt_ratio(Some(0.5)), "×0.50");
    }
}
