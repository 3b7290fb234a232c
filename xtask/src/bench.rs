//! `cargo xtask bench`: ringtun side by side with raw veth, the kernel's
//! VXLAN, wireguard-go, boringtun and gotatun, on one machine, in one run.
//!
//! Every system gets a lab of its own (two gateway namespaces and a veth
//! WAN, [`lab`]); all are set up first and kept up. Then each repeat runs
//! every workload ([`workload`]) on every system in turn, so that drift on
//! a shared machine hits all systems alike. The report ([`report`]) gives
//! medians with min–max, ringtun's ratios to the references of the same
//! run, and pictures ([`plot`]), under `target/bench-report/`.
//!
//! `--quick` is the smoke run CI affords: one repeat, two seconds a cell,
//! every system, still a full report.

mod baseline;
pub mod cpu;
mod lab;
mod placement;
mod plot;
mod report;
mod stats;
mod systems;
mod workload;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::setup::{build_release, repo_root, stop_flag, target_dir};

use report::{LoadSeen, Machine, Report, SystemInfo};
use systems::{Running, SetupOptions, System};
use workload::{Plan, Sample, Target, Tools, Workload};

/// Options for `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A short smoke run for CI: 1 repeat, 2 s per cell (unless given).
    #[arg(long)]
    quick: bool,
    /// Repeats of every cell (default 3; 1 with --quick).
    #[arg(long, value_name = "N")]
    repeats: Option<u32>,
    /// Seconds per cell (default 10; 2 with --quick).
    #[arg(long, value_name = "S")]
    seconds: Option<u64>,
    /// Run only these systems and/or workloads (comma-separated names:
    /// raw-veth, kernel-vxlan, ringtun-wireguard, ringtun-vxlan,
    /// wireguard-go, boringtun, gotatun; tcp1, tcp4, udp64, lat-idle, lat-load).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<String>,
    /// One latency probe every this many microseconds.
    #[arg(long, value_name = "US", default_value_t = 1000)]
    probe_interval_us: u64,
    /// Data-plane workers per ringtun (default: its own, one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Do not install missing tools or peers (their systems are skipped;
    /// a failure under CI).
    #[arg(long)]
    no_install: bool,
    /// The ringtun binary to measure (default: build it with --release).
    #[arg(long, value_name = "PATH")]
    ringtun: Option<PathBuf>,
    /// Where to write the report (default: target/bench-report in the repository).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compare with an earlier run's report.json (before and after a
    /// change): a table and plots in the report.
    #[arg(long, value_name = "REPORT_JSON")]
    baseline: Option<PathBuf>,
    /// Build every lab afresh before each repeat (ringtun and the peers
    /// restarted too), so that each repeat is a lab of its own: where the
    /// flow hashes put the busy workers changes between labs, and the
    /// min–max of the repeats is then the spread across labs.
    #[arg(long)]
    fresh_labs: bool,
    /// After the run, profile extra runs with `perf record -a -g` into the
    /// report directory: one TCP stream and 64 B datagrams through each
    /// ringtun mode (those selected).
    #[arg(long)]
    profile: bool,
}

/// Sets every system up; one that cannot be is skipped (recorded in the
/// report the first time, a problem on a later start).
fn start_all(
    systems: &[System],
    setup: &SetupOptions<'_>,
    stop: &std::sync::atomic::AtomicBool,
    report: &mut Report,
    first: bool,
) -> Vec<Running> {
    let mut running = Vec::new();
    for sys in systems {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        print!("bench: setting up {:<18} ", sys.name());
        let _ = std::io::stdout().flush();
        match systems::start(*sys, setup) {
            Ok(r) => {
                println!("ok: {}", r.description);
                running.push(r);
            }
            Err(e) => {
                let why = format!("{e:#}");
                println!("SKIPPED: {why}");
                if !first {
                    report
                        .problems
                        .push(format!("{} could not be set up again: {why}", sys.name()));
                    continue;
                }
                report
                    .problems
                    .push(format!("{} skipped: {why}", sys.name()));
                report.systems.push(SystemInfo {
                    name: sys.name().to_string(),
                    status: "skipped".into(),
                    detail: why,
                    tunnel_pids: Vec::new(),
                    ringtun_status: Vec::new(),
                });
            }
        }
    }
    running
}

