//! What `e2e` and `bench` do before their first namespace: refuse to run
//! without root, build the binaries they drive with `--release`, and turn
//! SIGINT/SIGTERM into a flag the run looks at between steps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};

/// An error unless this process is root: `command` (`e2e`, `bench`) makes
/// namespaces, veth pairs and TUN/TAP devices.
pub fn require_root(command: &str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    bail!(
        "{command} needs root (namespaces, veth, TUN/TAP): run `sudo -E cargo xtask {command}`{}",
        if std::env::var_os("CI").is_some() {
            "; CI is set, and under CI a skip is a failure"
        } else {
            ""
        }
    );
}

/// A flag set by the first SIGINT or SIGTERM, so that the run can finish
/// its step and clean up; a second signal exits at once (status 130).
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    Ok(stop)
}

/// The repository's root.
pub fn repo_root() -> Result<PathBuf> {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("the repository root")
}

/// The target directory this xtask was built in (`TARGET/debug/xtask`).
pub fn target_dir() -> Result<PathBuf> {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(t));
    }
    let exe = std::env::current_exe().context("finding the xtask executable")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the xtask executable has no target directory")
}

/// Builds each `(package, binary)` with `--release` (a debug build's
/// figures say nothing) in xtask's own target directory, saying so as
/// `who: building ...`, and returns their paths in the same order.
pub fn build_release<const N: usize>(who: &str, bins: [(&str, &str); N]) -> Result<[PathBuf; N]> {
    let target = target_dir()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let names = bins.map(|(_, bin)| bin).join(" and ");
    let selection: Vec<&str> = bins
        .iter()
        .flat_map(|(package, bin)| ["-p", package, "--bin", bin])
        .collect();
    println!("{who}: building {names} (release) in {}", target.display());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .args(&selection)
        .arg("--manifest-path")
        .arg(repo_root()?.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .with_context(|| format!("running cargo build for {names}"))?;
    if !status.success() {
        bail!(
            "cargo build --release {} failed ({status})",
            selection.join(" ")
        );
    }
    let paths = bins.map(|(_, bin)| target.join("release").join(bin));
    for ((_, bin), path) in bins.iter().zip(&paths) {
        if !path.is_file() {
            bail!("cargo built {bin}, but {} does not exist", path.display());
        }
    }
    Ok(paths)
}
