//! One bench lab per system: two gateway namespaces joined by a WAN veth
//! pair, the same for every system (the traffic runs from gateway A to
//! gateway B, through the tunnel or, for raw veth, straight over the WAN).
//! Also the processes the harness starts inside a lab, and finding the
//! processes that live in a namespace (for the tunnel's own CPU time).
//!
//! ```text
//!   gw-a [wan0 192.0.2.1] ═══ WAN veth, MTU 1500 ═══ [wan0 192.0.2.2] gw-b
//!        tunnel device 10.x.0.1 ~~~~~~~~~~~~~~~~~~~~~~ tunnel device 10.x.0.2
//! ```

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netctl::Topology;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::labs::LabGuard;

/// Every namespace this harness makes starts with this, then the pid.
pub const NETNS_TAG: &str = "bench-";

/// The WAN addresses of gateway A and B.
pub const WAN_A: &str = "192.0.2.1";
/// Gateway B's WAN address.
pub const WAN_B: &str = "192.0.2.2";

/// The two gateways and the WAN between them; `extra` adds links (the
/// kernel's vxlan devices) in the same schema.
fn topology_text(extra: &str) -> String {
    format!(
        r#"
prefix = "{NETNS_TAG}"

[[namespace]]
name = "gw-a"
sysctls = {{ "net.ipv6.conf.all.accept_dad" = 0, "net.ipv6.conf.default.accept_dad" = 0 }}

[[namespace]]
name = "gw-b"
sysctls = {{ "net.ipv6.conf.all.accept_dad" = 0, "net.ipv6.conf.default.accept_dad" = 0 }}

[[link]]
namespace = "gw-a"
name = "wan0"
kind = "veth"
mtu = 1500
peer = {{ name = "wan0", namespace = "gw-b" }}
addresses = ["{WAN_A}/24"]

[[link]]
namespace = "gw-b"
name = "wan0"
kind = "veth"
mtu = 1500
addresses = ["{WAN_B}/24"]
{extra}
"#
    )
}

/// A lab: the topology applied under `bench-PID-TAG-`, destroyed on drop.
pub struct Lab(LabGuard);

impl Lab {
    /// Builds the gateways and the WAN, plus `extra` links.
    pub fn apply(tag: &str, extra: &str) -> Result<Lab> {
        let topology = Topology::parse(&topology_text(extra), "bench lab")
            .context("parsing the bench topology")?;
        let lab = LabGuard::new(topology, NETNS_TAG, tag);
        lab.apply()
            .with_context(|| format!("applying the bench lab under prefix {}", lab.prefix()))?;
        Ok(Lab(lab))
    }

    /// Gateway A's namespace (the traffic's sender).
    pub fn gw_a(&self) -> String {
        self.0.ns("gw-a")
    }

    /// Gateway B's namespace (the traffic's receiver).
    pub fn gw_b(&self) -> String {
        self.0.ns("gw-b")
    }
}

/// The inode that names a namespace (what `/proc/PID/ns/net` links to).
fn netns_inode(name: &str) -> Result<u64> {
    let path = PathBuf::from("/run/netns").join(name);
    Ok(std::fs::metadata(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .ino())
}

/// Processes whose network namespace is `netns`, with their `comm`.
pub fn processes_in(netns: &str) -> Result<Vec<(u32, String)>> {
    let want = format!("net:[{}]", netns_inode(netns)?);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .context("listing /proc")?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we look: skip what cannot be read.
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        if link.to_string_lossy() != want {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        found.push((pid, comm.trim_end().to_string()));
    }
    found.sort();
    Ok(found)
}

/// A long-running helper (iperf3 server, echo server) inside a lab;
/// stopped with SIGTERM, then SIGKILL, on drop. Keeps its latest output.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    output: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `program args` in `netns` and waits up to `ready_within` for
    /// a line of its stdout containing `ready_marker`.
    pub fn start(
        netns: &str,
        program: &Path,
        args: &[&str],
        ready_marker: &str,
        ready_within: Duration,
    ) -> Result<Daemon> {
        let name = format!("{} {} (in {netns})", program.display(), args.join(" "));
        let mut cmd = crate::e2e::peers::command_in(netns, program)?;
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let output = output.clone();
            let tx = tx.clone();
            let marker = ready_marker.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains(&marker) {
                        let _ = tx.send(());
                    }
                    if let Ok(mut o) = output.lock() {
                        if o.len() >= 50 {
                            o.remove(0);
                        }
                        o.push(line);
                    }
                }
            });
        }
        let mut d = Daemon {
            name,
            child: Some(child),
            output,
        };
        let deadline = Instant::now() + ready_within;
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(d);
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
        self.output
            .lock()
            .map(|o| o.join(" | "))
            .unwrap_or_default()
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops it: SIGTERM, then SIGKILL after two seconds; reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
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
    let mut cmd: Command = crate::e2e::peers::command_in(netns, program)?;
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    // Drained on their own threads: a child blocked on a full pipe never exits.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what} in {netns} still ran after {timeout:?}; killed");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => bail!("waiting for {what}: {e}"),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "{what} in {netns} failed ({status}): {}{}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_topology_parses_with_and_without_extra_links() {
        Topology::parse(&topology_text(""), "t").unwrap();
        let vx = r#"
[[link]]
namespace = "gw-a"
name = "vx0"
kind = "vxlan"
mtu = 1450
vxlan = { vni = 42, local = "192.0.2.1", remote = "192.0.2.2", dev = "wan0" }
addresses = ["10.30.0.1/24"]
"#;
        let t = Topology::parse(&topology_text(vx), "t").unwrap();
        assert_eq!(t.links.len(), 3);
    }
}
