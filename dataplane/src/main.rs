//! `ringtun`: the site-to-site tunnel daemon and its tools.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dataplane::daemon;
use dataplane::uapi::{client, socket};
use tunnel_proto::{PresharedKey, PrivateKey};

/// A userspace site-to-site tunnel: WireGuard-compatible (L3) or VXLAN (L2),
/// with a per-core io_uring data plane.
///
/// `ringtun [-f] IFACE` starts an interface with no configuration, as
/// `wireguard-go [-f] IFACE` does, to be configured with `wg` or wg-quick
/// (`WG_QUICK_USERSPACE_IMPLEMENTATION=ringtun`). It goes to the background
/// once the interface is up, unless `-f` or `WG_PROCESS_FOREGROUND=1`.
/// ringtun's own settings then come from the environment:
/// `RINGTUN_WORKERS=N`, `RINGTUN_OFFLOAD=off`, `RINGTUN_UAPI_DIR=DIR`,
/// `RINGTUN_METRICS_LISTEN=ADDRESS:PORT`.
#[derive(Parser)]
#[command(
    name = "ringtun",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Stay in the foreground (with an interface name).
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Start an interface with no configuration, as `wireguard-go IFACE`.
    iface: Option<String>,
}

/// How long a backgrounding `ringtun IFACE` waits for its daemon to be up.
const BACKGROUND_READY_TIMEOUT: Duration = Duration::from_secs(30);

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
        /// Pin worker i to CPU i. By default the scheduler places workers:
        /// pinned, two busy workers (this instance's, or this one's and
        /// another busy thread's) can be stuck on one core while another
        /// idles, and which flows meet on a core is decided by hashes at
        /// start, so throughput and latency change from one start to the
        /// next. Pinning pays on a machine whose other work is kept off
        /// the workers' cores.
        #[arg(long)]
        pin: bool,
        /// The default (workers are not pinned); accepted so that scripts
        /// that asked for it keep working.
        #[arg(long, hide = true, conflicts_with = "pin")]
        no_pin: bool,
        /// Hand each packet to the worker pinned to the CPU it appeared on
        /// (eBPF queue steering on the device, CPU-indexed SO_REUSEPORT on
        /// the sockets). Fewer cross-CPU wake-ups, so lower latency; but on
        /// a machine that hosts both ends it puts a flow's sealing and
        /// opening on one CPU. Needs CPUs 0..N; pins the workers.
        #[arg(long)]
        cpu_steering: bool,
        /// The CPU time slice each worker asks the scheduler for, in
        /// microseconds: 100 to 100000, or 0 to keep the kernel's own
        /// (its base slice times a factor of the CPU count). A short slice
        /// lets a worker run soon after a packet wakes it, with the same
        /// share of the CPU (EEVDF, Linux 6.12 and later; older kernels
        /// ignore it).
        #[arg(long, value_name = "US", value_parser = parse_slice_us,
              default_value_t = dataplane::worker::time_slice::DEFAULT_SLICE.as_micros() as u64)]
        worker_slice_us: u64,
        /// Whether a worker that has run 200 µs without sleeping lets
        /// threads woken on its CPU (another worker, the applications whose
        /// packets it carries) run first. Off, on a kernel without full
        /// preemption, they can wait up to a scheduler tick behind it.
        #[arg(long, value_name = "on|off", default_value = "on", action = clap::ArgAction::Set,
              value_parser = clap::builder::BoolishValueParser::new())]
        worker_yield: bool,
        /// Put the configuration socket under DIR instead of /var/run (for
        /// several instances with one interface name in different network
        /// namespaces of a host); also `RINGTUN_UAPI_DIR`.
        #[arg(long, value_name = "DIR")]
        uapi_dir: Option<PathBuf>,
        /// Serve `GET /metrics` (Prometheus) on ADDRESS:PORT, instead of
        /// the file's `MetricsListen`.
        #[arg(long, value_name = "ADDRESS:PORT")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Ask the instance serving IFACE to stop.
    Down {
        /// Interface name.
        iface: String,
    },
    /// Ask the instance serving IFACE to read its file again and apply
    /// the difference (as SIGHUP): peers as `wg syncconf` would change
    /// them, sessions kept where keys did not change, routes following
    /// AllowedIPs. The file is checked here first, so that a mistake is
    /// named by file, line and key, and changes nothing.
    Reload {
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
    let result = match (cli.command, cli.iface) {
        (Some(cmd), _) => run(cmd),
        (None, Some(iface)) => bare(&iface, cli.foreground),
        (None, None) => {
            eprintln!("ringtun: give a command (see --help) or an interface name to start bare");
            return ExitCode::from(2);
        }
    };
    match result {
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

/// `--worker-slice-us`: 0, or what the kernel grants.
fn parse_slice_us(s: &str) -> std::result::Result<u64, String> {
    let us: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of microseconds"))?;
    let (min, max) = (
        dataplane::worker::time_slice::MIN_SLICE.as_micros() as u64,
        dataplane::worker::time_slice::MAX_SLICE.as_micros() as u64,
    );
    if us == 0 || (min..=max).contains(&us) {
        Ok(us)
    } else {
        Err(format!(
            "{us} µs: the kernel grants slices of {min} to {max} µs (0 keeps its own)"
        ))
    }
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Up {
            config,
            name,
            workers,
            no_offload,
            read_mode,
            pin,
            no_pin: _,
            cpu_steering,
            worker_slice_us,
            worker_yield,
            uapi_dir,
            metrics_listen,
        } => daemon::up(&daemon::UpOptions {
            worker_slice: (worker_slice_us > 0).then(|| Duration::from_micros(worker_slice_us)),
            worker_yield,
            metrics_listen,
            pin: pin || cpu_steering,
            cpu_steering,
            uapi_dir: uapi_dir.or_else(socket::base_from_env),
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
        Command::Down { iface } => Ok(client::down(&iface)?),
        Command::Reload { iface } => {
            let st = client::show(&iface)?;
            let Some(file) = st.config else {
                bail!(
                    "{iface} was started bare (configured with wg or wg-quick): there is no file to read again"
                );
            };
            let (_, warnings) = dataplane::config::Config::from_file_named(&file, &iface)
                .map_err(anyhow::Error::new)?;
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            client::reload(&iface).with_context(|| {
                format!("{iface} refused {file}; its log says why, and nothing changed")
            })
        }
        Command::Show { iface, json } => {
            let statuses = match iface {
                Some(i) => vec![client::show(&i)?],
                // Every socket that answers as ringtun (wireguard-go's
                // sockets sit in the same directory).
                None => client::interfaces()
                    .iter()
                    .filter_map(|i| client::show(i).ok())
                    .collect(),
            };
            if statuses.is_empty() {
                bail!("no ringtun instance runs on this host");
            }
            for (n, st) in statuses.iter().enumerate() {
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

/// `ringtun [-f] IFACE`: in the foreground, the daemon itself; else a copy
/// of this program in the background, returning once it is up (so that
/// wg-quick's next step, `wg setconf`, finds the socket).
fn bare(iface: &str, foreground: bool) -> Result<()> {
    let env_on = |k: &str| std::env::var(k).is_ok_and(|v| v == "1");
    let workers = match std::env::var("RINGTUN_WORKERS") {
        Ok(v) => Some(
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| {
                    format!("RINGTUN_WORKERS={v:?} is not a worker count (1 or more)")
                })?,
        ),
        Err(_) => None,
    };
    let no_offload = match std::env::var("RINGTUN_OFFLOAD").as_deref() {
        Ok("off") => true,
        Ok("on") | Err(_) => false,
        Ok(other) => bail!("RINGTUN_OFFLOAD={other:?} is neither on nor off"),
    };
    let metrics_listen = match std::env::var("RINGTUN_METRICS_LISTEN") {
        Ok(v) => Some(v.parse::<std::net::SocketAddr>().with_context(|| {
            format!("RINGTUN_METRICS_LISTEN={v:?} is not an ADDRESS:PORT to serve /metrics on")
        })?),
        Err(_) => None,
    };
    if foreground || env_on("WG_PROCESS_FOREGROUND") {
        if env_on("RINGTUN_DETACHED") {
            // Backgrounded by `bare` below: away from the terminal's session.
            let _ = nix::unistd::setsid();
        }
        return daemon::bare(&daemon::BareOptions {
            name: iface.to_string(),
            workers,
            no_offload,
            uapi_dir: socket::base_from_env(),
            metrics_listen,
        });
    }
    let exe =
        std::env::current_exe().context("finding this program to start it in the background")?;
    let mut child = std::process::Command::new(exe)
        .arg(iface)
        .env("WG_PROCESS_FOREGROUND", "1")
        .env("RINGTUN_DETACHED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ringtun in the background")?;
    let Some(stderr) = child.stderr.take() else {
        bail!("the background ringtun has no stderr to say when it is up");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let want = format!("ready: {iface}");
    let deadline = Instant::now() + BACKGROUND_READY_TIMEOUT;
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.trim() == want => return Ok(()),
            Ok(line) => said.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "ringtun {iface} was not up within {BACKGROUND_READY_TIMEOUT:?}:\n{}",
                    said.join("\n")
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().context("waiting for the background ringtun")?;
                bail!("ringtun {iface} stopped ({status}):\n{}", said.join("\n"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(args: &[&str]) -> std::result::Result<Command, clap::Error> {
        let argv = ["ringtun", "up", "rt0.conf"].iter().chain(args);
        Cli::try_parse_from(argv).map(|c| c.command.expect("a subcommand"))
    }

    #[test]
    fn workers_give_way_unless_told_not_to() {
        let yields = |args: &[&str]| match up(args) {
            Ok(Command::Up { worker_yield, .. }) => Ok(worker_yield),
            Ok(_) => panic!("not `up`"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(yields(&[]), Ok(true));
        assert_eq!(yields(&["--worker-yield", "off"]), Ok(false));
        assert_eq!(yields(&["--worker-yield=on"]), Ok(true));
        assert_eq!(
            yields(&["--worker-yield", "sometimes"]),
            Err(clap::error::ErrorKind::ValueValidation)
        );
    }
}
