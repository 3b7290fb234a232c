//! `rt-pingpong`: ringtun's UDP latency probe.
//!
//! ```text
//! rt-pingpong server --listen 0.0.0.0:7777
//! rt-pingpong client --target 10.99.0.2:7777 --duration-ms 5000 --interval-us 1000 --json
//! ```
//!
//! The server prints `listening ADDR` once bound and echoes until killed.
//! The client prints a summary, or with `--json` one line of
//! [`bench::probe::ProbeReport`].

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use bench::probe::{self, ClientOptions};
use clap::{Parser, Subcommand};

/// UDP ping-pong latency probe: every round trip into an hdrhistogram.
#[derive(Parser)]
#[command(name = "rt-pingpong", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo probes back to their sender until killed.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:7777")]
        listen: SocketAddr,
    },
    /// Send probes one at a time and report the round-trip distribution.
    Client {
        /// The echo server.
        #[arg(long)]
        target: SocketAddr,
        /// How long to probe, milliseconds (after the warm-up).
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        /// One probe every this many microseconds.
        #[arg(long, default_value_t = 1000)]
        interval_us: u64,
        /// UDP payload bytes per probe.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// A probe unanswered for this long is lost, milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Probes sent first and not recorded.
        #[arg(long, default_value_t = 20)]
        warmup: u32,
        /// Print the report as one line of JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Server { listen } => {
            let sock = UdpSocket::bind(listen).with_context(|| format!("binding {listen}"))?;
            let addr = sock.local_addr().context("reading the bound address")?;
            println!("listening {addr}");
            // Killed by its parent when done; the flag is for in-process use.
            let never = AtomicBool::new(false);
            probe::serve(&sock, &never)?;
            Ok(())
        }
        Cmd::Client {
            target,
            duration_ms,
            interval_us,
            size,
            timeout_ms,
            warmup,
            json,
        } => {
            let opts = ClientOptions {
                target,
                duration: Duration::from_millis(duration_ms),
                interval: Duration::from_micros(interval_us),
                size,
                timeout: Duration::from_millis(timeout_ms),
                warmup,
            };
            let r = probe::run_client(&opts)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&r).context("serialising the report")?
                );
            } else {
                let us = |ns: u64| ns as f64 / 1000.0;
                println!(
                    "{} sent, {} received, {} lost, {} late; round trip µs: min {:.1} p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
                    r.sent,
                    r.received,
                    r.lost,
                    r.late,
                    us(r.min_ns),
                    us(r.p50_ns),
                    us(r.p90_ns),
                    us(r.p99_ns),
                    us(r.p999_ns),
                    us(r.max_ns)
                );
            }
            Ok(())
        }
    }
}
