//! The real peers ringtun is tested against: wireguard-go, boringtun and
//! gotatun
//! (userspace WireGuard, configured with `wg` over their UAPI sockets),
//! and the Linux kernel's vxlan device; finding or installing them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ringtun_tests::ringtun::{LineTail, stop_child};

use crate::process::{command_in, run_in};

/// Where the userspace WireGuards put their UAPI sockets (a path on the
/// shared filesystem, not per namespace: interface names must differ
/// between namespaces on one host).
const UAPI_DIR: &str = "/var/run/wireguard";
/// How long a userspace peer may take to create its device and socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A userspace WireGuard implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Userspace {
    /// wireguard-go (Debian package `wireguard-go`).
    WireguardGo,
    /// boringtun (crates.io `boringtun-cli`).
    Boringtun,
    /// gotatun, Mullvad's fork of boringtun (crates.io `gotatun-cli`).
    Gotatun,
}

impl Userspace {
    /// Every implementation the harness knows.
    pub const ALL: [Userspace; 3] = [
        Userspace::WireguardGo,
        Userspace::Boringtun,
        Userspace::Gotatun,
    ];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Userspace::WireguardGo => "wireguard-go",
            Userspace::Boringtun => "boringtun",
            Userspace::Gotatun => "gotatun",
        }
    }

    /// Short tag for interface names.
    fn tag(self) -> &'static str {
        match self {
            Userspace::WireguardGo => "wgo",
            Userspace::Boringtun => "btun",
            Userspace::Gotatun => "gota",
        }
    }
}

/// The programs a userspace peer needs, found (or installed).
#[derive(Clone, Debug)]
pub struct Tools {
    /// The daemon.
    pub daemon: PathBuf,
    /// `wg` from wireguard-tools.
    pub wg: PathBuf,
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    ringtun_tests::find_in_path(tool)
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn run_logged(cmd: &mut Command, what: &str) -> Result<(), String> {
    println!("e2e: installing: {what}");
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn apt_install(packages: &[&str]) -> Result<(), String> {
    let Some(apt) = find_in_path("apt-get") else {
        return Err("apt-get is not available to install them".into());
    };
    let install = |apt: &Path| {
        run_logged(
            Command::new(apt)
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &format!("apt-get install {}", packages.join(" ")),
        )
    };
    if install(&apt).is_ok() {
        return Ok(());
    }
    // The package lists may be stale or absent on a fresh machine.
    run_logged(
        Command::new(&apt)
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update",
    )?;
    install(&apt)
}

/// `wg` (wireguard-tools), installed with apt-get if missing and allowed.
pub fn ensure_wg(install: bool) -> Result<PathBuf, String> {
    if let Some(p) = find_in_path("wg") {
        return Ok(p);
    }
    if !install {
        return Err("wg (wireguard-tools) is not installed and --no-install was given".into());
    }
    apt_install(&["wireguard-tools"])?;
    find_in_path("wg").ok_or_else(|| "wireguard-tools installed, but wg is not on PATH".into())
}

/// A program from crates.io: on PATH or in cargo's bin directory, else,
/// when `install` is set, `cargo install --locked CRATE` (building in
/// `build_dir`, so that a second run in the same target directory reuses
/// the build). The error is the reason its rows are skipped.
fn ensure_cargo_bin(
    krate: &str,
    bin: &str,
    install: bool,
    build_dir: &Path,
) -> Result<PathBuf, String> {
    let in_cargo = cargo_bin_dir().join(bin);
    if let Some(p) = find_in_path(bin).or_else(|| in_cargo.is_file().then_some(in_cargo.clone())) {
        return Ok(p);
    }
    if !install {
        return Err(format!("{bin} is not installed and --no-install was given"));
    }
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| find_in_path("cargo"))
        .ok_or_else(|| format!("cargo is not on PATH to install {krate}"))?;
    let started = Instant::now();
    run_logged(
        Command::new(cargo)
            .args(["install", "--locked", "--quiet", krate])
            .env("CARGO_TARGET_DIR", build_dir),
        &format!("cargo install {krate}"),
    )?;
    if !in_cargo.is_file() {
        return Err(format!(
            "cargo install {krate} succeeded, but {} does not exist",
            in_cargo.display()
        ));
    }
    println!(
        "e2e: installed {krate} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(in_cargo)
}

/// Finds a userspace peer's programs, installing what is missing when
/// `install` is set (apt-get for wireguard-go and wg; `cargo install
/// boringtun-cli` and `gotatun-cli` for those two, building in `build_dir`). The error is
/// the reason its rows are skipped.
pub fn ensure(kind: Userspace, install: bool, build_dir: &Path) -> Result<Tools, String> {
    let wg = ensure_wg(install)?;
    let daemon = match kind {
        Userspace::WireguardGo => match find_in_path("wireguard-go") {
            Some(p) => p,
            None if install => {
                apt_install(&["wireguard-go"])?;
                find_in_path("wireguard-go")
                    .ok_or("wireguard-go installed, but it is not on PATH")?
            }
            None => return Err("wireguard-go is not installed and --no-install was given".into()),
        },
        Userspace::Boringtun => {
            ensure_cargo_bin("boringtun-cli", "boringtun-cli", install, build_dir)?
        }
        Userspace::Gotatun => ensure_cargo_bin("gotatun-cli", "gotatun", install, build_dir)?,
    };
    Ok(Tools { daemon, wg })
}

/// The crate (and program) of the Prometheus exporter the `uapi` rows
/// scrape: it runs `wg show IFACE dump` itself.
pub const EXPORTER: &str = "prometheus_wireguard_exporter";

/// The Prometheus exporter, installed with `cargo install` (building in
/// `build_dir`) when missing and `install` is set; the error is the
/// reason its row is skipped.
pub fn ensure_exporter(install: bool, build_dir: &Path) -> Result<PathBuf, String> {
    ensure_cargo_bin(EXPORTER, EXPORTER, install, build_dir)
}

/// What a userspace WireGuard peer is told.
#[derive(Clone, Debug)]
pub struct WgConf {
    /// Its private key (base64).
    pub private_key: String,
    /// UDP port to listen on.
    pub listen_port: u16,
    /// The other side's public key.
    pub peer_public_key: String,
    /// The other side's endpoint; `None`: only the other side can initiate.
    pub peer_endpoint: Option<SocketAddr>,
    /// AllowedIPs for the other side (also routed to the device).
    pub allowed_ips: Vec<String>,
    /// Addresses of the device (`10.99.0.2/24`).
    pub addresses: Vec<String>,
    /// Device MTU.
    pub mtu: u32,
}

impl WgConf {
    /// The file `wg setconf` reads (wg's format: no Address or MTU).
    fn render(&self) -> String {
        let mut s = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
            self.private_key,
            self.listen_port,
            self.peer_public_key,
            self.allowed_ips.join(", ")
        );
        if let Some(e) = self.peer_endpoint {
            s.push_str(&format!("Endpoint = {e}\n"));
        }
        s
    }
}

/// What `wg show dump` says of a peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WgPeerState {
    /// `latest-handshake`: seconds since the epoch (wireguard-go); boringtun
    /// 0.7 reports the seconds *since* the handshake here, so 0 right after one.
    pub latest_handshake: u64,
    /// Bytes received from the peer through a session.
    pub rx_bytes: u64,
}