/// The selection `--only` makes.
fn select(only: &[String]) -> Result<(Vec<System>, Vec<Workload>)> {
    let mut systems = Vec::new();
    let mut workloads = Vec::new();
    for name in only.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if let Some(s) = System::ALL.into_iter().find(|s| s.name() == name) {
            systems.push(s);
        } else if let Some(w) = Workload::ALL.into_iter().find(|w| w.name() == name) {
            workloads.push(w);
        } else {
            let known: Vec<&str> = System::ALL
                .iter()
                .map(|s| s.name())
                .chain(Workload::ALL.iter().map(|w| w.name()))
                .collect();
            bail!("--only: unknown name {name:?}; known: {}", known.join(", "));
        }
    }
    if systems.is_empty() {
        systems = System::ALL.to_vec();
    }
    if workloads.is_empty() {
        workloads = Workload::ALL.to_vec();
    }
    systems.sort();
    systems.dedup();
    workloads.sort();
    workloads.dedup();
    Ok((systems, workloads))
}

fn git_revision(root: &Path) -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = run(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{rev} (with uncommitted changes)")
    } else {
        rev
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One line of a cell's outcome, after its progress line.
fn outcome(s: &Sample) -> String {
    if let Some(e) = &s.error {
        return format!("error: {}", e.lines().next().unwrap_or(""));
    }
    let mut parts = Vec::new();
    if let Some(t) = &s.tcp {
        parts.push(format!("{:.2} Gbit/s", t.gbps));
    }
    if let Some(u) = &s.udp {
        parts.push(format!(
            "{:.0} kpps delivered ({:.0} sent)",
            u.delivered_pps / 1e3,
            u.sent_pps / 1e3
        ));
    }
    if let Some(c) = s.cpu_s_per_gb {
        parts.push(format!("{c:.2} CPU s/GB"));
    }
    if let Some(l) = &s.latency {
        parts.push(format!(
            "RTT p50 {:.1} p99 {:.1} µs, {} lost",
            l.p50_ns as f64 / 1e3,
            l.p99_ns as f64 / 1e3,
            l.lost
        ));
    }
    parts.join(", ")
}

/// Runs the benchmark and writes the report.
pub fn run(args: &BenchArgs) -> Result<()> {
    let ci = std::env::var_os("CI").is_some();
    crate::setup::require_root("bench")?;
    let (systems, workloads) = select(&args.only)?;
    let repeats = args
        .repeats
        .unwrap_or(if args.quick { 1 } else { 3 })
        .max(1);
    let plan = Plan {
        seconds: args
            .seconds
            .unwrap_or(if args.quick { 2 } else { 10 })
            .max(1),
        probe_interval_us: args.probe_interval_us.max(1),
    };
    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => repo_root()?.join("target").join("bench-report"),
    };

    // Binaries first, while this process has one thread (set_var below).
    const RINGTUN: (&str, &str) = ("dataplane", "ringtun");
    const PINGPONG: (&str, &str) = ("bench", "rt-pingpong");
    let (ringtun, pingpong) = match &args.ringtun {
        Some(p) => {
            let [pingpong] = build_release("bench", [PINGPONG])?;
            (p.clone(), pingpong)
        }
        None => {
            let [ringtun, pingpong] = build_release("bench", [RINGTUN, PINGPONG])?;
            (ringtun, pingpong)
        }
    };
    // SAFETY: no other thread exists yet (nothing has been spawned; the
    // signal handlers come next), so nothing reads the environment
    // concurrently. ringtun-tests finds the binary through RINGTUN_BIN.
    unsafe { std::env::set_var("RINGTUN_BIN", &ringtun) };

    // First Ctrl-C: finish the current cell, write what was measured,
    // clean up, exit non-zero. A second one: exit at once.
    let stop = stop_flag()?;
    for name in crate::labs::remove_stale(lab::NETNS_TAG)? {
        println!("bench: removed {name}, left by an earlier run that was killed");
    }

    // Read before measuring: a bad path should not cost a whole run.
    let baseline = match &args.baseline {
        Some(p) => Some(baseline::Baseline::load(p)?),
        None => None,
    };
    let install = !args.no_install;
    let iperf3 = workload::ensure_iperf3(install)?;
    let tools = Tools {
        iperf3: iperf3.clone(),
        pingpong: pingpong.clone(),
    };
    let root = repo_root()?;
    let mut versions = BTreeMap::new();
    versions.insert(
        "ringtun".to_string(),
        format!("{} ({})", git_revision(&root), ringtun.display()),
    );
    versions.insert(
        "iperf3".to_string(),
        workload::version_of(&iperf3, "--version"),
    );
    versions.insert(
        "rustc".to_string(),
        workload::version_of(Path::new("rustc"), "--version"),
    );
    for (name, tool, arg) in [
        ("wireguard-go", "wireguard-go", "--version"),
        ("boringtun", "boringtun-cli", "--version"),
        ("gotatun", "gotatun", "--version"),
        ("wg", "wg", "--version"),
    ] {
        if let Some(p) = ringtun_tests::find_in_path(tool) {
            versions.insert(name.to_string(), workload::version_of(&p, arg));
        }
    }

    let mut report = Report {
        generated_unix: 0,
        quick: args.quick,
        repeats,
        plan: plan.clone(),
        machine: Machine::probe(),
        versions,
        load_average: LoadSeen {
            start: cpu::load_average(),
            ..LoadSeen::default()
        },
        systems: Vec::new(),
        samples: Vec::new(),
        summary: Default::default(),
        ratios: Vec::new(),
        latency_added_us: BTreeMap::new(),
        bar: Vec::new(),
        problems: Vec::new(),
        files: Vec::new(),
        baseline,
    };

    // Set every system up first; a system that cannot be is skipped.
    let build_dir = target_dir()?.join("bench-peers");
    let setup = SetupOptions {
        workers: args.workers,
        install,
        build_dir: &build_dir,
        tools: &tools,
    };
    let started = Instant::now();
    let mut running = start_all(&systems, &setup, &stop, &mut report, true);
    // The measurements, round-robin.
    let cells = repeats as usize * workloads.len() * running.len();
    let mut order = 0u32;
    'outer: for rep in 0..repeats {
        if args.fresh_labs && rep > 0 {
            // The old labs go first: the new ones reuse their names.
            running.clear();
            running = start_all(&systems, &setup, &stop, &mut report, false);
        }
        for w in &workloads {
            for k in 0..running.len() {
                // Each repeat starts from a different system.
                let i = (k + rep as usize) % running.len();
                if stop.load(Ordering::Relaxed) {
                    break 'outer;
                }
                let sys = &mut running[i];
                print!(
                    "bench [{:>3}/{cells}] repeat {}/{repeats}  {:<8} {:<18} ",
                    order + 1,
                    rep + 1,
                    w.name(),
                    sys.system.name()
                );
                let _ = std::io::stdout().flush();
                let sys_name = sys.system.name();
                let fresh = || Sample {
                    system: sys_name.to_string(),
                    workload: w.name().to_string(),
                    repeat: rep,
                    order,
                    started_unix: unix_now(),
                    ..Sample::default()
                };
                let mut sample = measure(sys, *w, &tools, &plan, fresh());
                if let Some(first) = sample.error.take() {
                    // One retry: a cell can fail for reasons of its own (an
                    // iperf3 server left busy by a killed client). The first
                    // error stays in the sample and the report.
                    print!("retrying ({}) ", first.lines().next().unwrap_or(""));
                    let _ = std::io::stdout().flush();
                    sample = measure(sys, *w, &tools, &plan, fresh());
                    sample.retried_after = Some(first);
                }
                println!("{}", outcome(&sample));
                if let Some(e) = &sample.error {
                    report.problems.push(format!(
                        "{} {} repeat {}: {e}",
                        sample.system,
                        sample.workload,
                        rep + 1
                    ));
                }
                report.samples.push(sample);
                order += 1;
            }
        }
    }

    if args.profile && !stop.load(Ordering::Relaxed) {
        // Where a big packet's time goes (one TCP stream) and where a small
        // one's does (64 B datagrams), in each mode measured.
        let profiles = [
            (System::RingtunWireguard, Workload::Tcp1),
            (System::RingtunVxlan, Workload::Tcp1),
            (System::RingtunWireguard, Workload::Udp64),
            (System::RingtunVxlan, Workload::Udp64),
        ];
        let mut made = 0;
        for (system, workload) in profiles {
            if !workloads.contains(&workload) || stop.load(Ordering::Relaxed) {
                continue;
            }
            let Some(sys) = running.iter().find(|r| r.system == system) else {
                continue;
            };
            made += 1;
            match profile(sys, workload, &tools, &plan, &out_dir) {
                Ok(f) => {
                    println!("bench: profile written to {}", out_dir.join(&f).display());
                    report.files.push(f);
                }
                Err(e) => report.problems.push(format!(
                    "profile of {} {}: {e:#}",
                    system.name(),
                    workload.name()
                )),
            }
        }
        if made == 0 && !stop.load(Ordering::Relaxed) {
            report.problems.push(
                "profile: nothing to profile (it needs a ringtun system with tcp1 or udp64)".into(),
            );
        }
    }

    for r in &running {
        report.systems.push(SystemInfo {
            name: r.system.name().to_string(),
            status: "measured".into(),
            detail: r.description.clone(),
            tunnel_pids: r.tunnel_pids(),
            ringtun_status: r.ringtun_status(),
        });
    }
    report.systems.sort_by_key(|s| {
        System::ALL
            .iter()
            .position(|x| x.name() == s.name)
            .unwrap_or(usize::MAX)
    });
    drop(running);
    let left = crate::labs::our_namespaces(lab::NETNS_TAG)?;
    if !left.is_empty() {
        report
            .problems
            .push(format!("namespaces left behind: {}", left.join(", ")));
    }

    report.load_average.end = cpu::load_average();
    report.generated_unix = unix_now() as u64;
    report.derive();
    report.write(&out_dir)?;

    println!("\n{}", report.summary_markdown());
    println!(
        "bench: {} cells in {:.0} s; load average {:.2} at start, {:.2} at end; report in {}",
        report.samples.len(),
        started.elapsed().as_secs_f64(),
        report.load_average.start[0],
        report.load_average.end[0],
        out_dir.join("report.md").display()
    );
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted: the report holds what was measured before");
    }
    if !report.problems.is_empty() {
        for p in &report.problems {
            eprintln!("bench: problem: {}", p.lines().next().unwrap_or(""));
        }
        if ci {
            bail!(
                "{} problem(s) (skipped systems or failed cells); CI is set, and under CI a skip is a failure",
                report.problems.len()
            );
        }
    }
    Ok(())
}

