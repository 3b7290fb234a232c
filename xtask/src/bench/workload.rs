//! The workloads, each run from gateway A to gateway B of one system's
//! lab: iperf3 drives throughput (single-stream TCP, four TCP streams,
//! 64-byte UDP datagrams as fast as it can send them), and our own probe
//! (`rt-pingpong`) measures round trips, idle and beside a bulk transfer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bench::probe::ProbeReport;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cpu::{self, CpuMeter, CpuUse};
use super::placement::{Placement, PlacementMeter};
use crate::process::run_with_timeout;

/// The iperf3 server's port (inside each lab's gateway B).
pub const IPERF_PORT: u16 = 5201;
/// The echo server's port.
pub const ECHO_PORT: u16 = 7777;

/// One kind of measurement.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// One TCP stream, A to B.
    Tcp1,
    /// Four TCP streams, A to B.
    Tcp4,
    /// 64-byte UDP datagrams, sent as fast as iperf3 can: packets delivered per second.
    Udp64,
    /// Round trips of the probe on an otherwise idle tunnel.
    LatIdle,
    /// Round trips of the probe while one TCP stream fills the tunnel.
    LatLoad,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 5] = [
        Workload::Tcp1,
        Workload::Tcp4,
        Workload::Udp64,
        Workload::LatIdle,
        Workload::LatLoad,
    ];

    /// Its name in tables, progress lines and `--only`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Tcp1 => "tcp1",
            Workload::Tcp4 => "tcp4",
            Workload::Udp64 => "udp64",
            Workload::LatIdle => "lat-idle",
            Workload::LatLoad => "lat-load",
        }
    }
}

/// How long and how densely to measure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Seconds per throughput cell and per latency cell.
    pub seconds: u64,
    /// One probe every this many microseconds.
    pub probe_interval_us: u64,
}

/// The programs a workload runs.
#[derive(Clone, Debug)]
pub struct Tools {
    /// iperf3.
    pub iperf3: PathBuf,
    /// rt-pingpong (release build).
    pub pingpong: PathBuf,
}

/// What iperf3 reported for a TCP run (receiver side).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpResult {
    /// Bytes delivered to the receiver.
    pub bytes: u64,
    /// Seconds the receiver measured.
    pub seconds: f64,
    /// Gbit/s delivered.
    pub gbps: f64,
    /// TCP retransmissions at the sender.
    pub retransmits: u64,
}

/// What iperf3 reported for a UDP run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpResult {
    /// Datagrams sent.
    pub sent_packets: u64,
    /// Datagrams delivered to the receiver.
    pub delivered_packets: u64,
    /// Bytes delivered (UDP payload).
    pub delivered_bytes: u64,
    /// Seconds the receiver measured.
    pub seconds: f64,
    /// Datagrams delivered per second.
    pub delivered_pps: f64,
    /// Datagrams sent per second.
    pub sent_pps: f64,
}

/// One measurement of one system, as stored in report.json.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// System name.
    pub system: String,
    /// Workload name.
    pub workload: String,
    /// Repeat, from 0.
    pub repeat: u32,
    /// Position in the whole run, from 0 (shows the interleaving).
    pub order: u32,
    /// Unix time it started, seconds.
    pub started_unix: f64,
    /// Load average before it.
    pub loadavg_before: [f64; 3],
    /// Load average after it.
    pub loadavg_after: [f64; 3],
    /// Why it produced no figure.
    pub error: Option<String>,
    /// Why the first attempt failed, if this is a retry.
    pub retried_after: Option<String>,
    /// TCP throughput (tcp1, tcp4; the bulk beside lat-load).
    pub tcp: Option<TcpResult>,
    /// UDP packet rate (udp64).
    pub udp: Option<UdpResult>,
    /// Round trips (lat-idle, lat-load).
    pub latency: Option<ProbeReport>,
    /// CPU spent while it ran (throughput workloads).
    pub cpu: Option<CpuUse>,
    /// Whole-machine busy CPU seconds per GB delivered.
    pub cpu_s_per_gb: Option<f64>,
    /// The tunnel processes' CPU seconds per GB delivered.
    pub tunnel_cpu_s_per_gb: Option<f64>,
    /// Where the tunnel's two ends ran (TCP workloads of a userspace
    /// tunnel).
    pub placement: Option<Placement>,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