impl WgPeerState {
    /// A session exists: a handshake time, or bytes received through one.
    pub fn has_session(&self) -> bool {
        self.latest_handshake > 0 || self.rx_bytes > 0
    }
}

/// A running userspace WireGuard (wireguard-go, boringtun, gotatun) with its device configured.
/// Dropping it stops it (SIGTERM, then SIGKILL) and removes what it left.
pub struct UserspacePeer {
    child: Option<Child>,
    netns: String,
    iface: String,
    wg: PathBuf,
    output: LineTail,
}

impl UserspacePeer {
    /// A unique interface name for `kind` (≤ 15 bytes): the UAPI socket
    /// path is shared by every namespace.
    pub fn iface_name(kind: Userspace) -> String {
        format!("{}{}", kind.tag(), std::process::id() % 1_000_000)
    }

    /// Starts the daemon in `netns`, waits for its UAPI socket, applies
    /// `conf` with `wg setconf`, then addresses, MTU, link up and routes
    /// through netctl.
    pub fn start(
        kind: Userspace,
        tools: &Tools,
        netns: &str,
        iface: &str,
        conf: &WgConf,
        dir: &Path,
    ) -> Result<UserspacePeer> {
        let socket = PathBuf::from(UAPI_DIR).join(format!("{iface}.sock"));
        if socket.exists() {
            // A stale socket from a killed run: the daemon would refuse it.
            let _ = std::fs::remove_file(&socket);
        }
        let mut cmd = command_in(netns, &tools.daemon)?;
        match kind {
            Userspace::WireguardGo => {
                cmd.arg("-f")
                    .arg(iface)
                    .env("WG_PROCESS_FOREGROUND", "1")
                    .env("LOG_LEVEL", "error");
            }
            Userspace::Boringtun | Userspace::Gotatun => {
                cmd.args(["-f", "--disable-drop-privileges", "-v", "error"])
                    .arg(iface);
            }
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} in {netns}", tools.daemon.display()))?;
        let (output, _) = LineTail::follow(&mut child, 200, |_| false);
        let mut peer = UserspacePeer {
            child: Some(child),
            netns: netns.to_string(),
            iface: iface.to_string(),
            wg: tools.wg.clone(),
            output,
        };
        let nl = netctl::Netlink::in_netns(netns)?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !(socket.exists() && nl.link_index(iface).is_ok()) {
            if let Some(c) = peer.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!(
                    "{} exited with {status} before its device was up:\n{}",
                    kind.name(),
                    peer.output()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} made no {} and device {iface} within {START_TIMEOUT:?}:\n{}",
                    kind.name(),
                    socket.display(),
                    peer.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let file = dir.join(format!("{iface}.wg.conf"));
        write_private(&file, &conf.render())?;
        let file_arg = file.to_string_lossy().into_owned();
        run_in(netns, &tools.wg, &["setconf", iface, &file_arg])?;
        nl.set_mtu(iface, conf.mtu)?;
        for a in &conf.addresses {
            nl.addr_add_with(iface, a.parse()?, netctl::AddrOptions { nodad: true })
                .with_context(|| format!("adding {a} to {iface}"))?;
        }
        nl.link_set_up(iface)?;
        for r in &conf.allowed_ips {
            let prefix: netctl::IpPrefix = r.parse()?;
            let connected = conf.addresses.iter().any(|a| {
                a.parse::<netctl::IpPrefix>()
                    .is_ok_and(|p| p.network() == prefix.network())
            });
            if !connected {
                nl.route_add(&netctl::Route::to(prefix.network()).dev(iface))
                    .with_context(|| format!("routing {r} to {iface}"))?;
            }
        }
        Ok(peer)
    }

    /// Its one peer as `wg show IFACE dump` reports it.
    pub fn peer_state(&self) -> Result<WgPeerState> {
        let out = run_in(&self.netns, &self.wg, &["show", &self.iface, "dump"])?;
        // Line 1 is the interface; line 2 the peer: public-key psk endpoint
        // allowed-ips latest-handshake rx tx keepalive.
        let f: Vec<&str> = out.lines().nth(1).unwrap_or("").split('\t').collect();
        let num = |i: usize| f.get(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        Ok(WgPeerState {
            latest_handshake: num(4),
            rx_bytes: num(5),
        })
    }

    /// The daemon's latest output lines.
    pub fn output(&self) -> String {
        self.output.joined("\n")
    }

    /// Stops it with SIGTERM, and SIGKILL if it lingers.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        stop_child(&mut child, EXIT_TIMEOUT);
        self.clean_up();
        Ok(())
    }

    /// Stops it with SIGKILL at once, as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill().context("SIGKILL")?;
        child.wait().context("waiting for the killed daemon")?;
        self.clean_up();
        Ok(())
    }

