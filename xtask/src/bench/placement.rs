//! Where the two tunnel ends ran during one measurement: whether the
//! gateways' busy threads shared a CPU or ran apart. On a machine that
//! hosts both ends this changes the cost per byte more than most changes
//! to the data plane do. On one CPU, gateway B reads each datagram while
//! it is still in the cache of the CPU that gateway A wrote it from, and
//! the traffic generators get the other CPU. Apart, every datagram
//! crosses between caches. Two gateways on two machines cannot share a
//! cache, so neither arrangement is the deployment's; the report shows
//! which one each lab got, so that labs are compared like with like.
//!
//! A sampler thread reads every thread's run time
//! (`/proc/PID/task/TID/schedstat`, nanoseconds on a CPU) and the CPU it
//! last ran on (`stat`, field 39) every [`INTERVAL`], and charges each
//! interval's run time to that CPU. A thread that moved within the
//! interval is charged to where it ended; at 20 ms that blurs little of a
//! measurement of seconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the threads are read.
pub const INTERVAL: Duration = Duration::from_millis(20);
/// A same-CPU share at or above this is "together".
pub const TOGETHER: f64 = 0.8;
/// A same-CPU share at or below this is "apart"; between the two,
/// "mixed": the ends moved between CPUs, or each spread over both
/// (several busy workers per gateway).
pub const APART: f64 = 0.2;

/// Run time per CPU of each tunnel end, interval by interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The same-CPU share of the two ends ([`same_cpu_share`]); `None`
    /// when one of them never ran.
    pub same_cpu: Option<f64>,
    /// Seconds each end ran on each CPU, over the whole measurement (a
    /// row per end, gateway A's first; a column per CPU id).
    pub seconds_by_cpu: Vec<Vec<f64>>,
}

impl Placement {
    /// "together", "apart" or "mixed", by [`TOGETHER`] and [`APART`].
    pub fn label(&self) -> Option<&'static str> {
        let s = self.same_cpu?;
        Some(if s >= TOGETHER {
            "together"
        } else if s <= APART {
            "apart"
        } else {
            "mixed"
        })
    }
}

/// The share of two ends' run time during which they ran on the same CPU,
/// from their run time per CPU in each interval (`a[t][c]`, `b[t][c]`):
/// in each interval where both ran, the chance that an instant of one and
/// an instant of the other fell on one CPU, `Σc a·b / (Σa·Σb)`; averaged
/// over the intervals, each weighted by the run time in it. 1: always on
/// one CPU; 0: never; two ends that each spread evenly over two CPUs give
/// 0.5. Rows may differ in length (a CPU neither end ran on is absent).
pub fn same_cpu_share(a: &[Vec<f64>], b: &[Vec<f64>]) -> Option<f64> {
    let (mut weighted, mut weight) = (0.0, 0.0);
    for (at, bt) in a.iter().zip(b) {
        let (sa, sb): (f64, f64) = (at.iter().sum(), bt.iter().sum());
        if sa <= 0.0 || sb <= 0.0 {
            continue;
        }
        let both: f64 = at.iter().zip(bt).map(|(x, y)| x * y).sum();
        weighted += both / (sa * sb) * (sa + sb);
        weight += sa + sb;
    }
    (weight > 0.0).then(|| weighted / weight)
}

/// A thread's run time in nanoseconds and the CPU it last ran on, from
/// the text of its `schedstat` and `stat`.
fn parse_thread(schedstat: &str, stat: &str) -> Option<(u64, usize)> {
    let ns = schedstat.split_whitespace().next()?.parse().ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, processor 39 (1-based).
    let cpu = rest.split_whitespace().nth(39 - 3)?.parse().ok()?;
    Some((ns, cpu))
}

/// Every thread of `pid`: its id, run time and last CPU.
fn threads(pid: u32) -> Vec<(u32, u64, usize)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let sched = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (ns, cpu) = parse_thread(&sched, &stat)?;
        Some((tid, ns, cpu))
    })
    .collect()
}

