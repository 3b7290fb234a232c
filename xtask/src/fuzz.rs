//! `cargo xtask fuzz --seconds N`: every cargo-fuzz target for a bounded time.

use anyhow::{Result, bail};

/// Options for `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
}

/// Runs every fuzz target for the given time.
pub fn run(_args: &FuzzArgs) -> Result<()> {
    bail!("no fuzz targets yet (issue 3)")
}
