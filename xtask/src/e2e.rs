//! `cargo xtask e2e`: two sites in namespaces with a tunnel between them.
//!
//! Until the tunnel exists (issues 4 and 5) this runs the seed article's
//! scenario through the netctl library: it applies
//! `xtask/topologies/seed.toml` under a unique prefix, pings across in
//! both families, moves the address back onto the bridge port in code to
//! show the article's failure, checks that a second apply changes nothing,
//! destroys it, and prints a pass/fail table. Everything is removed at the
//! end, also on failure, on panic and on Ctrl-C / SIGTERM.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netctl::ping::{Echo, PingOptions};
use netctl::{Netlink, Topology, netns};

/// Options for `cargo xtask e2e`.
#[derive(clap::Args)]
pub struct E2eArgs {
    /// Topology file to apply (default: xtask/topologies/seed.toml).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Leave the namespaces up for inspection and print how to enter them.
    #[arg(long)]
    keep: bool,
}

/// The outcome of one check.
enum Outcome {
    Pass,
    Fail,
}

/// One row of the final table.
struct Row {
    check: String,
    outcome: Outcome,
    detail: String,
}

/// Destroys the topology when the run ends, however it ends (unless --keep).
struct Cleanup {
    topology: Topology,
    prefix: String,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        match self.topology.destroy(Some(&self.prefix)) {
            Ok(d) if !d.deleted.is_empty() => println!("cleanup: deleted {}", d.deleted.join(", ")),
            Ok(_) => {}
            Err(e) => eprintln!("cleanup: destroying prefix {}: {e}", self.prefix),
        }
    }
}

/// Runs the end-to-end scenario.
pub fn run(args: &E2eArgs) -> Result<()> {
    // First Ctrl-C: finish the current step, clean up, exit non-zero.
    // A second one: exit at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }

    let file = args
        .topology
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("topologies/seed.toml"));
    let topology = Topology::from_file(&file)?;
    let prefix = format!("e2e-{}-", std::process::id());
    println!(
        "e2e: the tunnel does not exist yet (issues 4 and 5): running the netctl seed scenario\n\
         e2e: topology {} under prefix {prefix}",
        file.display()
    );
    let cleanup = Cleanup {
        topology: topology.clone(),
        prefix: prefix.clone(),
        keep: args.keep,
    };
    let mut rows = Vec::new();
    let result = scenario(&topology, &prefix, &stop, &mut rows);
    if args.keep {
        println!(
            "e2e: --keep: left up. Enter with `ip netns exec {prefix}a bash` or `netctl -n {prefix}a link`;\n\
             e2e: remove with `netctl destroy {} --prefix {prefix}`",
            file.display()
        );
    } else {
        // Cleanup is itself a row: nothing may be left behind.
        drop(cleanup);
        let left: Vec<String> = netns::list()?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        rows.push(Row {
            check: "destroy leaves no namespace behind".into(),
            outcome: if left.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            detail: if left.is_empty() {
                format!("no namespace named {prefix}* left")
            } else {
                format!("left: {}", left.join(", "))
            },
        });
    }
    print_table(&rows);
    let failed = rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail))
        .count();
    result?;
    if failed > 0 {
        bail!("{failed} e2e check(s) failed");
    }
    Ok(())
}

