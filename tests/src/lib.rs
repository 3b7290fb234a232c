//! Shared helpers for ringtun's cross-crate integration tests: the root/CI
//! skip rule, unique namespace names, and guards that remove namespaces and
//! topologies when a test ends, also when it panics. The tests themselves
//! live in `tests/tests/`; other crates' tests may use this crate too.
//!
//! Every test that touches namespaces starts with
//! `if !require_root_or_skip("name") { return; }`, makes its namespaces
//! through [`NetnsGuard`] (or [`TopologyGuard`]) with names from
//! [`unique_name`], and so can run in parallel with every other test.

use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netctl::ping::{Echo, PingOptions};
use netctl::{Topology, netns};

pub mod ringtun;
pub mod traffic;

/// The skip rule: true if the test can run (effective uid 0). Otherwise
/// prints `SKIPPED <test>: needs root ...` and returns false, or panics when
/// the environment variable `CI` is set, so that CI can never pass by
/// skipping.
pub fn require_root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(
        test,
        "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN to make namespaces and links)",
    )
}

/// The same rule for an external program: true if `tool` is on PATH.
pub fn require_tool_or_skip(test: &str, tool: &str) -> bool {
    if find_in_path(tool).is_some() {
        return true;
    }
    skip(test, &format!("needs the program {tool} on PATH"))
}

fn skip(test: &str, why: &str) -> bool {
    let message = format!("SKIPPED {test}: {why}");
    if std::env::var_os("CI").is_some() {
        panic!("{message}; CI is set, and under CI a skip is a failure");
    }
    // Straight to fd 2: libtest captures eprintln! of passing tests, and a
    // skip must be seen.
    let _ = writeln!(std::io::stderr(), "{message}");
    false
}

/// Where `tool` is on PATH, if anywhere.
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Starts a test that needs root: expands to an early `return` when
/// [`require_root_or_skip`] says to skip.
#[macro_export]
macro_rules! require_root {
    ($test:expr) => {
        if !$crate::require_root_or_skip($test) {
            return;
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (in this process or another) uses at the same
/// time: `TAG-PID-N-RANDOM`, e.g. `seed-4242-3-9f1c`. Valid as a namespace
/// name and as a topology prefix (add your own separator).
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // RandomState is seeded from the OS per process: enough to keep two
    // processes with a recycled pid apart.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(n);
    let random = hasher.finish() as u16;
    format!("{tag}-{}-{n}-{random:04x}", std::process::id())
}

/// Owns namespaces and deletes them (and so every link in them) on drop,
/// also while a panic unwinds.
#[derive(Debug, Default)]
pub struct NetnsGuard {
    names: Vec<String>,
}

impl NetnsGuard {
    /// A guard owning nothing yet.
    pub fn new() -> Self {
        NetnsGuard::default()
    }

    /// Creates a uniquely named namespace (see [`unique_name`]) and owns it.
    pub fn create(&mut self, tag: &str) -> String {
        let name = unique_name(tag);
        // Owned before it exists: a half-made namespace is removed too.
        self.names.push(name.clone());
        if let Err(e) = netns::add(&name) {
            panic!("creating namespace {name}: {e}");
        }
        name
    }

    /// Takes ownership of a namespace made some other way.
    pub fn adopt(&mut self, name: &str) {
        self.names.push(name.to_string());
    }

    /// The namespaces owned, in creation order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if netns::exists(name)
                && let Err(e) = netns::delete(name)
            {
                eprintln!("cleanup: deleting namespace {name}: {e}");
            }
            ringtun::remove_lab_uapi_dirs(name);
        }
    }
}

/// Applies a topology under a unique prefix and destroys it on drop.
#[derive(Debug)]
pub struct TopologyGuard {
    topology: Topology,
    prefix: String,
}

impl TopologyGuard {
    /// Applies `topology` under a fresh prefix made from `tag`; panics with
    /// the apply report if it fails (nothing is left behind then: apply
    /// rolls back).
    pub fn apply(topology: Topology, tag: &str) -> Self {
        let prefix = format!("{}-", unique_name(tag));
        let guard = TopologyGuard { topology, prefix };
        if let Err(e) = guard.topology.apply(Some(&guard.prefix)) {
            panic!("applying the topology under prefix {}: {e}", guard.prefix);
        }
        guard
    }

