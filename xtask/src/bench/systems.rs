//! The systems compared, each in a lab of its own (same topology, same
//! addresses): raw veth, the kernel's VXLAN, ringtun in both modes, and
//! the userspace WireGuard implementations on both gateways.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ringtun_tests::ringtun::{Conf, Keypair, LabDir, PeerConf, Ringtun, UpOptions};
use serde::{Deserialize, Serialize};

use super::lab::{self, Lab, WAN_A, WAN_B};
use super::workload::{ECHO_PORT, IPERF_PORT, Tools};
use crate::peers::{self, Userspace, UserspacePeer, WgConf};
use crate::process::Daemon;

/// One system under test.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// No tunnel: the WAN veth itself, the ceiling.
    RawVeth,
    /// The kernel's vxlan device.
    KernelVxlan,
    /// ringtun, `Mode = wireguard`.
    RingtunWireguard,
    /// ringtun, `Mode = vxlan`.
    RingtunVxlan,
    /// wireguard-go on both gateways.
    WireguardGo,
    /// boringtun on both gateways.
    Boringtun,
    /// gotatun on both gateways.
    Gotatun,
}

impl System {
    /// Every system, in report order.
    pub const ALL: [System; 7] = [
        System::RawVeth,
        System::KernelVxlan,
        System::RingtunWireguard,
        System::RingtunVxlan,
        System::WireguardGo,
        System::Boringtun,
        System::Gotatun,
    ];

    /// Its name in tables, progress lines, file names and `--only`.
    pub fn name(self) -> &'static str {
        match self {
            System::RawVeth => "raw-veth",
            System::KernelVxlan => "kernel-vxlan",
            System::RingtunWireguard => "ringtun-wireguard",
            System::RingtunVxlan => "ringtun-vxlan",
            System::WireguardGo => "wireguard-go",
            System::Boringtun => "boringtun",
            System::Gotatun => "gotatun",
        }
    }

    /// One of the userspace WireGuard implementations ringtun is held against.
    pub fn is_userspace_wireguard(self) -> bool {
        matches!(
            self,
            System::WireguardGo | System::Boringtun | System::Gotatun
        )
    }

    /// One of ringtun's modes.
    pub fn is_ringtun(self) -> bool {
        matches!(self, System::RingtunWireguard | System::RingtunVxlan)
    }

    fn tag(self) -> &'static str {
        match self {
            System::RawVeth => "raw",
            System::KernelVxlan => "kvx",
            System::RingtunWireguard => "rtwg",
            System::RingtunVxlan => "rtvx",
            System::WireguardGo => "wgo",
            System::Boringtun => "btun",
            System::Gotatun => "gota",
        }
    }
}

/// The VNI of both VXLAN systems.
const VNI: u32 = 42;
/// Inner addresses of the WireGuard systems (A, B).
const WG_NET: ([u8; 4], [u8; 4]) = ([10, 99, 0, 1], [10, 99, 0, 2]);
/// Inner addresses of the VXLAN systems (A, B).
const VX_NET: ([u8; 4], [u8; 4]) = ([10, 30, 0, 1], [10, 30, 0, 2]);
/// WireGuard's inner MTU here (room for an IPv6 underlay), for all three.
const WG_MTU: u32 = 1420;
/// VXLAN's inner MTU over a 1500-byte underlay, for both.
const VX_MTU: u32 = 1450;
const WG_PORT: u16 = 51820;
const VX_PORT: u16 = 4789;

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn prefix(a: [u8; 4], len: u8) -> String {
    format!("{}/{len}", Ipv4Addr::from(a))
}

/// How to set the systems up.
pub struct SetupOptions<'a> {
    /// ringtun's `--workers` (default: its own, one per CPU).
    pub workers: Option<usize>,
    /// Install missing peers.
    pub install: bool,
    /// Where `cargo install` builds boringtun-cli and gotatun-cli.
    pub build_dir: &'a Path,
    /// Traffic tools (for the servers in gateway B).
    pub tools: &'a Tools,
}

