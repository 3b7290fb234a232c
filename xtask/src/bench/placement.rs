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
/// A same-CPU share at or above this is "together"; at or below
/// `1 - TOGETHER` it is "apart"; between, "mixed": the ends moved between
/// CPUs, or each spread over both (several busy workers per gateway).
pub const TOGETHER: f64 = 0.8;

/// Run time per CPU of each tunnel process, interval by interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The same-CPU share of the first two processes ([`same_cpu_share`]);
    /// `None` with fewer than two, or when one of them never ran.
    pub same_cpu: Option<f64>,
    /// Seconds each process ran on each CPU, over the whole measurement
    /// (a row per process, in the order given; a column per CPU).
    pub seconds_by_cpu: Vec<Vec<f64>>,
}

impl Placement {
    /// "together", "apart" or "mixed", by [`TOGETHER`].
    pub fn label(&self) -> Option<&'static str> {
        let s = self.same_cpu?;
        Some(if s >= TOGETHER {
            "together"
        } else if s <= 1.0 - TOGETHER {
            "apart"
        } else {
            "mixed"
        })
    }
}

/// The share of two processes' run time during which they ran on the same
/// CPU, from their run time per CPU in each interval (`a[t][c]`,
/// `b[t][c]`): in each interval where both ran, the chance that an instant
/// of one and an instant of the other fell on one CPU, `Σc a·b / (Σa·Σb)`;
/// averaged over the intervals, each weighted by the run time in it. 1:
/// always on one CPU; 0: never; two ends that each spread evenly over two
/// CPUs give 0.5.
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

/// A sampler running beside one measurement.
pub struct PlacementMeter {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Vec<Vec<f64>>>>,
    pids: usize,
}

impl PlacementMeter {
    /// Starts sampling the threads of `pids` (the tunnel's processes);
    /// returns once their run time so far has been read, so that what
    /// follows is measured from here.
    pub fn start(pids: &[u32]) -> PlacementMeter {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (flag, pids_owned) = (stop.clone(), pids.to_vec());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // intervals[p][t][cpu]: seconds process p ran on cpu in interval t.
            let mut intervals = vec![Vec::new(); pids_owned.len()];
            let mut last: HashMap<(u32, u32), u64> = HashMap::new();
            let mut first = true;
            loop {
                // A pass after the stop still counts: it takes what ran
                // since the previous one.
                let stopping = flag.load(Ordering::Relaxed);
                for (p, &pid) in pids_owned.iter().enumerate() {
                    let mut row = vec![0.0; cpus];
                    for (tid, ns, cpu) in threads(pid) {
                        let before = last.insert((pid, tid), ns).unwrap_or(ns);
                        if let Some(slot) = row.get_mut(cpu) {
                            *slot += ns.saturating_sub(before) as f64 / 1e9;
                        }
                    }
                    if !first {
                        intervals[p].push(row);
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
            handle,
            pids: pids.len(),
        }
    }

    /// Stops sampling; what was seen.
    pub fn stop(self) -> Placement {
        self.stop.store(true, Ordering::Relaxed);
        let intervals = self
            .handle
            .join()
            .unwrap_or_else(|_| vec![Vec::new(); self.pids]);
        let seconds_by_cpu = intervals
            .iter()
            .map(|rows| {
                let cpus = rows.first().map_or(0, Vec::len);
                (0..cpus).map(|c| rows.iter().map(|r| r[c]).sum()).collect()
            })
            .collect();
        let same_cpu = match intervals.as_slice() {
            [a, b, ..] => same_cpu_share(a, b),
            _ => None,
        };
        Placement {
            same_cpu,
            seconds_by_cpu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_on_one_cpu_share_it_fully_and_ends_apart_not_at_all() {
        let on = |c: usize, s: f64| {
            let mut v = vec![0.0; 2];
            v[c] = s;
            v
        };
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
    }

    #[test]
    fn labels_follow_the_share() {
        let p = |s| Placement {
            same_cpu: Some(s),
            seconds_by_cpu: Vec::new(),
        };
        assert_eq!(p(0.95).label(), Some("together"));
        assert_eq!(p(0.05).label(), Some("apart"));
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
    fn the_sampler_sees_this_process_run() {
        let me = std::process::id();
        let ran_ns = || {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .expect("this thread's schedstat")
        };
        let m = PlacementMeter::start(&[me]);
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
        assert_eq!(p.same_cpu, None, "one process has no other end");
    }
}
