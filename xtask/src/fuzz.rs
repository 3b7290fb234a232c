//! `cargo xtask fuzz --seconds N [--target T]`: every cargo-fuzz target in
//! `fuzz/` for a bounded time, one after the other, then a table.
//!
//! Only stable Rust exists on the build machines; cargo-fuzz needs `-Z`
//! flags (sanitizer, coverage passes), so this sets `RUSTC_BOOTSTRAP=1` for
//! the fuzz build only. cargo-fuzz itself is installed on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Options for `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Run only the targets whose name contains this string.
    #[arg(long)]
    target: Option<String>,
    /// Sanitizer to build with (address, none, ...), as `cargo fuzz run --sanitizer`.
    #[arg(long, default_value = "address")]
    sanitizer: String,
}

/// One target's outcome.
struct Outcome {
    target: String,
    runs: Option<u64>,
    seconds: f64,
    crashed: bool,
    detail: String,
}

fn repo_root() -> PathBuf {
    // xtask lives one level below the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new(cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("xtask fuzz: cargo-fuzz is missing, installing it with `cargo install cargo-fuzz`");
    let status = Command::new(cargo())
        .args(["install", "--locked", "cargo-fuzz"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

fn list_targets(root: &Path) -> Result<Vec<String>> {
    let out = Command::new(cargo())
        .args(["fuzz", "list"])
        .current_dir(root)
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// libFuzzer ends a clean run with "Done N runs in S second(s)".
fn parse_runs(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        let rest = l.trim().strip_prefix("Done ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn run_target(root: &Path, target: &str, args: &FuzzArgs) -> Result<Outcome> {
    println!("==> fuzz {target} for {} s", args.seconds);
    let start = Instant::now();
    let out = Command::new(cargo())
        .args(["fuzz", "run", "--sanitizer", &args.sanitizer, target, "--"])
        .arg(format!("-max_total_time={}", args.seconds))
        .arg("-print_final_stats=1")
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting cargo fuzz run {target}"))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let crashed = !out.status.success();
    let detail = if crashed {
        // The build error or the crash report, and where libFuzzer saved the input.
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    } else {
        String::new()
    };
    Ok(Outcome {
        target: target.to_string(),
        runs: parse_runs(&log),
        seconds: start.elapsed().as_secs_f64(),
        crashed,
        detail,
    })
}

/// Runs every fuzz target for the given time; fails if any crashed or failed to build.
pub fn run(args: &FuzzArgs) -> Result<()> {
    let root = repo_root();
    ensure_cargo_fuzz()?;
    let mut targets = list_targets(&root)?;
    if let Some(filter) = &args.target {
        targets.retain(|t| t.contains(filter.as_str()));
        if targets.is_empty() {
            bail!("no fuzz target matches {filter:?}");
        }
    }
    let mut outcomes = Vec::new();
    for t in &targets {
        let o = run_target(&root, t, args)?;
        if o.crashed {
            eprintln!("{}", o.detail);
        }
        outcomes.push(o);
    }
    println!(
        "{:<20} {:>12} {:>10} {:>9}  result",
        "target", "runs", "runs/s", "seconds"
    );
    for o in &outcomes {
        let runs = o.runs.map_or_else(|| "-".to_string(), |r| r.to_string());
        let rate = o.runs.map_or_else(
            || "-".to_string(),
            |r| format!("{:.0}", r as f64 / args.seconds.max(1) as f64),
        );
        let result = if o.crashed { "CRASH/FAIL" } else { "ok" };
        println!(
            "{:<20} {:>12} {:>10} {:>9.1}  {result}",
            o.target, runs, rate, o.seconds
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs saved under fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parses_libfuzzer_done_line() {
        let log =
            "#123 pulse\nDone 45678 runs in 15 second(s)\nstat::number_of_executed_units: 45678\n";
        assert_eq!(parse_runs(log), Some(45678));
        assert_eq!(parse_runs("==1==ERROR: AddressSanitizer"), None);
    }
}