/// Runs one cell, restarting gateway B's iperf3 server first if it died.
fn measure(
    sys: &mut Running,
    w: Workload,
    tools: &Tools,
    plan: &Plan,
    mut sample: Sample,
) -> Sample {
    if let Err(e) = sys.ensure_iperf_server() {
        sample.error = Some(format!("restarting the iperf3 server: {e:#}"));
        return sample;
    }
    let target = Target {
        netns: &sys.client_netns,
        addr: sys.target,
        tunnel_ends: &sys.tunnel_ends,
    };
    workload::run(w, tools, &target, plan, &mut sample);
    sample
}

/// `perf record -a -g` over one extra run of `workload` through `sys`;
/// writes `perf report` to `perf-<system>[-<workload>].txt`: by process
/// first (which process, kernel or user space), then by symbol. When
/// datagrams were delivered and CPU measured (64 B UDP), the symbols are
/// of the tunnel processes alone, each with its share of their CPU per
/// delivered datagram, measured under perf (its own cost included).
fn profile(
    sys: &Running,
    workload: Workload,
    tools: &Tools,
    plan: &Plan,
    out_dir: &Path,
) -> Result<String> {
    let perf = ringtun_tests::find_in_path("perf").context("perf is not installed")?;
    std::fs::create_dir_all(out_dir)?;
    let name = match workload {
        Workload::Tcp1 => format!("perf-{}", sys.system.name()),
        _ => format!("perf-{}-{}", sys.system.name(), workload.name()),
    };
    let data = out_dir.join(format!("{name}.data"));
    let secs = plan.seconds.to_string();
    let mut rec = Command::new(&perf)
        .args(["record", "-a", "-g", "-F", "999", "-o"])
        .arg(&data)
        .args(["--", "sleep", &secs])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting perf record")?;
    let mut sample = Sample::default();
    let target = Target {
        netns: &sys.client_netns,
        addr: sys.target,
        tunnel_ends: &sys.tunnel_ends,
    };
    workload::run(workload, tools, &target, plan, &mut sample);
    // The tunnel processes' thread names (`ringtun`, `rt-worker0`, ...):
    // perf report's filter by process id, tried here, dropped the
    // workers' kernel samples, which are most of a small packet's cost.
    let pids = sys.tunnel_pids();
    let mut threads: Vec<String> = pids
        .iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim().to_string())
        .collect();
    threads.sort();
    threads.dedup();
    let _ = rec.wait();
    let perf_report = |sort: &str, tunnel_only: bool| -> Result<String> {
        let mut cmd = Command::new(&perf);
        cmd.args([
            "report",
            "--stdio",
            "--no-children",
            "-g",
            "none",
            "--percent-limit",
            "0.7",
        ]);
        if tunnel_only {
            anyhow::ensure!(
                !threads.is_empty(),
                "the tunnel processes {pids:?} were gone after the run: no threads to filter by"
            );
            cmd.arg("--comms").arg(threads.join(","));
            cmd.args(["--percentage", "relative"]);
        }
        let out = cmd
            .args(["--sort", sort, "-i"])
            .arg(&data)
            .output()
            .context("running perf report")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let text = || -> Result<String> {
        Ok(match (&sample.udp, &sample.cpu) {
            (Some(u), Some(c)) if u.delivered_packets > 0 => {
                let tunnel_us = c.tunnel_s * 1e6 / u.delivered_packets as f64;
                let machine_us = c.busy_s * 1e6 / u.delivered_packets as f64;
                format!(
                    "# perf record -a -g during one {} s run of {} through {}: {}\n\
                 # CPU per delivered datagram: {tunnel_us:.2} µs in the tunnel processes \
                 (both gateways), {machine_us:.2} µs in the whole machine\n\
                 # Below the first table, shares are of the tunnel processes' samples, \
                 each followed by its µs per delivered datagram (perf's own cost included).\n\n{}\n{}\n{}",
                    plan.seconds,
                    workload.name(),
                    sys.system.name(),
                    outcome(&sample),
                    perf_report("pid,dso", false)?,
                    per_packet(&perf_report("comm,dso", true)?, tunnel_us),
                    per_packet(&perf_report("dso,symbol", true)?, tunnel_us),
                )
            }
            _ => format!(
                "# perf record -a -g during one {} s run of {} through {}: {}\n\n{}\n{}",
                plan.seconds,
                workload.name(),
                sys.system.name(),
                outcome(&sample),
                perf_report("pid,dso", false)?,
                perf_report("comm,dso,symbol", false)?
            ),
        })
    };
    // The recording is large: gone whether or not the report was read.
    let text = text();
    let _ = std::fs::remove_file(&data);
    let text = text?;
    let file = format!("{name}.txt");
    std::fs::write(out_dir.join(&file), text)?;
    Ok(file)
}

