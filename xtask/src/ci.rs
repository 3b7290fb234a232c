//! The CI sequence in one place, so `.ci/run` stays a few lines: every stage
//! is timed and printed, and the first failure stops the run.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Options for `cargo xtask ci`.
#[derive(clap::Args)]
pub struct CiArgs {
    /// Run only the stages whose name contains this string.
    #[arg(long)]
    only: Option<String>,
}

/// One CI stage: a name and the command line it runs.
struct Stage {
    name: &'static str,
    program: &'static str,
    args: Vec<String>,
}

fn stage(name: &'static str, program: &'static str, args: &[&str]) -> Stage {
    Stage {
        name,
        program,
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

fn stages() -> Vec<Stage> {
    vec![
        stage("fmt", "cargo", &["fmt", "--all", "--check"]),
        stage(
            "clippy",
            "cargo",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        stage("test", "cargo", &["test", "--workspace"]),
        stage("fuzz", "cargo", &["xtask", "fuzz", "--seconds", "15"]),
        stage("e2e", "cargo", &["xtask", "e2e"]),
        stage("bench", "cargo", &["xtask", "bench", "--quick"]),
    ]
}

/// Runs every stage in order, timing each, and prints a summary.
pub fn run(args: &CiArgs) -> Result<()> {
    let mut done: Vec<(&str, Duration)> = Vec::new();
    let start = Instant::now();
    for st in stages() {
        if let Some(only) = &args.only
            && !st.name.contains(only.as_str())
        {
            continue;
        }
        println!(
            "==> ci stage {}: {} {}",
            st.name,
            st.program,
            st.args.join(" ")
        );
        let t = Instant::now();
        let status = Command::new(st.program)
            .args(&st.args)
            .status()
            .with_context(|| format!("starting stage {} ({})", st.name, st.program))?;
        let took = t.elapsed();
        println!(
            "<== ci stage {}: {} in {:.1}s",
            st.name,
            status,
            took.as_secs_f64()
        );
        if !status.success() {
            print_summary(&done, start.elapsed());
            bail!(
                "ci stage {} failed ({status}) after {:.1}s",
                st.name,
                took.as_secs_f64()
            );
        }
        done.push((st.name, took));
    }
    print_summary(&done, start.elapsed());
    Ok(())
}

fn print_summary(done: &[(&str, Duration)], total: Duration) {
    println!("ci summary:");
    for (name, took) in done {
        println!("  {name:<12} {:>8.1}s  ok", took.as_secs_f64());
    }
    println!("  {:<12} {:>8.1}s", "total", total.as_secs_f64());
}