/// The run times seen so far, by thread, and how one pass over an end's
/// threads becomes one interval's run time per CPU.
#[derive(Default)]
struct Ledger {
    last: HashMap<u32, u64>,
    /// Whether the first pass (the baseline) is done.
    started: bool,
}

impl Ledger {
    /// Charges each thread's run time since the last pass to the CPU it
    /// is on now: that interval's run time per CPU, or `None` for the
    /// first pass, the baseline. A thread first seen after the baseline
    /// started within the measurement, so all its run time counts. A
    /// thread that exited between passes loses its last partial interval:
    /// a poll cannot see it.
    fn charge(&mut self, seen: &[(u32, u64, usize)]) -> Option<Vec<f64>> {
        let mut row = Vec::new();
        for &(tid, ns, cpu) in seen {
            let before = self
                .last
                .insert(tid, ns)
                .unwrap_or(if self.started { 0 } else { ns });
            if row.len() <= cpu {
                row.resize(cpu + 1, 0.0);
            }
            row[cpu] += ns.saturating_sub(before) as f64 / 1e9;
        }
        std::mem::replace(&mut self.started, true).then_some(row)
    }
}

/// A sampler running beside one measurement; it stops when stopped or
/// dropped.
pub struct PlacementMeter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<[Vec<Vec<f64>>; 2]>>,
}

impl PlacementMeter {
    /// Starts sampling the threads of the two ends (gateway A's tunnel
    /// processes, gateway B's); returns once their run time so far has
    /// been read, so that what follows is measured from here.
    pub fn start(ends: &[Vec<u32>]) -> PlacementMeter {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ends: Vec<Vec<u32>> = ends.iter().take(2).cloned().collect();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // intervals[end][t][cpu]: seconds the end ran on cpu in interval t.
            let mut intervals: [Vec<Vec<f64>>; 2] = Default::default();
            let mut ledgers: [Ledger; 2] = Default::default();
            let mut first = true;
            loop {
                // A pass after the stop still counts: it takes what ran
                // since the previous one.
                let stopping = flag.load(Ordering::Relaxed);
                for (e, pids) in ends.iter().enumerate() {
                    let seen: Vec<(u32, u64, usize)> =
                        pids.iter().flat_map(|&p| threads(p)).collect();
                    if let Some(row) = ledgers[e].charge(&seen) {
                        intervals[e].push(row);
                    }
                }
                if first {
                    let _ = ready_tx.send(());
                    first = false;
                }
                if stopping {
                    return intervals;
                }
                std::thread::sleep(INTERVAL);
            }
        });
        // Fails only if the sampler died, which `stop` then reports as
        // nothing seen.
        let _ = ready.recv();
        PlacementMeter {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling; what was seen.
    pub fn stop(mut self) -> Placement {
        self.stop.store(true, Ordering::Relaxed);
        let [a, b] = self
            .handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let total = |rows: &[Vec<f64>]| {
            let mut sum = Vec::new();
            for r in rows {
                if sum.len() < r.len() {
                    sum.resize(r.len(), 0.0);
                }
                for (s, v) in sum.iter_mut().zip(r) {
                    *s += v;
                }
            }
            sum
        };
        Placement {
            same_cpu: same_cpu_share(&a, &b),
            seconds_by_cpu: vec![total(&a), total(&b)],
        }
    }
}