/// The checks, in order; each pushes its row. An error means the scenario
/// could not go on (setup failed or a signal arrived).
fn scenario(
    topology: &Topology,
    prefix: &str,
    stop: &AtomicBool,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let interrupted = || -> Result<()> {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted by a signal: cleaning up");
        }
        Ok(())
    };
    let started = Instant::now();
    let applied = match topology.apply(Some(prefix)) {
        Ok(applied) => applied,
        Err(e) => {
            rows.push(fail("apply seed.toml", e.to_string()));
            bail!("applying the topology failed (as root? `sudo cargo xtask e2e`)");
        }
    };
    rows.push(pass(
        "apply seed.toml",
        format!(
            "{} objects created in {:.0} ms",
            applied.created.len(),
            started.elapsed().as_secs_f64() * 1e3
        ),
    ));
    interrupted()?;

    let a = applied.netns("a");
    let b = applied.netns("b");
    for (from, dst, what) in [
        (
            &a,
            "10.1.1.1",
            "ping a -> b (10.1.1.1, across br0 and the veth pair)",
        ),
        (&b, "10.1.1.2", "ping b -> a (10.1.1.2 on br0)"),
        (&a, "fd00:1::1", "ping6 a -> b (fd00:1::1)"),
        (&b, "fd00:1::2", "ping6 b -> a (fd00:1::2)"),
    ] {
        rows.push(expect_reply(from, dst, None, what)?);
        interrupted()?;
    }

    // The article's failure, made in code on the applied topology: the
    // address back on veth0, now a bridge port.
    let in_a = Netlink::in_netns(&a)?;
    let v4: netctl::IpPrefix = "10.1.1.2/24".parse()?;
    in_a.addr_del("br0", v4)?;
    in_a.addr_add("veth0", v4)?;
    let echo = ping(&a, "10.1.1.1", Some("veth0"), Duration::from_secs(2))?;
    rows.push(match echo {
        Echo::Reply { .. } => fail(
            "address on bridge port veth0: no reply",
            "a reply came, the article says none can".into(),
        ),
        other => pass(
            "address on bridge port veth0: no reply",
            format!(
                "{} (as the article: replies go up through br0)",
                describe(&other)
            ),
        ),
    });
    interrupted()?;
    in_a.addr_del("veth0", v4)?;
    in_a.addr_add("br0", v4)?;
    rows.push(expect_reply(
        &a,
        "10.1.1.1",
        Some("br0"),
        "address given back to br0: reply",
    )?);
    interrupted()?;

    let again = topology.apply(Some(prefix))?;
    rows.push(if again.created.is_empty() {
        pass(
            "second apply changes nothing",
            format!("{} objects unchanged", again.unchanged.len()),
        )
    } else {
        fail(
            "second apply changes nothing",
            format!("created {}", again.created.join(", ")),
        )
    });
    Ok(())
}

fn pass(check: &str, detail: String) -> Row {
    Row {
        check: check.to_string(),
        outcome: Outcome::Pass,
        detail,
    }
}

fn fail(check: &str, detail: String) -> Row {
    Row {
        check: check.to_string(),
        outcome: Outcome::Fail,
        detail,
    }
}

fn ping(ns: &str, dst: &str, dev: Option<&str>, timeout: Duration) -> Result<Echo> {
    let dst: IpAddr = dst.parse()?;
    let opts = PingOptions {
        timeout,
        interface: dev.map(str::to_string),
        ..PingOptions::default()
    };
    Ok(netctl::ping::echo_in(Some(ns), dst, &opts)?)
}

/// Pings for up to three seconds (the first echo can race a port coming
/// up) and makes a row of it.
fn expect_reply(ns: &str, dst: &str, dev: Option<&str>, what: &str) -> Result<Row> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let echo = ping(ns, dst, dev, Duration::from_millis(500))?;
        if let Echo::Reply { rtt, .. } = echo {
            return Ok(pass(what, format!("rtt {:.3} ms", rtt.as_secs_f64() * 1e3)));
        }
        if Instant::now() >= deadline {
            return Ok(fail(what, describe(&echo)));
        }
    }
}

fn describe(echo: &Echo) -> String {
    match echo {
        Echo::Reply { rtt, .. } => format!("reply, rtt {:.3} ms", rtt.as_secs_f64() * 1e3),
        Echo::Unreachable { reason } => format!("unreachable: {reason}"),
        Echo::Timeout => "no reply".to_string(),
    }
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.check.len()).max().unwrap_or(5).max(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<width$}  {:<5}  {:<4}  {:<7}  detail",
        "check", "mode", "peer", "result"
    );
    for r in rows {
        let result = match r.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<5}  {:<4}  {:<7}  {}",
            r.check, "seed", "-", result, r.detail
        );
    }
    let _ = writeln!(
        out,
        "{:<width$}  {:<5}  {:<4}  {:<7}  come with issues 4 (tunnel) and 5 (two-site e2e, interop)",
        "wireguard / vxlan tunnel rows", "-", "-", "-"
    );
    let passed = rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Pass))
        .count();
    let _ = writeln!(
        out,
        "{passed} passed, {} failed, 0 skipped",
        rows.len() - passed
    );
    print!("{out}");
}