    /// Removes what a stopped daemon left: its socket, its device.
    fn clean_up(&mut self) {
        let socket = PathBuf::from(UAPI_DIR).join(format!("{}.sock", self.iface));
        if socket.exists() {
            let _ = std::fs::remove_file(&socket);
        }
        // boringtun and gotatun leave their device behind if killed: take it away.
        if let Ok(nl) = netctl::Netlink::in_netns(&self.netns)
            && nl.link_index(&self.iface).is_ok()
        {
            let _ = nl.delete_link(&self.iface);
        }
    }
}

impl Drop for UserspacePeer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Writes a file only its owner can read (it holds private keys).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A Linux kernel vxlan device enslaved to a bridge; deleted on drop.
pub struct KernelVxlan {
    netns: String,
    name: String,
}

impl KernelVxlan {
    /// `ip link add NAME type vxlan id VNI local L remote R dstport 4789 dev
    /// DEV`, MTU `mtu`, master `bridge`, up.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        netns: &str,
        name: &str,
        vni: u32,
        local: IpAddr,
        remote: IpAddr,
        dev: &str,
        bridge: &str,
        mtu: u32,
    ) -> Result<KernelVxlan> {
        let nl = netctl::Netlink::in_netns(netns)?;
        nl.add_vxlan(&netctl::VxlanConfig {
            name: name.to_string(),
            vni,
            local: Some(local),
            remote: Some(remote),
            group: None,
            dstport: Some(4789),
            dev: Some(dev.to_string()),
            learning: None,
            ttl: None,
            mtu: Some(mtu),
        })
        .with_context(|| format!("adding vxlan {name} in {netns}"))?;
        let vx = KernelVxlan {
            netns: netns.to_string(),
            name: name.to_string(),
        };
        // The kernel's vxlan leaves the inner TCP/UDP checksum to "the
        // hardware" (CHECKSUM_PARTIAL); over a veth underlay no hardware
        // ever completes it, and a userspace VTEP receives the datagram
        // through a UDP socket that cannot say so: every inner TCP/UDP
        // packet would arrive with a bad checksum. On a real wire the
        // checksum is always complete, so complete it here as a NIC would.
        netctl::netns::run_in(netns, || set_tx_checksum(name, false))?
            .with_context(|| format!("turning tx checksum offload off on {name}"))?;
        nl.set_master(name, bridge)?;
        nl.link_set_up(name)?;
        Ok(vx)
    }
}

/// `ETHTOOL_STXCSUM` (linux/ethtool.h): set transmit checksum offload.
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `ethtool -K DEV tx on|off` in the calling thread's namespace, by the
/// legacy SIOCETHTOOL ioctl (no ethtool binary needed).
fn set_tx_checksum(dev: &str, on: bool) -> io::Result<()> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = dev.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the ifreq, whose data pointer refers to
    // `value`; both outlive the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for KernelVxlan {
    fn drop(&mut self) {
        if let Ok(nl) = netctl::Netlink::in_netns(&self.netns)
            && nl.link_index(&self.name).is_ok()
            && let Err(e) = nl.delete_link(&self.name)
        {
            eprintln!("cleanup: deleting {} in {}: {e}", self.name, self.netns);
        }
    }
}
