//! The lab the data-plane tests share: two (or three) sites, each a
//! namespace whose `wan0` is one end of a veth, with ringtun configurations
//! for both modes and both underlay families. Every address is fixed per
//! role, so a failure message names addresses a reader can place.

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netctl::{AddrOptions, IpPrefix, Netlink, VethConfig};
use ringtun_tests::ringtun::{Conf, Keypair, LabDir, PeerConf, Ringtun, TunnelMode, UpOptions};
use ringtun_tests::traffic::{BulkOptions, BulkReport, BulkTransfer, start_tcp_bulk, tcp_bulk};
use ringtun_tests::{NetnsGuard, ping_until_reply};

/// Which family carries the tunnel's UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underlay {
    /// 192.0.2.0/24.
    V4,
    /// 2001:db8::/64.
    V6,
}

/// The WAN link's name in every site.
pub const WAN: &str = "wan0";
/// The tunnel interface's name in every site.
pub const IFACE: &str = "rt0";
/// WireGuard listen port of every site.
pub const WG_PORT: u16 = 51820;
/// VXLAN port of every site.
pub const VXLAN_PORT: u16 = 4789;
/// A VXLAN interface's MTU over an IPv6 underlay: 1500 - 40 (IPv6) - 8
/// (UDP) - 8 (VXLAN) - 14 (inner Ethernet).
pub const VXLAN_MTU_IPV6_UNDERLAY: u32 = 1430;
/// The VNI both VXLAN ends use.
pub const VNI: u32 = 42;
/// How long the first packet may take (handshake, ARP/ND through the tunnel).
pub const FIRST_PACKET: Duration = Duration::from_secs(15);

/// Site `i`'s WAN address (1-based) in the underlay family.
pub fn wan(i: u8, underlay: Underlay) -> IpAddr {
    match underlay {
        Underlay::V4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)),
        Underlay::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i))),
    }
}

/// Site `i`'s address inside the tunnel, IPv4.
pub fn inner4(mode: TunnelMode, i: u8) -> IpAddr {
    match mode {
        TunnelMode::WireGuard => IpAddr::V4(Ipv4Addr::new(10, 99, 0, i)),
        TunnelMode::Vxlan => IpAddr::V4(Ipv4Addr::new(10, 100, 0, i)),
    }
}

/// Site `i`'s address inside the tunnel, IPv6.
pub fn inner6(mode: TunnelMode, i: u8) -> IpAddr {
    match mode {
        TunnelMode::WireGuard => IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, u16::from(i))),
        TunnelMode::Vxlan => IpAddr::V6(Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, u16::from(i))),
    }
}

/// The UDP port of a mode.
pub fn port(mode: TunnelMode) -> u16 {
    match mode {
        TunnelMode::WireGuard => WG_PORT,
        TunnelMode::Vxlan => VXLAN_PORT,
    }
}

/// Deadline of one bulk transfer: generous for a debug build on a loaded
/// 2-core machine, short enough that a stalled transfer fails in time.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(60);

/// Namespaces joined by veth: site 1 is `sites[0]`. Dropping it removes
/// the namespaces (declare daemons after it, so they die first).
pub struct Lab {
    /// One namespace per site.
    pub sites: Vec<String>,
    /// Configuration files.
    pub dir: LabDir,
    /// Keys per site (wireguard).
    pub keys: Vec<Keypair>,
    guard: NetnsGuard,
}

impl Lab {
    /// Two sites, `wan0` to `wan0`.
    pub fn pair(tag: &str) -> Lab {
        let mut guard = NetnsGuard::new();
        let a = guard.create(&format!("{tag}-a"));
        let b = guard.create(&format!("{tag}-b"));
        let nl = must(Netlink::in_netns(&a), "netlink in site a");
        must(
            nl.add_veth(&VethConfig::new(WAN, WAN).peer_netns(&b)),
            "adding the WAN veth",
        );
        let sites = vec![a, b];
        for (i, ns) in sites.iter().enumerate() {
            configure_wan(ns, WAN, i as u8 + 1);
        }
        Lab::finish(tag, sites, guard)
    }