/// Reads a TCP run's receiver figures from `iperf3 -J` output.
pub fn parse_iperf_tcp(json: &str) -> Result<TcpResult> {
    let v: Value = serde_json::from_str(json).context("iperf3 printed no JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let r = ["end", "sum_received"];
    let bytes = num(&v, &[r[0], r[1], "bytes"]).context("iperf3 JSON lacks end.sum_received")?;
    let seconds = num(&v, &[r[0], r[1], "seconds"]).unwrap_or(0.0);
    let bps = num(&v, &[r[0], r[1], "bits_per_second"]).unwrap_or(0.0);
    Ok(TcpResult {
        bytes: bytes as u64,
        seconds,
        gbps: bps / 1e9,
        retransmits: num(&v, &["end", "sum_sent", "retransmits"]).unwrap_or(0.0) as u64,
    })
}

/// Reads a UDP run's figures from `iperf3 -u -J` output.
pub fn parse_iperf_udp(json: &str) -> Result<UdpResult> {
    let v: Value = serde_json::from_str(json).context("iperf3 printed no JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let g = |k: &str, f: &str| num(&v, &["end", k, f]);
    let expected = g("sum_received", "packets").context("iperf3 JSON lacks end.sum_received")?;
    let lost = g("sum_received", "lost_packets").unwrap_or(0.0);
    let seconds = g("sum_received", "seconds").unwrap_or(0.0);
    let delivered = (expected - lost).max(0.0);
    let sent = g("sum_sent", "packets").unwrap_or(0.0);
    let sent_s = g("sum_sent", "seconds").unwrap_or(0.0);
    Ok(UdpResult {
        sent_packets: sent as u64,
        delivered_packets: delivered as u64,
        delivered_bytes: g("sum_received", "bytes").unwrap_or(0.0) as u64,
        seconds,
        delivered_pps: if seconds > 0.0 {
            delivered / seconds
        } else {
            0.0
        },
        sent_pps: if sent_s > 0.0 { sent / sent_s } else { 0.0 },
    })
}

/// Where one workload runs.
pub struct Target<'a> {
    /// Gateway A's namespace (clients).
    pub netns: &'a str,
    /// Gateway B's address for this system.
    pub addr: std::net::IpAddr,
    /// The tunnel's processes, gateway A's and gateway B's (for their CPU
    /// time and where they ran); empty for kernel paths.
    pub tunnel_ends: &'a [Vec<u32>],
}

impl Target<'_> {
    fn tunnel_pids(&self) -> Vec<u32> {
        self.tunnel_ends.concat()
    }
}

fn iperf(tools: &Tools, t: &Target<'_>, seconds: u64, extra: &[&str]) -> Result<String> {
    let addr = t.addr.to_string();
    let secs = seconds.to_string();
    let port = IPERF_PORT.to_string();
    let mut args = vec!["-c", &addr, "-p", &port, "-t", &secs, "-J"];
    args.extend_from_slice(extra);
    run_with_timeout(
        t.netns,
        &tools.iperf3,
        &args,
        Duration::from_secs(seconds + 20),
    )
}

fn probe(tools: &Tools, t: &Target<'_>, plan: &Plan) -> Result<ProbeReport> {
    let target = std::net::SocketAddr::new(t.addr, ECHO_PORT).to_string();
    let ms = (plan.seconds * 1000).to_string();
    let iv = plan.probe_interval_us.to_string();
    let out = run_with_timeout(
        t.netns,
        &tools.pingpong,
        &[
            "client",
            "--target",
            &target,
            "--duration-ms",
            &ms,
            "--interval-us",
            &iv,
            "--warmup",
            "50",
            "--json",
        ],
        Duration::from_secs(plan.seconds + 30),
    )?;
    let line = out.lines().last().unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("rt-pingpong printed no report: {out}"))
}

/// Runs one workload against one system and fills in `sample`.
pub fn run(w: Workload, tools: &Tools, t: &Target<'_>, plan: &Plan, sample: &mut Sample) {
    sample.loadavg_before = cpu::load_average();
    if let Err(e) = run_inner(w, tools, t, plan, sample) {
        sample.error = Some(format!("{e:#}"));
    }
    sample.loadavg_after = cpu::load_average();
}