/// A system set up and reachable, with its servers running in gateway B.
/// Fields drop in order: servers, daemons, then the lab.
pub struct Running {
    /// Which system.
    pub system: System,
    /// Gateway B's address for the traffic.
    pub target: IpAddr,
    /// Gateway A's namespace (the clients run there).
    pub client_netns: String,
    /// The tunnel's processes, gateway A's and gateway B's (none for
    /// kernel paths): the two ends whose CPU time and placement the bench
    /// reports.
    pub tunnel_ends: [Vec<u32>; 2],
    /// What was set up, for the report.
    pub description: String,
    iperf: Daemon,
    _echo: Daemon,
    _ringtun: Vec<Ringtun>,
    _userspace: Vec<UserspacePeer>,
    iperf_args: (String, std::path::PathBuf),
    _dir: LabDir,
    _lab: Lab,
}

impl Running {
    /// The tunnel's processes on both gateways.
    pub fn tunnel_pids(&self) -> Vec<u32> {
        self.tunnel_ends.concat()
    }

    /// `ringtun show --json` of both gateways (empty for other systems):
    /// the drop counters and offloads, for the report.
    pub fn ringtun_status(&self) -> Vec<serde_json::Value> {
        self._ringtun
            .iter()
            .map(|r| match r.show() {
                Ok(s) => serde_json::to_value(&s).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            })
            .collect()
    }

    /// Restarts gateway B's iperf3 server if it died (it sometimes does
    /// after a client was killed mid-test).
    pub fn ensure_iperf_server(&mut self) -> Result<()> {
        if self.iperf.is_running() {
            return Ok(());
        }
        self.iperf = start_iperf(&self.iperf_args.0, &self.iperf_args.1)?;
        Ok(())
    }
}

fn start_iperf(netns: &str, iperf3: &Path) -> Result<Daemon> {
    let port = IPERF_PORT.to_string();
    Daemon::start(
        netns,
        iperf3,
        &["-s", "-p", &port, "--forceflush"],
        "Server listening",
        Duration::from_secs(10),
    )
}

