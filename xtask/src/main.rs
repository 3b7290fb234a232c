//! `cargo xtask`: the project's harness. `ci` runs the whole CI sequence,
//! `e2e` the two-site end-to-end check, `bench` the measurements, `fuzz`
//! the fuzz targets, `soak` a long run of ringtun across rekeys.
//!
//! What `e2e` and `bench` both do lives beside them, once: [`setup`]
//! (root, release builds, the stop flag), [`labs`] (topologies under a
//! per-run prefix), [`process`] (programs inside a namespace) and
//! [`peers`] (wireguard-go, boringtun, the kernel's vxlan device).

mod bench;
mod ci;
mod e2e;
mod fuzz;
mod labs;
mod peers;
mod process;
mod setup;

use clap::{Parser, Subcommand};

/// ringtun's build, test and measurement harness.
#[derive(Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole CI sequence (fmt, clippy, tests, e2e, ...), each stage timed.
    Ci(ci::CiArgs),
    /// Build two sites in namespaces, run the tunnel between them, report.
    E2e(e2e::E2eArgs),
    /// Measure ringtun against raw veth, kernel VXLAN, wireguard-go and boringtun; write a report.
    Bench(bench::BenchArgs),
    /// Run every fuzz target for a bounded time (stable toolchain, RUSTC_BOOTSTRAP inside).
    Fuzz(fuzz::FuzzArgs),
    /// Run ringtun on both gateways for minutes, across rekeys: transfers intact,
    /// no stall at a rekey, no memory or descriptor growth (not part of `ci`).
    Soak(e2e::soak::SoakArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ci(args) => ci::run(&args),
        Command::E2e(args) => e2e::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Soak(args) => e2e::soak::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
