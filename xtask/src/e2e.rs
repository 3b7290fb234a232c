//! `cargo xtask e2e`: two sites in namespaces with a tunnel between them,
//! checked as a network engineer would before trusting it.
//!
//! Each site is a LAN host namespace cabled into a bridge in its gateway's
//! namespace; the gateways are joined by a WAN veth pair and run ringtun
//! (or a real peer: wireguard-go, boringtun, the kernel's vxlan device).
//! Topologies: `xtask/topologies/two-sites-l3.toml` (wireguard mode) and
//! `two-sites-l2.toml` (vxlan mode), built with the netctl library.
//!
//! Rows: reachability, bulk TCP with SHA-256 at both ends, UDP bursts,
//! packet and frame sizes, restarts mid-transfer, a lossy WAN (a userspace
//! relay: [`relay`]), hostile input including a flood of handshake
//! initiations with a valid MAC1 ([`hostile`]), offloads on and off (and
//! whether they engage, from ringtun's own counters: [`offloads`]), the
//! interop matrix, and ringtun driven by the WireGuard tools, wg-quick
//! and an exporter over its configuration socket ([`uapi`], in a
//! three-site lab). Output: one row per check and
//! `N passed, N failed, N skipped`; non-zero exit on any failure.
//!
//! `cargo xtask soak` ([`soak`]) runs in the same lab with the same
//! guards: ringtun on both gateways for minutes, across rekeys.
//!
//! Everything made is removed at the end, also on failure, on panic and
//! on Ctrl-C / SIGTERM (a second one exits at once); daemons die with the
//! harness (`PR_SET_PDEATHSIG`), and labs left by a harness that was
//! killed outright are removed by the next run.

mod checks;
mod first_packet;
mod frr;
mod ha;
mod hostile;
mod lab;
mod offloads;
mod pair;
mod probe;
mod relay;
mod rows;
mod seed;
mod service;
pub mod soak;
mod spread;
mod storm;
mod table;
mod uapi;
mod vxlan;
mod wireguard;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};
use ringtun_tests::ringtun::LabDir;

use crate::peers::{Userspace, UserspacePeer};

use checks::{Ctx, Options};
use relay::SplitMix64;
use table::Table;

/// Which tunnel modes to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeFilter {
    /// WireGuard (TUN, L3).
    Wireguard,
    /// VXLAN (TAP, L2).
    Vxlan,
    /// Two gateways per site under FRR (BGP, BFD, ECMP), wireguard mode.
    Ha,
    /// Every mode, and the netctl seed scenario.
    All,
}

/// Who sits on the other gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerFilter {
    /// ringtun on both gateways.
    Ringtun,
    /// wireguard-go against ringtun.
    WireguardGo,
    /// boringtun against ringtun.
    Boringtun,
    /// gotatun against ringtun.
    Gotatun,
    /// The kernel's vxlan device against ringtun.
    Kernel,
    /// Every one.
    All,
}

impl PeerFilter {
    fn admits(self, name: &str) -> bool {
        match self {
            PeerFilter::All => true,
            PeerFilter::Ringtun => name == "ringtun",
            PeerFilter::WireguardGo => name == "wireguard-go",
            PeerFilter::Boringtun => name == "boringtun",
            PeerFilter::Gotatun => name == "gotatun",
            PeerFilter::Kernel => name == "kernel",
        }
    }
}

/// Options for `cargo xtask e2e`.
#[derive(clap::Args, Debug)]
pub struct E2eArgs {
    /// Run only the checks whose "MODE PEER CHECK" contains PATTERN
    /// (case-insensitive), e.g. `seed`, `bulk`, `wireguard ringtun hostile`.
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
    /// Tunnel mode(s) to run.
    #[arg(long, value_enum, default_value_t = ModeFilter::All)]
    mode: ModeFilter,
    /// Peer(s) on the other gateway.
    #[arg(long, value_enum, default_value_t = PeerFilter::All)]
    peer: PeerFilter,
    /// Bytes per bulk TCP transfer, each way (suffixes K, M, G: KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    bulk_size: u64,
    /// Leave the labs up for inspection and print how to enter them.
    #[arg(long)]
    keep: bool,
    /// Do not install missing peers (their rows are skipped; a failure under CI).
    #[arg(long)]
    no_install: bool,
    /// Data-plane workers per ringtun (default: its config's, one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Seed of the random payloads, hostile input and relay dice.
    #[arg(long)]
    seed: Option<u64>,
    /// The ringtun binary to test (default: build it with `--release`).
    #[arg(long, value_name = "PATH")]
    ringtun: Option<PathBuf>,
}