impl Drop for PlacementMeter {
    /// A measurement that failed half-way still ends its sampler.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(c: usize, s: f64) -> Vec<f64> {
        let mut v = vec![0.0; 2];
        v[c] = s;
        v
    }

    #[test]
    fn ends_on_one_cpu_share_it_fully_and_ends_apart_not_at_all() {
        let a = vec![on(0, 0.01), on(1, 0.01)];
        assert_eq!(same_cpu_share(&a, &[on(0, 0.02), on(1, 0.005)]), Some(1.0));
        assert_eq!(same_cpu_share(&a, &[on(1, 0.02), on(0, 0.005)]), Some(0.0));
        // Even spread on both sides: a coin toss.
        let even = vec![vec![0.01, 0.01]];
        assert_eq!(same_cpu_share(&even, &even), Some(0.5));
        // An interval where one end did not run does not count.
        let idle_b = vec![vec![0.0, 0.0], on(1, 0.01)];
        assert_eq!(same_cpu_share(&a, &idle_b), Some(1.0));
        assert_eq!(same_cpu_share(&a, &[vec![0.0, 0.0]]), None);
        // A CPU only one end ran on may be missing from the other's row.
        assert_eq!(same_cpu_share(&[vec![0.01]], &[vec![0.0, 0.01]]), Some(0.0));
    }

    #[test]
    fn intervals_weigh_by_the_run_time_in_them() {
        // Together for 0.03 s of run time, apart for 0.015 s.
        let a = vec![on(0, 0.01), on(1, 0.01)];
        let b = vec![on(0, 0.02), on(0, 0.005)];
        let share = same_cpu_share(&a, &b).unwrap();
        assert!((share - 2.0 / 3.0).abs() < 1e-12, "{share}");
    }

    #[test]
    fn labels_follow_the_share() {
        let p = |s| Placement {
            same_cpu: Some(s),
            seconds_by_cpu: Vec::new(),
        };
        assert_eq!(p(0.95).label(), Some("together"));
        assert_eq!(p(TOGETHER).label(), Some("together"));
        assert_eq!(p(0.05).label(), Some("apart"));
        assert_eq!(p(APART).label(), Some("apart"));
        assert_eq!(p(0.5).label(), Some("mixed"));
        assert_eq!(Placement::default().label(), None);
    }

    #[test]
    fn a_thread_reads_as_run_time_and_last_cpu() {
        // pid (comm) state, then fields 4..=39; processor is the 39th.
        let mut stat = String::from("77 (rt worker) (x)) R");
        for f in 4..=38 {
            stat.push_str(&format!(" {f}"));
        }
        stat.push_str(" 1 0 0");
        assert_eq!(parse_thread("123456 789 5\n", &stat), Some((123456, 1)));
        assert_eq!(parse_thread("", &stat), None);
        assert_eq!(parse_thread("1 2 3", "77 (x) R 1"), None);
    }

    #[test]
    fn the_baseline_counts_nothing_and_a_thread_born_later_counts_whole() {
        let mut l = Ledger::default();
        assert_eq!(l.charge(&[(1, 5_000_000_000, 0)]), None);
        // Thread 1 ran 10 ms more on CPU 0; thread 2 appeared on CPU 3
        // with 20 ms behind it.
        let row = l
            .charge(&[(1, 5_010_000_000, 0), (2, 20_000_000, 3)])
            .expect("an interval after the baseline");
        assert_eq!(row.len(), 4, "the row grows to the CPU id seen");
        assert!(
            (row[0] - 0.01).abs() < 1e-12 && (row[3] - 0.02).abs() < 1e-12,
            "{row:?}"
        );
    }

    #[test]
    fn the_sampler_sees_this_process_run() {
        let me = std::process::id();
        let ran_ns = || {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .expect("this thread's schedstat")
        };
        let m = PlacementMeter::start(&[vec![me], Vec::new()]);
        // Run for 50 ms of CPU time, however long a busy machine takes
        // to give it.
        let from = ran_ns();
        let mut x = 0u64;
        while ran_ns() < from + 50_000_000 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let p = m.stop();
        assert!(x > 0);
        let ran: f64 = p.seconds_by_cpu[0].iter().sum();
        assert!(ran >= 0.05, "the sampler saw {ran} s of this process");
        assert_eq!(p.same_cpu, None, "an end with no process never ran");
    }

    #[test]
    fn a_dropped_sampler_stops() {
        let m = PlacementMeter::start(&[vec![std::process::id()], Vec::new()]);
        let stop = m.stop.clone();
        drop(m);
        assert!(stop.load(Ordering::Relaxed));
    }
}
