//! `cargo xtask fuzz --seconds N [--target T] [--jobs N]`: every cargo-fuzz
//! target in `fuzz/` for a bounded time, `--jobs` of them at a time, then a
//! table in target order.
//!
//! Each target starts from its committed corpus, `fuzz/corpus/<target>/`
//! (cargo-fuzz's default), and adds what it finds there.
//!
//! Only stable Rust exists on the build machines; cargo-fuzz needs `-Z`
//! flags (sanitizer, coverage passes), so this sets `RUSTC_BOOTSTRAP=1` for
//! the fuzz build only. cargo-fuzz itself is installed on first use.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Targets fuzzed at a time, each its own `cargo fuzz run` (one core each).
    #[arg(long, default_value = "1")]
    jobs: NonZeroUsize,
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

/// The last `lines` lines of a log: a build error or a crash report ends there.
fn tail(log: &str, lines: usize) -> String {
    let mut tail: Vec<&str> = log.lines().rev().take(lines).collect();
    tail.reverse();
    tail.join("\n")
}

/// Builds the targets once, before any run: parallel `cargo fuzz run`s would
/// otherwise each start the same build and wait on one another's lock.
/// `None` builds every target in one cargo call.
fn build_targets(root: &Path, targets: Option<&[String]>, args: &FuzzArgs) -> Result<()> {
    let builds: Vec<Option<&str>> = match targets {
        None => vec![None],
        Some(ts) => ts.iter().map(|t| Some(t.as_str())).collect(),
    };
    for target in builds {
        println!(
            "==> cargo fuzz build {} (sanitizer {})",
            target.unwrap_or("(every target)"),
            args.sanitizer
        );
        let out = Command::new(cargo())
            .args(["fuzz", "build", "--sanitizer", &args.sanitizer])
            .args(target)
            .current_dir(root)
            .env("RUSTC_BOOTSTRAP", "1")
            .output()
            .context("running cargo fuzz build")?;
        if !out.status.success() {
            bail!(
                "cargo fuzz build failed ({}):\n{}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr), 40)
            );
        }
    }
    Ok(())
}

/// Calls `work` on every item, at most `jobs` at a time, and returns the
/// results in the items' order whatever order they finish in.
fn run_pool<T: Sync, R: Send>(
    items: &[T],
    jobs: NonZeroUsize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    // Each worker keeps what it did with the item's index; sorting puts
    // them back in the items' order.
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.get().min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, work(item)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn run_target(root: &Path, target: &str, args: &FuzzArgs) -> Result<Outcome> {
    println!("==> fuzz {target} for {} s", args.seconds);
    let start = Instant::now();
    let out = Command::new(cargo())
        .args(["fuzz", "run", "--sanitizer", &args.sanitizer, target, "--"])
        .arg(format!("-max_total_time={}", args.seconds))
        // Comparisons count as coverage too: the parsers gate on type
        // bytes, lengths and reserved fields, which plain edge coverage
        // reaches only by luck; the committed corpora are kept with it.
        .arg("-use_value_profile=1")
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
        // The crash report, and where libFuzzer saved the input.
        tail(&log, 40)
    } else {
        String::new()
    };
    println!(
        "<== fuzz {target}: {} in {:.1} s",
        if crashed { "CRASH/FAIL" } else { "ok" },
        start.elapsed().as_secs_f64()
    );
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
    build_targets(
        &root,
        args.target.as_ref().map(|_| targets.as_slice()),
        args,
    )?;
    let outcomes = run_pool(&targets, args.jobs, |t| {
        let o = run_target(&root, t, args);
        if let Ok(o) = &o
            && o.crashed
        {
            // One call, so a report is not interleaved with another target's lines.
            eprintln!("--- {t} ---\n{}", o.detail);
        }
        o
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    print!("{}", table(&outcomes, args.seconds));
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

/// The summary, one row per target in the order given.
fn table(outcomes: &[Outcome], seconds: u64) -> String {
    let mut out = format!(
        "{:<20} {:>12} {:>10} {:>9}  result\n",
        "target", "runs", "runs/s", "seconds"
    );
    for o in outcomes {
        let runs = o.runs.map_or_else(|| "-".to_string(), |r| r.to_string());
        let rate = o.runs.map_or_else(
            || "-".to_string(),
            |r| format!("{:.0}", r as f64 / seconds.max(1) as f64),
        );
        let result = if o.crashed { "CRASH/FAIL" } else { "ok" };
        out.push_str(&format!(
            "{:<20} {:>12} {:>10} {:>9.1}  {result}\n",
            o.target, runs, rate, o.seconds
        ));
    }
    out
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

    #[test]
    fn pool_returns_results_in_item_order_and_runs_at_most_jobs_at_once() {
        use std::time::Duration;
        let items: Vec<u64> = (0..6).collect();
        for jobs in [1, 2, 4] {
            let running = AtomicUsize::new(0);
            let most = AtomicUsize::new(0);
            let results = run_pool(&items, NonZeroUsize::new(jobs).unwrap(), |&i| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Earlier items take longer, so they finish last.
                std::thread::sleep(Duration::from_millis(10 * (6 - i)));
                running.fetch_sub(1, Ordering::SeqCst);
                i * 10
            });
            assert_eq!(
                results,
                vec![0, 10, 20, 30, 40, 50],
                "jobs {jobs}: results out of item order"
            );
            let most = most.load(Ordering::SeqCst);
            assert_eq!(most, jobs, "jobs {jobs}: {most} items ran at once");
        }
    }

    #[test]
    fn jobs_defaults_to_one_and_refuses_zero() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            fuzz: FuzzArgs,
        }
        let cli = Cli::try_parse_from(["fuzz", "--seconds", "5"]).expect("no --jobs parses");
        assert_eq!(cli.fuzz.jobs.get(), 1);
        let cli = Cli::try_parse_from(["fuzz", "--jobs", "2"]).expect("--jobs 2 parses");
        assert_eq!(cli.fuzz.jobs.get(), 2);
        assert!(
            Cli::try_parse_from(["fuzz", "--jobs", "0"]).is_err(),
            "--jobs 0 was accepted"
        );
    }

    #[test]
    fn table_lists_targets_in_the_order_given() {
        let outcome = |target: &str, runs, crashed| Outcome {
            target: target.to_string(),
            runs,
            seconds: 10.04,
            crashed,
            detail: String::new(),
        };
        let table = table(
            &[
                outcome("wg_messages", Some(1000), false),
                outcome("inner_ip", None, true),
            ],
            10,
        );
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec!["target", "runs", "runs/s", "seconds", "result"],
                vec!["wg_messages", "1000", "100", "10.0", "ok"],
                vec!["inner_ip", "-", "-", "10.0", "CRASH/FAIL"],
            ],
            "table was:\n{table}"
        );
    }
}