/// `1G`, `64M`, `512K`, `1000` (bytes), binary units.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let mult: u64 = match unit.as_str() {
                "K" | "KB" | "KIB" => 1 << 10,
                "M" | "MB" | "MIB" => 1 << 20,
                "G" | "GB" | "GIB" => 1 << 30,
                _ => {
                    return Err(format!(
                        "unknown unit {:?} in {s:?} (use K, M or G)",
                        &t[i..]
                    ));
                }
            };
            (&t[..i], mult)
        }
        None => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a size: {e}"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?}: the size must be between 1 byte and 2^64")),
        Some(v) => Ok(v),
    }
}

/// What a run in the two-site labs starts from, `e2e`'s or `soak`'s: the
/// ringtun binary (built unless given), the stop flag, the host's links
/// before anything was made, the seed.
struct Start {
    ringtun: PathBuf,
    stop: Arc<AtomicBool>,
    links_before: Vec<String>,
    seed: u64,
}

/// Requires root, builds ringtun (unless `ringtun` names one), installs
/// the signal handlers, removes the labs of runs that were killed, picks
/// the seed. `who` names the command in what it prints.
fn start(who: &str, ringtun: Option<&PathBuf>, seed: Option<u64>) -> Result<Start> {
    crate::setup::require_root(who)?;
    // The binary first, while this process has one thread (see below).
    let ringtun = match ringtun {
        Some(p) => p.clone(),
        None => {
            let [ringtun] = crate::setup::build_release(who, [("dataplane", "ringtun")])?;
            ringtun
        }
    };
    // SAFETY: no other thread exists yet (nothing has been spawned; signal
    // handlers are installed below), so nothing reads the environment
    // concurrently. ringtun-tests finds the binary through RINGTUN_BIN.
    unsafe { std::env::set_var("RINGTUN_BIN", &ringtun) };

    // First Ctrl-C: finish the current step, clean up, exit non-zero.
    // A second one: exit at once.
    let stop = crate::setup::stop_flag()?;

    for name in crate::labs::remove_stale(lab::NETNS_TAG)? {
        println!("{who}: removed {name}, left by an earlier run that was killed");
    }
    let links_before = lab::host_links()?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    Ok(Start {
        ringtun,
        stop,
        links_before,
        seed,
    })
}