    /// A hub (site 1) with a bridge `wan0` and spokes 2..=n, each on its own
    /// veth to the bridge: every site reaches every other's WAN address.
    pub fn star(tag: &str, n: u8) -> Lab {
        let mut guard = NetnsGuard::new();
        let hub = guard.create(&format!("{tag}-1"));
        let nl = must(Netlink::in_netns(&hub), "netlink in the hub");
        must(nl.add_bridge(WAN), "adding the hub's bridge");
        must(nl.link_set_up(WAN), "setting the hub's bridge up");
        let mut sites = vec![hub.clone()];
        for i in 2..=n {
            let ns = guard.create(&format!("{tag}-{i}"));
            let port = format!("port{i}");
            must(
                nl.add_veth(&VethConfig::new(&port, WAN).peer_netns(&ns)),
                "adding a spoke's veth",
            );
            must(nl.set_master(&port, WAN), "enslaving a hub port");
            must(nl.link_set_up(&port), "setting a hub port up");
            sites.push(ns);
        }
        for (i, ns) in sites.iter().enumerate() {
            configure_wan(ns, WAN, i as u8 + 1);
        }
        Lab::finish(tag, sites, guard)
    }

    fn finish(tag: &str, sites: Vec<String>, guard: NetnsGuard) -> Lab {
        let keys = sites
            .iter()
            .map(|_| must(Keypair::generate(), "making a key pair"))
            .collect();
        Lab {
            sites,
            dir: must(LabDir::new(tag), "making the lab directory"),
            keys,
            guard,
        }
    }

    /// Site `i`'s namespace (1-based).
    pub fn ns(&self, i: u8) -> &str {
        &self.sites[usize::from(i) - 1]
    }

    /// Site `i`'s configuration: peers are the sites in `peers`.
    pub fn conf(&self, mode: TunnelMode, i: u8, peers: &[u8], underlay: Underlay) -> Conf {
        let me = usize::from(i) - 1;
        let mut conf = match mode {
            TunnelMode::WireGuard => Conf::wireguard(&self.keys[me]),
            TunnelMode::Vxlan => Conf::vxlan(VNI),
        }
        .listen_port(port(mode))
        .address(&format!("{}/24", inner4(mode, i)))
        .address(&format!("{}/64", inner6(mode, i)));
        if mode == TunnelMode::Vxlan && underlay == Underlay::V6 {
            // ringtun's vxlan default, 1450, is the kernel's over an IPv4
            // underlay; IPv6 costs 20 bytes more (the kernel's vxlan picks
            // 1430 over an IPv6 lower device).
            conf = conf.mtu(VXLAN_MTU_IPV6_UNDERLAY);
        }
        for &p in peers {
            let endpoint = SocketAddr::new(wan(p, underlay), port(mode));
            let peer = match mode {
                TunnelMode::WireGuard => {
                    PeerConf::wireguard(&self.keys[usize::from(p) - 1].public_key)
                        .allowed_ip(&format!("{}/32", inner4(mode, p)))
                        .allowed_ip(&format!("{}/128", inner6(mode, p)))
                        .endpoint(endpoint)
                }
                TunnelMode::Vxlan => PeerConf::vtep(endpoint),
            };
            conf = conf.peer(peer);
        }
        conf
    }

    /// Writes site `i`'s configuration as `DIR/rt0-siteI/rt0.conf`.
    pub fn write(&self, i: u8, conf: &Conf) -> PathBuf {
        let sub = self.dir.path().join(format!("site{i}"));
        must(std::fs::create_dir_all(&sub), "making a site directory");
        must(conf.write(&sub, IFACE), "writing a configuration")
    }

    /// Starts a `bytes`-long TCP transfer from site 1 to site 2's inner
    /// IPv4 address, in the background.
    pub fn start_bulk(&self, mode: TunnelMode, bytes: u64) -> BulkTransfer {
        must(
            start_tcp_bulk(
                self.ns(1),
                self.ns(2),
                inner4(mode, 2),
                &BulkOptions {
                    bytes,
                    timeout: BULK_TIMEOUT,
                    ..BulkOptions::default()
                },
            ),
            "starting the transfer",
        )
    }