/// `perf report` lines that start with a share (`  12.34%  ...`) get
/// that share of `total_us` after it; other lines are kept as they are.
fn per_packet(report: &str, total_us: f64) -> String {
    report
        .lines()
        .map(|line| {
            let share = line
                .split_whitespace()
                .next()
                .and_then(|w| w.strip_suffix('%'))
                .and_then(|p| p.parse::<f64>().ok());
            match share {
                Some(p) => {
                    let (lead, rest) = line.split_at(line.find('%').map_or(0, |i| i + 1));
                    format!("{lead} {:>7.3} µs{rest}", p / 100.0 * total_us)
                }
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_packet_adds_each_shares_microseconds() {
        let report = "# Overhead  Shared Object\n    50.00%  ringtun\n    12.50%  [kernel]\n\n";
        assert_eq!(
            per_packet(report, 8.0),
            "# Overhead  Shared Object\n    50.00%   4.000 µs  ringtun\n    12.50%   1.000 µs  [kernel]\n"
        );
        assert_eq!(per_packet("no share here", 1.0), "no share here");
    }

    #[test]
    fn only_selects_systems_and_workloads_by_name() {
        let (s, w) = select(&[]).unwrap();
        assert_eq!((s.len(), w.len()), (System::ALL.len(), 5));
        let (s, w) = select(&["gotatun".into(), "tcp1".into(), "raw-veth".into()]).unwrap();
        assert_eq!(s, vec![System::RawVeth, System::Gotatun]);
        assert_eq!(w, vec![Workload::Tcp1]);
        let e = select(&["tcp2".into()]).unwrap_err().to_string();
        assert!(
            e.contains("unknown name \"tcp2\"") && e.contains("lat-load"),
            "{e}"
        );
    }
}