/// Sets `system` up in a fresh lab and waits until gateway A reaches
/// gateway B through it. An error is the reason the system is skipped.
pub fn start(system: System, opts: &SetupOptions<'_>) -> Result<Running> {
    let lab = Lab::apply(system.tag(), &kernel_links(system))?;
    let (gw_a, gw_b) = (lab.gw_a(), lab.gw_b());
    let dir = LabDir::new("bench")?;
    let mut ringtun = Vec::new();
    let mut userspace = Vec::new();
    let (target, description) = match system {
        System::RawVeth => (
            WAN_B.parse::<IpAddr>()?,
            "no tunnel: gateway A to gateway B over the WAN veth, MTU 1500".to_string(),
        ),
        System::KernelVxlan => (
            v4(VX_NET.1),
            format!("kernel vxlan device vx0, VNI {VNI}, UDP {VX_PORT}, MTU {VX_MTU}"),
        ),
        System::RingtunWireguard => {
            let (ka, kb) = (Keypair::generate()?, Keypair::generate()?);
            let conf = |me: &Keypair, other: &Keypair, addr: [u8; 4], peer: [u8; 4], ep: &str| {
                Conf::wireguard(me)
                    .listen_port(WG_PORT)
                    .address(&prefix(addr, 24))
                    .mtu(WG_MTU)
                    .peer(
                        PeerConf::wireguard(&other.public_key)
                            .allowed_ip(&prefix(peer, 32))
                            .endpoint(SocketAddr::new(ep.parse().unwrap_or(v4([0; 4])), WG_PORT))
                            // Both ends are ringtun: each flow its own source port.
                            .spread_flows(true),
                    )
            };
            let up = UpOptions {
                name: Some("rtwg0".into()),
                workers: opts.workers,
                ..UpOptions::default()
            };
            // One file per gateway; the interface is named by `--name`.
            let pa = conf(&ka, &kb, WG_NET.0, WG_NET.1, WAN_B).write(dir.path(), "rtwg0-a")?;
            let pb = conf(&kb, &ka, WG_NET.1, WG_NET.0, WAN_A).write(dir.path(), "rtwg0-b")?;
            ringtun.push(Ringtun::up(&gw_b, &pb, &up)?);
            ringtun.push(Ringtun::up(&gw_a, &pa, &up)?);
            (v4(WG_NET.1), ringtun_description("wireguard", &ringtun[0]))
        }
        System::RingtunVxlan => {
            let conf = |addr: [u8; 4], remote: &str| {
                Conf::vxlan(VNI)
                    .listen_port(VX_PORT)
                    .address(&prefix(addr, 24))
                    .mtu(VX_MTU)
                    .peer(PeerConf::vtep(SocketAddr::new(
                        remote.parse().unwrap_or(v4([0; 4])),
                        VX_PORT,
                    )))
            };
            let up = UpOptions {
                name: Some("rtvx0".into()),
                workers: opts.workers,
                ..UpOptions::default()
            };
            let pa = conf(VX_NET.0, WAN_B).write(dir.path(), "rtvx0-a")?;
            let pb = conf(VX_NET.1, WAN_A).write(dir.path(), "rtvx0-b")?;
            ringtun.push(Ringtun::up(&gw_b, &pb, &up)?);
            ringtun.push(Ringtun::up(&gw_a, &pa, &up)?);
            (v4(VX_NET.1), ringtun_description("vxlan", &ringtun[0]))
        }
        System::WireguardGo | System::Boringtun | System::Gotatun => {
            let kind = match system {
                System::WireguardGo => Userspace::WireguardGo,
                System::Boringtun => Userspace::Boringtun,
                _ => Userspace::Gotatun,
            };
            let tools = peers::ensure(kind, opts.install, opts.build_dir)
                .map_err(|why| anyhow::anyhow!(why))?;
            let (ka, kb) = (Keypair::generate()?, Keypair::generate()?);
            // UAPI sockets share one directory: the two ends need two names.
            let tag = std::process::id() % 100_000;
            let conf =
                |me: &Keypair, other: &Keypair, addr: [u8; 4], peer: [u8; 4], ep: &str| WgConf {
                    private_key: me.private_key.clone(),
                    listen_port: WG_PORT,
                    peer_public_key: other.public_key.clone(),
                    peer_endpoint: Some(SocketAddr::new(ep.parse().unwrap_or(v4([0; 4])), WG_PORT)),
                    allowed_ips: vec![prefix(peer, 32)],
                    addresses: vec![prefix(addr, 24)],
                    mtu: WG_MTU,
                };
            let (ia, ib) = (
                format!("{}a{tag}", system.tag()),
                format!("{}b{tag}", system.tag()),
            );
            userspace.push(UserspacePeer::start(
                kind,
                &tools,
                &gw_b,
                &ib,
                &conf(&kb, &ka, WG_NET.1, WG_NET.0, WAN_A),
                dir.path(),
            )?);
            userspace.push(UserspacePeer::start(
                kind,
                &tools,
                &gw_a,
                &ia,
                &conf(&ka, &kb, WG_NET.0, WG_NET.1, WAN_B),
                dir.path(),
            )?);
            let version = super::workload::version_of(&tools.daemon, "--version");
            (
                v4(WG_NET.1),
                format!(
                    "{} ({version}) on both gateways, configured with wg, MTU {WG_MTU}",
                    kind.name()
                ),
            )
        }
    };
    // The traffic must cross the WAN: the target lives in gateway B only.
    let holds = |ns: &str| -> Result<bool> {
        let want = format!("{target}/");
        Ok(netctl::Netlink::in_netns(ns)?
            .addrs(None)?
            .iter()
            .any(|a| a.prefix.to_string().starts_with(&want)))
    };
    if holds(&gw_a)? || !holds(&gw_b)? {
        bail!(
            "{}: {target} must be an address of gateway B and not of A",
            system.name()
        );
    }
    wait_reachable(&gw_a, target, Duration::from_secs(15))
        .with_context(|| format!("{}: gateway B ({target}) unreachable", system.name()))?;
    // The tunnel's processes: whatever runs in the gateways before the
    // traffic tools arrive.
    let end = |ns: &str| -> Result<Vec<u32>> {
        Ok(lab::processes_in(ns)?
            .into_iter()
            .map(|(pid, _)| pid)
            .collect())
    };
    let tunnel_ends = [end(&gw_a)?, end(&gw_b)?];
    if (system.is_ringtun() || system.is_userspace_wireguard())
        && tunnel_ends.iter().any(Vec::is_empty)
    {
        bail!(
            "{}: expected a tunnel process in each gateway, found pids {:?} in A and {:?} in B",
            system.name(),
            tunnel_ends[0],
            tunnel_ends[1]
        );
    }
    let iperf = start_iperf(&gw_b, &opts.tools.iperf3)?;
    let listen = SocketAddr::new(v4([0; 4]), ECHO_PORT).to_string();
    let echo = Daemon::start(
        &gw_b,
        &opts.tools.pingpong,
        &["server", "--listen", &listen],
        "listening",
        Duration::from_secs(10),
    )?;
    Ok(Running {
        system,
        target,
        client_netns: gw_a,
        tunnel_ends,
        description,
        iperf,
        _echo: echo,
        _ringtun: ringtun,
        _userspace: userspace,
        iperf_args: (gw_b, opts.tools.iperf3.clone()),
        _dir: dir,
        _lab: lab,
    })
}

