//! CPU accounting around one measurement: the whole machine's busy time
//! from `/proc/stat` (user + nice + system + irq + softirq: kernel paths
//! such as veth and the kernel's VXLAN spend theirs in softirq, userspace
//! tunnels in their own threads and in system calls, so only the whole
//! machine compares them fairly), the tunnel processes' own time from
//! `/proc/PID/stat`, and the load average.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc` times.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The machine's aggregate CPU times, in ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTimes {
    /// user + nice (guest time is inside user).
    pub user: u64,
    /// system.
    pub system: u64,
    /// hardware interrupts.
    pub irq: u64,
    /// software interrupts (network receive and transmit processing).
    pub softirq: u64,
    /// idle + iowait.
    pub idle: u64,
}

/// Parses the `cpu ` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<MachineTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal guest guest_nice
    Some(MachineTimes {
        user: *f.first()? + *f.get(1)?,
        system: *f.get(2)?,
        idle: *f.get(3)? + *f.get(4)?,
        irq: *f.get(5)?,
        softirq: *f.get(6)?,
    })
}

/// Reads `/proc/stat`.
pub fn machine_times() -> Result<MachineTimes> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_proc_stat(&text).context("/proc/stat has no well-formed `cpu` line")
}

/// utime + stime of a process (all its threads), in ticks, from the text
/// of `/proc/PID/stat`. The command name may hold spaces and parentheses:
/// fields are counted after its last `)`.
pub fn parse_pid_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based).
    let utime: u64 = f.get(14 - 3)?.parse().ok()?;
    let stime: u64 = f.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// The summed CPU ticks of `pids`; a process that has exited counts zero.
pub fn process_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|t| parse_pid_stat(&t))
        .sum()
}

/// `/proc/loadavg`'s three averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// A snapshot taken before a measurement.
pub struct CpuMeter {
    machine: MachineTimes,
    tunnel: u64,
    pids: Vec<u32>,
    started: std::time::Instant,
}

/// CPU spent during one measurement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Wall-clock seconds measured.
    pub wall_s: f64,
    /// Whole machine, user + nice, seconds.
    pub user_s: f64,
    /// Whole machine, system, seconds.
    pub system_s: f64,
    /// Whole machine, hardware + software interrupts, seconds.
    pub irq_s: f64,
    /// Whole machine, busy (the sum of the three), seconds.
    pub busy_s: f64,
    /// Whole machine, idle, seconds.
    pub idle_s: f64,
    /// The tunnel processes (both ends), seconds; zero for kernel paths.
    pub tunnel_s: f64,
}

impl CpuUse {
    /// Busy seconds per gigabyte (10^9 bytes) delivered.
    pub fn busy_per_gb(&self, bytes: u64) -> Option<f64> {
        (bytes > 0).then(|| self.busy_s / (bytes as f64 / 1e9))
    }

    /// The tunnel processes' seconds per gigabyte delivered.
    pub fn tunnel_per_gb(&self, bytes: u64) -> Option<f64> {
        (bytes > 0).then(|| self.tunnel_s / (bytes as f64 / 1e9))
    }

    /// The tunnel processes' share of the machine's busy time.
    pub fn tunnel_share(&self) -> Option<f64> {
        (self.busy_s > 0.0).then(|| self.tunnel_s / self.busy_s)
    }
}

impl CpuMeter {
    /// Starts measuring; `pids` are the tunnel's processes.
    pub fn start(pids: &[u32]) -> Result<CpuMeter> {
        Ok(CpuMeter {
            machine: machine_times()?,
            tunnel: process_ticks(pids),
            pids: pids.to_vec(),
            started: std::time::Instant::now(),
        })
    }

    /// What was spent since [`CpuMeter::start`].
    pub fn stop(&self) -> Result<CpuUse> {
        let wall_s = self.started.elapsed().as_secs_f64();
        let now = machine_times()?;
        let tunnel = process_ticks(&self.pids);
        let hz = ticks_per_second();
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / hz;
        let user_s = d(now.user, self.machine.user);
        let system_s = d(now.system, self.machine.system);
        let irq_s = d(
            now.irq + now.softirq,
            self.machine.irq + self.machine.softirq,
        );
        Ok(CpuUse {
            wall_s,
            user_s,
            system_s,
            irq_s,
            busy_s: user_s + system_s + irq_s,
            idle_s: d(now.idle, self.machine.idle),
            tunnel_s: d(tunnel, self.tunnel),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_sums_user_with_nice_and_idle_with_iowait() {
        let text = "cpu  100 5 50 1000 20 3 7 0 0 0\ncpu0 50 2 25 500 10 1 3 0 0 0\n";
        let t = parse_proc_stat(text).unwrap();
        assert_eq!(
            t,
            MachineTimes {
                user: 105,
                system: 50,
                irq: 3,
                softirq: 7,
                idle: 1020
            }
        );
        assert_eq!(parse_proc_stat("cpu0 1 2 3\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 x 4 5 6 7\n"), None);
    }

    #[test]
    fn pid_stat_counts_fields_after_a_name_with_spaces_and_parens() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        let text = "4242 (wire guard) (x)) S 1 4242 4242 0 -1 4194560 10 0 0 0 70 30 0 0 20 0 3 0";
        assert_eq!(parse_pid_stat(text), Some(100));
        assert_eq!(parse_pid_stat("4242 (short) S 1"), None);
    }

    #[test]
    fn a_meter_sees_this_process_spend_cpu() {
        let me = std::process::id();
        let m = CpuMeter::start(&[me]).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(150) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let u = m.stop().unwrap();
        assert!(u.tunnel_s > 0.0, "{u:?}");
        assert!(u.busy_s >= u.tunnel_s * 0.5, "{u:?}");
        assert_eq!(u.busy_per_gb(0), None);
        assert!(u.busy_per_gb(2_000_000_000).unwrap() > 0.0);
    }
}
