//! A daemon's footprint over a long run, from /proc: its resident memory
//! (`VmRSS` in `/proc/PID/status`) and its open file descriptors (the
//! entries of `/proc/PID/fd`), sampled at intervals and judged against the
//! sample taken once it has warmed up.

use std::time::Duration;

use anyhow::{Context, Result};

/// One sample of one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Since the run started.
    pub at: Duration,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// `VmRSS` in KiB from the text of `/proc/PID/status` (`VmRSS:   1234 kB`).
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    // The kernel has always said kB (meaning KiB); anything else is not
    // the file we know.
    (fields.next()? == "kB").then_some(value)
}

/// How many of `names` (the entries of `/proc/PID/fd`) are descriptors:
/// decimal numbers.
pub fn count_fds<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> u64 {
    names
        .into_iter()
        .filter(|n| {
            let n = n.as_ref();
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
        .count() as u64
}

/// Samples process `pid` now; `at` is the time since the run started.
pub fn sample(pid: u32, at: Duration) -> Result<Sample> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let rss_kib = parse_vm_rss(&status).with_context(|| format!("{path} has no VmRSS line"))?;
    let dir = format!("/proc/{pid}/fd");
    let names = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {dir}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned());
    Ok(Sample {
        at,
        rss_kib,
        fds: count_fds(names),
    })
}

/// A process's samples judged: resident memory must end within
/// `allowance` of the baseline, and the descriptors no higher than they
/// were at it. What happens in between is reported, not judged: the
/// allocator may hold a transient peak, a leak stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The sample taken as the baseline: the first at or after the
    /// warm-up (the last one if the run was shorter).
    pub baseline: Sample,
    /// The highest resident memory from the baseline on, KiB.
    pub rss_max_kib: u64,
    /// The highest descriptor count from the baseline on.
    pub fds_max: u64,
    /// The last sample.
    pub last: Sample,
    /// Resident memory ended within the allowance.
    pub rss_ok: bool,
    /// The descriptors did not grow.
    pub fds_ok: bool,
}

/// Judges `samples` (in time order) with the baseline at `warm_up` and
/// `allowance_kib` of resident memory above it. `None` without samples.
pub fn judge(samples: &[Sample], warm_up: Duration, allowance_kib: u64) -> Option<Verdict> {
    let last = *samples.last()?;
    let from = samples
        .iter()
        .position(|s| s.at >= warm_up)
        .unwrap_or(samples.len() - 1);
    let baseline = samples[from];
    let after = &samples[from..];
    let rss_max_kib = after.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let fds_max = after.iter().map(|s| s.fds).max().unwrap_or(0);
    Some(Verdict {
        baseline,
        rss_max_kib,
        fds_max,
        last,
        rss_ok: last.rss_kib <= baseline.rss_kib.saturating_add(allowance_kib),
        fds_ok: last.fds <= baseline.fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tringtun\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  612340 kB\nVmSize:\t  612340 kB\nVmHWM:\t   41236 kB\n\
        VmRSS:\t   40960 kB\nRssAnon:\t   30000 kB\nThreads:\t5\n";

    #[test]
    fn vm_rss_is_read_in_kib_from_the_status_file() {
        assert_eq!(parse_vm_rss(STATUS), Some(40960));
        assert_eq!(parse_vm_rss("VmRSS:\t12 kB"), Some(12));
    }

    #[test]
    fn a_status_without_vm_rss_or_with_another_unit_gives_nothing() {
        // A kernel thread's status has no VmRSS at all.
        assert_eq!(parse_vm_rss("Name:\tkworker/0:1\nState:\tI (idle)\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\n"), None);
        assert_eq!(parse_vm_rss(""), None);
    }

    #[test]
    fn only_numbered_entries_count_as_descriptors() {
        assert_eq!(count_fds(["0", "1", "2", "17", "1024"]), 5);
        assert_eq!(count_fds([".", "..", "", "3a", "-1", "4"]), 1);
        assert_eq!(count_fds(Vec::<String>::new()), 0);
    }

    fn s(at_s: u64, rss_kib: u64, fds: u64) -> Sample {
        Sample {
            at: Duration::from_secs(at_s),
            rss_kib,
            fds,
        }
    }

    #[test]
    fn the_baseline_is_the_first_sample_after_the_warm_up() {
        // Memory grows while warming up: that is not held against it.
        let samples = [
            s(10, 1000, 20),
            s(60, 9000, 30),
            s(70, 9500, 31),
            s(80, 9100, 30),
        ];
        let v = judge(&samples, Duration::from_secs(60), 1024).unwrap();
        assert_eq!(v.baseline, s(60, 9000, 30));
        assert_eq!(v.rss_max_kib, 9500);
        assert_eq!(v.fds_max, 31);
        assert_eq!(v.last, s(80, 9100, 30));
        assert!(v.rss_ok && v.fds_ok, "{v:?}");
    }

    #[test]
    fn growth_beyond_the_allowance_at_the_end_or_more_descriptors_fail() {
        let samples = [s(60, 9000, 30), s(70, 9000, 30), s(80, 10_025, 31)];
        let v = judge(&samples, Duration::from_secs(60), 1024).unwrap();
        assert!(
            !v.rss_ok,
            "1025 KiB above the baseline at the end is over 1 MiB: {v:?}"
        );
        assert!(
            !v.fds_ok,
            "31 descriptors at the end, 30 at the baseline: {v:?}"
        );
        let samples = [s(60, 9000, 30), s(70, 10_024, 30)];
        let v = judge(&samples, Duration::from_secs(60), 1024).unwrap();
        assert!(v.rss_ok, "exactly 1 MiB above is within: {v:?}");
    }

    #[test]
    fn a_peak_in_between_is_reported_not_judged() {
        // A transient peak (a burst the allocator gave back) is no leak,
        // and neither are descriptors opened and closed again.
        let samples = [s(60, 9000, 30), s(70, 20_000, 34), s(80, 9500, 30)];
        let v = judge(&samples, Duration::from_secs(60), 1024).unwrap();
        assert_eq!((v.rss_max_kib, v.fds_max), (20_000, 34));
        assert!(v.rss_ok && v.fds_ok, "{v:?}");
    }

    #[test]
    fn a_run_shorter_than_the_warm_up_judges_from_its_last_sample() {
        let samples = [s(10, 1000, 20), s(20, 2000, 21)];
        let v = judge(&samples, Duration::from_secs(60), 1024).unwrap();
        assert_eq!(v.baseline, s(20, 2000, 21));
        assert!(judge(&[], Duration::from_secs(60), 1024).is_none());
    }
}