/// Runs the end-to-end checks.
pub fn run(args: &E2eArgs) -> Result<()> {
    let started = Instant::now();
    let Start {
        ringtun,
        stop,
        links_before,
        seed,
    } = start("e2e", args.ringtun.as_ref(), args.seed)?;
    println!(
        "e2e: ringtun {}, bulk {} each way, seed {seed} (repeat with --seed {seed})",
        ringtun.display(),
        checks::human(args.bulk_size)
    );
    let mut ctx = Ctx {
        table: Table::new(),
        stop: stop.clone(),
        opts: Options {
            bulk_size: args.bulk_size,
            only: args.only.clone(),
            workers: args.workers,
            keep: args.keep,
            install: !args.no_install,
        },
        dir: LabDir::new("e2e")?,
        rng: SplitMix64(seed),
    };
    let build_dir = crate::setup::target_dir()?.join("e2e-peers");
    let peer_filter = |name: &str| args.peer.admits(name);

    let mut phase_error = None;
    let mut phase = |name: &str, ctx: &mut Ctx, f: &dyn Fn(&mut Ctx) -> Result<()>| {
        if phase_error.is_some() {
            return;
        }
        let result = f(ctx);
        ctx.table.set_diagnostics(None);
        if let Err(e) = result {
            ctx.table.context("-", "-");
            ctx.table
                .fail(format!("{name}: could not go on"), format!("{e:#}"));
            if stop.load(Ordering::Relaxed) {
                phase_error = Some(e);
            }
        }
    };
    if args.mode == ModeFilter::All && args.peer == PeerFilter::All {
        phase("seed", &mut ctx, &|ctx| seed::run(ctx));
    }
    if matches!(args.mode, ModeFilter::All | ModeFilter::Wireguard) {
        phase("wireguard", &mut ctx, &|ctx| {
            wireguard::run(ctx, &peer_filter, &build_dir)
        });
    }
    if matches!(args.mode, ModeFilter::All | ModeFilter::Vxlan) {
        phase("vxlan", &mut ctx, &|ctx| {
            vxlan::run(ctx, &|n| peer_filter(n))
        });
    }
    if matches!(args.mode, ModeFilter::All | ModeFilter::Ha) && peer_filter("ringtun") {
        phase("ha", &mut ctx, &|ctx| ha::run(ctx));
    }

    // Nothing may be left behind: a row of its own.
    ctx.table.context("-", "-");
    let Ctx { mut table, dir, .. } = ctx;
    drop(dir);
    if args.keep {
        table.push(
            "cleanup",
            table::Outcome::Skipped("--keep: the labs are left up".into()),
            "",
        );
    } else {
        cleanup_row(&mut table, &links_before)?;
    }
    println!("\n{}", table.render());
    println!("e2e: {:.0} s in all", started.elapsed().as_secs_f64());
    if let Some(e) = phase_error {
        return Err(e);
    }
    let (_, failed, _) = table.counts();
    if failed > 0 {
        bail!("{failed} e2e check(s) failed");
    }
    Ok(())
}

/// The row that says nothing was left: no namespace of this run, no child
/// process, no new link in the harness's own namespace, no UAPI socket.
fn cleanup_row(table: &mut Table, links_before: &[String]) -> Result<()> {
    // Namespaces are deleted by the labs' guards; children were reaped by
    // theirs. Give exiting processes a moment.
    let ours = lab::harness_link_names()?;
    let mut left = Vec::new();
    let mut others = Vec::new();
    for _ in 0..50 {
        left.clear();
        left.extend(
            crate::labs::our_namespaces(lab::NETNS_TAG)?
                .into_iter()
                .map(|n| format!("namespace {n}")),
        );
        left.extend(
            lab::live_children()
                .into_iter()
                .map(|c| format!("process {c}")),
        );
        // Only names the harness uses: other programs on a shared host
        // may add links of their own meanwhile.
        others.clear();
        for link in lab::host_links()? {
            if links_before.contains(&link) {
                continue;
            }
            if ours.contains(&link) {
                left.push(format!("host link {link}"));
            } else {
                others.push(link);
            }
        }
        // The userspace peers' sockets, by their exact names: another
        // run's names may end in the same digits.
        for kind in Userspace::ALL {
            let socket = format!(
                "/var/run/wireguard/{}.sock",
                UserspacePeer::iface_name(kind)
            );
            if std::path::Path::new(&socket).exists() {
                left.push(format!("socket {socket}"));
            }
        }
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let not_ours = if others.is_empty() {
        String::new()
    } else {
        format!(
            " (new host links of other programs, not counted: {})",
            others.join(", ")
        )
    };
    table.check(
        "cleanup: no namespace, link, process or socket left behind",
        left.is_empty(),
        if left.is_empty() {
            format!("checked namespaces, child processes, host links, UAPI sockets{not_ours}")
        } else {
            format!("left: {}{not_ours}", left.join(", "))
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units_and_nonsense_is_refused() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1T").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn peer_filter_admits_its_own_rows() {
        assert!(PeerFilter::All.admits("boringtun"));
        assert!(PeerFilter::Kernel.admits("kernel"));
        assert!(!PeerFilter::Ringtun.admits("wireguard-go"));
    }
}