fn run_inner(
    w: Workload,
    tools: &Tools,
    t: &Target<'_>,
    plan: &Plan,
    sample: &mut Sample,
) -> Result<()> {
    match w {
        Workload::Tcp1 | Workload::Tcp4 => {
            let streams: &[&str] = if w == Workload::Tcp4 {
                &["-P", "4"]
            } else {
                &[]
            };
            let placed = (t.tunnel_ends.len() == 2 && t.tunnel_ends.iter().all(|e| !e.is_empty()))
                .then(|| PlacementMeter::start(t.tunnel_ends));
            let meter = CpuMeter::start(&t.tunnel_pids())?;
            let out = iperf(tools, t, plan.seconds, streams);
            let used = meter.stop()?;
            sample.placement = placed.map(PlacementMeter::stop);
            let r = parse_iperf_tcp(&out?)?;
            sample.cpu_s_per_gb = used.busy_per_gb(r.bytes);
            sample.tunnel_cpu_s_per_gb = used.tunnel_per_gb(r.bytes);
            sample.cpu = Some(used);
            sample.tcp = Some(r);
        }
        Workload::Udp64 => {
            let meter = CpuMeter::start(&t.tunnel_pids())?;
            let out = iperf(tools, t, plan.seconds, &["-u", "-l", "64", "-b", "0"])?;
            let used = meter.stop()?;
            let r = parse_iperf_udp(&out)?;
            sample.cpu_s_per_gb = used.busy_per_gb(r.delivered_bytes);
            sample.tunnel_cpu_s_per_gb = used.tunnel_per_gb(r.delivered_bytes);
            sample.cpu = Some(used);
            sample.udp = Some(r);
        }
        Workload::LatIdle => sample.latency = Some(probe(tools, t, plan)?),
        Workload::LatLoad => {
            // The bulk starts first and outlasts the probe on both sides.
            let bulk_secs = plan.seconds + 3;
            let (tools2, netns, addr) = (tools.clone(), t.netns.to_string(), t.addr);
            let bulk = std::thread::spawn(move || {
                let t = Target {
                    netns: &netns,
                    addr,
                    tunnel_ends: &[],
                };
                iperf(&tools2, &t, bulk_secs, &[]).and_then(|o| parse_iperf_tcp(&o))
            });
            std::thread::sleep(Duration::from_millis(1500));
            let probed = probe(tools, t, plan);
            let bulk = match bulk.join() {
                Ok(r) => r,
                Err(_) => bail!("the bulk transfer's thread panicked"),
            };
            sample.latency = Some(probed?);
            sample.tcp = Some(bulk.context("the bulk transfer beside the probe")?);
        }
    }
    Ok(())
}

/// iperf3, installed with apt-get if missing and allowed.
pub fn ensure_iperf3(install: bool) -> Result<PathBuf> {
    if let Some(p) = ringtun_tests::find_in_path("iperf3") {
        return Ok(p);
    }
    if !install {
        bail!("iperf3 is not installed and --no-install was given");
    }
    println!("bench: installing iperf3 with apt-get");
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let args = ["install", "-y", "-qq", "--no-install-recommends", "iperf3"];
    // The package lists may be stale or absent on a fresh machine.
    let installed = apt(&args) || (apt(&["update", "-qq"]) && apt(&args));
    if !installed {
        bail!("apt-get install iperf3 failed");
    }
    ringtun_tests::find_in_path("iperf3").context("iperf3 installed, but it is not on PATH")
}

/// `PROGRAM --version`'s first line, for the report.
pub fn version_of(program: &Path, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_figures_come_from_the_receiver() {
        let json = r#"{"end":{"sum_sent":{"bytes":2000,"seconds":1.0,"bits_per_second":16000,"retransmits":3},
            "sum_received":{"bytes":1500000000,"seconds":2.0,"bits_per_second":6.0e9}}}"#;
        let r = parse_iperf_tcp(json).unwrap();
        assert_eq!(r.bytes, 1_500_000_000);
        assert_eq!(r.retransmits, 3);
        assert!((r.gbps - 6.0).abs() < 1e-9);
    }

    #[test]
    fn udp_delivered_is_expected_minus_lost() {
        let json = r#"{"end":{"sum_sent":{"packets":206450,"seconds":1.0,"bytes":13212800},
            "sum_received":{"packets":206441,"lost_packets":148187,"seconds":1.045012,"bytes":3728256}}}"#;
        let r = parse_iperf_udp(json).unwrap();
        assert_eq!(r.delivered_packets, 58254);
        assert_eq!(r.delivered_bytes, 58254 * 64);
        assert!((r.delivered_pps - 58254.0 / 1.045012).abs() < 1e-6);
        assert!((r.sent_pps - 206450.0).abs() < 1e-6);
    }

    #[test]
    fn an_iperf_error_is_reported_as_such() {
        let e = parse_iperf_tcp(r#"{"error":"unable to connect to server: Connection refused"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Connection refused"), "{e}");
        assert!(parse_iperf_udp("not json").is_err());
    }
}
