//! Before and after: this run against an earlier `report.json`
//! (`--baseline PATH`), for showing what a change to the data plane did.
//! Absolute figures drift between runs on a shared machine, so beside
//! each median the comparison also gives the figure as a ratio to raw veth
//! of its own run, which drifts less.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::plot::{self, Group};
use super::report::fmt_num;
use super::stats::{self, Stat, Summary};
use super::systems::System;

/// An earlier run, as far as the comparison needs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    /// Where it was read from.
    pub path: PathBuf,
    /// The ringtun revision it measured.
    pub ringtun: String,
    /// When it was written, Unix seconds.
    pub generated_unix: u64,
    /// Its medians.
    pub summary: Summary,
}

impl Baseline {
    /// Reads the summary of an earlier report.json.
    pub fn load(path: &Path) -> Result<Baseline> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the baseline {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let summary: Summary =
            serde_json::from_value(v.get("summary").cloned().unwrap_or_default())
                .with_context(|| format!("{} has no bench summary", path.display()))?;
        Ok(Baseline {
            path: path.to_path_buf(),
            ringtun: v
                .pointer("/versions/ringtun")
                .and_then(|r| r.as_str())
                .unwrap_or("unknown")
                .to_string(),
            generated_unix: v
                .get("generated_unix")
                .and_then(|g| g.as_u64())
                .unwrap_or(0),
            summary,
        })
    }
}

fn get(sum: &Summary, metric: &str, sys: System) -> Option<Stat> {
    sum.get(metric)?.get(sys.name()).copied()
}

fn vs_raw(sum: &Summary, metric: &str, sys: System) -> Option<f64> {
    let raw = get(sum, metric, System::RawVeth)?.median;
    (raw != 0.0).then(|| get(sum, metric, sys).map(|s| s.median / raw))?
}

/// The before-and-after table, in Markdown.
pub fn markdown(base: &Baseline, now: &Summary) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Baseline: `{}` (ringtun {}). Medians of each run; \"÷ raw\" is the figure over raw veth of the same run.\n",
        base.path.display(),
        base.ringtun
    );
    let _ = writeln!(
        md,
        "| system | metric | before | after | change | before ÷ raw | after ÷ raw |\n|---|---|---|---|---|---|---|"
    );
    for sys in System::ALL {
        for key in stats::HEADLINE {
            let (Some(b), Some(a)) = (get(&base.summary, key, sys), get(now, key, sys)) else {
                continue;
            };
            let Some(m) = stats::metric(key) else {
                continue;
            };
            let change = if b.median != 0.0 {
                format!("{:+.0}%", (a.median / b.median - 1.0) * 100.0)
            } else {
                "—".into()
            };
            let r = |s: &Summary| {
                vs_raw(s, key, sys)
                    .map(|x| format!("×{x:.2}"))
                    .unwrap_or_else(|| "—".into())
            };
            let _ = writeln!(
                md,
                "| {} | {} ({}) | {} | {} | {change} | {} | {} |",
                sys.name(),
                m.label,
                m.unit,
                fmt_num(b.median),
                fmt_num(a.median),
                r(&base.summary),
                r(now)
            );
        }
    }
    md
}

/// `before-after-*.svg`: single-stream TCP and idle p50 round trip, every
/// system, before and after. Returns the files written.
pub fn plots(base: &Baseline, now: &Summary, dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for (key, name, title, unit) in [
        (
            "tcp1_gbps",
            "before-after-tcp1.svg",
            "TCP 1 stream, before and after",
            "Gbit/s",
        ),
        (
            "udp64_kpps",
            "before-after-udp64.svg",
            "64-byte UDP delivered, before and after",
            "thousand packets/s",
        ),
        (
            "lat_idle_p50_us",
            "before-after-lat-idle-p50.svg",
            "Idle round trip p50, before and after",
            "µs",
        ),
    ] {
        let groups: Vec<Group> = System::ALL
            .into_iter()
            .filter(|s| get(&base.summary, key, *s).is_some() || get(now, key, *s).is_some())
            .map(|s| Group {
                label: s.name().to_string(),
                bars: vec![get(&base.summary, key, s), get(now, key, s)],
            })
            .collect();
        if groups.is_empty() {
            continue;
        }
        plot::bars(&dir.join(name), title, unit, &["before", "after"], &groups)?;
        files.push(name.to_string());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(pairs: &[(&str, System, f64)]) -> Summary {
        let mut s = Summary::new();
        for (k, sys, v) in pairs {
            s.entry(k.to_string()).or_default().insert(
                sys.name().to_string(),
                Stat {
                    median: *v,
                    min: *v,
                    max: *v,
                    n: 1,
                },
            );
        }
        s
    }

    #[test]
    fn a_baseline_is_read_from_a_report_and_compared_with_ratios_to_raw() {
        let dir = std::env::temp_dir().join(format!("bench-baseline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let before = summary(&[
            ("tcp1_gbps", System::RawVeth, 20.0),
            ("tcp1_gbps", System::RingtunWireguard, 1.0),
        ]);
        let path = dir.join("report.json");
        let json = serde_json::json!({
            "versions": { "ringtun": "abc1234" },
            "generated_unix": 7,
            "summary": before,
        });
        std::fs::write(&path, json.to_string()).unwrap();
        let base = Baseline::load(&path).unwrap();
        assert_eq!(base.ringtun, "abc1234");
        let after = summary(&[
            ("tcp1_gbps", System::RawVeth, 10.0),
            ("tcp1_gbps", System::RingtunWireguard, 2.0),
        ]);
        let md = markdown(&base, &after);
        assert!(
            md.contains("| ringtun-wireguard | TCP 1 stream (Gbit/s) | 1.00 | 2.00 | +100% | ×0.05 | ×0.20 |"),
            "{md}"
        );
        let files = plots(&base, &after, &dir).unwrap();
        assert_eq!(files, vec!["before-after-tcp1.svg"]);
        assert!(Baseline::load(&dir.join("missing.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