    /// The prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name of one of the topology's namespaces.
    pub fn netns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        if let Err(e) = self.topology.destroy(Some(&self.prefix)) {
            eprintln!("cleanup: destroying topology {}: {e}", self.prefix);
        }
        ringtun::remove_lab_uapi_dirs(&self.prefix);
    }
}

/// What the host (the test's own namespace) looks like, as far as a test's
/// own objects go: the namespaces under /run/netns whose names start with
/// its prefix, and the links of the caller's namespace that have one of the
/// names its topology gives links. Other tests and other programs on a
/// shared host make and remove their own namespaces and links meanwhile,
/// so only what the test could have touched is compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSnapshot {
    /// Namespaces under /run/netns starting with the prefix.
    pub netns: Vec<String>,
    /// One line per link of the caller's namespace with one of the names:
    /// index, name, kind, state, MTU, master.
    pub links: Vec<String>,
    /// The lines of `ip -o link show` for those links, when `ip` is
    /// installed.
    pub ip_link: Option<Vec<String>>,
    /// `ip netns list` lines starting with the prefix, when `ip` is installed.
    pub ip_netns: Option<Vec<String>>,
}

/// Every link name `topology` gives: its links and their veth peers.
pub fn link_names(topology: &Topology) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for link in &topology.links {
        names.insert(link.name.clone());
        names.extend(link.peer.as_ref().map(|p| p.name.clone()));
    }
    names
}

/// Takes a [`HostSnapshot`] of the namespaces starting with `prefix` and
/// the caller's links named in `link_names`; panics if netlink cannot be
/// read.
pub fn host_snapshot(prefix: &str, link_names: &BTreeSet<String>) -> HostSnapshot {
    let netns = netns::list()
        .unwrap_or_else(|e| panic!("listing namespaces: {e}"))
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    let links = netctl::Netlink::current()
        .and_then(|h| h.links())
        .unwrap_or_else(|e| panic!("listing the host's links: {e}"))
        .into_iter()
        .filter(|l| link_names.contains(&l.name))
        .map(|l| {
            format!(
                "{}: {} {} up={} mtu={} master={:?}",
                l.index, l.name, l.kind, l.up, l.mtu, l.master
            )
        })
        .collect();
    // `IDX: NAME[@PEER]: <FLAGS> ...`, one line per link with -o.
    let named = |line: &str| {
        line.split(": ")
            .nth(1)
            .and_then(|n| n.split('@').next())
            .is_some_and(|n| link_names.contains(n))
    };
    let ip_link = run_ip(&["-o", "link", "show"]).map(|out| {
        out.lines()
            .filter(|l| named(l))
            .map(str::to_string)
            .collect()
    });
    let ip_netns = run_ip(&["netns", "list"]).map(|out| {
        out.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    });
    HostSnapshot {
        netns,
        links,
        ip_link,
        ip_netns,
    }
}

/// Runs iproute2's `ip` with arguments and returns its stdout, or `None`
/// if `ip` is not installed; panics if it fails.
pub fn run_ip(args: &[&str]) -> Option<String> {
    let ip = find_in_path("ip")?;
    let out = std::process::Command::new(ip)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The repository's root (for topology files kept in the repo).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// One ICMP echo from inside `netns` to `dst` with a one-second timeout;
/// panics if the echo cannot even be sent (a setup error, not a result).
pub fn ping(netns: &str, dst: &str) -> Echo {
    ping_with(netns, dst, &PingOptions::default())
}

/// [`ping`] with options (bound device, source, timeout).
pub fn ping_with(netns: &str, dst: &str, opts: &PingOptions) -> Echo {
    let dst: IpAddr = dst.parse().unwrap_or_else(|e| panic!("{dst}: {e}"));
    match netctl::ping::echo_in(Some(netns), dst, opts) {
        Ok(echo) => echo,
        Err(e) => panic!("ping {dst} from {netns}: {e}"),
    }
}

/// Pings until a reply comes or `within` passes: for the first packet
/// after a link comes up (IPv6 DAD, bridge ports settling). Returns the
/// last outcome.
pub fn ping_until_reply(netns: &str, dst: &str, within: Duration) -> Echo {
    let deadline = std::time::Instant::now() + within;
    loop {
        let echo = ping_with(
            netns,
            dst,
            &PingOptions {
                timeout: Duration::from_millis(500),
                ..PingOptions::default()
            },
        );
        if echo.is_reply() || std::time::Instant::now() >= deadline {
            return echo;
        }
    }
}