    /// Starts ringtun for site `i` with this configuration.
    /// The daemon logs at `info` (unless the options say otherwise), so
    /// that a failure's [`diagnose`] shows why it stopped.
    pub fn up(&self, i: u8, conf: &Conf, opts: &UpOptions) -> Ringtun {
        let path = self.write(i, conf);
        let mut opts = opts.clone();
        if !opts.env.iter().any(|(k, _)| k == "RUST_LOG") {
            opts.env.push(("RUST_LOG".to_string(), "info".to_string()));
        }
        Ringtun::up(self.ns(i), &path, &opts).unwrap_or_else(|e| panic!("site {i}: {e}"))
    }
}

/// Waits until `iface` is gone from `netns` (a stopped daemon's device
/// goes with its last queue fd); panics naming `ctx` after 5 s.
pub fn assert_link_gone(netns: &str, iface: &str, ctx: &str) {
    let nl = must(netctl::Netlink::in_netns(netns), netns);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match nl.link(iface) {
            Err(netctl::Error::NoSuchDevice { .. }) => return,
            Err(e) => panic!("{ctx}: looking up {iface} in {netns}: {e}"),
            Ok(link) => assert!(
                Instant::now() < deadline,
                "{ctx}: {iface} is still in {netns} 5 s after the daemon stopped: {link:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of a setup step that must work, or a panic naming the step.
pub fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: impl std::fmt::Display) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn configure_wan(ns: &str, link: &str, i: u8) {
    let nl = must(Netlink::in_netns(ns), ns);
    for underlay in [Underlay::V4, Underlay::V6] {
        let addr = wan(i, underlay);
        let len = if addr.is_ipv4() { 24 } else { 64 };
        let prefix = must(IpPrefix::new(addr, len), "a WAN prefix");
        must(
            nl.addr_add_with(link, prefix, AddrOptions { nodad: true }),
            format!("adding {prefix} to {link} in {ns}"),
        );
    }
    must(nl.link_set_up(link), link);
    must(nl.link_set_up("lo"), "lo");
}

/// Pings `dst` from `ns` until a reply, or panics saying what came.
pub fn assert_reaches(ns: &str, dst: IpAddr, context: &str) {
    let echo = ping_until_reply(ns, &dst.to_string(), FIRST_PACKET);
    assert!(
        echo.is_reply(),
        "{context}: ping {dst} from {ns}: expected a reply within {FIRST_PACKET:?}, got {echo:?}"
    );
}

/// What the daemons say about themselves, for a failure message: `ringtun
/// show` (or why it failed) and the latest stderr lines of each.
pub fn diagnose(daemons: &[&Ringtun]) -> String {
    let mut out = String::new();
    for d in daemons {
        let show = match d.show() {
            Ok(s) => s.render(),
            Err(e) => format!("ringtun show failed: {e}"),
        };
        let links = Netlink::in_netns(d.netns())
            .and_then(|nl| {
                [d.iface(), WAN]
                    .iter()
                    .map(|l| nl.link_stats(l).map(|s| format!("{l}: {s:?}\n")))
                    .collect::<Result<String, _>>()
            })
            .unwrap_or_else(|e| format!("link statistics: {e}\n"));
        out.push_str(&format!(
            "\n=== ringtun {} in {} (pid {}, {}) ===\n{show}\n{links}--- stderr ---\n{}\n",
            d.iface(),
            d.netns(),
            d.pid(),
            d.proc_state(),
            d.stderr()
        ));
    }
    out
}

/// A bulk transfer that must arrive intact; a failure message carries
/// [`diagnose`] of `daemons`.
pub fn assert_bulk(
    from: &str,
    to: &str,
    dst: IpAddr,
    bytes: u64,
    daemons: &[&Ringtun],
    context: &str,
) -> BulkReport {
    let opts = BulkOptions {
        bytes,
        timeout: BULK_TIMEOUT,
        ..BulkOptions::default()
    };
    let report = match tcp_bulk(from, to, dst, &opts) {
        Ok(r) => r,
        Err(e) => panic!("{context}: bulk {from} -> {dst}: {e}{}", diagnose(daemons)),
    };
    assert!(
        report.intact(),
        "{context}: bulk {from} -> {dst}: the bytes differ: {}{}",
        report.summary(),
        diagnose(daemons)
    );
    eprintln!("{context}: {}", report.summary());
    report
}
