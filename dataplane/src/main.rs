//! `ringtun`: the site-to-site tunnel daemon and its tools.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dataplane::{ctlsock, daemon};
use tunnel_proto::{PresharedKey, PrivateKey};

/// A userspace site-to-site tunnel: WireGuard-compatible (L3) or VXLAN (L2),
/// with a per-core io_uring data plane.
#[derive(Parser)]
#[command(name = "ringtun", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring an interface up from a wg-quick style file and run in the foreground.
    ///
    /// Prints `ready: IFACE` on stderr once the interface is up; stops on
    /// SIGINT/SIGTERM or `ringtun down IFACE`, removing what it created.
    Up {
        /// The configuration file (`rt0.conf` makes interface `rt0`).
        config: PathBuf,
        /// Interface name instead of the file's stem.
        #[arg(long)]
        name: Option<String>,
        /// Number of data-plane workers (default: the file's `Workers`, else one per CPU).
        #[arg(long)]
        workers: Option<usize>,
        /// Turn TUN/TAP offloads and UDP GSO/GRO off.
        #[arg(long)]
        no_offload: bool,
        /// How workers read the device: `multishot` (one ReadMulti over a
        /// provided-buffer ring of transmit slots; the default) or `fixed`
        /// (three ReadFixed in flight; a wake-up that finds no data makes
        /// the kernel punt the read to an io-wq thread).
        #[arg(long, default_value = "multishot", value_parser = ["fixed", "multishot"])]
        read_mode: String,
        /// Do not pin workers to cores: the scheduler may then run a worker on
        /// the core that woke it, which avoids cross-core wake-ups (slow on
        /// some VMs) at the price of less predictable placement.
        #[arg(long)]
        no_pin: bool,
        /// Hand each packet to the worker pinned to the CPU it appeared on
        /// (eBPF queue steering on the device, CPU-indexed SO_REUSEPORT on
        /// the sockets). Fewer cross-CPU wake-ups, so lower latency; but on
        /// a machine that hosts both ends it puts a flow's sealing and
        /// opening on one CPU. Needs CPUs 0..N and pinned workers.
        #[arg(long)]
        cpu_steering: bool,
    },
    /// Ask the instance serving IFACE (in this network namespace) to stop.
    Down {
        /// Interface name.
        iface: String,
    },
    /// Show peers, traffic, per-worker counters and drops.
    Show {
        /// Interface name (default: every instance in this network namespace).
        iface: Option<String>,
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a new private key (base64), as `wg genkey`.
    Genkey,
    /// Print a new preshared key (base64), as `wg genpsk`.
    Genpsk,
    /// Read a private key on stdin, print its public key, as `wg pubkey`.
    Pubkey,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringtun: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_line(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").context("writing to stdout")
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Up {
            config,
            name,
            workers,
            no_offload,
            read_mode,
            no_pin,
            cpu_steering,
        } => daemon::up(&daemon::UpOptions {
            pin: !no_pin,
            cpu_steering,
            config,
            name,
            workers,
            no_offload,
            read_mode: if read_mode == "fixed" {
                dataplane::worker::ReadMode::Fixed
            } else {
                dataplane::worker::ReadMode::Multishot
            },
        }),
        Command::Down { iface } => Ok(ctlsock::down(&iface)?),
        Command::Show { iface, json } => {
            let ifaces = match iface {
                Some(i) => vec![i],
                None => ctlsock::running_interfaces(),
            };
            if ifaces.is_empty() {
                bail!("no ringtun instance runs in this network namespace");
            }
            for (n, i) in ifaces.iter().enumerate() {
                let st = ctlsock::show(i)?;
                if json {
                    print_line(&serde_json::to_string_pretty(&st)?)?;
                } else {
                    if n > 0 {
                        print_line("")?;
                    }
                    print!("{}", st.render());
                }
            }
            Ok(())
        }
        Command::Genkey => print_line(&PrivateKey::generate()?.to_base64()),
        Command::Genpsk => print_line(&PresharedKey::generate()?.to_base64()),
        Command::Pubkey => {
            let mut input = String::new();
            std::io::stdin()
                .take(1024)
                .read_to_string(&mut input)
                .context("reading the private key from stdin")?;
            let key = PrivateKey::from_base64(input.trim())
                .context("Key is not the correct length or format")?;
            print_line(&key.public_key().to_base64())
        }
    }
}
