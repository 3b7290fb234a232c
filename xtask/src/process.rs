//! Running programs inside a lab's namespaces, as `e2e` and `bench` both
//! do: once to completion, or as a long-running helper with its latest
//! output kept. The children die with the harness (`PR_SET_PDEATHSIG`).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use ringtun_tests::ringtun::{LineTail, collect_output, program_in, stop_child};

/// A command for `program` that runs inside `netns` and gets SIGTERM if
/// the calling thread ends first, so that a dying harness takes its
/// helpers with it and they can still clean up.
pub fn command_in(netns: &str, program: &Path) -> Result<Command> {
    program_in(program, Some(netns), Signal::SIGTERM)
        .with_context(|| format!("running {} in {netns}", program.display()))
}

/// Runs a command to completion inside `netns`; a non-zero exit is an error
/// carrying its stderr.
pub fn run_in(netns: &str, program: &Path, args: &[&str]) -> Result<String> {
    let out = command_in(netns, program)?
        .args(args)
        .output()
        .with_context(|| format!("running {} {}", program.display(), args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} {} in {netns} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args` in `netns` to completion, killed after `timeout`;
/// returns stdout, or an error with its stderr on a non-zero exit.
pub fn run_with_timeout(
    netns: &str,
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<String> {
    let what = format!("{} {}", program.display(), args.join(" "));
    let child = command_in(netns, program)?
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let out = match collect_output(child, timeout) {
        Ok(Some(out)) => out,
        Ok(None) => bail!("{what} in {netns} still ran after {timeout:?}; killed"),
        Err(e) => bail!("waiting for {what}: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "{what} in {netns} failed ({}): {}{}",
            out.status,
            stderr.trim(),
            // iperf3 -J reports its errors in the JSON on stdout.
            if stderr.trim().is_empty() {
                stdout.trim()
            } else {
                ""
            }
        );
    }
    Ok(stdout)
}

/// Runs `program args` in `netns` with `env` added to its environment,
/// killed after `timeout`, and returns what it printed and how it exited,
/// whatever that was (for the checks that expect a refusal).
pub fn output_in(
    netns: &str,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Output> {
    let what = format!("{} {}", program.display(), args.join(" "));
    let mut cmd = command_in(netns, program)?;
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    match collect_output(child, timeout) {
        Ok(Some(out)) => Ok(out),
        Ok(None) => bail!("{what} in {netns} still ran after {timeout:?}; killed"),
        Err(e) => bail!("waiting for {what}: {e}"),
    }
}

/// A long-running helper (iperf3 server, echo server) inside a lab;
/// stopped with SIGTERM, then SIGKILL, on drop. Keeps its latest output.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    output: LineTail,
}

impl Daemon {
    /// Starts `program args` in `netns` and waits up to `ready_within` for
    /// a line of its output containing `ready_marker`.
    pub fn start(
        netns: &str,
        program: &Path,
        args: &[&str],
        ready_marker: &str,
        ready_within: Duration,
    ) -> Result<Daemon> {
        let name = format!("{} {} (in {netns})", program.display(), args.join(" "));
        let mut cmd = command_in(netns, program)?;
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let marker = ready_marker.to_string();
        let (output, ready) = LineTail::follow(&mut child, 50, move |l| l.contains(&marker));
        let mut d = Daemon {
            name,
            child: Some(child),
            output,
        };
        let deadline = Instant::now() + ready_within;
        loop {
            match ready.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => return Ok(d),
                // Its pipes are closed: it is exiting, seen below.
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(c) = d.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("{} exited with {status}: {}", d.name, d.output());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} printed no {ready_marker:?} within {ready_within:?}: {}",
                    d.name,
                    d.output()
                );
            }
        }
    }

    /// Its latest output lines.
    pub fn output(&self) -> String {
        self.output.joined(" | ")
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops it: SIGTERM, then SIGKILL after two seconds; reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(2));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