fn ringtun_description(mode: &str, r: &Ringtun) -> String {
    match r.show() {
        Ok(s) => format!(
            "ringtun {mode} mode, {} workers per gateway, offloads [{}], MTU {}",
            s.workers.len(),
            s.offloads.join(", "),
            s.mtu
        ),
        Err(e) => format!("ringtun {mode} mode (show failed: {e})"),
    }
}

/// The kernel vxlan devices of the kernel-vxlan lab, in topology syntax.
fn kernel_links(system: System) -> String {
    if system != System::KernelVxlan {
        return String::new();
    }
    let link = |ns: &str, local: &str, remote: &str, addr: [u8; 4]| {
        format!(
            r#"
[[link]]
namespace = "{ns}"
name = "vx0"
kind = "vxlan"
mtu = {VX_MTU}
vxlan = {{ vni = {VNI}, local = "{local}", remote = "{remote}", dstport = {VX_PORT}, dev = "wan0" }}
addresses = ["{}"]
"#,
            prefix(addr, 24)
        )
    };
    link("gw-a", WAN_A, WAN_B, VX_NET.0) + &link("gw-b", WAN_B, WAN_A, VX_NET.1)
}

/// ICMP echoes from `netns` to `dst` until one is answered.
fn wait_reachable(netns: &str, dst: IpAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let opts = netctl::ping::PingOptions {
        timeout: Duration::from_millis(300),
        ..netctl::ping::PingOptions::default()
    };
    loop {
        let echo = netctl::ping::echo_in(Some(netns), dst, &opts)
            .with_context(|| format!("pinging {dst} from {netns}"))?;
        if echo.is_reply() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("no echo reply within {within:?}; last: {echo:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back_with_clap() {
        use clap::ValueEnum;
        for s in System::ALL {
            let parsed = System::from_str(s.name(), false).unwrap();
            assert_eq!(parsed, s);
        }
        let mut names: Vec<_> = System::ALL.iter().map(|s| s.name()).collect();
        names.dedup();
        assert_eq!(names.len(), System::ALL.len());
    }

    #[test]
    fn only_the_kernel_vxlan_lab_has_extra_links() {
        assert!(kernel_links(System::RawVeth).is_empty());
        let k = kernel_links(System::KernelVxlan);
        assert_eq!(k.matches("kind = \"vxlan\"").count(), 2);
        assert!(k.contains("remote = \"192.0.2.2\""));
        assert!(k.contains("10.30.0.2/24"));
    }
}
