//! FRR in a lab: zebra, bfdd and bgpd in one namespace per router, each
//! instance with its own configuration files, sockets, pid and log files
//! in a folder of its own (nothing under `/etc/frr` or `/var/run/frr`),
//! asked through `vtysh` for its own JSON.
//!
//! The daemons run in the foreground as children of the harness, so that
//! they are reaped like every other helper. They drop privileges to the
//! `frr` user, which clears the parent-death signal: a harness killed
//! outright leaves them, and the next run's stale-lab sweep kills what
//! still runs in its namespaces ([`crate::labs::remove_stale`]).

use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};
use ringtun_tests::ringtun::{collect_output, program_in};

/// Where Debian's `frr` package puts its daemons.
const DAEMON_DIR: &str = "/usr/lib/frr";

/// The daemons each instance runs, in start order (zebra first: the
/// others connect to it).
const DAEMONS: [&str; 3] = ["zebra", "bfdd", "bgpd"];

/// How long a `vtysh` command may take.
const VTYSH_TIMEOUT: Duration = Duration::from_secs(20);

/// Why FRR cannot run here, if it cannot: a daemon, `vtysh` or the `frr`
/// user is missing.
pub fn missing() -> Option<String> {
    for d in DAEMONS {
        let p = Path::new(DAEMON_DIR).join(d);
        if !p.is_file() {
            return Some(format!(
                "FRR is not installed: no {} (apt-get install frr)",
                p.display()
            ));
        }
    }
    if ringtun_tests::find_in_path("vtysh").is_none() {
        return Some("FRR is not installed: no vtysh in PATH (apt-get install frr)".into());
    }
    match User::from_name("frr") {
        Ok(Some(_)) => None,
        _ => {
            Some("FRR's daemons run as user frr, which does not exist (apt-get install frr)".into())
        }
    }
}

/// The folder every instance of a run lives under: open to the `frr`
/// user (the daemons cross it after dropping privileges, and a 0700
/// temporary folder makes them exit), removed with all it holds on drop.
pub struct FrrRoot {
    path: PathBuf,
    owner: (nix::unistd::Uid, nix::unistd::Gid),
}

impl FrrRoot {
    /// A new, empty root folder in the temporary directory.
    pub fn new() -> Result<FrrRoot> {
        let user = User::from_name("frr")
            .context("looking up user frr")?
            .context("user frr does not exist (apt-get install frr)")?;
        let path =
            std::env::temp_dir().join(format!("ringtun-frr-{}", ringtun_tests::unique_name("ha")));
        std::fs::create_dir(&path).with_context(|| format!("making {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("opening {} to user frr", path.display()))?;
        Ok(FrrRoot {
            path,
            owner: (user.uid, user.gid),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FrrRoot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cleanup: removing {}: {e}", self.path.display());
        }
    }
}

/// One BGP neighbour: its address (the session's family is the address's)
/// and its AS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbor {
    /// The neighbour's address, on a directly connected link.
    pub address: IpAddr,
    /// Its AS number.
    pub asn: u32,
}

/// What bgpd and bfdd are told: eBGP with every neighbour, BFD on every
/// session at `bfd_interval_ms` with a multiplier of 3, multipath across
/// neighbours of different ASes, and the prefixes this router originates.
#[derive(Clone, Debug)]
pub struct RouterConf {
    /// The instance's host name (the namespace's name in the lab file).
    pub hostname: String,
    /// The router's AS.
    pub asn: u32,
    /// BGP router id.
    pub router_id: Ipv4Addr,
    /// The sessions.
    pub neighbors: Vec<Neighbor>,
    /// Prefixes originated (`network` statements), either family.
    pub networks: Vec<String>,
    /// BFD transmit and receive interval.
    pub bfd_interval_ms: u32,
    /// Send every neighbour all paths, not only the best (add-path): a
    /// gateway whose own route goes away then already holds the one
    /// through its partner, instead of dropping packets until the
    /// router's next update reaches it.
    pub all_paths: bool,
}

impl RouterConf {
    /// zebra's configuration: the host name only (interfaces, addresses
    /// and forwarding come from the lab).
    pub fn zebra(&self) -> String {
        format!("hostname {}\n", self.hostname)
    }

    /// bfdd's: the one profile every session uses.
    pub fn bfdd(&self) -> String {
        format!(
            "hostname {}\n!\nbfd\n profile fast\n  receive-interval {ms}\n  \
             transmit-interval {ms}\n  detect-multiplier 3\n",
            self.hostname,
            ms = self.bfd_interval_ms
        )
    }

    /// bgpd's. Datacenter defaults (3 s keepalive, no delay before
    /// advertising); eBGP without policy (FRR 8 sends nothing to an eBGP
    /// neighbour without one unless told); a connect retry of 1 s, so
    /// that a session whose peer came back is retried at once; each
    /// neighbour activated only in its own family.
    pub fn bgpd(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "frr defaults datacenter\nhostname {}\n!\nrouter bgp {}\n bgp router-id {}\n \
             no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n \
             bgp bestpath as-path multipath-relax\n",
            self.hostname, self.asn, self.router_id
        );
        for n in &self.neighbors {
            let a = n.address;
            let _ = write!(
                s,
                " neighbor {a} remote-as {}\n neighbor {a} bfd profile fast\n \
                 neighbor {a} timers connect 1\n",
                n.asn
            );
        }
        for (family, v4) in [("ipv4", true), ("ipv6", false)] {
            let _ = writeln!(s, " address-family {family} unicast");
            for n in self.neighbors.iter().filter(|n| n.address.is_ipv4() == v4) {
                let _ = writeln!(s, "  neighbor {} activate", n.address);
                if self.all_paths {
                    let _ = writeln!(s, "  neighbor {} addpath-tx-all-paths", n.address);
                }
            }
            for net in self.networks.iter().filter(|p| p.contains(':') != v4) {
                let _ = writeln!(s, "  network {net}");
            }
            let _ = writeln!(s, "  maximum-paths 8\n exit-address-family");
        }
        s
    }
}

/// One FRR instance: its daemons in a namespace, its folder under the
/// run's [`FrrRoot`].
pub struct Frr {
    hostname: String,
    asn: u32,
    dir: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

impl Frr {
    /// Writes `conf` into `root/HOSTNAME/` and starts zebra, bfdd and
    /// bgpd inside `netns`. Returns once each has made its vty socket.
    pub fn start(root: &FrrRoot, netns: &str, conf: &RouterConf) -> Result<Frr> {
        let dir = root.path().join(&conf.hostname);
        std::fs::create_dir(&dir).with_context(|| format!("making {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750))?;
        let (uid, gid) = root.owner;
        chown(&dir, Some(uid.as_raw()), Some(gid.as_raw()))
            .with_context(|| format!("giving {} to user frr", dir.display()))?;
        for (daemon, text) in [
            ("zebra", conf.zebra()),
            ("bfdd", conf.bfdd()),
            ("bgpd", conf.bgpd()),
        ] {
            let path = dir.join(format!("{daemon}.conf"));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            chown(&path, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        // vtysh reads its own file from --config_dir and complains
        // without one; empty is fine.
        std::fs::write(dir.join("vtysh.conf"), "")?;
        let mut frr = Frr {
            hostname: conf.hostname.clone(),
            asn: conf.asn,
            dir,
            daemons: Vec::new(),
        };
        for daemon in DAEMONS {
            let child = frr
                .spawn(netns, daemon)
                .with_context(|| format!("starting {daemon} for {} in {netns}", conf.hostname))?;
            frr.daemons.push((daemon, child));
            frr.wait_for_vty(daemon)?;
        }
        Ok(frr)
    }

    fn spawn(&self, netns: &str, daemon: &str) -> Result<Child> {
        let d = &self.dir;
        let program = Path::new(DAEMON_DIR).join(daemon);
        let mut cmd = program_in(&program, Some(netns), Signal::SIGKILL)?;
        cmd.arg("-f")
            .arg(d.join(format!("{daemon}.conf")))
            .arg("-i")
            .arg(d.join(format!("{daemon}.pid")))
            .arg("--vty_socket")
            .arg(d)
            .arg("-z")
            .arg(d.join("zserv.api"))
            .arg("--log")
            .arg(format!(
                "file:{}",
                d.join(format!("{daemon}.log")).display()
            ));
        if daemon == "bfdd" {
            cmd.arg("--bfdctl").arg(d.join("bfdd.sock"));
        }
        let out = File::create(d.join(format!("{daemon}.out")))?;
        cmd.stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        Ok(cmd.spawn()?)
    }

    /// Waits until `daemon` has made its vty socket (what vtysh reaches),
    /// or fails with its output if it exits first.
    fn wait_for_vty(&mut self, daemon: &str) -> Result<()> {
        let socket = self.dir.join(format!("{daemon}.vty"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if let Some((_, child)) = self.daemons.iter_mut().find(|(d, _)| *d == daemon)
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "{daemon} of {} exited with {status}: {}",
                    self.hostname,
                    self.output(daemon)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{daemon} of {} made no vty socket in 30 s: {}",
                    self.hostname,
                    self.output(daemon)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The last lines a daemon printed and logged.
    fn output(&self, daemon: &str) -> String {
        let mut text = String::new();
        for f in [format!("{daemon}.out"), format!("{daemon}.log")] {
            if let Ok(t) = std::fs::read_to_string(self.dir.join(f)) {
                text.push_str(&t);
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }

    /// The instance's host name.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Runs `commands` in one `vtysh` (a configuration change is
    /// `configure terminal` followed by its lines) and returns its output;
    /// an error if it fails or prints an error.
    pub fn vtysh(&self, commands: &[&str]) -> Result<String> {
        vtysh_at(&self.dir, commands)
    }

    /// A `show ... json` command's answer.
    pub fn json(&self, command: &str) -> Result<serde_json::Value> {
        let text = self.vtysh(&[command])?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} answered {command:?} with no JSON: {text:.200}",
                self.hostname
            )
        })
    }

    /// Every BGP neighbour's state (`Established`, `Active`, ...), by address.
    pub fn bgp_states(&self) -> Result<Vec<(IpAddr, String)>> {
        let v = self.json("show bgp neighbors json")?;
        Ok(neighbor_states(&v))
    }

    /// Every BFD peer's status (`up`, `down`, `init`), by address.
    pub fn bfd_states(&self) -> Result<Vec<(IpAddr, String)>> {
        let v = self.json("show bfd peers json")?;
        Ok(bfd_states(&v))
    }

    /// The number of next hops of `prefix` that are in the kernel's
    /// forwarding table (0 if there is no route).
    pub fn fib_paths(&self, prefix: &str) -> Result<usize> {
        Ok(fib_hops(&self.route(prefix)?, prefix).count())
    }

    /// The addresses of the next hops of `prefix` that are in the kernel's
    /// forwarding table.
    pub fn fib_next_hops(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(fib_addresses(&self.route(prefix)?, prefix))
    }

    /// `show ip route PREFIX json` (or `ipv6`).
    fn route(&self, prefix: &str) -> Result<serde_json::Value> {
        let family = if prefix.contains(':') { "ipv6" } else { "ip" };
        self.json(&format!("show {family} route {prefix} json"))
    }

    /// Withdraws every route this router advertises to these neighbours
    /// (an outbound policy that denies all), keeping the sessions and the
    /// routes it learns: its neighbours move their traffic elsewhere
    /// while it still forwards what is in flight. What an operator does
    /// before stopping a gateway; shutting the sessions instead would
    /// drop its own routes at once, and with them the packets still on
    /// their way through it.
    pub fn withdraw_all(&self, neighbors: &[Neighbor]) -> Result<()> {
        const MAP: &str = "advertise-nothing";
        let router = format!("router bgp {}", self.asn);
        let mut commands: Vec<String> = vec![
            "configure terminal".into(),
            format!("route-map {MAP} deny 10"),
            "exit".into(),
            router,
        ];
        for (family, v4) in [("ipv4", true), ("ipv6", false)] {
            commands.push(format!("address-family {family} unicast"));
            for n in neighbors.iter().filter(|n| n.address.is_ipv4() == v4) {
                commands.push(format!("neighbor {} route-map {MAP} out", n.address));
            }
            commands.push("exit-address-family".into());
        }
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        self.vtysh(&commands).map(|_| ())
    }

    /// Prefers (`prefer`) the routes learned from these neighbours over
    /// any other (local preference 200), or stops preferring them; asks
    /// every neighbour to send its routes again so that it applies now.
    pub fn prefer_routes_of(&self, neighbors: &[Neighbor], prefer: bool) -> Result<()> {
        const MAP: &str = "prefer-these";
        let router = format!("router bgp {}", self.asn);
        let mut commands: Vec<String> = vec!["configure terminal".into()];
        if prefer {
            commands.extend([
                format!("route-map {MAP} permit 10"),
                "set local-preference 200".into(),
                "exit".into(),
            ]);
        }
        commands.push(router);
        for (family, v4) in [("ipv4", true), ("ipv6", false)] {
            commands.push(format!("address-family {family} unicast"));
            for n in neighbors.iter().filter(|n| n.address.is_ipv4() == v4) {
                let no = if prefer { "" } else { "no " };
                commands.push(format!("{no}neighbor {} route-map {MAP} in", n.address));
            }
            commands.push("exit-address-family".into());
        }
        commands.extend([
            "end".into(),
            "clear bgp ipv4 unicast * soft in".into(),
            "clear bgp ipv6 unicast * soft in".into(),
        ]);
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        self.vtysh(&commands).map(|_| ())
    }

    /// Stops the daemons (SIGTERM, in reverse start order) and reaps them;
    /// an error names any that did not exit within 10 s (it is killed) or
    /// that had already died.
    pub fn stop(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        while let Some((daemon, mut child)) = self.daemons.pop() {
            if let Ok(Some(status)) = child.try_wait() {
                problems.push(format!("{daemon} had exited before the stop ({status})"));
                continue;
            }
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        problems.push(format!("{daemon} did not exit on SIGTERM within 10 s"));
                        break;
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}: {}", self.hostname, problems.join("; "))
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for (_, child) in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `vtysh` for the instance whose folder is `dir`.
fn vtysh_at(dir: &Path, commands: &[&str]) -> Result<String> {
    let mut cmd = Command::new("vtysh");
    cmd.arg("--vty_socket")
        .arg(dir)
        .arg("--config_dir")
        .arg(dir);
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().context("starting vtysh")?;
    let what = format!("vtysh {commands:?} in {}", dir.display());
    let out = match collect_output(child, VTYSH_TIMEOUT) {
        Ok(Some(out)) => out,
        Ok(None) => bail!("{what} still ran after {VTYSH_TIMEOUT:?}; killed"),
        Err(e) => bail!("waiting for {what}: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // vtysh exits 0 on some refused lines; FRR marks those with `%`.
    if !out.status.success() || stdout.lines().any(|l| l.trim_start().starts_with('%')) {
        bail!(
            "{what}: {}: {} {}",
            out.status,
            stdout.trim(),
            stderr.trim()
        );
    }
    Ok(stdout)
}

/// `show bgp summary` and `show bfd peers brief` of the instance in
/// `dir`, for a failed row.
pub fn summary(dir: &Path) -> String {
    let mut out = String::new();
    for c in ["show bgp summary", "show bfd peers brief"] {
        match vtysh_at(dir, &[c]) {
            Ok(t) => out.push_str(&t),
            Err(e) => {
                let _ = writeln!(out, "{e:#}");
            }
        }
    }
    out
}

// ------------------------------------------------- reading FRR's JSON

/// `show bgp neighbors json`: `{ "ADDR": { "bgpState": "Established", ... } }`.
fn neighbor_states(v: &serde_json::Value) -> Vec<(IpAddr, String)> {
    let Some(map) = v.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(addr, n)| {
            let ip = addr.parse().ok()?;
            let state = n.get("bgpState")?.as_str()?.to_string();
            Some((ip, state))
        })
        .collect()
}

/// `show bfd peers json`: `[ { "peer": "ADDR", "status": "up", ... } ]`.
fn bfd_states(v: &serde_json::Value) -> Vec<(IpAddr, String)> {
    let Some(peers) = v.as_array() else {
        return Vec::new();
    };
    peers
        .iter()
        .filter_map(|p| {
            let ip = p.get("peer")?.as_str()?.parse().ok()?;
            let status = p.get("status")?.as_str()?.to_string();
            Some((ip, status))
        })
        .collect()
}

/// The addresses (`"ip"`) of [`fib_hops`].
fn fib_addresses(v: &serde_json::Value, prefix: &str) -> Vec<String> {
    fib_hops(v, prefix)
        .filter_map(|n| Some(n.get("ip")?.as_str()?.to_string()))
        .collect()
}

/// `show ip route PREFIX json`: `{ "PREFIX": [ { "selected": true,
/// "nexthops": [ { "fib": true, ... } ] } ] }`; the next hops in the
/// kernel's table, of the selected route.
fn fib_hops<'a>(
    v: &'a serde_json::Value,
    prefix: &str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    v.get(prefix)
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
        .filter(|r| r.get("selected").and_then(|s| s.as_bool()) == Some(true))
        .filter_map(|r| r.get("nexthops")?.as_array())
        .flatten()
        .filter(|n| n.get("fib").and_then(|f| f.as_bool()) == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> RouterConf {
        RouterConf {
            hostname: "gw-a1".into(),
            asn: 65101,
            router_id: Ipv4Addr::new(10, 11, 1, 11),
            neighbors: vec![
                Neighbor {
                    address: "10.99.1.2".parse().unwrap(),
                    asn: 65201,
                },
                Neighbor {
                    address: "fd99:1::2".parse().unwrap(),
                    asn: 65201,
                },
            ],
            networks: vec!["10.10.1.0/24".into(), "fd00:10:1::/64".into()],
            bfd_interval_ms: 100,
            all_paths: true,
        }
    }

    #[test]
    fn each_neighbor_and_network_goes_in_its_own_family() {
        let text = conf().bgpd();
        let v4 = text.find("address-family ipv4").unwrap();
        let v6 = text.find("address-family ipv6").unwrap();
        let at = |needle: &str| text.find(needle).unwrap();
        assert!(
            (v4..v6).contains(&at("neighbor 10.99.1.2 activate")),
            "{text}"
        );
        assert!((v4..v6).contains(&at("network 10.10.1.0/24")), "{text}");
        assert!(at("neighbor fd99:1::2 activate") > v6, "{text}");
        assert!(at("network fd00:10:1::/64") > v6, "{text}");
        assert!(
            text.contains(" neighbor fd99:1::2 bfd profile fast\n"),
            "{text}"
        );
        assert!(text.contains("no bgp ebgp-requires-policy"), "{text}");
        assert!(at("neighbor fd99:1::2 addpath-tx-all-paths") > v6, "{text}");
        // A line `exit` at the top would leave configuration mode in a
        // daemon that does not know the block, and it would ignore the rest.
        assert!(!text.lines().any(|l| l.trim() == "exit"), "{text}");
    }

    #[test]
    fn bfd_profile_has_the_interval_and_multiplier() {
        let text = conf().bfdd();
        assert!(text.contains("receive-interval 100"), "{text}");
        assert!(text.contains("transmit-interval 100"), "{text}");
        assert!(text.contains("detect-multiplier 3"), "{text}");
    }

    #[test]
    fn states_and_paths_are_read_from_frr_json() {
        let neighbors = serde_json::json!({
            "10.99.1.2": { "bgpState": "Established" },
            "fd99:1::2": { "bgpState": "Active" },
            "not-an-address": { "bgpState": "Established" }
        });
        let mut got = neighbor_states(&neighbors);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("10.99.1.2".parse().unwrap(), "Established".to_string()),
                ("fd99:1::2".parse().unwrap(), "Active".to_string()),
            ]
        );
        let bfd =
            serde_json::json!([{ "peer": "10.99.1.2", "status": "up" }, { "status": "down" }]);
        assert_eq!(
            bfd_states(&bfd),
            vec![("10.99.1.2".parse().unwrap(), "up".to_string())]
        );
        let route = serde_json::json!({ "10.10.2.0/24": [
            { "selected": true, "nexthops": [
                { "fib": true, "ip": "10.11.1.11" }, { "fib": true }, { "active": true, "ip": "10.11.1.12" }
            ] },
            { "nexthops": [ { "fib": true } ] }
        ]});
        assert_eq!(fib_hops(&route, "10.10.2.0/24").count(), 2);
        assert_eq!(fib_addresses(&route, "10.10.2.0/24"), ["10.11.1.11"]);
        assert_eq!(fib_hops(&route, "10.10.3.0/24").count(), 0);
        assert_eq!(fib_hops(&serde_json::json!({}), "10.10.2.0/24").count(), 0);
    }
}
